"""numl's multi-plane and Born ray tracing against LensTools' RayTracer (Petri 2016) on identical lens planes.

    NUML_CACHE=.cache OMP_NUM_THREADS=1 python experiments/lensing_nbody/lenstools_check.py \
        --peer-python /tmp/ltvenv/bin/python

LensTools (1.2, numpy < 2) cannot share numl's environment: `--peer-python` is an interpreter with LensTools
installed, which runs this same file with `--peer-worker DIR` on an .npz of the planes and writes its maps back.
LensTools' 2021 source release needs numpy present at build time and the libraries of its time:

    python -m venv /tmp/ltvenv
    PIN="numpy<2 pandas<2.3 scipy<1.14 matplotlib<3.10"
    /tmp/ltvenv/bin/pip install $PIN setuptools wheel astropy
    /tmp/ltvenv/bin/pip install --no-build-isolation lenstools $PIN

One light cone to z_s (default 64^3 particles, 128^3 mesh, 256 Mpc/h, 20 steps, 2 slabs per box; simulated once
into numl's cache), one fixed projection per plane (--axis, --slab; no shift, flip or transposition, so both codes
see the same 2D planes), each plane's mean and Nyquist modes removed (LensTools' Poisson solve drops the mean; the
Nyquist modes have no odd derivative). numl traces with its own `born_convergence` and `multi_plane_convergence`,
their random plane orientations replaced by that fixed one. LensTools gets the same planes as DensityPlanes,
Fourier-interpolated onto a grid --upsample times finer (its ray tracer reads the nearest pixel and takes finite
differences there; on numl's grid that alone would differ by tens of per cent), their potentials from its own
DensityPlane.potential(), and shoots the same rays with RayTracer.shoot(kind="convergence") (multi-plane, with
the distortion matrix) and RayTracer.convergenceBorn.

Unit conversion (derived from LensTools' source, lenstools/simulations/raytracing.py):
- DensityPlane.potential() (l. 530): psi_ft = -2 res^2 / ((2 pi l)^2) data_ft, l in cycles per pixel, res the
  pixel in rad: laplacian_theta psi = 2 data, theta in rad. PotentialPlane.deflectionAngles/_grad (l. 316-374)
  divide by res: alpha = grad_theta psi [rad]; shearMatrix (l. 607-682) the Hessian in theta.
- shoot (l. 1229-1279, 1320): theta_{k+1} = theta_k + D_k, D_k = (A_k - 1) D_{k-1} + C_k alpha_k, C_k = -(chi_{k+1} -
  chi_k) / chi_{k+1} < 0: the ray's direction dx/dchi changes by -alpha_k at lens k, kappa = 1 - tr(A) / 2.
- numl's _trace_rays changes dx/dchi by -s_k grad_x psi_numl(x) with laplacian_x psi_numl = 2 Sigma and strength
  s_k = w_k chi_s / (chi_k (chi_s - chi_k)). With x = chi_k theta, grad_theta = chi_k grad_x, so the same
  rays need psi_LT(theta) = (s_k / chi_k) psi_numl(chi_k theta), i.e. laplacian_theta psi_LT = 2 s_k chi_k Sigma:
  DensityPlane data = w_k chi_s / (chi_s - chi_k) Sigma_k  ("matched": numl's kernel averaged over the plane).
- LensTools' own planes (simulations/nbody.py l. 569, 647, 804: cosmo_normalization * bin_resolution * chi / a
  times the projected delta) are data = (3/2) Omega_m (H0/c)^2 chi_k / a_k Sigma_k, and convergenceBorn
  (l. 1410) adds data (1 - chi_k / chi_s): the kernel at the lens, not averaged ("point kernel"); with w_k the
  average of (3/2) Omega_m (H0/c)^2 chi (chi_s - chi) / (chi_s a) over the plane these two coincide to first order
  in the plane thickness. Both are run: matched vs numl tests the conversion and the tracers, point vs matched
  (both LensTools) is the effect of averaging the kernel over the plane.
LensTools only uses distance ratios, so its lenses carry numl's distances in Mpc/h (labelled Mpc), and a stand-in
cosmology whose comoving_distance(z) is numl's CAMB table (convergenceBorn asks it for chi_s). A zero lens at
exactly z_s makes shoot and convergenceBorn end at chi_s (they interpolate linearly in z between the lenses around
the source, l. 1174, 1275, 1412).

Lenses: numl's lens planes at their centres, the plane holding the source at the middle of its part in front of
the source (multi_plane_convergence's convention; numl's Born samples that plane at its centre, LensTools' Born at
the lens: "Born, whole planes" leaves that plane out of both). Rays: --n-pix^2 over --field-deg at the pixel
centres.

Printed, for the raw planes and for the planes smoothed by Gaussians of --smooth-cells mesh cells (default 2, 4,
8; the same planes to both codes; smoothing removes the grid-scale modes where numl's bilinear interpolation of
its spectral derivatives and LensTools' nearest-pixel finite differences differ, so what is left is the
conversion and the ray tracing): for Born, Born without the plane holding the source, multi-plane and the
post-Born part (multi-plane minus Born, each code its own), the kappa rms (standard deviation) of numl and of
LensTools, their ratio, rms(LensTools - numl) / numl's rms [%] (mean difference included) and their correlation;
then LensTools with the point kernel against LensTools matched (the effect of averaging the kernel over the
plane), and that point-kernel LensTools against numl. About 15 s on one core with a cached light cone.

Measured (defaults, 2026-12-06): on planes smoothed by 8 cells the two codes agree to 0.27 % of kappa's rms for
Born and multi-plane (rms ratio 1.0005, correlation 1.00000) and their post-Born parts to 5 % (ratio 1.001,
correlation 0.9988), converging as the smoothing grows (2 cells: 1.5 %), so the conversion holds and what differs
is interpolation. On the raw planes LensTools' kappa rms is 1.20x numl's with these 8x-interpolated planes and
0.84x with its own nearest-pixel finite differences on numl's 128^2 grid (--upsample 1): at 2 Mpc/h cells, how a
ray reads the plane between mesh points sets the map's rms to +-20 % whatever the pixel size (rays are point
samples). Averaging the kernel over the 128 Mpc/h plane instead of taking it at the centre changes kappa by
0.2-0.3 % of its rms for Born and on smoothed planes (rms 0.15 % lower); on the raw planes the multi-plane maps
differ by 1.5 %, mostly the nearest-pixel reading's jumps (1.0 % at 16x interpolation).
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


# ----- LensTools side (runs under --peer-python: numpy and LensTools only) ------------------------------------------
def fourier_upsample(plane: np.ndarray, factor: int, shift: float, box: float) -> np.ndarray:
    """The band-limited interpolant of `plane` [n, n] (node (a, b) at (a, b) box / n) sampled at p box / (n factor)
    + shift on both axes: [n factor, n factor]."""
    n = plane.shape[0]
    modes = np.fft.fftfreq(n, 1.0 / n)
    phase = np.exp(2j * np.pi * modes * shift / box)
    big = np.zeros((n * factor, n * factor), dtype=complex)
    index = np.where(modes >= 0, modes, modes + n * factor).astype(int)
    big[np.ix_(index, index)] = np.fft.fft2(plane) * phase[:, None] * phase[None, :]
    return np.fft.ifft2(big).real * factor**2


def peer_worker(directory: Path) -> None:
    # LensTools 1.2 still uses numpy's float/complex aliases (removed in numpy 1.24): raytracing.py l. 62-64,
    # image/convergence.py l. 63-70.
    np.float = float
    np.complex = complex
    import astropy.units as u

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Could not import mpi4py"
        from lenstools.simulations.raytracing import DensityPlane, PotentialPlane, RayTracer

    data = dict(np.load(directory / "input.npz"))
    box, chi_s, z_s = float(data["box"]), float(data["chi_s"]), float(data["z_s"])
    chi_lens, z_lens, upsample = data["chi_lens"], data["z_lens"], int(data["upsample"])
    table_a, table_chi = data["table_a"], data["table_chi"]

    class Distances:  # convergenceBorn's only use of a cosmology: comoving_distance(z_s), numl's table [Mpc/h]
        @staticmethod
        def comoving_distance(z):
            return float(np.interp(1.0 / (1.0 + z), table_a, table_chi)) * u.Mpc

    theta = (np.arange(int(data["n_pix"])) + 0.5) * float(data["field_rad"]) / int(data["n_pix"])
    theta_1, theta_2 = np.meshgrid(theta, theta, indexing="ij")
    # Every ray one field width in from the planes' origin, and the planes shifted to match, so no ray reaches a
    # negative angle (LensTools' pixel index truncates towards zero: image/convergence.py l. 536).
    offset = float(data["field_rad"])
    positions = np.array([theta_1 + offset, theta_2 + offset]) * u.rad
    fine_cell = box / (data["sigma"].shape[-1] * upsample)
    results = {}
    for c, planes in enumerate(data["sigma"]):
        potentials = []
        for k, sigma in enumerate(planes):
            # fine pixel p (nearest-pixel reads take p for chi theta in [p, p + 1) fine cells) holds Sigma at its
            # centre, shifted by the rays' offset; LensTools' data[i, j] has j along x = positions[0] = theta_1.
            fine = fourier_upsample(sigma, upsample, 0.5 * fine_cell - offset * chi_lens[k], box)
            fine = np.ascontiguousarray(fine.T)
            density = DensityPlane(fine, angle=box / chi_lens[k] * u.rad, redshift=float(z_lens[k]),
                                   comoving_distance=chi_lens[k] * u.Mpc, cosmology=Distances())
            potentials.append(density.potential())
        for v, gains in enumerate(data["gains"]):
            tracer = RayTracer()
            for k, potential in enumerate(potentials):
                tracer.addLens(PotentialPlane(gains[k] * potential.data, angle=potential.side_angle,
                                              redshift=potential.redshift, cosmology=Distances(), unit=u.rad**2,
                                              comoving_distance=potential.comoving_distance))
            for chi, z in ((chi_s, z_s), (chi_s + box, z_s + 1.0)):  # the source, and one beyond (shoot asks for it)
                tracer.addLens(PotentialPlane(np.zeros((8, 8)), angle=box / chi * u.rad, redshift=z,
                                              comoving_distance=chi * u.Mpc, cosmology=Distances()))
            tracer.reorderLenses()
            born = tracer.convergenceBorn(positions, z=z_s, save_intermediate=True)
            results[f"born_{c}_{v}"] = born[-1]
            if v == 0:  # without the plane holding the source: numl's kernel only
                results[f"born_whole_{c}_{v}"] = born[-2] if len(born) > 1 else 0 * born[-1]
            results[f"multi_{c}_{v}"] = tracer.shoot(positions, z=z_s, kind="convergence")
    np.savez(directory / "output.npz", **results)


# ----- numl side -----------------------------------------------------------------------------------------------
def filtered(planes: np.ndarray, smooth_cells: float) -> np.ndarray:
    """[n_planes, n, n] without their means and Nyquist modes, Gaussian-smoothed by smooth_cells mesh cells."""
    n = planes.shape[-1]
    modes = np.fft.fftfreq(n, 1.0 / n)
    keep = (np.abs(modes) < n // 2)[:, None] & (np.abs(modes) < n // 2)[None, :]
    keep[0, 0] = False
    k_cells = 2 * np.pi * modes / n  # k times the cell
    window = np.exp(-0.5 * smooth_cells**2 * (k_cells[:, None] ** 2 + k_cells[None, :] ** 2))
    return np.fft.ifft2(np.fft.fft2(planes.astype(np.float64)) * keep * window).real


def compare(a: np.ndarray, b: np.ndarray) -> str:
    """numl map a, LensTools map b: rms of each, their ratio, rms(b - a) / rms(a) [%], correlation."""
    a, b = a.ravel(), b.ravel()
    return (f"{a.std():.5f} | {b.std():.5f} | {b.std() / a.std():.4f} | "
            f"{100 * np.sqrt(np.mean((b - a) ** 2)) / a.std():5.2f} | {np.corrcoef(a, b)[0, 1]:.5f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer-python", help="python with LensTools 1.2 installed (e.g. /tmp/ltvenv/bin/python)")
    parser.add_argument("--peer-worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--n-particles", type=int, default=64)
    parser.add_argument("--n-mesh", type=int, default=128)
    parser.add_argument("--n-steps", type=int, default=20)
    parser.add_argument("--box", type=float, default=256.0, help="Mpc/h")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--m-nu", type=float, default=0.0, help="eV")
    parser.add_argument("--z-source", type=float, default=1.0)
    parser.add_argument("--axis", type=int, default=0)
    parser.add_argument("--slab", type=int, default=0)
    parser.add_argument("--field-deg", type=float, default=3.5)
    parser.add_argument("--n-pix", type=int, default=128)
    parser.add_argument("--upsample", type=int, default=8, help="LensTools' planes: this many pixels per mesh cell")
    parser.add_argument("--smooth-cells", type=float, nargs="+", default=[2.0, 4.0, 8.0],
                        help="Gaussian sigmas [mesh cells] of the smoothed-plane comparisons")
    parser.add_argument("--cache-dir", default=str(Path(os.environ.get("NUML_CACHE") or Path.home() / ".cache" / "numl")
                                                   / "camb"), help="numl's CAMB and light-cone cache")
    args = parser.parse_args()
    if args.peer_worker:
        peer_worker(args.peer_worker)
        return
    if not args.peer_python:
        parser.error("give --peer-python, an interpreter with LensTools installed")

    from unittest import mock

    import torch

    from numl.sim.lensing import Cosmology
    from numl.sim.lensing.nbody import (
        HUBBLE_DISTANCE_MPC_H,
        LensPlanes,
        NBodySuite,
        _PlaneOrientation,
        born_convergence,
        lens_distances,
        multi_plane_convergence,
        plane_lensing_weights,
    )

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    start = time.perf_counter()
    suite = NBodySuite.from_config({"n_particles": args.n_particles, "n_mesh": args.n_mesh, "n_steps": args.n_steps,
                                    "box_mpc_h": args.box})
    cosmology = Cosmology(m_nu_ev=args.m_nu)
    tables = suite.tables(cosmology, args.cache_dir)
    z_s = args.z_source
    chi_s = tables.chi_of_z(z_s)
    suite.check_light_cone([z_s], args.field_deg, cosmology, args.cache_dir)
    light_cone = suite.light_cone(cosmology, args.seed, chi_s, args.cache_dir, "LensTools check")
    slabs = suite.setup.slabs_per_box
    choice = args.axis * slabs + args.slab
    edges = light_cone.chi_edges
    weights = plane_lensing_weights(light_cone, tables, np.array([chi_s]))[:, 0]
    lensing = np.flatnonzero(weights > 0)
    chi_lens = lens_distances(edges, chi_s)[lensing]  # multi_plane_convergence's lenses
    w = weights[lensing]
    front = (np.minimum(edges[1:], chi_s) - edges[:-1])[lensing] / np.diff(edges)[lensing]
    a_lens = tables.a_of_chi(chi_lens)
    gains = np.stack([w * chi_s / (chi_s - chi_lens),  # matched: numl's kernel averaged over the plane
                      # point kernel; the plane holding the source counts the part in front of it (its density
                      # taken as uniform across the plane's depth)
                      1.5 * tables.omega_m / HUBBLE_DISTANCE_MPC_H**2 * chi_lens / a_lens * front])
    print(f"light cone: {args.n_particles}^3 particles, {args.n_mesh}^3 mesh, {args.box:g} Mpc/h, {args.n_steps} "
          f"steps, seed {args.seed}, M_nu = {args.m_nu:g} eV: {len(lensing)} planes to z_s = {z_s:g} (chi_s = "
          f"{chi_s:.1f} Mpc/h, last plane {edges[lensing[-1]]:.0f}-{edges[lensing[-1] + 1]:.0f}), axis {args.axis} "
          f"slab {args.slab} of every plane; {args.n_pix}^2 rays over {args.field_deg:g} deg; LensTools' planes "
          f"{args.upsample}x finer ({args.n_mesh * args.upsample}^2)")
    print(f"point kernel / averaged kernel per plane: {np.array2string(gains[1] / gains[0], precision=4)}")

    def fixed_draw(cls, generator, n_maps, n_choices, box, device):  # one projection, no shift, flip or transpose
        return cls(torch.full((n_maps,), choice, device=device),
                   torch.zeros((n_maps, 2), dtype=torch.float64, device=device),
                   torch.zeros((n_maps, 2), dtype=torch.bool, device=device),
                   torch.zeros(n_maps, dtype=torch.bool, device=device))

    chosen = light_cone.surface_density[lensing, args.axis, args.slab].double().numpy()
    configs = {"raw planes": 0.0} | {f"planes smoothed by {smooth:g} cells": smooth for smooth in args.smooth_cells}
    sigma, numl_maps = [], []
    for smooth in configs.values():
        planes32 = filtered(chosen, smooth).astype(np.float32)
        sigma.append(planes32.astype(np.float64))
        density = light_cone.surface_density[: lensing[-1] + 1].clone()
        density[lensing, args.axis, args.slab] = torch.from_numpy(planes32)
        planes = LensPlanes(edges[: lensing[-1] + 2], light_cone.a_centre[: lensing[-1] + 1], density, args.box)
        whole = LensPlanes(edges[: lensing[-1] + 1], light_cone.a_centre[: lensing[-1]], density[:-1], args.box)
        with mock.patch.object(_PlaneOrientation, "draw", classmethod(fixed_draw)):
            numl_maps.append({name: ray_trace(p, tables, [z_s], args.field_deg, args.n_pix, 1, seed=0)[0, 0].double()
                             .numpy() for name, ray_trace, p in (("born", born_convergence, planes),
                                                                 ("born_whole", born_convergence, whole),
                                                                 ("multi", multi_plane_convergence, planes))})
    numl_time = time.perf_counter() - start

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "input.npz", sigma=np.stack(sigma), gains=gains, chi_lens=chi_lens,
                 z_lens=1.0 / a_lens - 1.0, chi_s=chi_s, z_s=z_s, box=args.box, field_rad=math.radians(args.field_deg),
                 n_pix=args.n_pix, upsample=args.upsample, table_a=tables.a, table_chi=tables.chi)
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        done = subprocess.run([args.peer_python, str(Path(__file__).resolve()), "--peer-worker", tmp],
                              capture_output=True, text=True, env=env)
        if done.returncode:
            sys.exit(f"LensTools side failed:\n{done.stderr}")
        lt = dict(np.load(Path(tmp) / "output.npz"))
    print(f"numl (light cone, planes, ray tracing) {numl_time:.0f} s, LensTools {time.perf_counter() - start:.0f} s")

    for c, name in enumerate(configs):
        ours = numl_maps[c]
        print(f"\n{name} | kappa rms numl | LensTools | ratio | rms(LensTools - numl) / rms numl [%] | correlation")
        for key, label in (("born", "Born"), ("born_whole", "Born, whole planes"), ("multi", "multi-plane")):
            print(f"{label} | {compare(ours[key], lt[f'{key}_{c}_0'])}")
        post_numl, post_lt = ours["multi"] - ours["born"], lt[f"multi_{c}_0"] - lt[f"born_{c}_0"]
        print(f"post-Born (multi-plane - Born) | {compare(post_numl, post_lt)}")
        for key, label in (("born", "Born"), ("multi", "multi-plane")):
            point, matched = lt[f"{key}_{c}_1"], lt[f"{key}_{c}_0"]
            print(f"LensTools point kernel vs averaged, {label}: rms(point - averaged) / rms "
                  f"{100 * np.sqrt(np.mean((point - matched) ** 2)) / matched.std():.2f} %, rms ratio "
                  f"{point.std() / matched.std():.4f}; point vs numl: {compare(ours[key], point)}")


if __name__ == "__main__":
    main()
