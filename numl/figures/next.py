"""NEXT figures: event displays (x-y and x-z projections coloured by segmentation class), background
rejection against signal efficiency of the network (classifier or segmentation) beside the blob cut, and the
blob cut's two blob energies per class (the plot NEXT publishes for its topology cut)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from numl.baselines.base import BaselineResult
from numl.figures.common import plt, save_figure, save_roc_curves, score_curves
from numl.metrics import NEXT_WORKING_POINTS, signal_efficiency_threshold
from numl.sim.next.generator import SEGMENT_CLASSES, NextEvent, NextSimConfig

SEGMENT_COLOURS = ("tab:blue", "tab:red", "tab:green")


def save_event_displays(events: list[NextEvent], cfg: NextSimConfig, path: Path) -> Path:
    """First signal and first background event: voxels projected on x-y and x-z, marker area ~ energy."""
    chosen = [next(e for e in events if e.label == lab) for lab in (1, 0) if any(e.label == lab for e in events)]
    fig, axes = plt.subplots(len(chosen), 2, figsize=(8, 4 * len(chosen)), squeeze=False)
    for row, event in zip(axes, chosen, strict=True):
        mm = event.voxel_centres_mm(cfg.voxel_size_mm)
        size = 4 + 60 * event.voxel_energy_kev / event.voxel_energy_kev.max()
        for ax, (i, j) in zip(row, ((0, 1), (0, 2)), strict=True):
            for c, name in enumerate(SEGMENT_CLASSES):
                sel = event.voxel_segment == c
                ax.scatter(mm[sel, i], mm[sel, j], s=size[sel], c=SEGMENT_COLOURS[c], label=name, alpha=0.7)
            ax.set_xlabel(f"{'xyz'[i]} (mm)")
            ax.set_ylabel(f"{'xyz'[j]} (mm)")
            ax.set_aspect("equal", adjustable="datalim")
        kind = cfg.class_names[event.label]
        row[0].set_title(f"{kind}, E = {event.energy_kev:.0f} keV, {cfg.voxel_size_mm:g} mm voxels", fontsize=9)
        row[0].legend(fontsize=7)
    return save_figure(fig, path, dpi=110)


def save_blob_energies(blob1_kev: np.ndarray, blob2_kev: np.ndarray, labels: np.ndarray,
                       class_names: tuple[str, str], path: Path, working_points: tuple[float, ...] = ()) -> Path:
    """Left: the smaller blob's energy per class, with the cut at each signal-efficiency working point; right:
    the larger blob against the smaller per class (two Bragg peaks put an event near the diagonal; one puts it at
    the left, with a small smaller blob)."""
    labels = np.asarray(labels).astype(int)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    top = float(np.quantile(np.concatenate([blob1_kev, blob2_kev]), 0.995)) if len(labels) else 1.0
    bins = np.linspace(0, top, 41)
    for lab, colour in ((0, "tab:blue"), (1, "tab:red")):
        sel = labels == lab
        left.hist(blob2_kev[sel], bins=bins, histtype="step", density=True, color=colour,
                  label=f"{class_names[lab]} ({sel.sum()})")
        right.scatter(blob2_kev[sel], blob1_kev[sel], s=4, alpha=0.4, color=colour, label=class_names[lab])
    signal = torch.as_tensor(blob2_kev[labels == 1])
    for efficiency, style in zip(working_points if len(signal) else (), (":", "--", "-."), strict=False):
        # the same cut as the rejection metrics: events at or above it pass
        cut = float(signal_efficiency_threshold(signal, efficiency))
        left.axvline(cut, color="grey", lw=0.9, ls=style, label=f"cut at {efficiency:.0%} signal efficiency")
    left.set_xlabel("smaller blob energy (keV)")
    left.set_ylabel("events (normalised)")
    left.legend(fontsize=8)
    right.plot([0, top], [0, top], "k--", lw=0.7)
    right.set_xlim(0, top)
    right.set_ylim(0, top)
    right.set_xlabel("smaller blob energy (keV)")
    right.set_ylabel("larger blob energy (keV)")
    right.legend(fontsize=8, markerscale=3)
    return save_figure(fig, path)


def draw(datamodule: Any, predictions: dict[str, torch.Tensor], baselines: dict[str, BaselineResult],
         output_dir: Path) -> list[Path]:
    output_dir = Path(output_dir)
    paths = [save_event_displays(datamodule.events("test"), datamodule.sim, output_dir / "next_events.png")]
    curves = score_curves(predictions, baselines)
    if curves:
        negative, positive = datamodule.sim.class_names
        paths.append(save_roc_curves(curves, output_dir / "background_rejection_vs_efficiency.png",
                                     positive=positive, negative=negative, working_points=NEXT_WORKING_POINTS))
    for result in baselines.values():
        if "blob1_kev" in result.outputs:
            out = result.outputs
            paths.append(save_blob_energies(out["blob1_kev"], out["score"], out["label"], datamodule.sim.class_names,
                                            output_dir / "blob_energies.png", working_points=NEXT_WORKING_POINTS))
    return paths
