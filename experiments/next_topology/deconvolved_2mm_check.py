"""Why the blob cut fails on 2 mm deconvolved events: track fragments, and the tracks built as NEXT builds them.

Reads the test events of a NEXT HDF5 file (numl.simulate) and prints, for the 2 mm voxels as stored:
- how many connected pieces (26-neighbour voxel contiguity, the blob cut's track finding) an event falls into and
  which share of its energy the main piece (the one the cut takes as the track) holds;
- the blob cut (R = 18 mm, numl.baselines.next) on the same events with the tracks built from coarser voxels
  (`--voxels`), and as NEXT's Paolina builds them from deconvolved hits (`--paolina`: those voxel sizes and track
  ends below `--end-voxel-kev` dropped; IC's isaura.conf: 5 mm, 10 keV): AUROC and background rejection at 57 %
  (NEXT's working point with deconvolution, Simon et al. 2021), 65 % and 72 % signal efficiency, Poisson errors and
  68 % intervals over resamplings of the events.
Writes results/<--out>.md and .json.

    python experiments/next_topology/deconvolved_2mm_check.py data/next_2mm_deconvolved_test1500.h5
    python experiments/next_topology/deconvolved_2mm_check.py data/next_double_escape_2mm_deconvolved_test1000.h5 \
        --out experiments/next_topology/results/deconvolved_2mm_double_escape_check
    # the same 750 events deconvolved with another cell cut (data.sim.deconvolution_cut)
    python experiments/next_topology/deconvolved_2mm_check.py data/next_2mm_deconvolved_test750_cut0.001.h5 \
        --voxels 6 --paolina 5 --out experiments/next_topology/results/deconvolved_2mm_check_cut0.001
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import h5py
import numpy as np
from background_check import rejection
from scipy.sparse.csgraph import connected_components
from sklearn.metrics import roc_auc_score

from numl.baselines.next import TopologyReconstruction
from numl.data.next import read_events
from numl.metrics import background_rejection_factor
from numl.sim.next.tracks import voxel_graph

HERE = Path(__file__).resolve().parent


def test_events(path: Path, n: int | None = None) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray, float]:
    """(voxel indices, voxel keV) per test event (the first n), labels, voxel size (mm) from the file's metadata."""
    with h5py.File(path, "r") as h5:
        voxel_mm = float(json.loads(h5.attrs["numl_config"])["sim"]["voxel_size_mm"])
        events = read_events(h5["test"], min(n or len(h5["test/events/label"]), len(h5["test/events/label"])))
    labels = np.array([event.label for event in events])
    return [(event.voxel_index, event.voxel_energy_kev) for event in events], labels, voxel_mm


def pieces(index: np.ndarray, kev: np.ndarray) -> tuple[int, float]:
    """Number of 26-connected pieces and the energy share of the largest-energy piece."""
    n, component = connected_components(voxel_graph(index.astype(float), 1.0), directed=False)
    return n, float(np.bincount(component, weights=kev).max() / kev.sum())


#: signal efficiencies the rejection is given at: NEXT's with deconvolution (57 %) and the study's (65, 72 %)
WORKING_POINTS = (0.57, 0.65, 0.72)


#: event resamplings for the rejections' 68 % intervals
RESAMPLES = 1000


def rejections(scores: np.ndarray, labels: np.ndarray, prefix: str = "") -> dict:
    """Rejection at each working point with its Poisson error (the background passing the cut) and a 68 % interval
    over resamplings of the events, which also holds where the cut falls as the signal events fluctuate."""
    out = {}
    rng = np.random.default_rng(0)
    resampled = [rng.integers(0, len(labels), len(labels)) for _ in range(RESAMPLES)]
    for efficiency in WORKING_POINTS:
        wp = round(100 * efficiency)
        out[f"{prefix}rejection_at_{wp}"], out[f"{prefix}rejection_error_at_{wp}"], _ = rejection(
            scores, labels, efficiency)
        values = [background_rejection_factor(scores[i], labels[i], efficiency) for i in resampled]
        # NaN: a resample without one class (no background passing counts as one, so the upper edge is capped)
        out[f"{prefix}rejection_68_at_{wp}"] = [float(v) for v in np.nanpercentile(values, [16, 84])]
    return out


