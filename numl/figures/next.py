"""Event displays for NEXT toy events: x-y and x-z projections coloured by segmentation class."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from numl.sim.next.generator import SEGMENT_CLASSES, NextEvent, NextSimConfig  # noqa: E402

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
        kind = "0vbb signal" if event.label else "single-electron background"
        row[0].set_title(f"{kind}, E = {event.energy_kev:.0f} keV, {cfg.voxel_size_mm:g} mm voxels", fontsize=9)
        row[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
