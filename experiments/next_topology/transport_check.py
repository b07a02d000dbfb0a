"""Electron transport: the former toy (data.sim.transport=renner2017), issue 15's first part (condensed with
data.sim.straggling=false data.sim.delta_cut_kev=null) and its second part (condensed with energy-loss
straggling and Moller delta rays above 10 keV, the defaults).

On the same number of 10 mm events of each class, per transport: the fraction of electron tracks with a gap
> 5 mm / > 20 mm between consecutive deposits along the track (raw transport of every electron simulated,
before the energy-ROI selection), the electron path length (mean, sigma), the smaller-end-blob energy
knowing the true track ends (voxel energy within 18 mm of each true end: medians and AUROC) and the blob
cut's background rejection at 72 % signal efficiency (numl.baselines.next, reconstructed ends, R = 18 mm);
gaps and paths are the primary electrons' (delta rays are separate tracks), and the simulation's events per
second (simulate_events wall time, ROI selection included). Writes results/transport_check.md and .json.

    python experiments/next_topology/transport_check.py --n 2000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from background_check import true_end_blob
from sklearn.metrics import roc_auc_score

import numl.sim.next.generator as gen
from numl.baselines.next import blob_cut_scores
from numl.metrics import background_rejection_factor

OUT = Path(__file__).with_name("results")


#: the background and photon treatment of these columns: one Q_bb electron, photons absorbed at their first
#: interaction, no veto (the gamma backgrounds that replaced them: background_check.py)
FORMER = {"background": "electron", "photon_transport": "first_interaction", "veto_margin_mm": None}
#: column name -> data.sim settings
SETTINGS = {
    "renner2017": {"transport": "renner2017", **FORMER},
    "condensed, first part": {"transport": "condensed", "straggling": False, "delta_cut_kev": None, **FORMER},
    "condensed + straggling + deltas": {"transport": "condensed", "straggling": True, "delta_cut_kev": 10.0, **FORMER},
}


def largest_gaps(tracks: dict) -> np.ndarray:
    primary = tracks.get("deposit_generation", np.zeros(len(tracks["deposit_kev"]), int)) == 0
    electron = tracks["deposit_electron"][primary]
    order = np.argsort(electron, kind="stable")  # deposits are in step order within an electron
    pos, electron = tracks["deposit_mm"][primary][order], electron[order]
    step = np.linalg.norm(np.diff(pos, axis=0), axis=1)
    same = electron[1:] == electron[:-1]
    gaps = np.zeros(len(tracks["path_mm"]))
    np.maximum.at(gaps, electron[1:][same], step[same])
    return gaps


def measure(name: str, n_per_class: int, seed: int) -> dict:
    cfg = gen.NextSimConfig(**SETTINGS[name])
    gaps, paths, kinetic, deltas = [], [], [], []
    original = gen._transport_electrons

    def recording(*args, **kwargs):  # record every electron the simulation transports
        tracks = original(*args, **kwargs)
        gaps.append(largest_gaps(tracks))
        paths.append(tracks["path_mm"])
        kinetic.append(args[4])
        deltas.append(np.bincount(tracks["delta_electron"], minlength=len(args[4])) if "delta_kev" in tracks
                      else np.zeros(len(args[4]), int))
        return tracks

    gen._transport_electrons = recording
    try:
        labels = np.repeat([1, 0], n_per_class)
        start = time.perf_counter()
        events = gen.simulate_events(cfg, len(labels), seed=seed, labels=labels)
        seconds = time.perf_counter() - start
    finally:
        gen._transport_electrons = original
    gaps, paths, kinetic = np.concatenate(gaps), np.concatenate(paths), np.concatenate(kinetic)
    deltas = np.concatenate(deltas)
    q_bb = kinetic == cfg.q_bb_kev  # the background electrons (signal electrons share Q_bb)
    label = np.array([e.label for e in events])
    true_blob = np.array([true_end_blob(e, cfg) for e in events])
    cut = blob_cut_scores([(e.voxel_centres_mm(cfg.voxel_size_mm), e.voxel_energy_kev) for e in events],
                          cfg.voxel_size_mm, 18.0)
    path_bkg = np.array([e.path_length_mm for e in events if e.label == 0])
    return {
        "transport": name, "settings": SETTINGS[name], "electrons": len(gaps),
        "events_per_s": len(events) / seconds, "seconds": seconds,
        "deltas_per_q_bb_electron": float(deltas[q_bb].mean()),
        "gap_over_5mm": float(np.mean(gaps > 5)), "gap_over_20mm": float(np.mean(gaps > 20)),
        "largest_gap_mm": float(gaps.max()),
        "gap_over_5mm_q_bb": float(np.mean(gaps[q_bb] > 5)), "gap_over_20mm_q_bb": float(np.mean(gaps[q_bb] > 20)),
        "path_mean_q_bb_mm": float(paths[q_bb].mean()), "path_sigma_q_bb_mm": float(paths[q_bb].std()),
        "path_mean_mm": float(paths.mean()), "path_sigma_mm": float(paths.std()),
        "path_background_roi_mean_mm": float(path_bkg.mean()), "path_background_roi_sigma_mm": float(path_bkg.std()),
        "true_end_blob_median_background_kev": float(np.median(true_blob[label == 0])),
        "true_end_blob_median_signal_kev": float(np.median(true_blob[label == 1])),
        "true_end_blob_auroc": float(roc_auc_score(label, true_blob)),
        "blob_cut_auroc": float(roc_auc_score(label, cut)),
        "blob_cut_rejection_at_72": background_rejection_factor(cut, label, 0.72),
        "blob_cut_rejection_at_65": background_rejection_factor(cut, label, 0.65),
    }


ROWS = [
    ("Q_bb electron tracks with a gap > 5 mm between consecutive deposits", "gap_over_5mm_q_bb", "{:.1%}"),
    ("Q_bb electron tracks with a gap > 20 mm", "gap_over_20mm_q_bb", "{:.1%}"),
    ("all electron tracks (signal pairs too) with a gap > 5 mm", "gap_over_5mm", "{:.1%}"),
    ("all electron tracks with a gap > 20 mm", "gap_over_20mm", "{:.1%}"),
    ("largest gap (mm)", "largest_gap_mm", "{:.1f}"),
    ("delta rays above 10 keV per Q_bb electron (all generations)", "deltas_per_q_bb_electron", "{:.1f}"),
    ("Q_bb electron path, before the ROI selection: mean (mm)", "path_mean_q_bb_mm", "{:.1f}"),
    ("Q_bb electron path, before the ROI selection: sigma (mm)", "path_sigma_q_bb_mm", "{:.1f}"),
    ("background path in the energy ROI: mean / sigma (mm)", None, None),
    ("smaller true-end blob (R = 18 mm), background median (keV)", "true_end_blob_median_background_kev", "{:.0f}"),
    ("smaller true-end blob, signal median (keV)", "true_end_blob_median_signal_kev", "{:.0f}"),
    ("smaller true-end blob AUROC", "true_end_blob_auroc", "{:.3f}"),
    ("blob cut (reconstructed ends) AUROC", "blob_cut_auroc", "{:.3f}"),
    ("blob cut rejection at 65 % signal efficiency", "blob_cut_rejection_at_65", "{:.1f}"),
    ("blob cut rejection at 72 % signal efficiency", "blob_cut_rejection_at_72", "{:.1f}"),
    ("simulation speed, events/s in the ROI (one CPU thread)", "events_per_s", "{:.0f}"),
]


def table(results: list[dict]) -> str:
    lines = ["| quantity | " + " | ".join(f"`{r['transport']}`" for r in results) + " |",
             "|---|" + "---|" * len(results)]
    for name, key, fmt in ROWS:
        if key is None:
            cells = [f"{r['path_background_roi_mean_mm']:.1f} / {r['path_background_roi_sigma_mm']:.1f}"
                     for r in results]
        else:
            cells = [fmt.format(r[key]) for r in results]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="events per class")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    results = [measure(name, args.n, args.seed) for name in SETTINGS]
    text = table(results)
    print(text)
    OUT.mkdir(exist_ok=True)
    (OUT / "transport_check.md").write_text(text + "\n")
    (OUT / "transport_check.json").write_text(json.dumps({"n_per_class": args.n, "seed": args.seed,
                                                          "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
