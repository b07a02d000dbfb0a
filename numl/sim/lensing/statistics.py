"""Non-Gaussian summary statistics of convergence maps: peak counts, the one-point PDF, Minkowski functionals.

The statistics the weak-lensing literature sets beside the power spectrum (peaks: Kratochvil et al. 2010,
Liu et al. 2015; Minkowski functionals: Kratochvil et al. 2012, Petri et al. 2013; PDF: Liu & Madhavacheril
2019), measured per map and per source plane on batches ``[n_maps, n_z, N, N]`` in torch (CPU or GPU).

Written here rather than taken from LensTools (Petri 2016), the kept package with peaks and Minkowski
functionals: its last release (1.2, 2019) does not install here. Its setup.py imports ``numpy.distutils``, so
it needs ``--no-build-isolation``, and then its C extensions (``_topology.c``, the peaks and Minkowski code) do
not compile against the numpy 2 C API (``NPY_IN_ARRAY`` was removed). It also works on one map at a time.
The estimators follow its definitions: finite-difference derivatives, thresholds
``nu`` on the map (optionally in units of a fixed sigma), and

    V0(nu) = A^-1 int Theta(kappa - nu) dA                      (area fraction above nu)
    V1(nu) = (4 A)^-1 int delta(kappa - nu) |grad kappa| dA      (a quarter of the contour length per area)
    V2(nu) = (2 pi A)^-1 int delta(kappa - nu) K |grad kappa| dA  (Euler characteristic per area; K: curvature)

with delta(kappa - nu) replaced by the indicator of a threshold bin divided by its width. Derivatives are
central differences and peaks are compared with their 8 neighbours on the periodic grid, and smoothing is done
in Fourier space: right for numl's Gaussian and lognormal maps, which are periodic. Ray-traced (N-body) and
FITS maps are cut out of a larger sky: the grid then joins opposite edges that are not neighbours, so every
statistic takes a ``border`` (``wraparound_border_pixels``) and counts only the pixels that far inside the map,
as survey analyses mask their field edges. Lengths are in pixels, so V1 is per pixel and V2 per pixel^2.

``gaussian_minkowski_functionals`` and ``gaussian_peak_density`` are the closed forms for a Gaussian random
field (Tomita 1986; Bond & Efstathiou 1987) that the tests check the estimators against.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy.special import erfc

from numl.sim.lensing.maps import ARCMIN_PER_RAD, fourier_ell
from numl.utils.errors import ConfigError


def _check_maps(maps: torch.Tensor) -> None:
    if maps.ndim != 4 or maps.shape[-1] != maps.shape[-2]:
        raise ConfigError(f"maps shape {tuple(maps.shape)}: must be [n_maps, n_z, n_pix, n_pix]")


def _check_edges(name: str, edges: Sequence[float] | torch.Tensor) -> None:
    e = np.asarray(torch.as_tensor(edges).cpu(), dtype=np.float64)
    if e.ndim != 1 or e.size < 2 or np.any(np.diff(e) <= 0):
        raise ConfigError(f"{name}={e.tolist()}: must be at least two increasing values")


def wraparound_border_pixels(periodic: bool, field_deg: float, n_pix: int, smoothing_arcmin: float) -> int:
    """Pixels from each edge whose statistics the periodic grid corrupts on a map that is not periodic: Fourier
    smoothing mixes in the opposite edge out to 3 sigma of its kernel (0.13 % of the weight beyond), and a pixel's
    neighbours and central differences reach one pixel further. 0 for periodic maps."""
    if periodic:
        return 0
    pixel_arcmin = 60.0 * float(field_deg) / int(n_pix)
    return int(math.ceil(3.0 * float(smoothing_arcmin) / pixel_arcmin)) + 1


def interior_pixels(values: torch.Tensor, border: int) -> torch.Tensor:
    """The pixels at least `border` from every edge of maps [..., N, N]."""
    if border < 0 or 2 * border >= values.shape[-1]:
        raise ConfigError(f"statistics border={border} pixels: must be >= 0 and leave pixels inside a "
                          f"{values.shape[-1]}-pixel map (lower the smoothing or use larger maps)")
    return values[..., border:values.shape[-2] - border, border:values.shape[-1] - border] if border else values


def smooth_maps(maps: torch.Tensor, field_deg: float, smoothing_arcmin: float) -> torch.Tensor:
    """Maps convolved with a Gaussian of standard deviation ``smoothing_arcmin`` (periodic, in Fourier space)."""
    _check_maps(maps)
    if smoothing_arcmin <= 0:
        return maps
    n = maps.shape[-1]
    theta_rad = smoothing_arcmin / ARCMIN_PER_RAD
    beam = np.exp(-0.5 * (fourier_ell(field_deg, n) * theta_rad) ** 2)
    beam_t = torch.as_tensor(beam, dtype=torch.float64, device=maps.device)
    return torch.fft.irfft2(torch.fft.rfft2(maps.to(torch.float64)) * beam_t, s=(n, n)).to(maps.dtype)


def _binned_counts(values: torch.Tensor, weights: torch.Tensor | None, edges: torch.Tensor) -> torch.Tensor:
    """Per (map, plane) histogram of ``values`` [n, n_z, N, N] in ``edges`` [n_z, n_bins + 1]; values outside
    the edges are not counted. Weighted sums with ``weights``."""
    n, n_z = values.shape[:2]
    n_bins = edges.shape[-1] - 1
    out = torch.zeros(n, n_z, n_bins, dtype=torch.float64, device=values.device)
    for z in range(n_z):
        v = values[:, z].reshape(n, -1).to(torch.float64).contiguous()
        index = torch.bucketize(v, edges[z].contiguous(), right=True) - 1
        inside = (index >= 0) & (index < n_bins)
        w = inside.to(torch.float64) if weights is None else weights[:, z].reshape(n, -1).to(torch.float64) * inside
        out[:, z].scatter_add_(1, index.clamp(0, n_bins - 1), w)
    return out


def _per_plane_edges(edges, n_z: int, device) -> torch.Tensor:
    """Edges [n_z, n_bins + 1] from one edge vector (shared by the planes) or one per plane."""
    e = torch.as_tensor(edges, dtype=torch.float64, device=device)
    return e.expand(n_z, -1) if e.ndim == 1 else e


def local_maxima(maps: torch.Tensor) -> torch.Tensor:
    """Boolean mask [n, n_z, N, N] of pixels higher than all 8 neighbours (periodic grid: on a map that is not
    periodic only pixels inside a border of 1 or more are meaningful)."""
    _check_maps(maps)
    is_peak = torch.ones_like(maps, dtype=torch.bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                is_peak &= maps > torch.roll(maps, shifts=(dy, dx), dims=(-2, -1))
    return is_peak


def peak_counts(maps: torch.Tensor, height_edges, border: int = 0) -> torch.Tensor:
    """Number of local maxima per map and plane with height in each bin: [n, n_z, n_bins] float64, counting
    the pixels at least ``border`` from the edges.

    ``height_edges`` [n_bins + 1] or per plane [n_z, n_bins + 1], in the maps' units (multiply nu edges by
    the plane's sigma for bins of kappa / sigma).
    """
    _check_maps(maps)
    _check_edges("peak height edges", torch.as_tensor(height_edges).reshape(-1, np.shape(height_edges)[-1])[0])
    edges = _per_plane_edges(height_edges, maps.shape[1], maps.device)
    peaks = interior_pixels(local_maxima(maps), border)
    return _binned_counts(interior_pixels(maps, border), peaks.to(torch.float64), edges)


def one_point_pdf(maps: torch.Tensor, kappa_edges, border: int = 0) -> torch.Tensor:
    """Fraction of each map's pixels (those at least ``border`` from the edges) per kappa bin, divided by the
    bin width: [n, n_z, n_bins] float64 (an estimate of the one-point probability density)."""
    _check_maps(maps)
    _check_edges("kappa edges", torch.as_tensor(kappa_edges).reshape(-1, np.shape(kappa_edges)[-1])[0])
    edges = _per_plane_edges(kappa_edges, maps.shape[1], maps.device)
    inside = interior_pixels(maps, border)
    counts = _binned_counts(inside, None, edges)
    return counts / (inside.shape[-1] ** 2 * torch.diff(edges, dim=-1))


def map_derivatives(maps: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """First and second derivatives per pixel by central differences on the periodic grid:
    (k_x, k_y, k_xx, k_yy, k_xy), float64, in map units per pixel^(order)."""
    m = maps.to(torch.float64)

    def shift(a, dy, dx):
        return torch.roll(a, shifts=(-dy, -dx), dims=(-2, -1))  # a(x + dx, y + dy)

    kx = 0.5 * (shift(m, 0, 1) - shift(m, 0, -1))
    ky = 0.5 * (shift(m, 1, 0) - shift(m, -1, 0))
    kxx = shift(m, 0, 1) - 2 * m + shift(m, 0, -1)
    kyy = shift(m, 1, 0) - 2 * m + shift(m, -1, 0)
    kxy = 0.25 * (shift(m, 1, 1) - shift(m, 1, -1) - shift(m, -1, 1) + shift(m, -1, -1))
    return kx, ky, kxx, kyy, kxy


def minkowski_functionals(maps: torch.Tensor, thresholds,
                          border: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """V0, V1, V2 per map and plane at the midpoints of the threshold bins: three [n, n_z, n_bins] float64, over
    the pixels at least ``border`` from the edges.

    ``thresholds`` are bin edges [n_bins + 1] (or per plane [n_z, n_bins + 1]) in the maps' units; V1 and V2
    average the delta function over each bin (see the module docstring for the definitions; V1 per pixel,
    V2 per pixel^2). V0 is evaluated at the bin midpoints.
    """
    _check_maps(maps)
    _check_edges("Minkowski thresholds", torch.as_tensor(thresholds).reshape(-1, np.shape(thresholds)[-1])[0])
    edges = _per_plane_edges(thresholds, maps.shape[1], maps.device)
    kx, ky, kxx, kyy, kxy = (interior_pixels(d, border) for d in map_derivatives(maps))
    maps = interior_pixels(maps, border)
    n_pix2 = maps.shape[-1] ** 2
    grad2 = kx**2 + ky**2
    # Curvature term of V2; flat pixels (zero gradient) have no contour through them.
    curvature = torch.where(grad2 > 0, (2 * kx * ky * kxy - kx**2 * kyy - ky**2 * kxx) / grad2.clamp_min(1e-300),
                            torch.zeros_like(grad2))
    width = torch.diff(edges, dim=-1)  # [n_z, n_bins]
    v1 = _binned_counts(maps, grad2.sqrt(), edges) / (4 * n_pix2 * width)
    v2 = _binned_counts(maps, curvature, edges) / (2 * math.pi * n_pix2 * width)
    midpoints = 0.5 * (edges[:, 1:] + edges[:, :-1])  # [n_z, n_bins]
    flat = maps.to(torch.float64).flatten(2)  # [n, n_z, N^2]
    v0 = (flat[:, :, None, :] > midpoints[None, :, :, None]).to(torch.float64).mean(-1)
    return v0, v1, v2


# ----- closed forms for Gaussian random fields ---------------------------------------------------------------
def gaussian_minkowski_functionals(nu: np.ndarray, sigma0: float, sigma1: float) -> tuple[np.ndarray, ...]:
    """V0, V1, V2 of a 2D Gaussian random field at thresholds nu (in units of sigma0) (Tomita 1986):

    V0 = erfc(nu / sqrt 2) / 2,  V1 = exp(-nu^2/2) sigma1 / (8 sqrt2 sigma0),
    V2 = nu exp(-nu^2/2) sigma1^2 / (2 (2 pi)^(3/2) sigma0^2),

    with sigma0^2 = <kappa^2>, sigma1^2 = <|grad kappa|^2>; lengths in the units of sigma1. delta(kappa - nu)
    |grad kappa| does not change when kappa is rescaled, so maps in kappa units with thresholds nu sigma0 have
    the same V1 and V2.
    """
    nu = np.asarray(nu, dtype=np.float64)
    g = np.exp(-0.5 * nu**2)
    v0 = 0.5 * erfc(nu / math.sqrt(2))
    v1 = g * sigma1 / (8 * math.sqrt(2) * sigma0)
    v2 = nu * g * sigma1**2 / (2 * (2 * math.pi) ** 1.5 * sigma0**2)
    return v0, v1, v2


def gaussian_peak_density(sigma1: float, sigma2: float) -> float:
    """Number of local maxima per unit area of a 2D Gaussian random field, all heights
    (Bond & Efstathiou 1987): n_pk = sigma2^2 / (8 sqrt3 pi sigma1^2), sigma2^2 = <(laplacian kappa)^2>."""
    return sigma2**2 / (8 * math.sqrt(3) * math.pi * sigma1**2)


def spectral_moments(maps: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """sigma0, sigma1, sigma2 per plane [n_z] (pixel units), from the maps' Fourier modes averaged over maps:
    sigma_j^2 = < |k|^(2j) |kappa_k|^2 > summed over modes, with continuous derivatives (k in rad / pixel)."""
    _check_maps(maps)
    n = maps.shape[-1]
    k = 2 * math.pi * torch.as_tensor(np.hypot(*np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n))),
                                      dtype=torch.float64, device=maps.device)
    m = maps.to(torch.float64)
    power = (torch.fft.fft2(m - m.mean(dim=(-2, -1), keepdim=True)).abs() ** 2).mean(0) / n**4  # [n_z, N, N]
    moments = [torch.sqrt((power * k ** (2 * j)).sum((-2, -1))).cpu().numpy() for j in range(3)]
    return moments[0], moments[1], moments[2]
