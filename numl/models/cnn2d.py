"""2D convolutional networks for maps (convergence maps, SiPM images).

Convergence maps are periodic flat-sky patches, so convolutions pad circularly by default: the
network then sees the same statistics at the edges as in the middle.
"""

from __future__ import annotations

import torch
from torch import nn

from numl.utils.errors import ConfigError, check_choice, check_positive, check_range


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    return nn.Identity()


class ConvBlock(nn.Module):
    """conv -> norm -> activation, twice; with `residual` the input is added back (ResNet basic block)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, norm: str, padding_mode: str,
                 residual: bool) -> None:
        super().__init__()
        conv = {"kernel_size": kernel_size, "padding": kernel_size // 2, "padding_mode": padding_mode,
                "bias": norm == "none"}  # a bias before a normalisation layer is redundant
        self.body = nn.Sequential(nn.Conv2d(in_channels, out_channels, **conv), _norm(norm, out_channels), nn.GELU(),
                                  nn.Conv2d(out_channels, out_channels, **conv), _norm(norm, out_channels))
        self.residual = residual
        # Only a residual block has a shortcut: an unused 1x1 conv would be a parameter without a gradient,
        # which DDP (find_unused_parameters=False) rejects from the second step on.
        self.shortcut: nn.Module | None = None
        if residual:
            self.shortcut = (nn.Identity() if in_channels == out_channels
                             else nn.Conv2d(in_channels, out_channels, 1, bias=False))
        self.activation = nn.GELU()

    def forward(self, x):
        y = self.body(x)
        if self.shortcut is not None:
            y = y + self.shortcut(x)
        return self.activation(y)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints written before the shortcut was built only for residual blocks hold an unused
        # `shortcut.weight`; drop it so that their runs still load their weights (numl.evaluate,
        # numl.attribute); resuming one fails anyway, its optimizer state holding the old parameter.
        if self.shortcut is None:
            state_dict.pop(prefix + "shortcut.weight", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class ConvNet2d(nn.Module):
    """A stack of conv blocks with downsampling between stages, global pooling, and an MLP head.

    Args:
        in_channels: input channels (source redshifts for lensing maps).
        n_outputs: outputs of the head (1 logit for binary classification, 2 per target for a
            Gaussian regression: mean and log variance).
        channels: output channels of each stage; the map is halved between stages.
        norm: "batch", "group" or "none".
        pooling: downsampling between stages, "max" or "avg".
        global_pooling: "avg", "max" or "avgmax" (both, concatenated).
        residual: ResNet-style skip connections in every block.
    """

    def __init__(self, in_channels: int = 1, n_outputs: int = 1, channels: tuple[int, ...] = (8, 16, 32, 64),
                 kernel_size: int = 3, norm: str = "batch", dropout: float = 0.0, pooling: str = "avg",
                 global_pooling: str = "avgmax", residual: bool = False, padding_mode: str = "circular",
                 head_hidden: int = 64) -> None:
        super().__init__()
        check_positive("model.in_channels", in_channels, integer=True)
        check_positive("model.n_outputs", n_outputs, integer=True)
        if not channels or any(not isinstance(c, int) or c < 1 for c in channels):
            raise ConfigError(f"model.channels={list(channels)!r}: must be a non-empty list of positive integers")
        check_choice("model.norm", norm, ("batch", "group", "none"))
        check_choice("model.pooling", pooling, ("max", "avg"))
        check_choice("model.global_pooling", global_pooling, ("avg", "max", "avgmax"))
        check_choice("model.padding_mode", padding_mode, ("circular", "zeros", "reflect"))
        check_range("model.dropout", dropout, 0.0, 0.99)
        stages = []
        previous = in_channels
        for i, width in enumerate(channels):
            if i > 0:
                stages.append(nn.MaxPool2d(2) if pooling == "max" else nn.AvgPool2d(2))
            stages.append(ConvBlock(previous, width, kernel_size, norm, padding_mode, residual))
            previous = width
        self.features = nn.Sequential(*stages)
        self.global_pooling = global_pooling
        pooled = previous * (2 if global_pooling == "avgmax" else 1)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(pooled, head_hidden), nn.GELU(),
                                  nn.Dropout(dropout), nn.Linear(head_hidden, n_outputs))

    def forward(self, x):
        features = self.features(x)
        pooled = []
        if self.global_pooling in ("avg", "avgmax"):
            pooled.append(features.mean(dim=(2, 3)))
        if self.global_pooling in ("max", "avgmax"):
            pooled.append(features.amax(dim=(2, 3)))
        return self.head(torch.cat(pooled, dim=1))
