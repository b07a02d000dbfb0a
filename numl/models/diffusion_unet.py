"""Conditional U-Net for denoising diffusion on detector images and maps: (noisy event, diffusion step, normalised
conditions) -> the network's prediction (noise or velocity, numl.tasks.diffusion).

Generic over the event shape [channels, rows, columns] (PETALO SiPM patterns 4 x 16 x 24, lensing maps 1 x 64 x 64).
The diffusion step and the conditions are embedded, summed, and drive every residual block by FiLM (scale and
shift after its second group norm), the conditioning of Dhariwal & Nichol 2021 ("AdaGN"). No attention layers:
the images are small and the model is meant to train on a CPU.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from numl.utils.errors import ConfigError


def _groups(channels: int) -> int:
    return math.gcd(channels, 8)


def step_embedding(steps: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of the diffusion step (Vaswani et al. 2017, as in Ho et al. 2020)."""
    half = dim // 2
    frequencies = torch.exp(-math.log(10000.0) * torch.arange(half, device=steps.device) / half)
    angles = steps.float()[:, None] * frequencies[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class FiLMResidualBlock(nn.Module):
    """GroupNorm-SiLU-conv, GroupNorm-FiLM-SiLU-conv, plus a 1x1 skip; FiLM from the step + condition embedding."""

    def __init__(self, c_in: int, c_out: int, embedding_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.film = nn.Linear(embedding_dim, 2 * c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, x, embedding):
        h = self.conv1(self.act(self.norm1(x)))
        scale, shift = self.film(embedding).chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
        return self.conv2(self.act(h)) + self.skip(x)


class ConditionalUNet(nn.Module):
    """(noisy normalised event [B, *event_shape], step [B], normalised conditions [B, n_conditions]) -> prediction
    [B, *event_shape].

    Args:
        event_shape: [channels, rows, columns]; rows and columns divisible by 2**(len(channels) - 1).
        n_conditions: length of the condition vector.
        channels: feature channels per resolution stage, finest first; one down-sampling between stages.
        embedding_dim: width of the step and condition embeddings.
        coordinate_channels: append row and column coordinates in [-1, 1] to the input, so that the convolutions
            know where in the image they are (a position condition decides where the light spot goes).
    """

    def __init__(self, event_shape: list[int], n_conditions: int, channels: list[int] = (32, 64, 128),
                 embedding_dim: int = 128, coordinate_channels: bool = True) -> None:
        super().__init__()
        if len(event_shape) != 3:
            raise ConfigError(f"model.event_shape={list(event_shape)}: must be [channels, rows, columns]")
        self.event_shape = tuple(int(v) for v in event_shape)
        in_channels, rows, columns = self.event_shape
        factor = 2 ** (len(channels) - 1)
        if rows % factor or columns % factor:
            raise ConfigError(f"model.event_shape={list(event_shape)}: rows and columns must be multiples of "
                              f"{factor} ({len(channels) - 1} down-samplings of model.channels={list(channels)})")
        if embedding_dim % 2:
            raise ConfigError(f"model.embedding_dim={embedding_dim}: must be even (sine and cosine halves)")
        self.n_conditions, self.embedding_dim = int(n_conditions), int(embedding_dim)
        self.coordinate_channels = bool(coordinate_channels)
        if self.coordinate_channels:
            grid = torch.meshgrid(torch.linspace(-1, 1, rows), torch.linspace(-1, 1, columns), indexing="ij")
            self.register_buffer("coordinates", torch.stack(grid)[None], persistent=False)
        self.step_mlp = nn.Sequential(nn.Linear(embedding_dim, embedding_dim), nn.SiLU(),
                                      nn.Linear(embedding_dim, embedding_dim))
        self.condition_mlp = nn.Sequential(nn.Linear(n_conditions, embedding_dim), nn.SiLU(),
                                           nn.Linear(embedding_dim, embedding_dim))
        self.stem = nn.Conv2d(in_channels + 2 * self.coordinate_channels, channels[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(FiLMResidualBlock(c, c, embedding_dim) for c in channels)
        self.downsample = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1)
                                        for a, b in itertools.pairwise(channels))
        self.middle = FiLMResidualBlock(channels[-1], channels[-1], embedding_dim)
        self.upsample = nn.ModuleList(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                                    nn.Conv2d(b, a, 3, padding=1))
                                      for a, b in itertools.pairwise(channels))
        self.up_blocks = nn.ModuleList(FiLMResidualBlock(2 * c, c, embedding_dim) for c in channels)
        self.head = nn.Sequential(nn.GroupNorm(_groups(channels[0]), channels[0]), nn.SiLU(),
                                  nn.Conv2d(channels[0], in_channels, 3, padding=1))
        # The untrained network predicts zero (Ho et al. 2020's zero-initialised output layer).
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, noisy, steps, conditions):
        embedding = nn.functional.silu(self.step_mlp(step_embedding(steps, self.embedding_dim))
                                       + self.condition_mlp(conditions))
        if self.coordinate_channels:
            noisy = torch.cat([noisy, self.coordinates.expand(len(noisy), -1, -1, -1)], dim=1)
        h = self.stem(noisy)
        skips = []
        for i, block in enumerate(self.down_blocks):
            h = block(h, embedding)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.middle(h, embedding)
        for i in reversed(range(len(self.up_blocks))):
            if i < len(self.upsample):
                h = self.upsample[i](h)
            h = self.up_blocks[i](torch.cat([h, skips[i]], dim=1), embedding)
        return self.head(h)
