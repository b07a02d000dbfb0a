"""PNG figures of attributions for any input layout: maps, overlays, class-averaged attributions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from numl.figures.common import plt, save_figure


def as_image(event: torch.Tensor | np.ndarray, channel: int = 0) -> np.ndarray:
    """One event as a 2D array: a channel of a map [C, H, W]; a channel of a voxel grid [C, X, Y, Z]
    summed along its last axis (projection); a hit set [N, F] as hits x features; a vector as one row."""
    a = event.detach().cpu().numpy() if isinstance(event, torch.Tensor) else np.asarray(event)
    if a.ndim == 3:
        return a[channel]
    if a.ndim == 4:
        return a[channel].sum(axis=-1)
    if a.ndim == 2:
        return a
    return a.reshape(1, -1)


def _symmetric_limits(a: np.ndarray) -> dict[str, float]:
    vmax = float(np.abs(a).max()) or 1.0
    return {"vmin": -vmax, "vmax": vmax}


def save_attribution_figures(inputs: torch.Tensor, attributions: torch.Tensor, output_dir: Path,
                             labels: torch.Tensor | None = None, input_name: str = "input", method: str = "",
                             n_examples: int = 4, channel: int = 0) -> list[Path]:
    """input_maps.png, attribution_overlay.png and, with labels, class_mean_attribution.png."""
    output_dir = Path(output_dir)
    n = min(n_examples, len(inputs))
    title = f"{method} attribution" if method else "attribution"
    paths = []

    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.2), squeeze=False)
    for i in range(n):
        img = as_image(inputs[i], channel)
        im = axes[0, i].imshow(img, cmap="viridis", origin="lower", aspect="auto")
        fig.colorbar(im, ax=axes[0, i], fraction=0.046)
        label = f", label {int(labels[i])}" if labels is not None else ""
        axes[0, i].set_title(f"{input_name} {i}{label}", fontsize=9)
    paths.append(save_figure(fig, output_dir / "input_maps.png"))

    fig, axes = plt.subplots(2, n, figsize=(3.2 * n, 6.2), squeeze=False)
    for i in range(n):
        img, attr = as_image(inputs[i], channel), as_image(attributions[i], channel)
        im = axes[0, i].imshow(attr, cmap="RdBu_r", origin="lower", aspect="auto", **_symmetric_limits(attr))
        fig.colorbar(im, ax=axes[0, i], fraction=0.046)
        axes[0, i].set_title(f"{title} {i}", fontsize=9)
        # Overlay: the input in grey, the 5 % largest |attribution| outlined on top of it.
        axes[1, i].imshow(img, cmap="gray", origin="lower", aspect="auto")
        strength = np.abs(attr)
        threshold = np.quantile(strength, 0.95)
        masked = np.ma.masked_less(strength, threshold)
        axes[1, i].imshow(masked, cmap="autumn", origin="lower", aspect="auto", alpha=0.75)
        axes[1, i].set_title(f"top 5 % |attribution| on {input_name}", fontsize=8)
    paths.append(save_figure(fig, output_dir / "attribution_overlay.png"))

    if labels is not None:
        classes = sorted(int(c) for c in torch.unique(labels.long()))
        means = {c: as_image(attributions[labels.long() == c].mean(0), channel) for c in classes}
        panels = [(f"mean {title}, class {c}", m) for c, m in means.items()]
        if len(classes) == 2:
            panels.append((f"class {classes[1]} - class {classes[0]}", means[classes[1]] - means[classes[0]]))
        fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.2), squeeze=False)
        for ax, (name, img) in zip(axes[0], panels, strict=True):
            im = ax.imshow(img, cmap="RdBu_r", origin="lower", aspect="auto", **_symmetric_limits(img))
            fig.colorbar(im, ax=ax, fraction=0.046)
            ax.set_title(name, fontsize=9)
        paths.append(save_figure(fig, output_dir / "class_mean_attribution.png"))
    return paths
