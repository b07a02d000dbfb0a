"""The KM3NeT resolution table: per true-energy bin, every method on the same events."""

from __future__ import annotations

import csv

import numpy as np

from numl.baselines.base import BaselineResult
from numl.figures.km3net import save_resolution_figures


def test_resolution_table_has_every_method_per_energy_bin(tmp_path):
    rng = np.random.default_rng(0)
    n = 600
    log10e = rng.uniform(1.7, 2.7, n)  # 50-500 GeV
    network_error = rng.exponential(20.0, n)
    predictions = {"log10_energy": log10e, "angular_error_deg": network_error,
                   "log10_energy_pred": log10e + rng.normal(0, 0.3, n), "kappa": np.full(n, 30.0)}
    fit = BaselineResult("chi-square fit", {}, {"angular_error_deg": network_error / 4,
                                                "log10_energy": log10e + rng.normal(0, 0.1, n)})
    paths = save_resolution_figures(predictions, tmp_path, {"track_fit": fit})
    assert (tmp_path / "km3net_resolution_vs_energy.png") in paths
    rows = list(csv.DictReader((tmp_path / "km3net_resolution_vs_energy.csv").open()))
    by_method = {m: [r for r in rows if r["method"] == m] for m in ("network", "chi-square fit")}
    assert len(by_method["network"]) == len(by_method["chi-square fit"]) == 6
    # Every event in exactly one bin, the same bins for both methods, and the numbers are the per-bin medians.
    assert sum(int(r["events"]) for r in by_method["network"]) == n
    assert [r["e_min_gev"] for r in by_method["network"]] == [r["e_min_gev"] for r in by_method["chi-square fit"]]
    first = by_method["network"][0]
    sel = (10 ** log10e >= float(first["e_min_gev"])) & (10 ** log10e < float(first["e_max_gev"]))
    assert float(first["median_angle_deg"]) == np.float64(f"{np.median(network_error[sel]):.4g}")
    ratio = float(by_method["chi-square fit"][0]["median_angle_deg"]) / float(first["median_angle_deg"])
    assert abs(ratio - 0.25) < 1e-3


def test_track_identification_table_counts_each_class_per_energy_bin(tmp_path):
    # Tracks above 10 GeV are recognised (probability 0.9), below they look like showers (0.2); showers sit at 0.1
    # except a known tenth at 0.7: the fractions per bin and overall follow from that by construction.
    rng = np.random.default_rng(1)
    n = 2000
    log10e = rng.uniform(0.5, 2.0, n)
    event_type = np.where(np.arange(n) % 2 == 0, 0, 2)  # nu_mu CC and nu_e CC alternating
    is_track = event_type == 0
    probability = np.where(is_track, np.where(log10e > 1.0, 0.9, 0.2), np.where(np.arange(n) % 20 == 1, 0.7, 0.1))
    predictions = {"log10_energy": log10e, "angular_error_deg": rng.exponential(20.0, n),
                   "log10_energy_pred": log10e, "kappa": np.full(n, 30.0), "event_type": event_type,
                   "track_probability": probability}
    chance = BaselineResult("coin", {}, {"track_probability": rng.random(n)})
    paths = save_resolution_figures(predictions, tmp_path, {"coin": chance})
    assert tmp_path / "km3net_track_identification.png" in paths
    rows = list(csv.DictReader((tmp_path / "km3net_track_identification.csv").open()))
    network = [r for r in rows if r["method"] == "network"]
    per_bin, overall = network[:-1], network[-1]
    assert 0.45 < float([r for r in rows if r["method"] == "coin"][-1]["auroc"]) < 0.55
    assert len(per_bin) == 6
    assert sum(int(r["nu_mu_cc_events"]) for r in per_bin) == is_track.sum() == int(overall["nu_mu_cc_events"])
    for row in per_bin:
        low, high = np.log10(float(row["e_min_gev"])), np.log10(float(row["e_max_gev"]))
        if high <= 1.0:
            assert float(row["nu_mu_cc_as_track"]) == 0.0
        elif low >= 1.0:
            assert float(row["nu_mu_cc_as_track"]) == 1.0 and float(row["auroc"]) > 0.9
    assert float(overall["other_as_track"]) == np.float64(f"{np.mean(probability[~is_track] > 0.5):.4g}")
    assert 0.09 < float(overall["other_as_track"]) < 0.11
    # the resolution table gains one row set per class beside the network's
    methods = {r["method"] for r in csv.DictReader((tmp_path / "km3net_resolution_vs_energy.csv").open())}
    assert methods == {"network", "network nu_mu CC", "network other"}


def test_atmospheric_muons_stay_out_of_track_identification_and_get_their_own_resolution_rows(tmp_path):
    n = 300
    log10e = np.linspace(0.5, 2.0, n)
    event_type = np.array([0, 2, 4])[np.arange(n) % 3]  # nu_mu CC, nu_e CC, atmospheric muon
    predictions = {"log10_energy": log10e, "angular_error_deg": np.full(n, 10.0), "log10_energy_pred": log10e,
                   "kappa": np.full(n, 30.0), "event_type": event_type,
                   "track_probability": np.where(event_type == 0, 0.9, 0.1)}
    save_resolution_figures(predictions, tmp_path)
    rows = list(csv.DictReader((tmp_path / "km3net_track_identification.csv").open()))
    overall = rows[-1]
    assert int(overall["nu_mu_cc_events"]) == 100 and int(overall["other_events"]) == 100  # the nu_e CC only
    methods = {r["method"] for r in csv.DictReader((tmp_path / "km3net_resolution_vs_energy.csv").open())}
    assert methods == {"network", "network nu_mu CC", "network other", "network atmospheric muons"}


def test_no_track_identification_for_a_single_class(tmp_path):
    n = 200
    log10e = np.linspace(1.0, 2.0, n)
    predictions = {"log10_energy": log10e, "angular_error_deg": np.full(n, 10.0), "log10_energy_pred": log10e,
                   "kappa": np.full(n, 30.0), "event_type": np.zeros(n, int), "track_probability": np.full(n, 0.8)}
    save_resolution_figures(predictions, tmp_path)
    assert not (tmp_path / "km3net_track_identification.csv").exists()
    methods = {r["method"] for r in csv.DictReader((tmp_path / "km3net_resolution_vs_energy.csv").open())}
    assert methods == {"network"}
