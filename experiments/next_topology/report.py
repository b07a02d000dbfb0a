"""NEXT 0vbb topology study report: reads the run directories of the `next_topology/*` experiments and writes
the comparison with the blob cut (AUROC, background rejection at 65 % and 72 % signal efficiency, network/cut
ratio) and one ROC figure per voxel size with every network and the blob cut on the same test events.

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
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

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
    """One method's numbers; rejection R = n_background / k, k background events passing (error R/sqrt(k))."""
    n_signal, n_background = int(labels.sum()), int((1 - labels).sum())
    out = {"method": method, "auroc": metrics["auroc"],
           "auroc_error": auroc_standard_error(metrics["auroc"], n_signal, n_background),
           "n_signal": n_signal, "n_background": n_background}
    for wp in WORKING_POINTS:
        rejection = metrics[f"background_rejection_at_{wp}"]
        passing = round(n_background / rejection)
        out[f"rejection_at_{wp}"] = rejection
        out[f"background_passing_at_{wp}"] = passing
    return out


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
    }


def check_same_events(runs: list[dict]) -> None:
    """The comparison holds only if every method saw the same test events: same labels, same blob-cut scores."""
    first = runs[0]
    for run in runs:
        same = (np.array_equal(run["label"], first["label"]) and np.array_equal(run["cut_label"], first["label"])
                and np.allclose(run["cut_score"], first["cut_score"]))
        if not same:
            raise SystemExit(f"report: {run['run_dir']} and {first['run_dir']} were tested on different events "
                             "(seed, data.n_test or data.sim differ): rerun them with the same settings")


def bootstrap_cut_ratio(score: np.ndarray, cut_score: np.ndarray, labels: np.ndarray, signal_efficiency: float,
                        n_resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """68 % interval of (network rejection) / (blob-cut rejection) at one signal efficiency, over resamplings of the
    test events shared by both (paired): it holds the correlation of the two rejections through the events and the
    movement of each working point with the signal events, which Poisson errors on the background leave out."""
    rng = np.random.default_rng(seed)
    ratios = []
    for _ in range(n_resamples):
        index = rng.integers(0, len(labels), len(labels))
        ratios.append(background_rejection_factor(score[index], labels[index], signal_efficiency)
                      / background_rejection_factor(cut_score[index], labels[index], signal_efficiency))
    low, high = np.nanpercentile(ratios, [16, 84])  # NaN: a resample without one of the classes
    return float(low), float(high)


def format_rejection(r: dict, wp: int) -> str:
    passing, value = r[f"background_passing_at_{wp}"], r[f"rejection_at_{wp}"]
    if passing == 0:
        return f">= {r['n_background']} (none pass)"
    return f"{value:.1f} ± {value / math.sqrt(passing):.1f}"


def markdown_table(rows: list[dict]) -> str:
    header = ["voxels", "method", "AUROC",
              *(f"rejection at {wp} %" for wp in WORKING_POINTS),
              *(f"network/cut at {wp} % (68 % paired bootstrap)" for wp in WORKING_POINTS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        ratios = ["1" if r["method"] == BLOB_CUT else "{:.2g} ({:.1f}-{:.1f})".format(
                  r[f"cut_ratio_at_{wp}"], *r[f"cut_ratio_68_at_{wp}"]) for wp in WORKING_POINTS]
        lines.append(f"| {r['voxel_mm']:g} mm | {r['method']} | {r['auroc']:.3f} ± {r['auroc_error']:.3f} | "
                     + " | ".join(format_rejection(r, wp) for wp in WORKING_POINTS) + " | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="run or multirun directories of next_topology/* experiments")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    runs = [read_run(run) for run in run_directories(args.runs)]
    rows, sizes = [], []
    for voxel_mm in sorted({r["voxel_mm"] for r in runs}, reverse=True):
        group = sorted((r for r in runs if r["voxel_mm"] == voxel_mm),
                       key=lambda r: (METHOD_ORDER.index(r["method"]), r["shuffle_seed"]))
        check_same_events(group)
        methods = [r["method"] for r in group]
        for run in group:
            # repeated trainings of one network differ only in batch order and dropout (callbacks.epoch_seed)
            if methods.count(run["method"]) > 1:
                run["method"] += f" (shuffle seed {run['shuffle_seed']})"
        cut = row(BLOB_CUT, group[0]["blob_cut"], group[0]["label"])
        rows.append({"voxel_mm": voxel_mm, **cut})
        curves = {BLOB_CUT: (group[0]["cut_score"], group[0]["label"])}
        for run in group:
            network = row(run["method"], run["network"], run["label"])
            for wp in WORKING_POINTS:
                network[f"cut_ratio_at_{wp}"] = network[f"rejection_at_{wp}"] / cut[f"rejection_at_{wp}"]
                network[f"cut_ratio_68_at_{wp}"] = bootstrap_cut_ratio(run["score"], run["cut_score"], run["label"],
                                                                      wp / 100)
            rows.append({"voxel_mm": voxel_mm, **network})
            sizes.append({"voxel_mm": voxel_mm, "method": run["method"], "run_dir": run["run_dir"], **run["size"]})
            curves[run["method"]] = (run["score"], run["label"])
        tag = f"{voxel_mm:g}mm"
        negative, positive = group[0]["class_names"]
        save_roc_curves(curves, args.out / f"roc_{tag}.png", positive=positive, negative=negative,
                        working_points=NEXT_WORKING_POINTS)
        shutil.copyfile(Path(group[0]["run_dir"]) / "figures" / "next_events.png", args.out / f"events_{tag}.png")

    table = markdown_table(rows)
    print(table)
    (args.out / "tables.md").write_text(table + "\n")
    (args.out / "results.json").write_text(json.dumps({"rows": rows, "runs": sizes}, indent=2) + "\n")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
