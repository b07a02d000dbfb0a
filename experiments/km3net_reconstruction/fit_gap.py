"""Why the line fit + chi-square prefit (`line_fit_chi2`) finds numl's simulated ORCA6 events harder than the
official file's (issue 16): its angular error per event beside candidate covariates (direction, hits, lines, DOMs,
late hits, vertex, track length in the detector, distance of the hits from the muon, energies, nu-mu angle, Bjorken
y), on the file's 140 events and on simulated validation events of the prefit study's configuration
(`experiment=km3net_reconstruction/orca6_prefit`, seed 7; the first 300 events are the prefit study's n_val=300
events), before the fix of issue 16's light yield and seabed and now. Each covariate in turn reweights the simulated
events to the file's distribution (histogram ratio in bins of the file's quantiles); a covariate that explains the
gap brings the simulation's weighted median error to the file's. Also the light yield itself: the probability that
a PMT at a given distance from the true muon has a hit of its direct light.

    python experiments/km3net_reconstruction/fit_gap.py      # ~3 min; results/fit_gap.md and .json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from scipy import stats

from numl.data.km3net import hit_positions_m, read_offline_file, select_hits, truth_direction
from numl.sim.km3net import physics
from numl.sim.km3net.events import path_interval_in_can
from numl.sim.km3net.observables import (
    DIRECT_RESIDUAL_NS,
    direct_hit_probability,
    muon_residuals_ns,
    vertex_muon_track,
)
from numl.sim.km3net.prefit import PREFITS

CONF = Path(__file__).resolve().parents[2] / "conf"
RESULTS = Path(__file__).resolve().parent / "results"
EXPERIMENT = "km3net_reconstruction/orca6_prefit"
PREFIT = "line_fit_chi2"
COVARIATES = {
    "dir_z": "neutrino direction z (cos angle to +z; > 0 up-going)",
    "azimuth_deg": "neutrino azimuth (deg)",
    "energy_gev": "neutrino energy (GeV)",
    "muon_energy_gev": "muon energy (GeV)",
    "nu_mu_angle_deg": "nu-mu angle (deg)",
    "bjorken_y": "Bjorken y",
    "n_triggered": "triggered hits",
    "n_lines": "detection lines with triggered hits",
    "n_doms": "DOMs with triggered hits",
    "late_fraction": f"fraction of triggered hits with |residual| > {DIRECT_RESIDUAL_NS:g} ns",
    "vertex_radius_m": "vertex distance from the detector axis (m)",
    "vertex_z_m": "vertex height above the lowest PMT (m)",
    "track_in_detector_m": "muon track length inside the instrumented volume (m)",
    "hit_distance_m": "median distance of the triggered hits' PMTs from the true muon (m)",
}
#: histogram bins of the reweighting: the file's quantiles, so each bin holds about 140 / N_BINS file events
N_BINS = 6
N_BOOTSTRAP = 300
#: the muon's light before the loss showers and large-angle scattered light (losses on the Cherenkov cone)
CONE_LIGHT = ["data.events.muon_light=cone", "data.events.scattered_light_fraction=0"]
#: the water before scattering_check.py's first fit (absorption 60 m, scattering 50 m with 0.5 ns of delay per metre)
FORMER_WATER = ["data.events.absorption_length_m=60", "data.events.scattering_length_m=50",
                "data.events.scattering_delay_ns_per_m=0.5", *CONE_LIGHT]
#: the water of that fit with the cone light (efficiency 0.14, 0.25 ns of delay per metre; absorption 45 m as now)
CONE_WATER = ["data.events.quantum_efficiency=0.14", "data.events.scattering_delay_ns_per_m=0.25", *CONE_LIGHT]
#: the simulation before the light-yield fix (photon detection efficiency 0.25, no seabed), after it with the
#: former water, with the cone light, and now (conf/data/km3net_orca6.yaml)
CONFIGURATIONS = {"before": ["data.events.quantum_efficiency=0.25", "data.events.seabed_z_m=null", *FORMER_WATER],
                  "light": ["data.events.quantum_efficiency=0.125", *FORMER_WATER], "cone": CONE_WATER, "now": []}
#: distance bins (m) of the direct-light hit probability: from next to the track to where noise takes over
DISTANCE_EDGES_M = np.array([0.0, 10.0, 20.0, 30.0, 45.0, 60.0, 80.0])


def prefit_study_datamodule(overrides: list[str]):
    """The data module of the prefit study's configuration (EXPERIMENT) with `overrides`, not yet set up."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"experiment={EXPERIMENT}", *overrides])
    return instantiate(cfg.data, _convert_="object")


def file_and_validation_events(dm, label: str) -> dict[str, list]:
    """The official file's events (key "ORCA6 file") and the data module's simulated validation events (`label`)."""
    return {"ORCA6 file": read_offline_file(dm.real_test_files[0], dm.detector), label: dm.simulate_split("val")}


