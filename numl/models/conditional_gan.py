"""Conditional GAN networks for detector images: a generator conditioned by FiLM (conditional batch or group norm)
or by StyleGAN2's modulated, demodulated convolutions, and a spectrally normalised projection discriminator
(Miyato & Koyama 2018).

Both are generic over the event shape [channels, rows, columns] and work on normalised events and normalised
conditions; the task (numl.tasks.generative) maps physical units to and from those.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from numl.utils.errors import ConfigError, check_choice


def _event_shape(event_shape, n_stages: int, key: str) -> tuple[int, int, int]:
    if len(event_shape) != 3:
        raise ConfigError(f"{key}.event_shape={list(event_shape)}: must be [channels, rows, columns]")
    channels, rows, columns = (int(v) for v in event_shape)
    factor = 2**n_stages
    if rows % factor or columns % factor:
        raise ConfigError(f"{key}.event_shape={list(event_shape)}: rows and columns must be multiples of "
                          f"{factor} ({n_stages} resolution stages of {key}.channels)")
    return channels, rows, columns


# Group norm's groups: Wu & He 2018 use 32 at ImageNet widths; numl's generators are narrow (16-128 channels), so
# at most 8 groups, each of at least 2 channels.
_MAX_GROUPS = 8


def _group_count(channels: int) -> int:
    """The most groups (at most _MAX_GROUPS) that split `channels` evenly with at least 2 channels each."""
    return max(g for g in range(1, _MAX_GROUPS + 1) if channels % g == 0 and channels // g >= 2)


class ConditionalNorm2d(nn.Module):
    """Batch or group norm whose scale and shift are functions of the condition embedding (FiLM). Group norm
    (Wu & He 2018) normalises each event by its own features: no batch statistics, so the moving average of the
    generator's weights is used as it was trained (batch norm's running statistics belong to other weights)."""

    def __init__(self, channels: int, embedding_dim: int, normalization: str = "batch") -> None:
        super().__init__()
        self.norm = (nn.BatchNorm2d(channels, affine=False) if normalization == "batch"
                     else nn.GroupNorm(_group_count(channels), channels, affine=False))
        self.film = nn.Linear(embedding_dim, 2 * channels)
        # Start as the plain norm (scale 1, shift 0): the condition's effect is learnt from there.
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x, embedding):
        scale, shift = self.film(embedding).chunk(2, dim=1)
        return self.norm(x) * (1 + scale[:, :, None, None]) + shift[:, :, None, None]


class _UpBlock(nn.Module):
    """Residual block that doubles rows and columns, both norms conditioned."""

    def __init__(self, c_in: int, c_out: int, embedding_dim: int, upsampling: str = "nearest",
                 normalization: str = "batch") -> None:
        super().__init__()
        self.norm1 = ConditionalNorm2d(c_in, embedding_dim, normalization)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = ConditionalNorm2d(c_out, embedding_dim, normalization)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1)
        self.up = nn.Upsample(scale_factor=2, mode=upsampling)
        self.act = nn.ReLU()

    def forward(self, x, embedding):
        h = self.conv1(self.up(self.act(self.norm1(x, embedding))))
        h = self.conv2(self.act(self.norm2(h, embedding)))
        return h + self.skip(self.up(x))


class ModulatedConv2d(nn.Module):
    """Convolution whose weights are scaled per event and input channel by a style vector, then demodulated: each
    output channel's weights rescaled to unit norm (StyleGAN2, Karras et al. 2020, arXiv:1912.04958). Unit-scale
    inputs give unit-scale outputs without a normalisation layer, so no statistic of other events (batch norm) or of
    the event's own features (group norm, which removes each map's amplitude) enters. Zero padding, as the other
    generators' convolutions."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, style_dim: int, demodulate: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, kernel_size, kernel_size))
        # Equalised learning rate (StyleGAN): unit-variance weights scaled at run time by He's constant.
        self.weight_gain = 1 / math.sqrt(c_in * kernel_size**2)
        self.style = nn.Linear(style_dim, c_in)
        nn.init.ones_(self.style.bias)  # start near the plain convolution (StyleGAN2's bias init of the styles)
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.demodulate = demodulate

    def forward(self, x, style):
        batch, c_in, rows, columns = x.shape
        weight = self.weight[None] * self.weight_gain * self.style(style)[:, None, :, None, None]
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
        # One grouped convolution runs every event with its own weights.
        out = nn.functional.conv2d(x.reshape(1, batch * c_in, rows, columns), weight.flatten(0, 1),
                                   padding=self.weight.shape[-1] // 2, groups=batch)
        return out.view(batch, -1, rows, columns) + self.bias[None, :, None, None]


def _scaled_leaky_relu(x):
    # sqrt(2) restores the variance the activation halves (StyleGAN2's gain), so demodulation's unit scale holds.
    return nn.functional.leaky_relu(x, 0.2) * math.sqrt(2)


class _ModulatedUpBlock(nn.Module):
    """Residual block that doubles rows and columns with two modulated convolutions (StyleGAN2's residual
    generator: the sum divided by sqrt(2) keeps the scale)."""

    def __init__(self, c_in: int, c_out: int, style_dim: int, upsampling: str = "nearest") -> None:
        super().__init__()
        self.conv1 = ModulatedConv2d(c_in, c_out, 3, style_dim)
        self.conv2 = ModulatedConv2d(c_out, c_out, 3, style_dim)
        self.skip = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.up = nn.Upsample(scale_factor=2, mode=upsampling)

    def forward(self, x, style):
        x = self.up(x)
        h = _scaled_leaky_relu(self.conv2(_scaled_leaky_relu(self.conv1(x, style)), style))
        return (h + self.skip(x)) / math.sqrt(2)


class ConditionalGenerator(nn.Module):
    """(noise [B, latent_dim], normalised conditions [B, n_conditions]) -> normalised event [B, *event_shape].

    Args:
        event_shape: [channels, rows, columns] of one event; rows and columns divisible by 2**(len(channels)-1).
        n_conditions: length of the condition vector.
        latent_dim: noise dimension.
        channels: feature channels per resolution stage, coarsest first.
        embedding_dim: width of the condition embedding that drives every conditional norm (or, with
            demodulation, of the style vector).
        upsampling: "nearest" (blocks of 2 x 2 equal values before each convolution) or "bilinear" (smooth).
        normalization: "batch" or "group" (ConditionalNorm2d), or "demodulation": no normalisation layer, every
            convolution modulated by a style that a mapping network makes from the noise and the condition
            embedding (ModulatedConv2d).
    """

    def __init__(self, event_shape: list[int], n_conditions: int, latent_dim: int = 64,
                 channels: list[int] = (128, 64, 32), embedding_dim: int = 64, upsampling: str = "nearest",
                 normalization: str = "batch") -> None:
        super().__init__()
        check_choice("model.upsampling", upsampling, ("nearest", "bilinear"))
        check_choice("model.normalization", normalization, ("batch", "group", "demodulation"))
        if normalization == "group" and min(channels) < 2:
            raise ConfigError(f"model.channels={list(channels)}: group norm needs at least 2 channels per stage")
        n_stages = len(channels) - 1
        self.event_shape = _event_shape(event_shape, n_stages, "model")
        out_channels, rows, columns = self.event_shape
        self.latent_dim, self.n_conditions = int(latent_dim), int(n_conditions)
        self.start_shape = (channels[0], rows // 2**n_stages, columns // 2**n_stages)
        self.embed = nn.Sequential(nn.Linear(n_conditions, embedding_dim), nn.SiLU(),
                                   nn.Linear(embedding_dim, embedding_dim))
        self.stem = nn.Linear(latent_dim + embedding_dim, channels[0] * self.start_shape[1] * self.start_shape[2])
        if normalization == "demodulation":
            # StyleGAN2's mapping network (8 layers there; 2 suffice for one condition and 64 noise numbers).
            self.mapping = nn.Sequential(nn.Linear(latent_dim + embedding_dim, embedding_dim), nn.LeakyReLU(0.2),
                                         nn.Linear(embedding_dim, embedding_dim))
            self.blocks = nn.ModuleList(_ModulatedUpBlock(a, b, embedding_dim, upsampling)
                                        for a, b in itertools.pairwise(channels))
            # The output layer is modulated but not demodulated (StyleGAN2's toRGB): it sets the map's amplitude.
            self.head_norm, self.head = None, ModulatedConv2d(channels[-1], out_channels, 3, embedding_dim,
                                                              demodulate=False)
        else:
            self.mapping = None
            self.blocks = nn.ModuleList(_UpBlock(a, b, embedding_dim, upsampling, normalization)
                                        for a, b in itertools.pairwise(channels))
            self.head_norm = ConditionalNorm2d(channels[-1], embedding_dim, normalization)
            self.head = nn.Conv2d(channels[-1], out_channels, 3, padding=1)

    def forward(self, noise, conditions):
        embedding = self.embed(conditions)
        latent = torch.cat([noise, embedding], dim=1)
        h = self.stem(latent).view(len(noise), *self.start_shape)
        if self.mapping is not None:
            style = self.mapping(latent)
            for block in self.blocks:
                h = block(h, style)
            return self.head(_scaled_leaky_relu(h), style)
        for block in self.blocks:
            h = block(h, embedding)
        return self.head(nn.functional.relu(self.head_norm(h, embedding)))


class ProjectionDiscriminator(nn.Module):
    """(normalised event, normalised conditions) -> real-vs-generated score [B].

    Every layer is spectrally normalised (1-Lipschitz layers keep the hinge-loss game stable). The condition
    enters by projection: score = w . h + embed(c) . h, with h the event's pooled features, so the network
    judges how well the event fits its condition, not only whether it looks real. With `coordinate_channels`
    two channels (row and column in [-1, 1]) are appended to the event: the pooled features would otherwise
    hardly know where in the image a light spot is, which is what a position condition decides. Statistically
    homogeneous fields (lensing maps) have no preferred position: there they are left out.
    """

    def __init__(self, event_shape: list[int], n_conditions: int, channels: list[int] = (32, 64, 128),
                 coordinate_channels: bool = True) -> None:
        super().__init__()
        in_channels, rows, columns = _event_shape(event_shape, len(channels) - 1, "task.discriminator")
        if not isinstance(coordinate_channels, bool):
            raise ConfigError(f"task.discriminator.coordinate_channels={coordinate_channels!r}: must be true or false")
        grid = torch.meshgrid(torch.linspace(-1, 1, rows), torch.linspace(-1, 1, columns), indexing="ij")
        self.register_buffer("coordinates", torch.stack(grid)[None][:, :2 * coordinate_channels], persistent=False)
        layers = [spectral_norm(nn.Conv2d(in_channels + 2 * coordinate_channels, channels[0], 3, padding=1)),
                  nn.LeakyReLU(0.2)]
        for a, b in itertools.pairwise(channels):
            layers += [spectral_norm(nn.Conv2d(a, b, 4, stride=2, padding=1)), nn.LeakyReLU(0.2),
                       spectral_norm(nn.Conv2d(b, b, 3, padding=1)), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        self.score = spectral_norm(nn.Linear(channels[-1], 1))
        self.embed = nn.Sequential(spectral_norm(nn.Linear(n_conditions, channels[-1])), nn.LeakyReLU(0.2),
                                   spectral_norm(nn.Linear(channels[-1], channels[-1])))

    def forward(self, event, conditions):
        coordinates = self.coordinates.expand(len(event), -1, -1, -1)
        h = self.features(torch.cat([event, coordinates], dim=1)).sum(dim=(2, 3))
        return self.score(h).squeeze(1) + (self.embed(conditions) * h).sum(dim=1)
