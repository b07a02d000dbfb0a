"""Lensing optimality report: the CNN against the likelihood ratio and the power-spectrum classifier.

Reads the run directories of `python -m numl.train -m experiment=lensing_optimality/...` (each run's
test_metrics.json and .hydra/config.yaml), prints the Markdown table of test accuracies beside the
numbers this study published before (128 px, 2026-11-23), and writes results/tables.md,
results/results.json, figures/accuracy.png and copies of the noisy Gaussian run's own figures.

    python experiments/lensing_optimality/report.py /tmp/studies/lensing_optimality/n_pix64
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from omegaconf import OmegaConf

from numl.figures.common import plt

HERE = Path(__file__).resolve().parent
SETTINGS = ("Gaussian, noisy", "Gaussian, noise-free", "lognormal, noisy", "lognormal, noise-free")
CLASSIFIERS = {"CNN": "test", "likelihood ratio": "baseline/likelihood_ratio",
               "power spectrum": "baseline/power_spectrum"}
# The table this study published before the restructure: 128 x 128 px, 5 epochs x 2048 fresh maps,
# 2000 test maps, the same 2-core CPU (README of 2026-11-23). Accuracy, AUROC.
BEFORE = {
    "Gaussian, noisy": {"CNN": (0.837, 0.923), "likelihood ratio": (0.845, 0.933), "power spectrum": (0.833, 0.916)},
    "Gaussian, noise-free": {"CNN": (0.997, 1.000), "likelihood ratio": (0.998, 1.000),
                             "power spectrum": (0.996, 1.000)},
    "lognormal, noisy": {"CNN": (0.793, 0.874), "power spectrum": (0.765, 0.842)},
    "lognormal, noise-free": {"CNN": (0.989, 0.999), "power spectrum": (0.874, 0.947)},
}
BEFORE_LABEL = "before (128 px, 5 x 2048 maps, 2000 test maps, 2026-11-23)"
# Figures that the noisy Gaussian run draws itself (numl.figures.lensing and the training history).
RUN_FIGURES = ("roc_vs_baselines.png", "power_spectra.png", "example_maps.png", "training_history.png")


def setting_name(cfg) -> str:
    field = "Gaussian" if cfg.data.field == "gaussian" else "lognormal"
    return f"{field}, {'noise-free' if cfg.data.galaxy_density_arcmin2 is None else 'noisy'}"


def read_run(run_dir: Path) -> dict:
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    metrics = json.loads((run_dir / "test_metrics.json").read_text())["metrics"]
    # Wall time of the whole run (simulation, training, test, baselines): config written first, metrics last.
    wall_s = (run_dir / "test_metrics.json").stat().st_mtime - (run_dir / ".hydra" / "config.yaml").stat().st_mtime
    return {
        "setting": setting_name(cfg), "run_dir": str(run_dir), "wall_minutes": wall_s / 60,
        "size": {"n_pix": cfg.data.n_pix, "epochs": cfg.trainer.max_epochs, "n_train": cfg.data.n_train,
                 "n_val": cfg.data.n_val, "n_test": cfg.data.n_test},
        **{name: {"acc": metrics[f"{prefix}/acc"], "auroc": metrics[f"{prefix}/auroc"]}
           for name, prefix in CLASSIFIERS.items() if f"{prefix}/acc" in metrics},
    }


def accuracy_text(acc: float, auroc: float, n_test: int | None = None) -> str:
    error = f" ± {(acc * (1 - acc) / n_test) ** 0.5:.3f}" if n_test else ""
    return f"{acc:.3f}{error} (AUROC {auroc:.3f})"


def gap_text(accuracies: dict) -> str:
    """CNN minus the optimum on Gaussian maps; on lognormal maps, CNN minus the power spectrum."""
    reference = "likelihood ratio" if "likelihood ratio" in accuracies else "power spectrum"
    return f"CNN - {reference}: {100 * (accuracies['CNN'] - accuracies[reference]):+.1f} pp"


def size_label(size: dict) -> str:
    return f"{size['n_pix']} px, {size['epochs']} x {size['n_train']} maps, {size['n_test']} test maps"


def table(runs_by_size: dict[str, dict[str, dict]]) -> str:
    """One row per classifier and setting; the published numbers, then one column per size run now."""
    sizes = list(runs_by_size)
    lines = [f"| maps | classifier | {BEFORE_LABEL} | " + " | ".join(f"now ({s}, 2026-12-01)" for s in sizes) + " |",
             "|---" * (3 + len(sizes)) + "|"]
    for setting in SETTINGS:
        runs = [runs_by_size[s].get(setting) for s in sizes]
        if not any(runs):
            continue
        before = BEFORE[setting]
        for name in before:
            cells = [accuracy_text(r[name]["acc"], r[name]["auroc"], r["size"]["n_test"]) if r else "not run"
                     for r in runs]
            lines.append(f"| {setting} | {name} | {accuracy_text(*before[name])} | " + " | ".join(cells) + " |")
        cells = [gap_text({k: r[k]["acc"] for k in CLASSIFIERS if k in r}) if r else "" for r in runs]
        lines.append(f"| {setting} | difference | {gap_text({k: v[0] for k, v in before.items()})} | "
                     + " | ".join(cells) + " |")
    lines += ["", "| maps | " + " | ".join(f"wall time now, {s} (min)" for s in sizes) + " |",
              "|---" * (1 + len(sizes)) + "|"]
    for setting in SETTINGS:
        cells = [f"{runs_by_size[s][setting]['wall_minutes']:.1f}" if setting in runs_by_size[s] else "" for s in sizes]
        if any(cells):
            lines.append(f"| {setting} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_accuracy(runs: dict[str, dict], path: Path) -> None:
    names = [s for s in SETTINGS if s in runs]
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, classifier in enumerate(CLASSIFIERS):
        xs = [j + 0.27 * (i - 1) for j, s in enumerate(names) if classifier in runs[s]]
        ys = [runs[s][classifier]["acc"] for s in names if classifier in runs[s]]
        ax.bar(xs, ys, 0.27, label=classifier)
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_ylim(0.5, 1.0)
    ax.set_ylabel("test accuracy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", type=Path, nargs="+",
                        help="multirun sweep dirs (one subdir per setting) or single run dirs; one column per size")
    args = parser.parse_args()
    runs_by_size: dict[str, dict[str, dict]] = {}
    for directory in args.run_dirs:
        for metrics_file in sorted([*directory.glob("test_metrics.json"), *directory.glob("*/test_metrics.json")]):
            run = read_run(metrics_file.parent)
            runs_by_size.setdefault(size_label(run["size"]), {})[run["setting"]] = run
    if not runs_by_size:
        raise SystemExit(f"no run directory with test_metrics.json in {[str(d) for d in args.run_dirs]}")
    markdown = table(runs_by_size)
    print(markdown)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "figures").mkdir(exist_ok=True)
    (HERE / "results" / "tables.md").write_text(markdown + "\n")
    (HERE / "results" / "results.json").write_text(json.dumps(runs_by_size, indent=2, sort_keys=True))
    # Figures from the first size given (the complete set of settings).
    runs = next(iter(runs_by_size.values()))
    plot_accuracy(runs, HERE / "figures" / "accuracy.png")
    if "Gaussian, noisy" in runs:
        figures = Path(runs["Gaussian, noisy"]["run_dir"]) / "figures"
        for name in RUN_FIGURES:
            shutil.copyfile(figures / name, HERE / "figures" / name)
    print(f"\nwrote {HERE / 'results'} and {HERE / 'figures'}")


if __name__ == "__main__":
    main()
