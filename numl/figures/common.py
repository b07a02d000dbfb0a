"""Figures every domain shares (ROC curves, regression scatter, training curves), saved as PNGs."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # runs write PNGs on headless nodes
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def save_roc_curve(scores, labels, path: Path, positive: str = "signal", negative: str = "background",
                   extra_curves: dict[str, tuple] | None = None) -> Path:
    """ROC as signal efficiency vs background rejection; `extra_curves` adds e.g. the baseline's."""
    fig, ax = plt.subplots(figsize=(5, 4.5))
    curves = {"network": (scores, labels), **(extra_curves or {})}
    for name, (s, y) in curves.items():
        fpr, tpr, _ = roc_curve(_np(y).astype(int), _np(s))
        ax.plot(tpr, 1 - fpr, label=name)
    ax.set_xlabel(f"{positive} efficiency")
    ax.set_ylabel(f"{negative} rejection (1 - FPR)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def save_regression_scatter(truth, predicted, sigma, path: Path, name: str) -> Path:
    truth, predicted, sigma = _np(truth), _np(predicted), _np(sigma)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    axes[0].errorbar(truth, predicted, yerr=sigma, fmt=".", alpha=0.4, ms=3)
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
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


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
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
