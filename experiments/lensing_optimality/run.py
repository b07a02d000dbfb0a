"""How close does the CNN come to the best possible classifier?

Trains `lensing_cnn` on Gaussian and lognormal maps, noisy and noise-free, and compares its test
accuracy with the likelihood-ratio test (Bayes-optimal on Gaussian maps) and the power-spectrum
classifier on the same test maps. Prints a Markdown table and writes results.json and a bar chart.

    python experiments/lensing_optimality/run.py                       # CPU scale (see README)
    python experiments/lensing_optimality/run.py --epochs 40 --n-train 16384 --accelerator gpu
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SETTINGS = {
    "gaussian, noisy": ["data.field=gaussian"],
    "gaussian, noise-free": ["data.field=gaussian", "data.galaxy_density_arcmin2=null"],
    "lognormal, noisy": ["data.field=lognormal"],
    "lognormal, noise-free": ["data.field=lognormal", "data.galaxy_density_arcmin2=null"],
}


def run_setting(name: str, overrides: list[str], args, out_dir: Path) -> dict:
    run_dir = out_dir / name.replace(", ", "_").replace("-", "_")
    cmd = [sys.executable, "-m", "numl.train", "experiment=lensing_cnn", f"hydra.run.dir={run_dir}",
           f"trainer.max_epochs={args.epochs}", f"data.n_train={args.n_train}", f"data.n_val={args.n_val}",
           f"data.n_test={args.n_test}", f"trainer.accelerator={args.accelerator}", "callbacks.rich_progress_bar=null",
           f"seed={args.seed}", *overrides, *args.extra]
    start = time.perf_counter()
    print(f"[{name}] {' '.join(cmd[2:])}", flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    metrics = json.loads((run_dir / "test_metrics.json").read_text())["metrics"]
    metrics["train_seconds"] = time.perf_counter() - start
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--n-train", type=int, default=2048, help="fresh training maps per epoch")
    parser.add_argument("--n-val", type=int, default=512)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("extra", nargs="*", help="further Hydra overrides")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {name: run_setting(name, SETTINGS[name], args, args.out) for name in args.settings}
    (args.out / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True))

    n = args.n_test
    print("\n| maps | CNN | likelihood ratio (optimal if Gaussian) | power-spectrum classifier | CNN - optimum |"
          "\n|---|---|---|---|---|")
    for name, m in results.items():
        cnn = m["test/acc"]
        lr = m.get("baseline/likelihood_ratio/acc")
        ps = m["baseline/power_spectrum/acc"]
        err = (cnn * (1 - cnn) / n) ** 0.5
        gap = f"{100 * (cnn - lr):+.1f} pp" if lr is not None else "n/a"
        lr_text = f"{lr:.3f}" if lr is not None else "n/a (not the likelihood)"
        print(f"| {name} | {cnn:.3f} ± {err:.3f} | {lr_text} | {ps:.3f} | {gap} |")

    fig, ax = plt.subplots(figsize=(7, 4))
    names = list(results)
    for i, (key, label) in enumerate([("test/acc", "CNN"), ("baseline/likelihood_ratio/acc", "likelihood ratio"),
                                      ("baseline/power_spectrum/acc", "power spectrum")]):
        ax.bar([j + 0.27 * (i - 1) for j in range(len(names))], [results[k].get(key, 0) for k in names], 0.27,
               label=label)
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_ylim(0.5, 1.0)
    ax.set_ylabel("test accuracy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "accuracy.png", dpi=120)
    print(f"\nwrote {args.out / 'results.json'} and {args.out / 'accuracy.png'}")


if __name__ == "__main__":
    main()
