"""Sparse 3D U-Net for per-voxel segmentation (track / blob / other), on spconv.

Strided sparse convolutions go down, inverse convolutions with the same indice keys come back up to
exactly the input's active voxels, and skip connections concatenate encoder features.
"""

from __future__ import annotations

import torch
from torch import nn

from numl.models.sparse_cnn3d import require_spconv, sparse_block, sparse_down, sparse_tensor, spconv, spconv_cpu_safe
from numl.utils.errors import check_positive


class SparseUNet3D(nn.Module):
    """Active voxels -> (N, n_classes) per-voxel logits. Call with (features, coords, batch_size)."""

    sparse_input = True

    def __init__(self, in_channels: int = 1, channels: tuple[int, ...] = (16, 32, 64), n_classes: int = 3,
                 window_voxels: int = 32) -> None:
        super().__init__()
        require_spconv()
        check_positive("model.in_channels", in_channels, integer=True)
        check_positive("model.n_classes", n_classes, integer=True)
        check_positive("model.window_voxels", window_voxels, integer=True)
        self.window_voxels = window_voxels
        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        previous = in_channels
        for i, c in enumerate(channels):
            self.encoders.append(sparse_block(previous, c, key=f"subm{i}"))
            previous = c
            if i < len(channels) - 1:
                self.downs.append(sparse_down(c, channels[i + 1], key=f"down{i}"))
                previous = channels[i + 1]
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for i in reversed(range(len(channels) - 1)):
            self.ups.append(spconv.SparseSequential(
                spconv.SparseInverseConv3d(channels[i + 1], channels[i], 2, bias=False, indice_key=f"down{i}"),
                nn.BatchNorm1d(channels[i]), nn.ReLU(inplace=True)))
            self.decoders.append(sparse_block(2 * channels[i], channels[i], key=f"subm{i}"))
        self.classifier = spconv.SubMConv3d(channels[0], n_classes, 1, indice_key="subm0")

    def forward(self, features: torch.Tensor, coords: torch.Tensor, batch_size: int) -> torch.Tensor:
        with spconv_cpu_safe(features.device) as guard:
            x = sparse_tensor(guard.enter(features), coords, batch_size, self.window_voxels)
            skips = []
            for i, encoder in enumerate(self.encoders):
                x = encoder(x)
                if i < len(self.downs):
                    skips.append(x)
                    x = self.downs[i](x)
            for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips), strict=True):
                x = up(x)
                x = decoder(x.replace_feature(torch.cat([x.features, skip.features], dim=1)))
            return guard.leave(self.classifier(x).features)
