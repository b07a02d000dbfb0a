"""Gamma backgrounds (issue 15): 208Tl / 214Bi gammas entering the detector against the former bare-electron
background, on 10 mm events with the study's energy ROI (2400-2520 keV) and the 20 mm fiducial veto.

1. ROI acceptance per gamma line: the fraction of the gammas entering the active volume (isotropic flux on its
   surface) whose event lands in the ROI and passes the veto, with its Poisson error; and the fraction of those
   events that are single-track (one connected group of 10 mm voxels, 26-neighbour, as NEXT's track
   reconstruction counts tracks).
2. Topology on a test set (the default `data.sim` with background=mixed, the study's 10 mm events): the blob cut
   (numl.baselines.next, reconstructed ends, R = 18 mm) on all ROI events and on single-track events only
   (NEXT's classical selection), background rejection at 65 % and 72 % signal efficiency with Poisson errors
   (R / sqrt(k), k background events passing), the blob cut's AUROC and the smaller true-end blob's AUROC
   (voxel energy within 18 mm of each true end of the main track(s)); the event energy's own AUROC and rejection.
3. Simulation speed: events per second in the ROI of the new default (gamma background) and of the former
   (background=electron photon_transport=first_interaction veto_margin_mm=null), same seed and event count.

Writes results/background_check.md and .json.

    python experiments/next_topology/background_check.py --gammas 200000 --n 2000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

import numl.sim.next.generator as gen
from numl.baselines.next import blob_cut_scores
from numl.metrics import background_rejection_factor, fwhm
from numl.sim.next.tracks import count_tracks

OUT = Path(__file__).with_name("results")
FORMER = {"background": "electron", "photon_transport": "first_interaction", "veto_margin_mm": None}


def n_tracks(event: gen.NextEvent, cfg: gen.NextSimConfig) -> int:
    """Connected groups of voxels (26-neighbour) of an event, as NEXT's track reconstruction counts tracks."""
    return count_tracks(event.voxel_centres_mm(cfg.voxel_size_mm), cfg.voxel_size_mm)


def true_end_blob(event: gen.NextEvent, cfg: gen.NextSimConfig) -> float:
    centre = event.voxel_centres_mm(cfg.voxel_size_mm)
    return min(event.voxel_energy_kev[np.linalg.norm(centre - end, axis=1) < 18.0].sum() for end in event.track_ends_mm)


def rejection(scores: np.ndarray, labels: np.ndarray, efficiency: float) -> tuple[float, float, int]:
    """Rejection, its Poisson error R / sqrt(k) and k, the background events passing the cut."""
    r = background_rejection_factor(scores, labels, efficiency)  # nan without both classes
    k = int(round((labels == 0).sum() / r)) if np.isfinite(r) else 0
    return r, r / np.sqrt(max(k, 1)), k


def acceptance(line: str, n_gammas: int, seed: int) -> dict:
    cfg = gen.NextSimConfig(background=line)
    start = time.perf_counter()
    kept, n = gen.background_acceptance(cfg, n_gammas, seed)
    single = np.array([n_tracks(e, cfg) == 1 for e in kept])
    return {"line": line, "gammas": n, "in_roi": len(kept), "acceptance": len(kept) / n,
            "acceptance_error": np.sqrt(len(kept)) / n, "single_track_fraction": float(single.mean()),
            "single_track_error": float(np.sqrt(single.mean() * (1 - single.mean()) / max(len(kept), 1))),
            "seconds": time.perf_counter() - start}


