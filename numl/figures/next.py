"""NEXT figures: event displays (x-y and x-z projections coloured by segmentation class), and background
rejection against signal efficiency of the network (classifier or segmentation) beside the blob cut."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from numl.baselines.base import BaselineResult
from numl.figures.common import plt, save_figure, save_roc_curves, score_curves
from numl.metrics import NEXT_WORKING_POINTS
from numl.sim.next.generator import SEGMENT_CLASSES, NextEvent, NextSimConfig

SEGMENT_COLOURS = ("tab:blue", "tab:red", "tab:green")


def save_event_displays(events: list[NextEvent], cfg: NextSimConfig, path: Path) -> Path:
    """First signal and first background event: voxels projected on x-y and x-z, marker area ~ energy."""
    chosen = [next(e for e in events if e.label == lab) for lab in (1, 0) if any(e.label == lab for e in events)]
    fig, axes = plt.subplots(len(chosen), 2, figsize=(8, 4 * len(chosen)), squeeze=False)
    for row, event in zip(axes, chosen, strict=True):
        mm = (event.voxel_index + 0.5) * cfg.voxel_size_mm
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


def draw(datamodule: Any, predictions: dict[str, torch.Tensor], baselines: dict[str, BaselineResult],
         output_dir: Path) -> list[Path]:
    output_dir = Path(output_dir)
    paths = [save_event_displays(datamodule.events("test"), datamodule.sim, output_dir / "next_events.png")]
    curves = score_curves(predictions, baselines)
    if curves:
        negative, positive = datamodule.sim.class_names
        paths.append(save_roc_curves(curves, output_dir / "background_rejection_vs_efficiency.png",
                                     positive=positive, negative=negative, working_points=NEXT_WORKING_POINTS))
    return paths
