"""Flat-sky tomographic convergence maps (Gaussian or lognormal) with shape noise, generated in torch.

Conventions (periodic square field of side L radians, N x N pixels, pixel size L/N):

- Fourier modes are numpy/torch ``fft2`` modes ``k``; multipole ``ell = 2 pi |fftfreq| / pixel_rad``.
- For a field with power C_ell, ``E[|fft2(kappa)_k|^2] = C_ell N^4 / L^2``.
- Maps are made by colouring real-space white noise in Fourier space, so the Hermitian symmetry of a real
  field, including the self-conjugate modes (DC and Nyquist rows/columns), is exact by construction
  (the bug powerbox PR #189 fixed: self-conjugate modes given half their power).
- Order of operations: convergence field -> + shape noise (white, sigma_e / sqrt(n_gal A_pix) per pixel,
  independent per source plane) -> Gaussian smoothing (kernel standard deviation ``smoothing_arcmin``).
- Shape noise: sigma_e is the intrinsic ellipticity dispersion per component (0.26 for stage-IV surveys), the
  noise of a convergence estimate from n galaxies; ``galaxy_density_arcmin2`` is the survey's total source
  density, split equally among the source planes (n_gal = total / n_planes in each tomographic bin).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from numl.sim.lensing.spectra import ConvergenceSpectra
from numl.utils.errors import ConfigError, check_choice, check_positive

ARCMIN_PER_RAD = 180.0 * 60.0 / math.pi
FIELDS = ("gaussian", "lognormal")


def lognormal_shift_hilbert2011(z: float) -> float:
    """Shift parameter lambda(z) of the lognormal convergence (Hilbert et al. 2011 fit, as used in GLASS)."""
    return 0.008 * z + 0.029 * z**2 - 0.0079 * z**3 + 0.00065 * z**4


def required_ell_max(field_deg: float, n_pix: int) -> int:
    """Largest multipole on the map's Fourier grid (the corner mode): spectra must reach at least this."""
    pixel_rad = math.radians(field_deg) / n_pix
    k_max = np.abs(np.fft.fftfreq(n_pix)).max()
    return math.ceil(2 * math.pi * math.sqrt(2) * k_max / pixel_rad)


def fourier_ell(field_deg: float, n_pix: int, real: bool = True) -> np.ndarray:
    """Multipole of every Fourier mode: shape [N, N//2+1] for ``rfft2`` layout, [N, N] for ``fft2``."""
    pixel_rad = math.radians(field_deg) / n_pix
    ky = np.fft.fftfreq(n_pix)
    kx = np.fft.rfftfreq(n_pix) if real else ky
    return 2 * math.pi * np.hypot(ky[:, None], kx[None, :]) / pixel_rad


def log_ell_bin_edges(field_deg: float, n_pix: int, n_bins: int) -> np.ndarray:
    """Logarithmic multipole bins from twice the fundamental mode to the grid's edge, at most `n_bins`, each at
    least 1.5 fundamental modes wide so that small maps have Fourier modes in every bin."""
    ell_fundamental = 2 * np.pi / np.deg2rad(field_deg)
    edges = [2 * ell_fundamental]
    for edge in np.geomspace(edges[0], np.pi * n_pix / np.deg2rad(field_deg), n_bins + 1)[1:]:
        if edge >= edges[-1] + 1.5 * ell_fundamental:
            edges.append(edge)
    return np.asarray(edges)


def _interp_cl(spectra: ConvergenceSpectra, ell: np.ndarray) -> np.ndarray:
    """C_ell matrices at the (non-integer) multipoles ``ell``: [n_z, n_z, *ell.shape]."""
    flat = ell.ravel()
    out = np.stack([np.interp(flat, spectra.ell, spectra.cl[i, j]) for i in range(spectra.n_z)
                    for j in range(spectra.n_z)])
    return out.reshape(spectra.n_z, spectra.n_z, *ell.shape)


def _matrix_sqrt(cov: np.ndarray) -> np.ndarray:
    """Symmetric square root S (S S^T = cov) per mode of cov [n_z, n_z, ...]; tiny negative eigenvalues -> 0.

    An eigen-decomposition rather than Cholesky: it also handles the singular DC mode and nearly degenerate
    tomographic planes.
    """
    c = np.moveaxis(cov, (0, 1), (-2, -1))
    eigval, eigvec = np.linalg.eigh(c)
    s = (eigvec * np.sqrt(np.clip(eigval, 0.0, None))[..., None, :]) @ np.swapaxes(eigvec, -1, -2)
    return np.moveaxis(s, (-2, -1), (0, 1))


