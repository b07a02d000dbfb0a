"""The 3D von Mises-Fisher direction loss (the Gaussian negative log likelihood is numl.metrics.gaussian_nll).

vMF in 3D: p(t | mu, kappa) = C3(kappa) exp(kappa mu.t) with C3(kappa) = kappa / (4 pi sinh kappa). Its
negative log likelihood is log(4 pi) + log(sinh(kappa) / kappa) - kappa mu.t; log(sinh(k)/k) is evaluated as
k + log(-expm1(-2k)) - log(2k) (no overflow for large kappa) and by its Taylor series k^2/6 - k^4/180 for
small kappa (no cancellation), so the loss and its gradient coth(k) - 1/k - mu.t are finite for any kappa > 0.
"""

from __future__ import annotations

import math

import torch

_SMALL_KAPPA = 1e-2


def log_sinh_over_x(x: torch.Tensor) -> torch.Tensor:
    """log(sinh(x) / x) for x >= 0, stable from 0 to beyond the float range of sinh."""
    small = x < _SMALL_KAPPA
    xs = torch.where(small, x, torch.zeros_like(x))  # each branch only sees inputs it is stable for
    xl = torch.where(small, torch.ones_like(x), x)
    series = xs**2 / 6.0 - xs**4 / 180.0
    large = xl + torch.log(-torch.expm1(-2.0 * xl)) - torch.log(2.0 * xl)
    return torch.where(small, series, large)


def log_vmf_normaliser_3d(kappa: torch.Tensor) -> torch.Tensor:
    """log C3(kappa) = log(kappa / (4 pi sinh kappa))."""
    return -math.log(4.0 * math.pi) - log_sinh_over_x(kappa)


def vmf_nll_3d(direction: torch.Tensor, kappa: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-event negative log likelihood of unit `target` (B, 3) under vMF(direction (B, 3) unit, kappa (B,))."""
    return -log_vmf_normaliser_3d(kappa) - kappa * (direction * target).sum(dim=-1)


def vmf_angle_cdf(angle_rad: torch.Tensor, kappa: torch.Tensor) -> torch.Tensor:
    """P(angle between draw and mean < angle) for a 3D vMF: (1 - exp(-k (1 - cos a))) / (1 - exp(-2k)).
    For a calibrated kappa, this evaluated at the true angular error is uniform on [0, 1]."""
    return -torch.expm1(-kappa * (1.0 - torch.cos(angle_rad))) / -torch.expm1(-2.0 * kappa)

