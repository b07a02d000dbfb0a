"""What every domain's figures share: the one place that sets matplotlib's backend, saving a figure, the ROC
plotter, regression scatter and pulls, and training curves.

Figures receive what they draw (predictions, baseline outputs, events) and read nothing else.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # runs write PNGs on headless nodes: set once, here, before pyplot is imported anywhere
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import roc_auc_score, roc_curve  # noqa: E402


def as_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def save_figure(fig, path: Path, dpi: int = 120, tight: bool = True) -> Path:
    """tight_layout (not with a colorbar that spans axes), write the PNG (creating its folder), free the figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def score_curves(predictions: dict, baselines: dict) -> dict[str, tuple]:
    """{legend name: (scores, labels)} of the network and of every baseline that scores events."""
    curves = {"network": (predictions["score"], predictions["label"])} if "score" in predictions else {}
    for result in baselines.values():
        if "score" in result.outputs:
            curves[result.label] = (result.outputs["score"], result.outputs["label"])
    return curves


def save_roc_curves(curves: dict[str, tuple], path: Path, positive: str = "signal", negative: str = "background",
                    working_points: tuple[float, ...] = ()) -> Path:
    """Background rejection factor 1/eps_b against signal efficiency for several discriminants on the same
    events, each {legend name: (scores, labels with 1 = positive)}; AUROC in the legend, dotted working points."""
    fig, ax = plt.subplots(figsize=(5.5, 4.4))
    for name, (scores, labels) in curves.items():
        labels, scores = as_numpy(labels).astype(int), as_numpy(scores)
        fpr, tpr, _ = roc_curve(labels, scores)
        passing = fpr > 0
        ax.plot(tpr[passing], 1 / fpr[passing], label=f"{name} (AUROC {roc_auc_score(labels, scores):.3f})")
    for efficiency in working_points:
        ax.axvline(efficiency, color="grey", lw=0.7, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel(f"{positive} efficiency")
    ax.set_ylabel(f"{negative} rejection factor 1/eps_b")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def save_regression_scatter(truth, predicted, sigma, path: Path, name: str) -> Path:
    truth, predicted, sigma = as_numpy(truth), as_numpy(predicted), as_numpy(sigma)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    if len(truth) <= 200:
        axes[0].errorbar(truth, predicted, yerr=sigma, fmt=".", alpha=0.4, ms=3)
    else:  # error bars of many events hide the points
        axes[0].plot(truth, predicted, ".", alpha=0.2, ms=3)
    values = np.unique(truth)
    if len(values) <= 20 < len(truth):  # a grid of true values (cosmologies): where each one's estimates lie
        mean = np.array([predicted[truth == v].mean() for v in values])
        spread = np.array([predicted[truth == v].std() for v in values])
        axes[0].errorbar(values, mean, yerr=spread, fmt="o", color="k", capsize=3, label="mean +- spread")
        axes[0].legend(fontsize=8)
    lo, hi = float(truth.min()), float(truth.max())
    axes[0].plot([lo, hi], [lo, hi], "k--", lw=1)
    axes[0].set_xlabel(f"true {name}")
    axes[0].set_ylabel(f"predicted {name}")
    pull = (predicted - truth) / np.maximum(sigma, 1e-12)
    axes[1].hist(pull, bins=40, range=(-5, 5), density=True, alpha=0.7, label="pulls")
    x = np.linspace(-5, 5, 200)
    axes[1].plot(x, np.exp(-x**2 / 2) / np.sqrt(2 * np.pi), "k", lw=1, label="N(0, 1)")
    axes[1].set_xlabel("(pred - true) / predicted sigma")
    axes[1].legend()
    return save_figure(fig, path)


def save_regression_figures(predictions: dict[str, torch.Tensor], output_dir: Path) -> list[Path]:
    """Scatter and pulls for every regressed quantity: predictions with `<key>_pred` and `<key>_sigma`."""
    keys = [k.removesuffix("_pred") for k in predictions if k.endswith("_pred") and f"{k[:-5]}_sigma" in predictions]
    return [save_regression_scatter(predictions[k], predictions[f"{k}_pred"], predictions[f"{k}_sigma"],
                                    Path(output_dir) / f"{k}_regression.png", name=k) for k in keys if k in predictions]


def save_metric_history(metrics_csv: Path, path: Path) -> Path | None:
    """Loss and accuracy (or any val/ metric) per epoch from Lightning's CSV log."""
    import csv

    if not metrics_csv.is_file():
        return None
    with metrics_csv.open() as f:
        rows = list(csv.DictReader(f))
    series: dict[str, dict[int, float]] = {}
    for row in rows:
        if not row.get("epoch"):
            continue
        epoch = int(float(row["epoch"]))
        for key, value in row.items():
            if value and key.endswith("_epoch") or (value and key.startswith("val/")):
                series.setdefault(key.removesuffix("_epoch"), {})[epoch] = float(value)
    if not series:
        return None
    losses = {k: v for k, v in series.items() if k.endswith("loss")}
    others = {k: v for k, v in series.items() if not k.endswith("loss")}
    fig, axes = plt.subplots(1, 2 if others else 1, figsize=(10 if others else 5, 4), squeeze=False)
    for key, values in losses.items():
        axes[0, 0].plot(list(values), list(values.values()), marker="o", label=key)
    axes[0, 0].set_xlabel("epoch")
    axes[0, 0].set_ylabel("loss")
    axes[0, 0].legend()
    if others:
        for key, values in others.items():
            axes[0, 1].plot(list(values), list(values.values()), marker="o", label=key)
        axes[0, 1].set_xlabel("epoch")
        axes[0, 1].legend()
    return save_figure(fig, path)
