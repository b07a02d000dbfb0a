"""Sensor-level detector response of a NEXT-like high-pressure xenon EL TPC (data.sim.detector_response=sensors).

The chain, per event (issue 15, detector response):
1. ionisation: each deposit frees N_e = E / W_i electrons with Fano variance F N_e;
2. drift to the anode (z = 0): attachment (each electron survives exp(-t / lifetime)), transverse and
   longitudinal diffusion;
3. electroluminescence: every electron gives Poisson photoelectrons at the energy plane (PMTs) and, through the
   point-spread function of the EL gap, at each SiPM of the tracking plane, in time slices;
4. hit reconstruction per slice, as IC's penthesilea: SiPMs above threshold become hits at their centres, sharing
   the slice's energy-plane energy by their charge; slices without a SiPM above threshold give their energy to the
   nearest slice with hits (IC merges such "NN" hits the same way); a constant calibration residual per event;
   without deconvolution the topology hits keep only SiPMs above a higher threshold (IC esmeralda's
   threshold_charge_high), the energy of the others going to the hits left in their slice;
5. optionally Richardson-Lucy deconvolution of the hits with the known diffusion + PSF kernel onto the voxel grid
   (IC's beersheba, Simon et al. 2021, arXiv:2102.11931).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy.fft import next_fast_len
from scipy.interpolate import RegularGridInterpolator
from scipy.ndimage import gaussian_filter1d
from scipy.signal import fftconvolve
from scipy.spatial import cKDTree

from numl.utils.errors import ConfigError

if TYPE_CHECKING:
    from numl.sim.next.generator import NextSimConfig

#: SiPMs of the tracking plane within this many pitches of an electron (each way) see its light: at 3 pitches
#: (30 mm for NEXT-White) the PSF is below 2 % of its peak.
PSF_REACH_MM = 30.0
#: transverse cell (mm) in which electrons of one slice are grouped before their light is spread on the SiPMs:
#: small against the PSF width (~10 mm) and the pitch
LIGHT_CELL_MM = 2.0


def el_psf_per_mm2(cfg: NextSimConfig, r_mm: np.ndarray) -> np.ndarray:
    """Fraction of the EL photons of one electron that reach 1 mm^2 of the tracking plane at transverse distance
    r: isotropic light emitted uniformly along the EL gap, between heights d and d + gap above the SiPM plane,
    solid angle per unit area h / (4 pi (r^2 + h^2)^(3/2)) averaged over h (closed form). Reflections on the
    walls and the anode are left out (they would add a flat pedestal)."""
    d, gap = cfg.sipm_plane_distance_mm, cfg.el_gap_mm
    r = np.asarray(r_mm, dtype=np.float64)
    return (1 / np.sqrt(r**2 + d**2) - 1 / np.sqrt(r**2 + (d + gap) ** 2)) / (4 * np.pi * gap)


def ionise_and_drift(rng: np.random.Generator, cfg: NextSimConfig, pos_mm: np.ndarray, energy_kev: np.ndarray,
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Ionisation electrons of the deposits (Gaussian with the Fano variance, deposits are ~100 electrons) that
    survive attachment during the drift, at the anode after diffusion: (positions (n, 3), index of their
    deposit). z is the arrival time times the drift velocity."""
    mean = energy_kev * 1e3 / cfg.ionisation_energy_ev
    n_e = np.rint(mean + np.sqrt(cfg.fano_factor * mean) * rng.standard_normal(mean.size)).clip(0).astype(np.int64)
    drift_us = np.clip(pos_mm[:, 2], 0, None) / cfg.drift_velocity_mm_per_us
    survive = rng.binomial(n_e, np.exp(-drift_us / (cfg.electron_lifetime_ms * 1e3)))
    source = np.repeat(np.arange(len(energy_kev)), survive)
    start = pos_mm[source]
    drift_cm = np.clip(start[:, 2], 0, None) / 10.0
    sigma_t = cfg.transverse_diffusion_mm_per_sqrt_cm * np.sqrt(drift_cm)
    sigma_l = cfg.longitudinal_diffusion_mm_per_sqrt_cm * np.sqrt(drift_cm)
    return start + rng.standard_normal(start.shape) * np.column_stack([sigma_t, sigma_t, sigma_l]), source


def slice_width_mm(cfg: NextSimConfig) -> float:
    return cfg.time_slice_us * cfg.drift_velocity_mm_per_us


