"""PETALO figures: example SiPM images; for the position task the residuals, resolution vs depth (network beside
the centroid baseline), calibration of the predicted error and efficiency vs resolution under a cut on it; for
the tagger the ROC beside the classical charge-spread score."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from numl.baselines.base import BaselineResult
from numl.figures.common import plt, save_figure, save_roc_curves, score_curves
from numl.metrics import fwhm, position_coverage, sigma_cut_curve
from numl.sim.petalo import COORDINATES, PetaloConfig


def draw(datamodule: Any, predictions: dict[str, torch.Tensor], baselines: dict[str, BaselineResult],
         output_dir: Path) -> list[Path]:
    output_dir = Path(output_dir)
    paths = [plot_example_events(datamodule.events("test"), datamodule.config, output_dir / "example_events.png")]
    if "position_mm_pred" in predictions:
        p = {k: v.numpy() for k, v in predictions.items()}
        # the test loader is not shuffled: predictions cover the first test events (all but in fast_dev_run)
        baseline_mm = next((r.outputs["position_mm_pred"][: len(p["position_mm"])] for r in baselines.values()
                            if "position_mm_pred" in r.outputs), None)
        paths += [plot_residuals(p, output_dir / "position_residuals.png", baseline_mm),
                  plot_resolution_vs_depth(p, output_dir / "resolution_vs_depth.png", baseline_mm)[0],
                  plot_sigma_cut(p, output_dir / "z_sigma_cut.png"),
                  plot_calibration(p, output_dir / "calibration.png")]
    curves = score_curves(predictions, baselines)
    if curves:
        paths.append(save_roc_curves(curves, output_dir / "tagger_roc.png", positive="multi-site (discarded)",
                                     negative="single-site"))
    return paths


def plot_example_events(events: dict[str, np.ndarray], config: PetaloConfig, path: Path, n_events: int = 3) -> Path:
    """Inner- and outer-face charge images of a few events, with their true depth and multi-site flag."""


    fig, axes = plt.subplots(2, n_events, figsize=(3.2 * n_events, 4.6), squeeze=False)
    for j in range(min(n_events, len(events["sipm_charge"]))):
        depth = events["position_mm"][j, 0] - config.inner_radius_mm
        for face, name in enumerate(("inner", "outer")):
            ax = axes[face, j]
            image = ax.imshow(events["sipm_charge"][j, face], origin="lower", aspect="auto", cmap="viridis")
            fig.colorbar(image, ax=ax, label="pe")
            ax.set_title(
                f"{name} face, depth {depth:.1f} mm" + (", multi-site" if events["multi_site"][j] else ""), fontsize=8
            )
            ax.set_xlabel("phi column")
            ax.set_ylabel("z row")
    return save_figure(fig, path, dpi=110)


def plot_residuals(predictions: dict[str, Any], path: Path, baseline_mm: np.ndarray | None = None) -> Path:
    """Residual histograms per coordinate, network (and centroid baseline when given)."""
    pred, true = np.asarray(predictions["position_mm_pred"]), np.asarray(predictions["position_mm"])
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for i, (ax, name) in enumerate(zip(axes, COORDINATES, strict=True)):
        curves = {"network": pred[:, i] - true[:, i]}
        if baseline_mm is not None:
            curves["centroid + r-map"] = np.asarray(baseline_mm)[:, i] - true[:, i]
        for label, res in curves.items():
            res = res[np.isfinite(res)]
            ax.hist(res, bins=120, range=(-15, 15), histtype="step", label=f"{label}: FWHM {fwhm(res):.2f} mm")
        ax.set_xlabel(f"{name} predicted - true [mm]")
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_sigma_cut(predictions: dict[str, Any], path: Path) -> Path:
    """Efficiency vs z resolution for cuts on the predicted z error (the seed's 12 mm among them)."""
    rows = sigma_cut_curve(predictions)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot([r["efficiency"] for r in rows], [r["fwhm_mm"] for r in rows], "o-", label="FWHM")
    ax.plot([r["efficiency"] for r in rows], [r["rms_mm"] for r in rows], "s--", label="RMS")
    for r in rows:
        ax.annotate(f"<{r['cut_mm']:g}", (r["efficiency"], r["rms_mm"]), fontsize=6)
    ax.set_xlabel("efficiency (fraction kept)")
    ax.set_ylabel("z resolution of kept events [mm]")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def plot_calibration(predictions: dict[str, Any], path: Path, sigma_key: str = "sigma_mm") -> Path:
    """Pulls (predicted - true) / predicted sigma per coordinate against N(0, 1), with 1-sigma coverage."""
    pred, true = np.asarray(predictions["position_mm_pred"]), np.asarray(predictions["position_mm"])
    sigma = np.asarray(predictions[sigma_key])
    cover = position_coverage(predictions, sigma_key)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    x = np.linspace(-5, 5, 200)
    for i, (ax, name) in enumerate(zip(axes, COORDINATES, strict=True)):
        pull = (pred[:, i] - true[:, i]) / sigma[:, i]
        ax.hist(pull[np.isfinite(pull)], bins=80, range=(-5, 5), density=True, alpha=0.6)
        ax.plot(x, np.exp(-(x**2) / 2) / np.sqrt(2 * np.pi), "k", lw=1)
        kind = "network's own sigma" if sigma_key == "sigma_raw_mm" else "calibrated sigma"
        ax.set_title(f"{name}: {100 * cover[name]:.1f} % within 1 sigma ({kind})", fontsize=9)
        ax.set_xlabel("pull")
    return save_figure(fig, path)


def plot_resolution_vs_depth(
    predictions: dict[str, Any],
    path: Path,
    baseline_mm: np.ndarray | None = None,
    depth_edges_mm: np.ndarray | None = None,
) -> tuple[Path, list[dict[str, float]]]:
    """FWHM per coordinate in bins of true depth, network vs baseline; returns the table too."""
    depth = np.asarray(predictions["depth_mm"])
    edges = np.linspace(0, float(np.nanmax(depth)) + 1e-6, 6) if depth_edges_mm is None else depth_edges_mm
    pred, true = np.asarray(predictions["position_mm_pred"]), np.asarray(predictions["position_mm"])
    methods = {"network": pred}
    if baseline_mm is not None:
        methods["centroid + r-map"] = np.asarray(baseline_mm)
    table = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (depth >= lo) & (depth < hi)
        row = {"depth_lo_mm": float(lo), "depth_hi_mm": float(hi), "n": int(sel.sum())}
        for label, p in methods.items():
            key = "net" if label == "network" else "base"
            for i, name in enumerate(COORDINATES):
                row[f"{key}_{name}_fwhm_mm"] = fwhm(p[sel, i] - true[sel, i])
        table.append(row)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    centres = 0.5 * (edges[1:] + edges[:-1])
    for ax, name in zip(axes, COORDINATES, strict=True):
        for label in methods:
            key = "net" if label == "network" else "base"
            ax.plot(centres, [r[f"{key}_{name}_fwhm_mm"] for r in table], "o-", label=label)
        ax.set_xlabel("true depth in LXe [mm]")
        ax.set_ylabel(f"{name} FWHM [mm]")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, path), table
