"""Figures of a PETALO generator against the simulator at the same true interaction points: example SiPM
images side by side, and the total-charge and charge-centroid residual distributions overlaid with their
Poisson error bands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from numl.baselines.petalo import CentroidRMap
from numl.explain.generative import histogram_with_error, window_charge_pe
from numl.figures.common import plt, save_figure
from numl.sim.petalo import COORDINATES


def draw_petalo(datamodule: Any, predictions: dict[str, torch.Tensor], baselines: dict, output_dir: Path) -> list[Path]:
    """The run's test events (simulated) beside the generator's events at their true points (the predictions)."""
    output_dir = Path(output_dir)
    simulated = datamodule.events("test")
    generated_charge = predictions["generated_sipm_pattern"].numpy()[:, :2]
    n = len(generated_charge)  # fast_dev_run predicts only the first batch
    simulated = {k: v[:n] for k, v in simulated.items()}
    centroid = CentroidRMap(datamodule.config).fit(datamodule.events("train"))
    return [plot_side_by_side(simulated["sipm_charge"], generated_charge, simulated["position_mm"],
                              output_dir / "generated_vs_simulated_events.png"),
            plot_total_charge(simulated["sipm_charge"], generated_charge, output_dir / "total_charge.png"),
            plot_centroid_residuals(simulated, generated_charge, centroid, output_dir / "centroid_residuals.png")]


def plot_side_by_side(simulated_charge: np.ndarray, generated_charge: np.ndarray, position_mm: np.ndarray,
                      path: Path, n_events: int = 4) -> Path:
    """Inner-face charge of a few events: simulated (top) and generated (bottom) at the same true point."""
    n_events = min(n_events, len(simulated_charge))
    fig, axes = plt.subplots(2, n_events, figsize=(3.0 * n_events, 4.8), squeeze=False)
    for j in range(n_events):
        vmax = max(simulated_charge[j, 0].max(), 1.0)
        for row, (name, charge) in enumerate((("simulated", simulated_charge), ("generated", generated_charge))):
            ax = axes[row, j]
            image = ax.imshow(charge[j, 0], origin="lower", aspect="auto", cmap="viridis", vmin=0, vmax=vmax)
            fig.colorbar(image, ax=ax, label="pe")
            r, rphi, z = position_mm[j]
            ax.set_title(f"{name}: r={r:.0f}, r*phi={rphi:.1f}, z={z:.0f} mm", fontsize=7)
            ax.set_xlabel("phi column")
            ax.set_ylabel("z row")
    return save_figure(fig, path, dpi=110)


def _overlay(ax, simulated: np.ndarray, generated: np.ndarray, edges: np.ndarray, xlabel: str) -> None:
    centres = 0.5 * (edges[1:] + edges[:-1])
    for name, values, colour in (("simulated", simulated, "C0"), ("generated", generated, "C1")):
        density, error = histogram_with_error(values, edges)
        ax.step(centres, density, where="mid", color=colour, label=name)
        ax.fill_between(centres, density - error, density + error, step="mid", color=colour, alpha=0.3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("events (normalised)")
    ax.legend(fontsize=8)


def plot_total_charge(simulated_charge: np.ndarray, generated_charge: np.ndarray, path: Path) -> Path:
    simulated, generated = window_charge_pe(simulated_charge), window_charge_pe(generated_charge)
    lo, hi = np.percentile(np.concatenate([simulated, generated]), [0.5, 99.5])
    fig, ax = plt.subplots(figsize=(5, 3.6))
    _overlay(ax, simulated, generated, np.linspace(lo, hi, 41), "total charge in the readout window [pe]")
    ax.set_title("photopeak events, same true points; bands: Poisson 1 sigma", fontsize=8)
    return save_figure(fig, path)


def plot_centroid_residuals(simulated: dict[str, np.ndarray], generated_charge: np.ndarray, centroid: CentroidRMap,
                            path: Path) -> Path:
    """Charge centroid (+ r-map) minus the true point, per coordinate, for simulated and generated patterns."""
    true_mm = simulated["position_mm"]
    residual_sim = centroid.predict(simulated["sipm_charge"]) - true_mm
    residual_gen = centroid.predict(generated_charge) - true_mm
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for i, (ax, name) in enumerate(zip(axes, COORDINATES, strict=True)):
        lo, hi = np.nanpercentile(residual_sim[:, i], [2, 98])
        _overlay(ax, residual_sim[:, i], residual_gen[:, i], np.linspace(lo, hi, 41),
                 f"centroid {name} - true {name} [mm]")
    return save_figure(fig, path)