def hit_threshold_pe(cfg: NextSimConfig) -> float:
    """The SiPM charge a hit needs: sipm_threshold_pe for the deconvolution (beersheba's input), and without it the
    topology threshold on top (esmeralda drops the hits below threshold_charge_high from the 6 pe hits)."""
    if cfg.deconvolution != "none" or cfg.sipm_topology_threshold_pe is None:
        return cfg.sipm_threshold_pe
    return max(cfg.sipm_threshold_pe, cfg.sipm_topology_threshold_pe)


def sensor_hits(rng: np.random.Generator, cfg: NextSimConfig,
                electrons_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hits (x, y, z) mm and their energies (keV) from the electrons at the anode: energy-plane and SiPM
    photoelectrons per time slice, SiPMs of at least hit_threshold_pe(cfg), the slice's energy shared by SiPM charge.
    Empty if no SiPM passes the threshold anywhere. The random numbers drawn do not depend on the threshold, so the
    same event seen with two thresholds differs only in its hits."""
    empty = np.zeros((0, 3)), np.zeros(0)
    if not len(electrons_mm):
        return empty
    width = slice_width_mm(cfg)
    pitch = cfg.sipm_pitch_mm
    n_sipm = np.floor(np.array(cfg.detector_size_mm[:2]) / pitch).astype(np.int64)
    slice_of = np.floor(np.clip(electrons_mm[:, 2], 0, None) / width).astype(np.int64)
    # energy plane: Poisson photoelectrons per slice, converted back with the mean yield and corrected for the
    # known lifetime at the slice's drift time (the Kr map's job in NEXT)
    slices, per_slice = np.unique(slice_of, return_counts=True)
    pes = rng.poisson(cfg.energy_plane_pe_per_electron * per_slice)
    drift_us = (slices + 0.5) * cfg.time_slice_us
    slice_kev = (pes / cfg.energy_plane_pe_per_electron * cfg.ionisation_energy_ev * 1e-3
                 * np.exp(drift_us / (cfg.electron_lifetime_ms * 1e3)))
    # tracking plane: electrons grouped per (slice, cell), their light spread on the SiPMs around them. Keys are
    # dense integers over the event's bounding box (bincount instead of sorting: this is the response's hot loop)
    rank = np.searchsorted(slices, slice_of)
    cell = np.floor(electrons_mm[:, :2] / LIGHT_CELL_MM).astype(np.int64)
    cell_low = cell.min(axis=0)
    cell_span = cell.max(axis=0) - cell_low + 1
    key = (rank * cell_span[0] + cell[:, 0] - cell_low[0]) * cell_span[1] + cell[:, 1] - cell_low[1]
    keys, counts = np.unique(key, return_counts=True)
    group_rank = keys // (cell_span[0] * cell_span[1])
    centre = (np.column_stack([keys // cell_span[1] % cell_span[0], keys % cell_span[1]]) + cell_low + 0.5) \
        * LIGHT_CELL_MM
    reach = int(np.ceil(PSF_REACH_MM / pitch))
    offsets = np.arange(-reach, reach + 1)
    home = np.floor(centre / pitch).astype(np.int64)
    shape = (len(keys), offsets.size, offsets.size)
    ix = np.broadcast_to(home[:, 0, None, None] + offsets[None, :, None], shape)
    iy = np.broadcast_to(home[:, 1, None, None] + offsets[None, None, :], shape)
    inside = (ix >= 0) & (ix < n_sipm[0]) & (iy >= 0) & (iy < n_sipm[1])
    r = np.hypot((ix + 0.5) * pitch - centre[:, 0, None, None], (iy + 0.5) * pitch - centre[:, 1, None, None])
    sipm_pe_per_electron = (cfg.el_photons_per_electron * cfg.sipm_detection_efficiency * cfg.sipm_size_mm**2
                            * el_psf_per_mm2(cfg, r))
    mean = (counts[:, None, None] * sipm_pe_per_electron)[inside]
    sipm_low = home.min(axis=0) - reach
    sipm_span = home.max(axis=0) + reach - sipm_low + 1
    owner = np.broadcast_to(group_rank[:, None, None], shape)[inside]
    local = (ix[inside] - sipm_low[0]) * sipm_span[1] + iy[inside] - sipm_low[1]
    per_slice_sipms = sipm_span[0] * sipm_span[1]
    charge = rng.poisson(np.bincount(owner * per_slice_sipms + local, weights=mean,
                                     minlength=len(slices) * per_slice_sipms))
    above = charge >= hit_threshold_pe(cfg)
    if not above.any():
        return empty
    flat = np.flatnonzero(above)
    hit_slice, hit_local, hit_q = flat // per_slice_sipms, flat % per_slice_sipms, charge[above].astype(np.float64)
    # slices without a SiPM above threshold: their energy goes to the nearest slice that has hits
    with_hits = np.unique(hit_slice)
    target = with_hits[np.abs(slices[with_hits][None, :] - slices[:, None]).argmin(axis=1)]
    energy = np.bincount(target, weights=slice_kev, minlength=len(slices))
    q_sum = np.bincount(hit_slice, weights=hit_q, minlength=len(slices))
    hit_kev = energy[hit_slice] * hit_q / q_sum[hit_slice]
    pos = np.column_stack([(hit_local // sipm_span[1] + sipm_low[0] + 0.5) * pitch,
                           (hit_local % sipm_span[1] + sipm_low[1] + 0.5) * pitch, (slices[hit_slice] + 0.5) * width])
    return pos, hit_kev


def deconvolution_kernel(cfg: NextSimConfig, drift_mm: float, cell_mm: float,
                         z_step_mm: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The blur between the ionisation and the hits interpolated onto cells of cell_mm in x and y and z_step_mm
    (default cell_mm) in z, for charge drifted drift_mm: transverse diffusion (Gaussian) * EL point-spread function
    * the linear interpolation between SiPMs (a triangle of half-width one pitch) in x and y; longitudinal diffusion
    * the interpolation between slices in z (none when z_step_mm is the slice width: the image is the slices).
    The kernel is the product of a transverse (x, y) and a longitudinal (z) profile, returned as the two factors,
    each normalised to sum 1 (odd lengths, centred)."""
    z_step_mm = cell_mm if z_step_mm is None else z_step_mm
    drift_cm = max(drift_mm, 0.0) / 10.0
    sigma_t = cfg.transverse_diffusion_mm_per_sqrt_cm * np.sqrt(drift_cm) / cell_mm
    sigma_l = cfg.longitudinal_diffusion_mm_per_sqrt_cm * np.sqrt(drift_cm) / z_step_mm
    half = int(np.ceil((PSF_REACH_MM + cfg.sipm_pitch_mm + 3 * sigma_t * cell_mm) / cell_mm))
    x = np.arange(-half, half + 1) * cell_mm
    psf = el_psf_per_mm2(cfg, np.hypot(x[:, None], x[None, :]))
    psf = gaussian_filter1d(gaussian_filter1d(psf, sigma_t, axis=0, mode="constant"), sigma_t, axis=1,
                            mode="constant") if sigma_t > 0 else psf
    tri = np.clip(1 - np.abs(x) / cfg.sipm_pitch_mm, 0, None)
    psf = fftconvolve(fftconvolve(psf, tri[:, None], mode="same"), tri[None, :], mode="same")
    width = slice_width_mm(cfg)
    half_z = int(np.ceil((width + 3 * sigma_l * z_step_mm) / z_step_mm))
    z = np.arange(-half_z, half_z + 1) * z_step_mm
    kz = np.clip(1 - np.abs(z) / width, 0, None)
    kz = gaussian_filter1d(kz, sigma_l, mode="constant") if sigma_l > 0 else kz
    psf = np.clip(psf, 0, None)
    return psf / psf.sum(), kz / kz.sum()


def richardson_lucy(image: np.ndarray, kernel_xy: np.ndarray, kernel_z: np.ndarray, iterations: int,
                    tolerance: float | None = None, device: str = "cpu", precision: str = "float64") -> np.ndarray:
    """Richardson-Lucy deconvolution of a 3D image (x, y, z) blurred by the separable kernel kernel_xy (x, y) times
    kernel_z (z), with scikit-image's update (estimate started at 0.5, 'same'-mode convolutions, 1e-12 added to the
    blurred estimate, here after clipping it at 0), in float64 or float32 (precision).

    Written here rather than calling skimage.restoration.richardson_lucy (which this matches to float rounding,
    tests/test_next_response.py) because that one transforms the kernel again in each of its 2 x iterations
    convolutions and convolves in 3D; here the transverse kernel is transformed once, the blur is a 2D FFT
    convolution per z layer and a banded matrix product along z, and the same code runs on a GPU (device="cuda"):
    on one CPU thread 2.2x faster at 10 mm and 2.1x at 2 mm in float64, 3.9x at 2 mm in float32
    (experiments/next_topology/deconvolution_speed.py).

    With a tolerance, the iteration stops once the estimate changes by less than tolerance in one iteration (sum of
    absolute changes over its sum; IC's beersheba stops on a chi-square-like difference of successive estimates,
    iter_thr, and goes on silently when it is not reached), and a deconvolution that has not got there after
    `iterations` raises a one-line error naming data.sim.deconvolution_tolerance."""
    if any(n % 2 == 0 for n in (*kernel_xy.shape, *kernel_z.shape)):
        raise ValueError(f"richardson_lucy: kernel lengths must be odd, got {kernel_xy.shape} and {kernel_z.shape}")
    nx, ny, nz = image.shape
    kx, ky = kernel_xy.shape
    fast = [next_fast_len(nx + kx - 1, real=True), next_fast_len(ny + ky - 1, real=True)]
    crop = (slice(None), slice(kx // 2, kx // 2 + nx), slice(ky // 2, ky // 2 + ny))
    as_tensor = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=getattr(torch, precision),  # noqa: E731
                                            device=device)
    # z first: the transverse FFTs run over the contiguous last two axes
    observed = as_tensor(np.moveaxis(image, 2, 0))
    kernel_xy_t = as_tensor(kernel_xy)
    # the mirrored kernel (the adjoint of the blur) of a real kernel: flipped in every axis
    blur_xy = torch.fft.rfftn(kernel_xy_t, s=fast)
    mirror_xy = torch.fft.rfftn(kernel_xy_t.flip(0, 1), s=fast)
    # the 'same'-mode convolution along z as a banded (nz, nz) matrix: out[i] = sum_j kernel_z[i - j + c] in[j];
    # its transpose convolves with the mirrored kernel
    offset = np.arange(nz)[:, None] - np.arange(nz)[None, :] + kernel_z.shape[0] // 2
    inside = (offset >= 0) & (offset < kernel_z.shape[0])
    blur_z = as_tensor(np.where(inside, kernel_z[offset.clip(0, kernel_z.shape[0] - 1)], 0.0))
    mirror_z = blur_z.T.contiguous()

    def convolve(volume: torch.Tensor, transverse: torch.Tensor, longitudinal: torch.Tensor) -> torch.Tensor:
        along_z = (longitudinal @ volume.reshape(nz, -1)).reshape(nz, nx, ny)
        spectrum = torch.fft.rfftn(along_z, s=fast, dim=(1, 2)) * transverse
        return torch.fft.irfftn(spectrum, s=fast, dim=(1, 2))[crop]

    # scikit-image adds 1e-12 to the blurred estimate against division by zero; the FFT's rounding also leaves
    # tiny negative values where the blur is ~0 (~1e-8 of the maximum in float32), which would flip or blow up the
    # multiplicative update there: the blur is clipped at 0 and the floor raised to the precision's resolution
    floor = max(1e-12, torch.finfo(observed.dtype).eps)
    estimate = torch.full_like(observed, 0.5)
    change = float("inf")
    for _ in range(iterations):
        previous = estimate
        blurred = convolve(estimate, blur_xy, blur_z).clamp_min(0) + floor
        estimate = estimate * convolve(observed / blurred, mirror_xy, mirror_z)
        if tolerance is not None:
            change = float((estimate - previous).abs().sum() / estimate.sum().clamp_min(1e-30))
            if change < tolerance:
                break
    result = np.moveaxis(estimate.cpu().double().numpy(), 0, 2)
    if not np.all(np.isfinite(result)):
        raise ConfigError("data.sim.deconvolution='richardson_lucy': the deconvolution gave non-finite cells")
    if tolerance is not None and change >= tolerance:
        raise ConfigError(f"data.sim.deconvolution_tolerance={tolerance}: Richardson-Lucy did not converge in "
                          f"data.sim.deconvolution_iterations={iterations} (last relative change {change:.2g}); "
                          "allow more iterations or a larger tolerance")
    return result


def richardson_lucy_voxels(cfg: NextSimConfig, hit_mm: np.ndarray, hit_kev: np.ndarray,
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Deconvolve the hits onto cells of voxel_size_mm (as IC's beersheba: hits interpolated onto the fine grid,
    Richardson-Lucy with the diffusion + PSF kernel at the event's mean drift, cells below
    deconvolution_cut of the maximum dropped, each z layer given the energy its slices measured). Returns
    global voxel indices and energies (keV).

    In z the image keeps every time slice unless the slices are thicker than the cells (deconvolution_slices "all":
    cells of voxel_size_mm x voxel_size_mm x one slice, deconvolved, then each voxel_size_mm layer sums its slices;
    beersheba too deconvolves every slice and voxelises afterwards). "layer_centre" interpolates the slices at the
    cells' centres, which at 10 mm cells and 2 mm slices reads one slice in five: the former default, a defect
    (tracks running flat between the read slices broke apart, more at low pressure), kept to rebuild the tables
    made with it."""
    cell = cfg.voxel_size_mm
    pitch, width = cfg.sipm_pitch_mm, slice_width_mm(cfg)
    # the hits on their own (SiPM x SiPM x slice) lattice, two empty sensors / slices of margin around them
    lattice = np.rint((hit_mm - [pitch / 2, pitch / 2, width / 2]) / [pitch, pitch, width]).astype(np.int64)
    low = lattice.min(axis=0) - 2
    shape = lattice.max(axis=0) - low + 3
    coarse = np.zeros(shape)
    np.add.at(coarse, tuple((lattice - low).T), hit_kev)
    axes = [(low[a] + np.arange(shape[a]) + 0.5) * step for a, step in enumerate((pitch, pitch, width))]
    interpolate = RegularGridInterpolator(axes, coarse, method="linear", bounds_error=False, fill_value=0.0)
    first = np.floor(np.array([ax[0] for ax in axes]) / cell).astype(np.int64)
    last = np.floor(np.array([ax[-1] for ax in axes]) / cell).astype(np.int64)
    fine_axes = [(np.arange(first[a], last[a] + 1) + 0.5) * cell for a in range(3)]
    # slices thicker than the cells are interpolated between, as before: reading them as layers would leave gaps
    every_slice = cfg.deconvolution_slices == "all" and width <= cell
    z_step = width if every_slice else cell
    if every_slice:
        fine_axes[2] = axes[2]
    grid = np.stack(np.meshgrid(*fine_axes, indexing="ij"), axis=-1)
    image = interpolate(grid.reshape(-1, 3)).reshape(grid.shape[:3]).clip(0)
    kernel_xy, kernel_z = deconvolution_kernel(cfg, float(np.average(hit_mm[:, 2], weights=hit_kev)), cell, z_step)
    result = richardson_lucy(image / image.max(), kernel_xy, kernel_z, cfg.deconvolution_iterations,
                             cfg.deconvolution_tolerance, cfg.deconvolution_device, cfg.deconvolution_precision)
    result[result < cfg.deconvolution_cut * result.max()] = 0
    n_layers = last[2] - first[2] + 1
    if every_slice:
        # each voxel_size_mm layer sums the slices whose centres lie in it
        layer_of_slice = np.floor(axes[2] / cell).astype(np.int64) - first[2]
        result = result @ (layer_of_slice[:, None] == np.arange(n_layers)[None, :]).astype(result.dtype)
    # energy per z layer as the slices measured it (the deconvolution only moves charge within the event)
    layer_kev = np.bincount(np.floor(hit_mm[:, 2] / cell).astype(np.int64) - first[2], weights=hit_kev,
                            minlength=n_layers)[:n_layers]
    layer_sum = result.sum(axis=(0, 1))
    covered = layer_sum > 0
    scale = np.zeros_like(layer_sum)
    scale[covered] = layer_kev[covered] / layer_sum[covered]
    # layers with energy but no deconvolved charge left: their energy is shared in proportion over the event
    scale += (hit_kev.sum() - (layer_sum * scale).sum()) / max(result.sum(), 1e-300) * covered
    voxel = result * scale[None, None, :]
    index = np.argwhere(voxel > 0)
    energy = voxel[tuple(index.T)]
    index = index + first
    # cells past the detector's walls (the margin around the hits) are dropped with their little energy
    inside = np.all((index >= 0) & (index < np.array(cfg.grid_shape)), axis=1)
    return index[inside].astype(np.int32), energy[inside]


def label_voxels(cfg: NextSimConfig, index: np.ndarray, electrons_mm: np.ndarray, segment: np.ndarray,
                 n_classes: int) -> np.ndarray:
    """Segment label of each reconstructed voxel: the majority class of the (true, diffused) electrons inside
    it; voxels no electron reached take the label of the nearest voxel that one did."""
    grid = np.array(cfg.grid_shape)
    true_index = np.clip(np.floor(electrons_mm / cfg.voxel_size_mm).astype(np.int64), 0, grid - 1)
    flat = np.ravel_multi_index(true_index.T, grid)
    keys, inverse = np.unique(flat, return_inverse=True)
    votes = np.stack([np.bincount(inverse, weights=segment == c, minlength=keys.size) for c in range(n_classes)],
                     axis=1)
    true_label = votes.argmax(axis=1)
    wanted = np.ravel_multi_index(np.clip(index, 0, grid - 1).T.astype(np.int64), grid)
    at = np.searchsorted(keys, wanted).clip(0, keys.size - 1)
    found = keys[at] == wanted
    label = true_label[at]
    if not found.all():
        _, nearest = cKDTree(np.stack(np.unravel_index(keys, grid), axis=1)).query(index[~found])
        label[~found] = true_label[nearest]
    return label.astype(np.int8)
