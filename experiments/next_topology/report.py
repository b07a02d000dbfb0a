"""NEXT 0vbb topology study report: reads the run directories of the `next_topology/*` experiments and writes
the comparison with the blob cut (AUROC, background rejection at 65 % and 72 % signal efficiency, network/cut
ratio) and one ROC figure per voxel size with every network and the blob cut on the same test events.

Two classical references: the blob cut on all events, and NEXT's classical chain (single-track events, then the blob
cut; the multi-track background counts as rejected) at the same efficiency of all signal events. A second table puts
every method on the single-track events only (efficiency of the single-track signal), the topology-only comparison.

    python experiments/next_topology/report.py logs/next_topology/10mm logs/next_topology/2mm

Each argument is a run directory (of numl.train, or of numl.evaluate testing a run's checkpoint on other events)
or a multirun (sweep) directory holding run directories. Writes
tables.md, results.json, roc_<voxel>mm.png and events_<voxel>mm.png (a run's event display) to --out.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from numl.baselines.next import classical_chain_rejection, classical_chain_scores, classification_metrics
from numl.evaluate import run_config_for, with_overrides
from numl.figures.common import save_roc_curves
from numl.metrics import NEXT_WORKING_POINTS, auroc_standard_error, background_rejection_factor
from numl.pipeline import PREDICTIONS_FILE
from numl.sim.next.generator import class_names

#: the event classifier each network is, by its backbone
METHOD_BY_MODEL = {
    "numl.models.cnn3d.Dense3DCNN": "dense CNN",
    "numl.models.sparse_cnn3d.SparseCNN3D": "sparse CNN",
    "numl.models.unet3d.SparseUNet3D": "segmentation -> second-blob energy",
}
METHOD_ORDER = list(METHOD_BY_MODEL.values())
BLOB_CUT = "blob cut"
CHAIN = "single-track + blob cut (NEXT's classical chain)"
WORKING_POINTS = [round(eff * 100) for eff in NEXT_WORKING_POINTS]


def run_directories(paths: list[Path]) -> list[Path]:
    """Every directory under the given paths (or the path itself) that holds a tested run."""
    runs = []
    for path in paths:
        found = sorted(p.parent for p in path.rglob(PREDICTIONS_FILE))
        if not found:
            raise SystemExit(f"report: no {PREDICTIONS_FILE} under {path}: train the runs first (README)")
        runs += found
    return runs


def row(method: str, metrics: dict[str, float], labels: np.ndarray) -> dict:
    """One method's numbers; rejection R = n_background / k, k background events passing (error R/sqrt(k));
    a rejection of NaN is a working point the method cannot reach (the chain: too few single-track signal events)."""
    n_signal, n_background = int(labels.sum()), int((1 - labels).sum())
    out = {"method": method, "auroc": metrics["auroc"],
           "auroc_error": auroc_standard_error(metrics["auroc"], n_signal, n_background),
           "n_signal": n_signal, "n_background": n_background}
    for wp in WORKING_POINTS:
        rejection = metrics[f"background_rejection_at_{wp}"]
        out[f"rejection_at_{wp}"] = rejection
        out[f"background_passing_at_{wp}"] = round(n_background / rejection) if math.isfinite(rejection) else None
    return out


def chain_row(cut_score: np.ndarray, n_tracks: np.ndarray, labels: np.ndarray) -> dict:
    """The classical chain on all events; no AUROC (a selection and a cut are not one ranking of the events)."""
    metrics = {"auroc": float("nan"),
               **{f"background_rejection_at_{wp}": classical_chain_rejection(cut_score, n_tracks, labels, wp / 100)
                  for wp in WORKING_POINTS}}
    return row(CHAIN, metrics, labels)


def run_configs(run: Path) -> tuple[DictConfig, DictConfig]:
    """(the training run's config, the config of its test events): the same for a training run; for a
    `numl.evaluate` directory, its checkpoint's training run's config and that with the evaluation's `data` and
    `baseline` overrides (another test set)."""
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    if "model" in cfg:
        return cfg, cfg
    checkpoint = Path(json.loads((run / "test_metrics.json").read_text())["checkpoint"])
    training = run_config_for(checkpoint)
    return training, with_overrides(training, cfg)


def read_run(run: Path) -> dict:
    training, cfg = run_configs(run)
    metrics = json.loads((run / "test_metrics.json").read_text())["metrics"]
    arrays = np.load(run / PREDICTIONS_FILE)
    if "baseline/blob_cut/n_tracks" not in arrays:
        print(f"report: {run}: no track counts of the blob cut (a run from before 2026-12-06): no classical chain and "
              "no single-track table for its voxel size")
    model = cfg.model._target_
    if model not in METHOD_BY_MODEL:
        raise SystemExit(f"report: {run}: model {model} is not one of the study's ({', '.join(METHOD_BY_MODEL)})")
    return {
        "run_dir": str(run), "voxel_mm": float(cfg.data.sim.voxel_size_mm), "method": METHOD_BY_MODEL[model],
        # runs made before data.sim.sample (or data.sim.background) existed are 0vbb against one electron
        "class_names": class_names(cfg.data.sim.get("sample", "bb0nu"), cfg.data.sim.get("background", "electron")),
        "shuffle_seed": cfg.callbacks.epoch_seed.seed,
        "size": {"n_train": training.data.n_train, "n_val": training.data.n_val, "n_test": cfg.data.n_test,
                 "max_epochs": training.trainer.max_epochs, "channels": list(cfg.model.channels), "seed": cfg.seed,
                 "test_data_seed": cfg.data.seed},
        "network": {k.removeprefix("test/"): v for k, v in metrics.items() if k.startswith("test/")},
        "blob_cut": {k.removeprefix("baseline/blob_cut/"): v for k, v in metrics.items()
                     if k.startswith("baseline/blob_cut/")},
        "score": arrays["network/score"], "label": arrays["network/label"].astype(int),
        "cut_score": arrays["baseline/blob_cut/score"], "cut_label": arrays["baseline/blob_cut/label"].astype(int),
        "n_tracks": arrays["baseline/blob_cut/n_tracks"] if "baseline/blob_cut/n_tracks" in arrays else None,
    }


def check_same_events(runs: list[dict]) -> None:
    """The comparison holds only if every method saw the same test events: same labels, same blob-cut scores."""
    first = runs[0]
    for run in runs:
        same = (np.array_equal(run["label"], first["label"]) and np.array_equal(run["cut_label"], first["label"])
                and np.allclose(run["cut_score"], first["cut_score"])
                and (run["n_tracks"] is None or first["n_tracks"] is None
                     or np.array_equal(run["n_tracks"], first["n_tracks"])))
        if not same:
            raise SystemExit(f"report: {run['run_dir']} and {first['run_dir']} were tested on different events "
                             "(seed, data.n_test or data.sim differ): rerun them with the same settings")


#: a method's background rejection on the test events of the index array at a signal efficiency
Rejection = Callable[[np.ndarray, float], float]


def scored(score: np.ndarray, labels: np.ndarray) -> Rejection:
    return lambda index, efficiency: background_rejection_factor(score[index], labels[index], efficiency)


def chained(cut_score: np.ndarray, n_tracks: np.ndarray, labels: np.ndarray) -> Rejection:
    return lambda index, efficiency: classical_chain_rejection(cut_score[index], n_tracks[index], labels[index],
                                                               efficiency)


#: resamples in which a working point may be out of reach (NaN) before an interval is no longer quoted
MAX_UNREACHABLE_FRACTION = 0.01


def bootstrap_ratio(method: Rejection, reference: Rejection, n_events: int, signal_efficiency: float,
                    n_resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """68 % interval of (method rejection) / (reference rejection) at one signal efficiency, over resamplings of the
    test events shared by both (paired): it holds the correlation of the two rejections through the events and the
    movement of each working point with the signal events, which Poisson errors on the background leave out.
    NaN, NaN where more than MAX_UNREACHABLE_FRACTION of the resamples have no ratio (a class missing, or a chain
    that cannot keep so much signal): an interval over the others would describe only the reachable ones."""
    rng = np.random.default_rng(seed)
    ratios = []
    for _ in range(n_resamples):
        index = rng.integers(0, n_events, n_events)
        ratios.append(method(index, signal_efficiency) / reference(index, signal_efficiency))
    ratios = np.asarray(ratios)
    if np.isnan(ratios).mean() > MAX_UNREACHABLE_FRACTION:
        return float("nan"), float("nan")
    low, high = np.nanpercentile(ratios, [16, 84])
    return float(low), float(high)


def format_rejection(r: dict, wp: int) -> str:
    passing, value = r[f"background_passing_at_{wp}"], r[f"rejection_at_{wp}"]
    if passing is None:
        return "not reachable"
    if passing == 0:
        return f">= {r['n_background']} (none pass)"
    return f"{value:.1f} ± {value / math.sqrt(passing):.1f}"


#: the row each ratio column divides by
REFERENCE_OF = {"cut_ratio": BLOB_CUT, "chain_ratio": CHAIN}


def format_ratio(r: dict, key: str, wp: int) -> str:
    if f"{key}_at_{wp}" not in r:
        if r["method"] != REFERENCE_OF[key]:
            return ""
        return "1" if math.isfinite(r[f"rejection_at_{wp}"]) else "-"
    value, (low, high) = r[f"{key}_at_{wp}"], r[f"{key}_68_at_{wp}"]
    if not math.isfinite(value):
        return "-"
    return f"{value:.2f}" + (f" ({low:.2f}-{high:.2f})" if math.isfinite(low) else " (no interval)")


def markdown_table(rows: list[dict], references: dict[str, str]) -> str:
    """One line per row; `references` maps a ratio key of the rows to its column title."""
    header = ["voxels", "method", "AUROC", *(f"rejection at {wp} %" for wp in WORKING_POINTS),
              *(f"{title} at {wp} % (68 % paired bootstrap)" for title in references.values() for wp in WORKING_POINTS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        ratios = [format_ratio(r, key, wp) for key in references for wp in WORKING_POINTS]
        auroc = "-" if not math.isfinite(r["auroc"]) else f"{r['auroc']:.3f} ± {r['auroc_error']:.3f}"
        lines.append(f"| {r['voxel_mm']:g} mm | {r['method']} | {auroc} | "
                     + " | ".join(format_rejection(r, wp) for wp in WORKING_POINTS) + " | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


def add_ratios(r: dict, key: str, reference_row: dict, method: Rejection, reference: Rejection, n_events: int) -> None:
    """r's rejection over the reference row's at each working point, with its paired-bootstrap 68 % interval."""
    for wp in WORKING_POINTS:
        r[f"{key}_at_{wp}"] = r[f"rejection_at_{wp}"] / reference_row[f"rejection_at_{wp}"]
        r[f"{key}_68_at_{wp}"] = bootstrap_ratio(method, reference, n_events, wp / 100)


def without_nan(value):
    """The results with NaN (an unreachable working point, the chain's AUROC) as null, which strict JSON reads."""
    if isinstance(value, dict):
        return {k: without_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [without_nan(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="run or multirun directories of next_topology/* experiments")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    runs = [read_run(run) for run in run_directories(args.runs)]
    rows, single_rows, sizes = [], [], []
    for voxel_mm in sorted({r["voxel_mm"] for r in runs}, reverse=True):
        group = sorted((r for r in runs if r["voxel_mm"] == voxel_mm),
                       key=lambda r: (METHOD_ORDER.index(r["method"]), r["shuffle_seed"]))
        check_same_events(group)
        methods = [r["method"] for r in group]
        for run in group:
            # repeated trainings of one network differ only in batch order and dropout (callbacks.epoch_seed)
            if methods.count(run["method"]) > 1:
                run["method"] += f" (shuffle seed {run['shuffle_seed']})"
        labels, cut_score, n_tracks = group[0]["label"], group[0]["cut_score"], group[0]["n_tracks"]
        with_tracks = all(run["n_tracks"] is not None for run in group)
        n_events, cut_rejection = len(labels), scored(cut_score, labels)
        cut = row(BLOB_CUT, group[0]["blob_cut"], labels)
        rows.append({"voxel_mm": voxel_mm, **cut})
        curves = {BLOB_CUT: (cut_score, labels)}
        if with_tracks:
            single = n_tracks == 1
            chain, chain_rejection = chain_row(cut_score, n_tracks, labels), chained(cut_score, n_tracks, labels)
            add_ratios(chain, "cut_ratio", cut, chain_rejection, cut_rejection, n_events)
            rows.append({"voxel_mm": voxel_mm, **chain})
            single_cut = row(BLOB_CUT, classification_metrics(cut_score[single], labels[single]), labels[single])
            single_rows.append({"voxel_mm": voxel_mm, **single_cut})
            curves[CHAIN] = (classical_chain_scores(cut_score, n_tracks), labels)
            print(f"{voxel_mm:g} mm: single-track fraction {single[labels == 1].mean():.3f} of the signal, "
                  f"{single[labels == 0].mean():.3f} of the background")
        for run in group:
            network = row(run["method"], run["network"], run["label"])
            network_rejection = scored(run["score"], labels)
            add_ratios(network, "cut_ratio", cut, network_rejection, cut_rejection, n_events)
            if with_tracks:
                add_ratios(network, "chain_ratio", chain, network_rejection, chain_rejection, n_events)
                on_single = row(run["method"], classification_metrics(run["score"][single], labels[single]),
                                labels[single])
                add_ratios(on_single, "cut_ratio", single_cut, scored(run["score"][single], labels[single]),
                           scored(cut_score[single], labels[single]), int(single.sum()))
                single_rows.append({"voxel_mm": voxel_mm, **on_single})
            rows.append({"voxel_mm": voxel_mm, **network})
            sizes.append({"voxel_mm": voxel_mm, "method": run["method"], "run_dir": run["run_dir"], **run["size"]})
            curves[run["method"]] = (run["score"], run["label"])
        tag = f"{voxel_mm:g}mm"
        negative, positive = group[0]["class_names"]
        save_roc_curves(curves, args.out / f"roc_{tag}.png", positive=positive, negative=negative,
                        working_points=NEXT_WORKING_POINTS)
        shutil.copyfile(Path(group[0]["run_dir"]) / "figures" / "next_events.png", args.out / f"events_{tag}.png")

    table = markdown_table(rows, {"cut_ratio": "network/cut", "chain_ratio": "network/chain"})
    if single_rows:
        table += ("\n\nSingle-track events only (efficiency of the single-track signal):\n\n"
                  + markdown_table(single_rows, {"cut_ratio": "network/cut"}))
    print(table)
    (args.out / "tables.md").write_text(table + "\n")
    results = {"rows": rows, "single_track_rows": single_rows, "runs": sizes}
    (args.out / "results.json").write_text(json.dumps(without_nan(results), indent=2) + "\n")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
