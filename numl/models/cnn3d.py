"""Dense 3D CNN on a voxel grid (the NEXT-White classification network's shape: conv blocks with
pooling, then global pooling and a linear head)."""

from __future__ import annotations

import torch
from torch import nn

from numl.utils.errors import check_positive, check_range


class Dense3DCNN(nn.Module):
    """(B, C, D, H, W) voxel grid -> (B, n_outputs) logits. Each stage: two 3x3x3 conv + BN + ReLU,
    then 2x max pooling; global average and max pooling feed the head."""

    def __init__(self, in_channels: int = 1, channels: tuple[int, ...] = (16, 32, 64, 128), n_outputs: int = 1,
                 dropout: float = 0.2) -> None:
        super().__init__()
        check_positive("model.in_channels", in_channels, integer=True)
        check_positive("model.n_outputs", n_outputs, integer=True)
        check_range("model.dropout", dropout, 0.0, 1.0)
        for c in channels:
            check_positive("model.channels", c, integer=True)
        layers: list[nn.Module] = []
        previous = in_channels
        for i, c in enumerate(channels):
            layers += [nn.Conv3d(previous, c, 3, padding=1, bias=False), nn.BatchNorm3d(c), nn.ReLU(inplace=True),
                       nn.Conv3d(c, c, 3, padding=1, bias=False), nn.BatchNorm3d(c), nn.ReLU(inplace=True)]
            if i < len(channels) - 1:
                layers.append(nn.MaxPool3d(2))
            previous = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * previous, n_outputs))

    def forward(self, voxels: torch.Tensor) -> torch.Tensor:
        x = self.features(voxels)
        pooled = torch.cat([x.mean(dim=(2, 3, 4)), x.amax(dim=(2, 3, 4))], dim=1)
        return self.head(pooled)