def blob_cut_on(events, labels, voxel_mm: float, topology: TopologyReconstruction) -> dict:
    """The cut on all events, and NEXT's classical chain: single-track events (one connected piece of the voxels
    the tracks are built from), then the cut at the signal efficiency within them."""
    topologies = [topology((index + 0.5) * voxel_mm, kev, voxel_mm) for index, kev in events]
    scores = np.array([t.blob2_kev for t in topologies])
    single = np.array([t.n_tracks == 1 for t in topologies])
    return {"auroc": float(roc_auc_score(labels, scores)), **rejections(scores, labels),
            "single_track_signal": float(single[labels == 1].mean()),
            "single_track_background": float(single[labels == 0].mean()),
            **rejections(scores[single], labels[single], "single_track_")}


def formatted(r: dict, wp: int, prefix: str = "") -> str:
    """Rejection ± Poisson error (68 % resampling interval)."""
    low, high = r[f"{prefix}rejection_68_at_{wp}"]
    return f"{r[f'{prefix}rejection_at_{wp}']:.1f} ± {r[f'{prefix}rejection_error_at_{wp}']:.1f} ({low:.1f}-{high:.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="HDF5 file of NEXT events (test split)")
    parser.add_argument("--voxels", type=str, default="4,6,10", help="coarser voxel sizes (mm) to sum into")
    parser.add_argument("--paolina", type=str, default="5,6", help="voxel sizes (mm) to build tracks on as Paolina")
    parser.add_argument("--end-voxel-kev", type=float, default=10.0, help="Paolina's end-voxel energy threshold")
    parser.add_argument("--n", type=int, default=None, help="only the first n test events")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "deconvolved_2mm_check")
    args = parser.parse_args()
    events, labels, voxel_mm = test_events(args.path, args.n)
    counts, shares = np.array([pieces(index, kev) for index, kev in events]).T
    report = {"file": args.path.name, "events": len(events), "background": int((labels == 0).sum()),
              "voxel_mm": voxel_mm, "pieces_median": float(np.median(counts)),
              "pieces_more_than_one": float(np.mean(counts > 1)),
              "main_piece_energy_share_median": float(np.median(shares)),
              "main_piece_energy_share_p10": float(np.percentile(shares, 10)), "blob_cut": {}}
    lines = [f"# The blob cut on {args.path.name}: {len(events)} test events, {report['background']} background",
             "", f"At {voxel_mm:g} mm: {report['pieces_median']:.0f} pieces per event (median; "
             f"{100 * report['pieces_more_than_one']:.0f} % of events in more than one), the main piece holds "
             f"{100 * report['main_piece_energy_share_median']:.0f} % of the energy (median; 10th percentile "
             f"{100 * report['main_piece_energy_share_p10']:.0f} %).", "",
             "| tracks built from | AUROC | rejection at 57 % | rejection at 65 % | rejection at 72 % | single-track "
             "fraction, signal / background | single-track events, then the cut: rejection at 57 % | at 72 % |",
             "|---|---|---|---|---|---|---|---|"]
    rows = [(None, 0.0)] + [(float(v), 0.0) for v in args.voxels.split(",")]
    rows += [(float(v), args.end_voxel_kev) for v in args.paolina.split(",")]
    for size, end_kev in rows:
        r = blob_cut_on(events, labels, voxel_mm, TopologyReconstruction(18.0, size, end_kev, 3))
        name = f"{size or voxel_mm:g} mm" + (f", ends below {end_kev:g} keV dropped" if end_kev else "")
        report["blob_cut"][name] = r
        lines.append(f"| {name} | {r['auroc']:.3f} | " + " | ".join(formatted(r, wp) for wp in (57, 65, 72))
                     + f" | {r['single_track_signal']:.2f} / {r['single_track_background']:.2f} | "
                     + " | ".join(formatted(r, wp, "single_track_") for wp in (57, 72)) + " |")
        print(lines[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # with_name, not with_suffix: an output name may contain dots (..._cut0.001)
    args.out.with_name(args.out.name + ".json").write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_name(args.out.name + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[2:3]))


if __name__ == "__main__":
    main()
