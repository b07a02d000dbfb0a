"""Ray-traced N-body convergence maps against CAMB: C_ell per multipole bin, the massive/massless ratio,
one-point skewness and peak counts, for a convergence table of particle-mesh settings.

    python experiments/lensing_nbody/map_check.py                                  # CPU default, z_s = 1
    python experiments/lensing_nbody/map_check.py --settings 128,256,20 --simulations 2 --device cuda

Per setting (particles, mesh, steps per side; box 256 Mpc/h; 3.5 x 3.5 deg maps of 64^2 pixels, noise-free):
`--simulations` matched pairs (M_nu = 0 and 0.1 eV from the same initial phases, ray traced with the same
plane randomisation, so the pair differs only by the neutrinos), `--maps` maps per simulation. C_ell is the
binned power of the maps over CAMB's Limber C_ell^kappa (HMcode-2020) times the maps' pixel window, measured
twice: with the periodic estimator and with the maps tapered over `--apodisation-pixels` from each edge (ray-traced
maps are not periodic: the jump between opposite edges leaks power into high multipoles; the taper removes it). The
massive/massless ratio, skewness and peaks are from the tapered spectra and the untapered maps.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from numl.sim.lensing import Cosmology, convergence_power_spectra, measure_power_spectrum
from numl.sim.lensing.maps import default_apodisation_pixels, fourier_ell
from numl.sim.lensing.nbody import NBodySuite, born_convergence
from numl.sim.lensing.statistics import local_maxima


def binned_camb(spectra, field_deg: float, n_pix: int, edges: np.ndarray) -> np.ndarray:
    """CAMB's C_ell averaged over the maps' Fourier modes in each bin, times the pixel window (square pixels)."""
    ell_grid = fourier_ell(field_deg, n_pix, real=False)
    cycles_per_pixel = np.fft.fftfreq(n_pix)
    window = (np.sinc(cycles_per_pixel[:, None]) * np.sinc(cycles_per_pixel[None, :])) ** 2
    cl = np.interp(ell_grid, spectra.ell, spectra.cl[0, 0]) * window
    return np.array([cl[(ell_grid >= lo) & (ell_grid < hi)].mean() for lo, hi in zip(edges[:-1], edges[1:],
                                                                                       strict=True)])


def peak_counts_per_deg2(maps: torch.Tensor, threshold: float, field_deg: float) -> float:
    """Local maxima (8 neighbours) above `threshold`, per square degree."""
    m = maps[:, 0]
    peaks = local_maxima(maps)[:, 0] & (m > threshold)
    # Peaks within one pixel of the edge see the opposite edge as neighbours: ray-traced maps are not periodic.
    peaks[:, [0, -1], :] = False
    peaks[:, :, [0, -1]] = False
    inner_area = field_deg**2 * ((m.shape[1] - 2) / m.shape[1]) ** 2
    return float(peaks.sum()) / (len(m) * inner_area)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=["64,128,20", "128,256,20"])
    parser.add_argument("--simulations", type=int, default=1)
    parser.add_argument("--maps", type=int, default=256)
    parser.add_argument("--source-redshift", type=float, default=1.0)
    parser.add_argument("--field-deg", type=float, default=3.5)
    parser.add_argument("--n-pix", type=int, default=64)
    parser.add_argument("--apodisation-pixels", type=int, default=None,
                        help="taper width; default: numl's for maps that are not periodic (an eighth of the side)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache-dir", default=os.environ.get("NUML_CACHE", ".cache") + "/camb")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.apodisation_pixels is None:
        args.apodisation_pixels = default_apodisation_pixels(periodic=False, n_pix=args.n_pix)
    cosmologies = [Cosmology(m_nu_ev=0.0), Cosmology(m_nu_ev=0.1)]
    edges = np.geomspace(200, 3000, 8)
    zs = [args.source_redshift]
    spectra = [convergence_power_spectra(c, zs, 6000, cache_dir=args.cache_dir, route="limber") for c in cosmologies]
    camb = [binned_camb(s, args.field_deg, args.n_pix, edges) for s in spectra]
    print(f"z_s {zs[0]}, {args.field_deg} deg, {args.n_pix}^2 px, noise-free, {args.simulations} matched pair(s) x "
          f"{args.maps} maps, box 256 Mpc/h, device {args.device}")
    print(f"setting | ell bin | C_ell / CAMB (M_nu=0), periodic estimator | {args.apodisation_pixels}-pixel taper | "
          "massive/massless sim | CAMB | diff [pp]")
    for setting in args.settings:
        n_particles, n_mesh, n_steps = (int(v) for v in setting.split(","))
        suite = NBodySuite.from_config({"n_particles": n_particles, "n_mesh": n_mesh, "n_steps": n_steps,
                                        "device": args.device})
        maps = [[], []]
        start = time.perf_counter()
        for sim in range(args.simulations):
            for k, cosmology in enumerate(cosmologies):
                tables = suite.tables(cosmology, args.cache_dir)
                planes = suite.light_cone(cosmology, 1000 + sim, tables.chi_of_z(zs[0]), args.cache_dir,
                                          f"check {sim + 1}")
                maps[k].append(born_convergence(planes, tables, zs, args.field_deg, args.n_pix, args.maps,
                                                seed=sim).cpu())
        seconds = (time.perf_counter() - start) / (2 * args.simulations)
        maps = [torch.cat(m) for m in maps]
        ell, periodic_cl = measure_power_spectrum(maps[0], args.field_deg, edges)
        cl = [measure_power_spectrum(m, args.field_deg, edges, args.apodisation_pixels)[1][0, 0] for m in maps]
        for i in range(len(edges) - 1):
            sim_ratio, camb_ratio = cl[1][i] / cl[0][i], camb[1][i] / camb[0][i]
            print(f"{setting} | {ell[i]:6.0f} | {periodic_cl[0, 0, i] / camb[0][i]:.3f} | "
                  f"{cl[0][i] / camb[0][i]:.3f} | {sim_ratio:.4f} | {camb_ratio:.4f} | "
                  f"{100 * (sim_ratio - camb_ratio):+.2f}")
        flat = maps[0][:, 0]
        skewness = float(((flat - flat.mean()) ** 3).mean() / flat.std() ** 3)
        sigma = float(flat.std())
        print(f"{setting} | kappa rms {sigma:.4f}, skewness {skewness:.2f}, peaks > 3 sigma per deg^2 "
              f"{peak_counts_per_deg2(maps[0], 3 * sigma, args.field_deg):.2f} (M_nu=0), "
              f"{peak_counts_per_deg2(maps[1], 3 * sigma, args.field_deg):.2f} (0.1 eV); "
              f"{seconds:.0f} s per simulation")


if __name__ == "__main__":
    main()