class ConvergenceMapSimulator:
    """Tomographic convergence maps ``[n_maps, n_z, n_pix, n_pix]`` from C_ell^kappa.

    ``galaxy_density_arcmin2`` is the total source density, split equally among the source planes (None:
    noise-free maps);
    ``lognormal_shift`` the lambda_i of each plane (default: Hilbert et al. 2011 fit at each source z).
    ``key_prefix`` names the config node in error messages.
    """

    def __init__(
        self,
        spectra: ConvergenceSpectra,
        field_deg: float,
        n_pix: int,
        field: str = "gaussian",
        lognormal_shift: Sequence[float] | None = None,
        shape_noise_sigma_e: float = 0.26,
        galaxy_density_arcmin2: float | None = 30.0,
        smoothing_arcmin: float = 0.0,
        key_prefix: str = "data",
    ) -> None:
        p = key_prefix
        check_positive(f"{p}.field_deg", field_deg)
        check_positive(f"{p}.n_pix", n_pix, integer=True)
        check_choice(f"{p}.field", field, FIELDS)
        check_positive(f"{p}.shape_noise_sigma_e", shape_noise_sigma_e, allow_zero=True)
        if galaxy_density_arcmin2 is not None:
            check_positive(f"{p}.galaxy_density_arcmin2", galaxy_density_arcmin2)
        check_positive(f"{p}.smoothing_arcmin", smoothing_arcmin, allow_zero=True)
        ell_needed = required_ell_max(field_deg, n_pix)
        if ell_needed > spectra.ell_max:
            raise ConfigError(
                f"{p}.n_pix={n_pix} over {p}.field_deg={field_deg}: the pixel scale needs ell up to {ell_needed}, "
                f"but the spectra stop at ell_max={spectra.ell_max}; raise ell_max to >= {ell_needed}"
            )
        self.spectra = spectra
        self.field_deg = float(field_deg)
        self.n_pix = int(n_pix)
        self.field = field
        self.shape_noise_sigma_e = float(shape_noise_sigma_e)
        self.galaxy_density_arcmin2 = galaxy_density_arcmin2
        self.smoothing_arcmin = float(smoothing_arcmin)
        n_z = spectra.n_z
        if field == "lognormal":
            if lognormal_shift is None:
                lognormal_shift = [lognormal_shift_hilbert2011(z) for z in spectra.source_redshifts]
            if len(lognormal_shift) != n_z or any(s <= 0 for s in lognormal_shift):
                raise ConfigError(
                    f"{p}.lognormal_shift={list(lognormal_shift)}: must be {n_z} positive numbers, one per source z"
                )
            self.lognormal_shift = np.asarray(lognormal_shift, dtype=np.float64)
        else:
            self.lognormal_shift = None

        self._area_sr = math.radians(field_deg) ** 2
        self._ell = fourier_ell(field_deg, n_pix)
        # Per-mode covariance of fft2(kappa) in map units: C_ell N^4 / A, DC mode removed.
        mode_cov = _interp_cl(spectra, self._ell) * n_pix**4 / self._area_sr
        mode_cov[..., 0, 0] = 0.0
        self._kappa_mode_cov = mode_cov
        # White noise has E|w_k|^2 = N^2, hence the 1/N.
        if field == "gaussian":
            colour = _matrix_sqrt(mode_cov) / n_pix
        else:
            colour = _matrix_sqrt(self._gaussian_mode_cov(mode_cov)) / n_pix
            # Variance of the generated Gaussian field g per plane, from the (clipped) spectrum actually used.
            g_mode_cov = np.einsum("ik...,jk...->ij...", colour, colour) * n_pix**2
            self._sigma_g2 = self._real_space_variance(g_mode_cov)
        self._colour = torch.from_numpy(colour)

    # -- public properties -------------------------------------------------------------------------------

    @property
    def n_z(self) -> int:
        return self.spectra.n_z

    @property
    def pixel_area_arcmin2(self) -> float:
        return (self.field_deg * 60.0 / self.n_pix) ** 2

    @property
    def galaxy_density_per_plane_arcmin2(self) -> float | None:
        """Sources per arcmin^2 in each source plane: the total split equally among the planes."""
        return None if self.galaxy_density_arcmin2 is None else self.galaxy_density_arcmin2 / self.n_z

    @property
    def noise_power(self) -> np.ndarray:
        """Shape-noise power N_ell = sigma_e^2 / n_gal [steradian] per source plane (zero if noise-free)."""
        if self.galaxy_density_arcmin2 is None:
            return np.zeros(self.n_z)
        n_gal_per_sr = self.galaxy_density_per_plane_arcmin2 * ARCMIN_PER_RAD**2
        return np.full(self.n_z, self.shape_noise_sigma_e**2 / n_gal_per_sr)

    @property
    def noise_sigma_pix(self) -> float:
        """Per-pixel shape-noise standard deviation sigma_e / sqrt(n_gal A_pix), n_gal per source plane."""
        if self.galaxy_density_arcmin2 is None:
            return 0.0
        return self.shape_noise_sigma_e / math.sqrt(self.galaxy_density_per_plane_arcmin2
                                                    * self.pixel_area_arcmin2)

    @property
    def ell_grid(self) -> np.ndarray:
        """Multipole of each ``rfft2`` mode, [N, N//2+1]."""
        return self._ell

    def beam(self, ell: np.ndarray) -> np.ndarray:
        """Fourier transform of the Gaussian smoothing kernel, exp(-ell^2 theta^2 / 2)."""
        theta_rad = self.smoothing_arcmin / ARCMIN_PER_RAD
        return np.exp(-0.5 * (ell * theta_rad) ** 2)

    def fourier_covariance(self) -> np.ndarray:
        """E[d_k d_k^H] of the ``rfft2`` modes of the output maps, [n_z, n_z, N, N//2+1], float64.

        Signal (target C_ell) + shape noise, times the beam squared. Exact for Gaussian maps; for lognormal
        maps it is the target two-point function.
        """
        cov = self._kappa_mode_cov.copy()
        noise_mode_var = self.noise_sigma_pix**2 * self.n_pix**2
        idx = np.arange(self.n_z)
        cov[idx, idx] += noise_mode_var
        return cov * self.beam(self._ell) ** 2

    def expected_binned_power(self, ell_bin_edges: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """What ``measure_power_spectrum`` returns on average: (ell_centers, cl[n_z, n_z, n_bins])."""
        cov = self.fourier_covariance() * self._area_sr / self.n_pix**4
        return _bin_modes(cov, self._ell, ell_bin_edges)

    # -- generation -------------------------------------------------------------------------------------

    def sample(self, n_maps: int, seed: int, device: str | torch.device = "cpu") -> torch.Tensor:
        """``n_maps`` maps [n_maps, n_z, n_pix, n_pix] float32 on ``device``.

        The white noise is drawn from a CPU ``torch.Generator`` seeded with ``seed`` and then moved, so the
        random numbers are identical on every device; the FFTs run on ``device`` in float32, so maps agree
        across devices to float32 round-off (about 1e-7 relative), not bit for bit.
        """
        check_positive("n_maps", n_maps, integer=True)
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        shape = (n_maps, self.n_z, self.n_pix, self.n_pix)
        white = torch.randn(shape, generator=generator, dtype=torch.float32)
        noise = torch.randn(shape, generator=generator, dtype=torch.float32) if self.noise_sigma_pix > 0 else None
        white = white.to(device)
        colour = self._colour.to(device=device, dtype=torch.float32)
        w_k = torch.view_as_real(torch.fft.rfft2(white))  # [n, n_z, N, M, 2]
        field_k = torch.einsum("ijyx,njyxc->niyxc", colour, w_k)
        maps = torch.fft.irfft2(torch.view_as_complex(field_k.contiguous()), s=(self.n_pix, self.n_pix))
        if self.field == "lognormal":
            shift = torch.as_tensor(self.lognormal_shift, dtype=torch.float32, device=device)[None, :, None, None]
            sigma_g2 = torch.as_tensor(self._sigma_g2, dtype=torch.float32, device=device)[None, :, None, None]
            maps = shift * torch.expm1(maps - 0.5 * sigma_g2)
        return self._add_noise_and_smoothing(maps, noise)

    def observe(self, maps: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Convergence maps from elsewhere (N-body) with this simulator's shape noise and smoothing added."""
        noise = None
        if self.noise_sigma_pix > 0:
            noise = torch.randn(maps.shape, generator=generator, dtype=torch.float32)
        return self._add_noise_and_smoothing(maps, noise)

    def _add_noise_and_smoothing(self, maps: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        if noise is not None:
            maps = maps + self.noise_sigma_pix * noise.to(maps.device)
        if self.smoothing_arcmin > 0:
            beam = torch.as_tensor(self.beam(self._ell), dtype=torch.float32, device=maps.device)
            maps = torch.fft.irfft2(torch.fft.rfft2(maps) * beam, s=(self.n_pix, self.n_pix))
        return maps.contiguous()

    # -- lognormal helpers -------------------------------------------------------------------------------

    def _gaussian_mode_cov(self, kappa_mode_cov: np.ndarray) -> np.ndarray:
        """Mode covariance of g such that lambda_i (exp(g_i - sigma_i^2/2) - 1) has the target two-point function.

        xi_g^{ij}(r) = ln(1 + xi_kappa^{ij}(r) / (lambda_i lambda_j)) on the periodic grid; the FFTs go between
        the pixel correlation function and the per-mode variance. Negative mode variances (the lognormal
        transform of a spectrum need not be positive definite) are clipped by the matrix square root.
        """
        n = self.n_pix
        xi_kappa = np.fft.irfft2(kappa_mode_cov, s=(n, n)) / n**2  # pixel covariance xi(r), [n_z, n_z, N, N]
        lam = self.lognormal_shift
        xi_g = np.log1p(xi_kappa / (lam[:, None, None, None] * lam[None, :, None, None]))
        g_cov = np.fft.rfft2(xi_g).real * n**2
        g_cov[..., 0, 0] = 0.0
        return g_cov

    def _real_space_variance(self, mode_cov: np.ndarray) -> np.ndarray:
        """Per-pixel variance of each plane for a field with per-mode covariance ``mode_cov`` (rfft2 layout)."""
        n = self.n_pix
        diag = np.stack([mode_cov[i, i] for i in range(self.n_z)])
        return np.fft.irfft2(diag, s=(n, n))[:, 0, 0] / n**2

    def target_pixel_variance(self) -> np.ndarray:
        """Target one-point variance of kappa per plane (signal only, no noise, no smoothing)."""
        return self._real_space_variance(self._kappa_mode_cov)


def _bin_weights(ell: np.ndarray, ell_bin_edges: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Averaging weights [n_bins, N, M] over the rfft2 modes of each ell bin, and the bins' mean multipoles.

    Each rfft2 mode is weighted by how many fft2 modes it stands for, so the average runs over all fft2 modes.
    """
    edges = np.asarray(ell_bin_edges, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ConfigError(f"ell_bin_edges={edges.tolist()}: must be at least two increasing multipoles")
    multiplicity = _rfft_mode_multiplicity(ell.shape[0])
    idx = np.digitize(ell, edges) - 1
    weights = np.zeros((edges.size - 1,) + ell.shape)
    for b in range(edges.size - 1):
        in_bin = idx == b
        if not in_bin.any():
            raise ConfigError(f"ell_bin_edges: bin [{edges[b]:.0f}, {edges[b + 1]:.0f}) holds no Fourier mode")
        weights[b][in_bin] = multiplicity[in_bin] / multiplicity[in_bin].sum()
    centers = np.einsum("byx,yx->b", weights, ell)
    return weights, centers


def _bin_modes(mode_power: np.ndarray, ell: np.ndarray, ell_bin_edges: Sequence[float]):
    """Average rfft2-layout power [..., N, M] over the modes of each ell bin."""
    weights, centers = _bin_weights(ell, ell_bin_edges)
    return centers, np.einsum("...yx,byx->...b", mode_power, weights)


def _rfft_mode_multiplicity(n: int) -> np.ndarray:
    """How many fft2 modes each rfft2 mode stands for: 2 (it and its mirror), or 1 on self-paired columns."""
    weight = np.full((n, n // 2 + 1), 2.0)
    weight[:, 0] = 1.0
    if n % 2 == 0:
        weight[:, -1] = 1.0
    return weight


def apodisation_profile(n_pix: int, taper_pixels: int) -> np.ndarray:
    """One side's cosine taper [N] of ``apodisation_window``: 1 inside, rising as sin^2 over ``taper_pixels`` from
    each end, sampled at pixel centres."""
    check_positive("apodisation_pixels", taper_pixels, integer=True, allow_zero=True)
    if 2 * taper_pixels > n_pix:
        raise ConfigError(f"apodisation_pixels={taper_pixels}: must be at most half the map side ({n_pix // 2})")
    profile = np.ones(n_pix)
    if taper_pixels:
        rise = np.sin(0.5 * np.pi * (np.arange(taper_pixels) + 0.5) / taper_pixels) ** 2
        profile[:taper_pixels] = rise
        profile[-taper_pixels:] = rise[::-1]
    return profile


def apodisation_window(n_pix: int, taper_pixels: int) -> np.ndarray:
    """Separable cosine-tapered (Tukey) window [N, N]: 1 inside, rising as sin^2 over ``taper_pixels`` from each edge.

    A map that is not periodic (ray-traced, cut from the sky) jumps between opposite edges; the FFT sees that
    jump as a step and leaks power into every multipole along the axes. The taper takes the map to zero
    smoothly at the edges, so the jump is gone at the cost of the tapered area (mean window^2 < 1). Sampled at pixel
    centres, so no pixel is weighted zero (scipy.signal.windows.tukey puts its zeros on the edge pixels and would
    drop a row and a column of every map).
    """
    profile = apodisation_profile(n_pix, taper_pixels)
    return np.outer(profile, profile)


def default_apodisation_pixels(periodic: bool, n_pix: int) -> int:
    """The taper numl's figures and checks use for maps that are not periodic: an eighth of the side from each edge
    (8 of 64 pixels: the edge leak of an ell^-2 spectrum from 6 % to below 1 % at ell > 1200 on 3.5 deg maps,
    tests/test_lensing_sim.py); 0 for periodic maps."""
    return 0 if periodic else int(n_pix) // 8


def binned_power_spectra(maps: torch.Tensor, field_deg: float, ell_bin_edges: Sequence[float],
                         apodisation_pixels: int = 0) -> torch.Tensor:
    """Binned auto and cross power of each map: [n_maps, n_z, n_z, n_bins] float64 (steradian).

    ``apodisation_pixels`` > 0 multiplies the maps by ``apodisation_window`` first and divides the power by the
    window's mean square: the unbiased estimate for spectra smooth on the window's Fourier width (a few
    fundamental modes), the usual pseudo-C_ell normalisation without mode decoupling. 0: the periodic estimator.
    """
    if maps.ndim != 4 or maps.shape[-1] != maps.shape[-2]:
        raise ConfigError(f"maps shape {tuple(maps.shape)}: must be [n_maps, n_z, n_pix, n_pix]")
    n_maps, n_z, n, _ = maps.shape
    weights, _ = _bin_weights(fourier_ell(field_deg, n), ell_bin_edges)
    weights_t = torch.as_tensor(weights.reshape(weights.shape[0], -1).T, dtype=torch.float64, device=maps.device)
    maps = maps.to(torch.float64)
    window_norm = 1.0
    if apodisation_pixels:
        window = apodisation_window(n, apodisation_pixels)
        maps = maps * torch.as_tensor(window, device=maps.device)
        window_norm = float(np.mean(window**2))
    k = torch.view_as_real(torch.fft.rfft2(maps)).flatten(2, 3)  # [n, n_z, N*M, 2]
    out = torch.empty((n_maps, n_z, n_z, weights.shape[0]), dtype=torch.float64, device=maps.device)
    for i in range(n_z):
        for j in range(i, n_z):
            out[:, i, j] = (k[:, i] * k[:, j]).sum(-1) @ weights_t  # Re(k_i conj(k_j)) averaged per bin
            out[:, j, i] = out[:, i, j]
    return out * math.radians(field_deg) ** 2 / n**4 / window_norm


def measure_power_spectrum(
    maps: torch.Tensor, field_deg: float, ell_bin_edges: Sequence[float], apodisation_pixels: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Binned power averaged over maps: (ell_centers [n_bins], cl [n_z, n_z, n_bins]) as float64 numpy arrays.

    Estimator: mean of Re(kappa_i,k conj(kappa_j,k)) L^2 / N^4 over the Fourier modes in each bin (every fft2
    mode counted); ``ell_centers`` is the mode-averaged multipole of each bin. Maps that are not periodic want
    ``apodisation_pixels`` > 0 (``binned_power_spectra``).
    """
    cl = binned_power_spectra(maps, field_deg, ell_bin_edges, apodisation_pixels).mean(dim=0).cpu().numpy()
    _, centers = _bin_weights(fourier_ell(field_deg, maps.shape[-1]), ell_bin_edges)
    return centers, cl