def write_result(out: Path, result: dict, text: str) -> None:
    """`result` as <out>.json and its markdown `text` as <out>.md; the text is printed too."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(text)
    print(text)


def event_records(events, detector, hit_selection: str, max_hits: int) -> dict[str, np.ndarray]:
    """Per event: the prefit's angle to the true neutrino (deg) and every covariate of COVARIATES."""
    instrumented = detector.bounding_cylinder_m()
    rows = {key: [] for key in ("error_deg", *COVARIATES)}
    for event in events:
        hits, truth = event.hits, event.truth
        fit_hits = select_hits(hits, hit_selection, max_hits)
        track = PREFITS[PREFIT](hit_positions_m(fit_hits), fit_hits["t_ns"].astype(np.float64), fit_hits["triggered"])
        nu = truth_direction(truth)
        rows["error_deg"].append(float(physics.angle_between_deg(track.direction, nu)))
        rows["dir_z"].append(nu[2])
        rows["azimuth_deg"].append(np.degrees(np.arctan2(nu[1], nu[0])) % 360.0)
        rows["energy_gev"].append(float(truth["energy_gev"]))
        rows["muon_energy_gev"].append(float(truth["muon_energy_gev"]))
        rows["bjorken_y"].append(float(truth["bjorken_y"]))
        triggered = hits[hits["triggered"]]
        rows["n_triggered"].append(len(triggered))
        rows["n_lines"].append(len(np.unique(triggered["du_id"])))
        rows["n_doms"].append(len(np.unique(triggered["dom_id"])))
        rows["late_fraction"].append(float(np.mean(np.abs(muon_residuals_ns(triggered, truth)) > DIRECT_RESIDUAL_NS)))
        vertex = np.array([truth["vertex_x"], truth["vertex_y"], truth["vertex_z"]], dtype=np.float64)
        rows["vertex_radius_m"].append(float(np.hypot(*(vertex[:2] - instrumented[0]))))
        rows["vertex_z_m"].append(vertex[2] - instrumented[2])
        muon = vertex_muon_track(truth)
        if muon is None:
            for key in ("nu_mu_angle_deg", "track_in_detector_m", "hit_distance_m"):
                rows[key].append(np.nan)
            continue
        hit_distance_m = physics.track_geometry(hit_positions_m(triggered), *muon[:2])[1]
        rows["hit_distance_m"].append(float(np.median(hit_distance_m)))
        rows["nu_mu_angle_deg"].append(float(physics.angle_between_deg(muon[1], nu)))
        # one range model (constant_a) for both samples (the file's truth has no range), so the length differs only by
        # where and which way the muon goes
        range_m = float(physics.muon_range_m(truth["muon_energy_gev"], "constant_a"))
        lo, hi = path_interval_in_can(vertex[None], muon[1], range_m, instrumented)
        rows["track_in_detector_m"].append(float(max(hi[0] - lo[0], 0.0)))
    return {key: np.asarray(values, dtype=np.float64) for key, values in rows.items()}


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])])