def topology(settings: dict, n_per_class: int, seed: int, efficiencies: tuple[float, ...] = (0.65, 0.72),
             progress: bool = False, blob_radii_mm: tuple[float, ...] = (18.0,)) -> dict:
    """The blob cut and what it is measured against on n_per_class signal and background events of
    `data.sim` = settings; rejections (value, Poisson error, passing background events) at each signal efficiency,
    keyed by the efficiency in percent (rejection_65, rejection_71.6, ...), with the first blob radius; the cut with
    each further radius R under by_radius[R] (its AUROC and rejections, all events)."""
    cfg = gen.NextSimConfig(**settings)
    labels = np.repeat([1, 0], n_per_class)
    start = time.perf_counter()
    events = gen.simulate_events(cfg, len(labels), seed=seed, labels=labels, progress=progress)
    seconds = time.perf_counter() - start
    voxels = [(e.voxel_centres_mm(cfg.voxel_size_mm), e.voxel_energy_kev) for e in events]
    cut = blob_cut_scores(voxels, cfg.voxel_size_mm, blob_radii_mm[0])
    truth = np.array([true_end_blob(e, cfg) for e in events])
    energy = np.array([e.energy_kev for e in events])
    single = np.array([n_tracks(e, cfg) == 1 for e in events])
    out = {"settings": settings, "n_per_class": n_per_class, "events_per_s": len(events) / seconds,
           "seconds": seconds, "blob_cut_auroc": float(roc_auc_score(labels, cut)),
           "true_end_blob_auroc": float(roc_auc_score(labels, truth)),
           "single_track_signal": float(single[labels == 1].mean()),
           "single_track_background": float(single[labels == 0].mean()),
           # what the event energy alone gives away (the 214Bi line lies 10 keV below Q_bb)
           "energy_auroc": float(roc_auc_score(labels, energy)),
           "energy_rejection_72": background_rejection_factor(energy, labels, 0.72),
           # the signal peak: its position and width (the resolution at the sample's energy)
           "signal_energy_mean_kev": float(energy[labels == 1].mean()),
           "signal_energy_fwhm_kev": fwhm(energy[labels == 1])}
    for eff in efficiencies:
        tag = f"{eff * 100:g}"
        out[f"rejection_{tag}"] = rejection(cut, labels, eff)
        # NEXT's classical chain: single-track events, then the blob cut at the efficiency within them
        out[f"single_track_rejection_{tag}"] = rejection(cut[single], labels[single], eff)
    out["blob_radius_mm"] = blob_radii_mm[0]
    out["by_radius"] = {}
    for radius in blob_radii_mm[1:]:
        other = blob_cut_scores(voxels, cfg.voxel_size_mm, radius)
        out["by_radius"][f"{radius:g}"] = {"blob_cut_auroc": float(roc_auc_score(labels, other)),
                                           **{f"rejection_{eff * 100:g}": rejection(other, labels, eff)
                                              for eff in efficiencies}}
    return out


def table(lines: list[dict], new: dict, former: dict) -> str:
    rows = ["| gamma | gammas entering | in ROI, contained | ROI acceptance | single-track fraction |",
            "|---|---|---|---|---|"]
    for r in lines:
        rows.append(f"| {r['line']} | {r['gammas']} | {r['in_roi']} | ({r['acceptance'] * 1e3:.2f} +- "
                    f"{r['acceptance_error'] * 1e3:.2f}) x 1e-3 | {r['single_track_fraction']:.2f} +- "
                    f"{r['single_track_error']:.2f} |")
    rows += ["", "| quantity | gamma background (`mixed`, the default) | former (bare Q_bb electron) |",
             "|---|---|---|"]

    def rej(r, key):
        value, error, k = r[key]
        return f"{value:.1f} +- {error:.1f} (k = {k})"

    for name, key in (("blob cut rejection at 65 % signal efficiency", "rejection_65"),
                      ("blob cut rejection at 72 %", "rejection_72"),
                      ("single-track events, then blob cut: rejection at 65 % (of single-track signal)",
                       "single_track_rejection_65"),
                      ("single-track events, then blob cut: rejection at 72 %", "single_track_rejection_72")):
        rows.append(f"| {name} | {rej(new, key)} | {rej(former, key)} |")
    for name, key, fmt in (("blob cut AUROC", "blob_cut_auroc", "{:.3f}"),
                           ("smaller true-end blob AUROC", "true_end_blob_auroc", "{:.3f}"),
                           ("event energy alone: AUROC", "energy_auroc", "{:.3f}"),
                           ("event energy alone: rejection at 72 %", "energy_rejection_72", "{:.1f}"),
                           ("single-track fraction, signal", "single_track_signal", "{:.2f}"),
                           ("single-track fraction, background", "single_track_background", "{:.2f}"),
                           ("simulation speed, events/s in the ROI (one CPU thread)", "events_per_s", "{:.1f}")):
        rows.append(f"| {name} | {fmt.format(new[key])} | {fmt.format(former[key])} |")
    rows.append(f"| speed ratio new / former | {new['events_per_s'] / former['events_per_s']:.2f} | 1 |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gammas", type=int, default=200000, help="gammas per line for the ROI acceptance")
    parser.add_argument("--n", type=int, default=2000, help="test events per class")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    lines = [acceptance(line, args.gammas, args.seed) for line in ("bi214", "tl208")]
    new = topology({}, args.n, args.seed)
    former = topology(FORMER, args.n, args.seed)
    text = table(lines, new, former)
    print(text)
    OUT.mkdir(exist_ok=True)
    (OUT / "background_check.md").write_text(text + "\n")
    (OUT / "background_check.json").write_text(json.dumps(
        {"gammas": args.gammas, "n_per_class": args.n, "seed": args.seed, "lines": lines, "default": new,
         "former": former}, indent=2) + "\n")


if __name__ == "__main__":
    main()
