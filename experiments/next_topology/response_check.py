"""Sensor-level detector response (issue 15): energy resolution, deconvolution and what it does to the topology.

1. Energy resolution: electron tracks of 1592 keV (208Tl double-escape peak), Q_bb and 2615 keV (208Tl) are made
   once each and sent through the response (data.sim.detector_response=sensors) many times; the FWHM is
   2.3548 x the spread of each track's reconstructed energy around its own mean (the detector's part only). Also
   the Fano limit (every other term switched off) against 2.3548 sqrt(F W / E).
2. Deconvolution (data.sim.deconvolution=richardson_lucy, 2 mm cells): a point source of 30 keV and a straight
   60 mm line of 2.5 keV deposits, drifted 300 mm, deconvolved from the 10 mm SiPM hits: where the energy lands
   (centroid offset, rms about the truth) before and after.
3. Topology on the study's test set (mixed gamma background, 10 mm voxels, ROI 2400-2520 keV): the blob cut's
   rejection at 65 % / 72 % signal efficiency and the smaller true-end blob's AUROC with detector_response=ideal
   and sensors on the same seed, and the simulation speed.

    python experiments/next_topology/response_check.py --repeats 200 --n 1000
    python experiments/next_topology/response_check.py --speed-2mm 20   # 4. the 2 mm deconvolved data's speed
    python experiments/next_topology/response_check.py --thresholds 20,60 --n 500   # 5. SiPM threshold scan
    python experiments/next_topology/response_check.py --variant el_gap_mm=1,sipm_plane_distance_mm=0.5 --n 300

Writes results/response_check.md and .json (results/response_check_2mm.* for --speed-2mm).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import numl.sim.next.generator as gen
from numl.sim.next import response

sys.path.insert(0, str(Path(__file__).parent))
from background_check import topology  # noqa: E402  (the study's own blob-cut measurement)

OUT = Path(__file__).with_name("results")
#: the hits this check measured (2026-12-02): every SiPM above sipm_threshold_pe is a hit, and --thresholds scans that
#: threshold. esmeralda's topology hits (sipm_topology_threshold_pe, the default since 2026-12-07) are measured by
#: double_escape_check.py.
SENSORS = {"detector_response": "sensors", "sipm_topology_threshold_pe": None}
#: every response term but the Fano factor switched off: no attachment, no EL/PMT statistics, no calibration
#: residual (photoelectrons per electron so large that Poisson is negligible)
FANO_ONLY = {"electron_lifetime_ms": 1e12, "energy_plane_pe_per_electron": 1e6, "energy_calibration_residual": 0.0}


def track(cfg: gen.NextSimConfig, kev: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deposits (mm, keV) of one electron of `kev` started at the detector centre (bremsstrahlung photons left out:
    the deposits are what the response sees)."""
    rng = np.random.default_rng(seed)
    centre = np.array(cfg.detector_size_mm) / 2
    out = gen._transport_electrons(rng, cfg, centre[None], np.array([[0.0, 0.0, 1.0]]), np.array([kev]))
    return out["deposit_mm"], out["deposit_kev"]


def reconstructed_kev(cfg: gen.NextSimConfig, pos: np.ndarray, kev: np.ndarray, rng: np.random.Generator) -> float:
    electrons, _ = response.ionise_and_drift(rng, cfg, pos, kev)
    _, hit_kev = response.sensor_hits(rng, cfg, electrons)
    return float(hit_kev.sum() * (1 + rng.standard_normal() * cfg.energy_calibration_residual))


def resolution(settings: dict, kev: float, n_tracks: int, repeats: int, seed: int) -> dict:
    """FWHM (fraction) of the reconstructed energy about each track's mean, pooled over tracks; its error from
    the chi-square spread of a variance estimate."""
    cfg = gen.NextSimConfig(**SENSORS, **settings)
    rng = np.random.default_rng(seed)
    residuals, bias = [], []
    for t in range(n_tracks):
        pos, dep = track(cfg, kev, seed + t)
        energies = np.array([reconstructed_kev(cfg, pos, dep, rng) for _ in range(repeats)])
        residuals.append(energies / energies.mean() - 1)
        bias.append(energies.mean() / dep.sum() - 1)
    pooled = np.concatenate(residuals)
    fwhm = 2.3548 * pooled.std(ddof=n_tracks)
    return {"kev": kev, "fwhm": float(fwhm), "fwhm_error": float(fwhm / np.sqrt(2 * (pooled.size - n_tracks))),
            "scale_bias": float(np.mean(bias)), "n": int(pooled.size)}