def histogram_weights(reference: np.ndarray, candidate: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Weights that give `candidate` the histogram of `reference` in bins of the reference's quantiles (the outer
    bins open); candidate events with a NaN covariate, or in a bin without candidates, weigh 0."""
    reference = reference[np.isfinite(reference)]
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, n_bins + 1))[1:-1])
    ref_fraction = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1)
    ref_fraction = ref_fraction / ref_fraction.sum()
    finite = np.isfinite(candidate)
    index = np.searchsorted(edges, np.where(finite, candidate, 0.0), side="right")
    cand_fraction = np.bincount(index[finite], minlength=len(edges) + 1) / max(finite.sum(), 1)
    ratio = np.divide(ref_fraction, cand_fraction, out=np.zeros_like(ref_fraction), where=cand_fraction > 0)
    return np.where(finite, ratio[index], 0.0)


def gap_table(file: dict[str, np.ndarray], sim: dict[str, np.ndarray], seed: int = 0) -> dict:
    """The prefit's median error on the file and the simulation, and per covariate: both distributions' quantiles,
    the KS statistic, the median error within each and the simulation's median reweighted to the file's
    distribution, with 68 % bootstrap intervals (resampling the simulated events)."""
    rng = np.random.default_rng(seed)
    n_sim = len(sim["error_deg"])
    resamples = [rng.integers(0, n_sim, n_sim) for _ in range(N_BOOTSTRAP)]
    file_boot = [np.median(file["error_deg"][rng.integers(0, len(file["error_deg"]), len(file["error_deg"]))])
                 for _ in range(N_BOOTSTRAP)]
    out = {"file_events": len(file["error_deg"]), "sim_events": n_sim,
           "file_median_deg": float(np.median(file["error_deg"])),
           "file_median_68_deg": np.percentile(file_boot, [16, 84]).tolist(),
           "sim_median_deg": float(np.median(sim["error_deg"])),
           "sim_median_68_deg": np.percentile([np.median(sim["error_deg"][r]) for r in resamples], [16, 84]).tolist(),
           "covariates": []}
    for key, title in COVARIATES.items():
        a, b = file[key][np.isfinite(file[key])], sim[key][np.isfinite(sim[key])]
        weights = histogram_weights(file[key], sim[key])
        boot = [weighted_median(sim["error_deg"][r], histogram_weights(file[key], sim[key][r])) for r in resamples]
        out["covariates"].append({
            "covariate": key, "title": title,
            "file_quantiles": np.percentile(a, [10, 50, 90]).tolist(),
            "sim_quantiles": np.percentile(b, [10, 50, 90]).tolist(),
            "ks_statistic": float(stats.ks_2samp(a, b).statistic), "ks_p": float(stats.ks_2samp(a, b).pvalue),
            "effective_sim_events": float(weights.sum() ** 2 / np.sum(weights**2)),
            "reweighted_sim_median_deg": weighted_median(sim["error_deg"], weights),
            "reweighted_sim_median_68_deg": np.percentile(boot, [16, 84]).tolist()})
    return out


def markdown(result: dict) -> str:
    names = list(result["configurations"])
    gaps = {name: result["configurations"][name]["gap"] for name in names}
    first = gaps[names[0]]
    lines = [f"`{PREFIT}` prefit, median angle to the true neutrino: ORCA6 file {first['file_median_deg']:.2f} "
             f"deg (68 %: {first['file_median_68_deg'][0]:.1f}-{first['file_median_68_deg'][1]:.1f}, "
             f"{first['file_events']} events)"]
    for name in names:
        g, overrides = gaps[name], result["configurations"][name]["overrides"]
        lines.append(f"; numl {name} ({' '.join(overrides) or 'as configured'}) {g['sim_median_deg']:.2f} deg (68 %: "
                     f"{g['sim_median_68_deg'][0]:.1f}-{g['sim_median_68_deg'][1]:.1f}, {g['sim_events']} events)")
    lines[-1] += f"; seed {result['seed']}."
    lines = ["".join(lines), "",
             "| covariate | file p10 / p50 / p90 | " + " | ".join(
                 f"numl {n}: p10 / p50 / p90 | KS | median error reweighted to the file (deg, 68 %)" for n in names)
             + " |", "|---|---|" + "---|---|---|" * len(names)]
    for i, row in enumerate(first["covariates"]):
        cells = [row["title"], " / ".join(f"{q:.3g}" for q in row["file_quantiles"])]
        for name in names:
            r = gaps[name]["covariates"][i]
            cells += [" / ".join(f"{q:.3g}" for q in r["sim_quantiles"]), f"{r['ks_statistic']:.2f}",
                      f"{r['reweighted_sim_median_deg']:.1f} ({r['reweighted_sim_median_68_deg'][0]:.1f}-"
                      f"{r['reweighted_sim_median_68_deg'][1]:.1f})"]
        lines.append("| " + " | ".join(cells) + " |")
    edges = result["distance_edges_m"]
    lines += ["", "Probability that a PMT has a hit of direct muon light (|residual| < 20 ns), by distance from the "
              "true muon (PMTs whose emission point lies on the muon, 20 m past the vertex or more):", "",
              "| distance (m) | file | " + " | ".join(f"numl {n} | numl {n} / file" for n in names) + " |",
              "|---|---|" + "---|---|" * len(names)]
    for i in range(len(edges) - 1):
        file_p = result["file_direct_hit_probability"][i]
        cells = [f"{edges[i]:g}-{edges[i + 1]:g}", f"{file_p:.4f}"]
        for name in names:
            p = result["configurations"][name]["direct_hit_probability"][i]
            cells += [f"{p:.4f}", f"{p / file_p:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-val", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS / "fit_gap")
    parser.add_argument("--records", type=Path, default=None, help="also save the per-event records here (.npz)")
    args = parser.parse_args()
    result: dict = {"experiment": EXPERIMENT, "seed": args.seed, "n_val": args.n_val, "prefit": PREFIT,
                    "distance_edges_m": DISTANCE_EDGES_M.tolist(), "configurations": {}}
    records: dict[str, dict[str, np.ndarray]] = {}
    for name, overrides in CONFIGURATIONS.items():
        dm = prefit_study_datamodule([f"data.n_val={args.n_val}", f"seed={args.seed}", *overrides])
        if "file" not in records:
            file_events = read_offline_file(dm.real_test_files[0], dm.detector)
            records["file"] = event_records(file_events, dm.detector, dm.hit_selection, dm.max_hits)
            result["file_direct_hit_probability"] = direct_hit_probability(file_events, dm.detector,
                                                                           DISTANCE_EDGES_M)[0].tolist()
        events = dm.simulate_split("val")
        records[name] = event_records(events, dm.detector, dm.hit_selection, dm.max_hits)
        result["configurations"][name] = {
            "overrides": overrides, "gap": gap_table(records["file"], records[name]),
            "direct_hit_probability": direct_hit_probability(events, dm.detector, DISTANCE_EDGES_M)[0].tolist()}
    if args.records is not None:
        np.savez(args.records, **{f"{s}/{k}": v for s, r in records.items() for k, v in r.items()})
    write_result(args.out, result, markdown(result))

if __name__ == "__main__":
    main()
