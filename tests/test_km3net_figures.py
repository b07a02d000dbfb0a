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