def deconvolution_case(shape: str, repeats: int, seed: int) -> dict:
    """Energy-weighted rms distance (mm) of the voxels from the true deposits, for the 10 mm hits and the 2 mm
    deconvolved voxels, and the offset of the energy centroid, for a point source or a straight line along x."""
    cfg = gen.NextSimConfig(**SENSORS, deconvolution="richardson_lucy", voxel_size_mm=2.0, energy_threshold_kev=1.0)
    rng = np.random.default_rng(seed)
    centre = np.array([221.0, 221.0, 301.0])
    if shape == "point":
        truth = centre[None]
        kev = np.array([30.0])
    else:
        x = np.arange(-30.0, 30.0, 0.5)
        truth = centre + np.column_stack([x, np.zeros_like(x), np.zeros_like(x)])
        kev = np.full(len(x), 2.5)
    out = {"shape": shape, "hits_rms_mm": [], "deconvolved_rms_mm": [], "deconvolved_offset_mm": [],
           "deconvolved_length_mm": [], "seconds": []}
    for _ in range(repeats):
        electrons, _ = response.ionise_and_drift(rng, cfg, truth, kev)
        hit_mm, hit_kev = response.sensor_hits(rng, cfg, electrons)
        start = time.perf_counter()
        index, voxel_kev = response.richardson_lucy_voxels(cfg, hit_mm, hit_kev)
        out["seconds"].append(time.perf_counter() - start)
        voxel_mm = (index + 0.5) * cfg.voxel_size_mm
        for name, mm, e in (("hits", hit_mm, hit_kev), ("deconvolved", voxel_mm, voxel_kev)):
            # distance of each voxel to the nearest true deposit, energy weighted
            distance = np.linalg.norm(mm[:, None, :] - truth[None], axis=2).min(axis=1)
            out[f"{name}_rms_mm"].append(float(np.sqrt(np.average(distance**2, weights=e))))
        out["deconvolved_offset_mm"].append(float(np.linalg.norm(np.average(voxel_mm, axis=0, weights=voxel_kev)
                                                                  - np.average(truth, axis=0, weights=kev))))
        # extent along x of the cells holding 98 % of the energy (the line's length is 60 mm)
        order = np.argsort(voxel_mm[:, 0])
        cum = np.cumsum(voxel_kev[order]) / voxel_kev.sum()
        out["deconvolved_length_mm"].append(float(voxel_mm[order][np.searchsorted(cum, 0.99), 0]
                                                  - voxel_mm[order][np.searchsorted(cum, 0.01), 0]))
    return {k: (float(np.mean(v)) if isinstance(v, list) else v) for k, v in out.items()}


def deconvolved_speed(n_events: int, seed: int) -> dict:
    """Events/s of the 2 mm deconvolved simulation (signal events, so that every event simulated is kept; the 1 keV
    threshold, 1 % cell cut and float64 that data=next_2mm_deconvolved had when this was measured), against the 2 mm
    stand-in (data=next_2mm: reduced diffusion, ideal response)."""
    two_mm = {"voxel_size_mm": 2.0, "energy_threshold_kev": 1.0, "signal_fraction": 1.0, "events_per_batch": 16}
    stand_in = {"transverse_diffusion_mm_per_sqrt_cm": 0.30, "longitudinal_diffusion_mm_per_sqrt_cm": 0.10}
    out = {}
    for name, settings in (("stand_in", stand_in), ("deconvolved", {**SENSORS, "deconvolution": "richardson_lucy"})):
        start = time.perf_counter()
        events = gen.simulate_events(gen.NextSimConfig(**two_mm, **settings), n_events, seed)
        out[name] = {"events_per_s": len(events) / (time.perf_counter() - start),
                     "voxels_per_event": float(np.mean([len(e.voxel_energy_kev) for e in events]))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200, help="response repetitions per track")
    parser.add_argument("--tracks", type=int, default=5, help="tracks per energy")
    parser.add_argument("--n", type=int, default=1000, help="topology test events per class (0: skip)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--speed-2mm", type=int, default=0,
                        help="only time this many 2 mm signal events, deconvolved and stand-in (results/*_2mm.*)")
    parser.add_argument("--thresholds", type=str, default="",
                        help="only the blob cut with sensors at these SiPM thresholds (pe, comma separated), --n "
                             "events per class (results/response_check_thresholds.*)")
    parser.add_argument("--variant", action="append", default=[],
                        help="only the blob cut with sensors and these data.sim settings, KEY=VALUE[,KEY=VALUE] "
                             "(repeatable), --n events per class (results/response_check_variants.*)")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    if args.variant or args.thresholds:
        # Blob cut with the sensor response under changed settings: data.sim overrides, or only the SiPM threshold.
        if args.variant:
            name, column = "variants", "sensors with"
            settings = {v: {k: float(x) for k, x in (kv.split("=") for kv in v.split(","))} for v in args.variant}
        else:
            name, column = "thresholds", "SiPM threshold (pe per 2 us slice)"
            settings = {t: {"sipm_threshold_pe": float(t)} for t in args.thresholds.split(",")}
        runs = {label: topology({**SENSORS, **changed}, args.n, args.seed) for label, changed in settings.items()}
        rows = [f"| {column} | blob cut rejection at 65 % | at 72 % | blob cut AUROC | smaller true-end blob AUROC |",
                "|---|---|---|---|---|"]
        for label, r in runs.items():
            rows.append(f"| {label} | {r['rejection_65'][0]:.1f} +- {r['rejection_65'][1]:.1f} | "
                        f"{r['rejection_72'][0]:.1f} +- {r['rejection_72'][1]:.1f} | {r['blob_cut_auroc']:.3f} | "
                        f"{r['true_end_blob_auroc']:.3f} |")
        text = "\n".join(rows)
        print(text)
        (OUT / f"response_check_{name}.md").write_text(text + "\n")
        (OUT / f"response_check_{name}.json").write_text(json.dumps({"args": vars(args), **runs}, indent=2) + "\n")
        return
    if args.speed_2mm:
        speed = deconvolved_speed(args.speed_2mm, args.seed)
        text = "\n".join(["| 2 mm data | events/s (one CPU thread) | voxels per event |", "|---|---|---|"]
                         + [f"| {k} | {v['events_per_s']:.2f} | {v['voxels_per_event']:.0f} |"
                            for k, v in speed.items()])
        print(text)
        (OUT / "response_check_2mm.md").write_text(text + "\n")
        (OUT / "response_check_2mm.json").write_text(json.dumps({"args": vars(args), **speed}, indent=2) + "\n")
        return
    energies = (1592.0, 2457.83, 2614.511)
    result = {"resolution": [resolution({}, e, args.tracks, args.repeats, args.seed) for e in energies],
              "fano_only": [resolution(FANO_ONLY, e, args.tracks, args.repeats, args.seed) for e in energies],
              "deconvolution": [deconvolution_case(s, 10, args.seed) for s in ("point", "line")]}
    cfg = gen.NextSimConfig()
    for row in result["fano_only"]:
        row["expected"] = 2.3548 * np.sqrt(cfg.fano_factor * cfg.ionisation_energy_ev * 1e-3 / row["kev"])
    if args.n:
        result["ideal"] = topology({}, args.n, args.seed)
        result["sensors"] = topology(SENSORS, args.n, args.seed)
    rows = ["| energy (keV) | FWHM, full response | FWHM, Fano only | 2.3548 sqrt(F W / E) |", "|---|---|---|---|"]
    for full, fano in zip(result["resolution"], result["fano_only"], strict=True):
        rows.append(f"| {full['kev']:.1f} | {100 * full['fwhm']:.3f} +- {100 * full['fwhm_error']:.3f} % | "
                    f"{100 * fano['fwhm']:.3f} +- {100 * fano['fwhm_error']:.3f} % | {100 * fano['expected']:.3f} % |")
    rows += ["", "| source | rms to truth, 10 mm hits | rms to truth, deconvolved 2 mm | centroid offset | "
             "98 % extent along x | seconds per deconvolution |", "|---|---|---|---|---|---|"]
    for d in result["deconvolution"]:
        rows.append(f"| {d['shape']} | {d['hits_rms_mm']:.1f} mm | {d['deconvolved_rms_mm']:.1f} mm | "
                    f"{d['deconvolved_offset_mm']:.1f} mm | {d['deconvolved_length_mm']:.0f} mm | {d['seconds']:.2f} |")
    if args.n:
        rows += ["", "| quantity (10 mm voxels, mixed gammas) | ideal | sensors |", "|---|---|---|"]
        for name, key in (("blob cut rejection at 65 %", "rejection_65"),
                          ("blob cut rejection at 72 %", "rejection_72")):
            cells = [f"{r[key][0]:.1f} +- {r[key][1]:.1f} (k = {r[key][2]})"
                     for r in (result["ideal"], result["sensors"])]
            rows.append(f"| {name} | {cells[0]} | {cells[1]} |")
        for name, key, fmt in (("blob cut AUROC", "blob_cut_auroc", "{:.3f}"),
                               ("smaller true-end blob AUROC", "true_end_blob_auroc", "{:.3f}"),
                               ("event energy alone: AUROC", "energy_auroc", "{:.3f}"),
                               ("single-track fraction, signal", "single_track_signal", "{:.2f}"),
                               ("single-track fraction, background", "single_track_background", "{:.2f}"),
                               ("events/s in the ROI (one CPU thread)", "events_per_s", "{:.1f}")):
            rows.append(f"| {name} | {fmt.format(result['ideal'][key])} | {fmt.format(result['sensors'][key])} |")
    text = "\n".join(rows)
    print(text)
    OUT.mkdir(exist_ok=True)
    (OUT / "response_check.md").write_text(text + "\n")
    (OUT / "response_check.json").write_text(json.dumps({"args": vars(args), **result}, indent=2) + "\n")


if __name__ == "__main__":
    main()
