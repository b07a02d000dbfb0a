"""The N-body's matter power spectrum at z = 0 against CAMB, for a convergence table of particle-mesh settings.

    python experiments/lensing_nbody/pk_check.py                       # the CPU default and a finer setting
    python experiments/lensing_nbody/pk_check.py --settings 64,128,20 128,256,40 --device cuda

Per setting (particles, mesh, steps per side; box 256 Mpc/h) and per k band: the simulated total-matter P(k)
over CAMB's non-linear (HMcode-2020) and linear spectra for M_nu = 0, and the massive-neutrino suppression
P(k; 0.1 eV) / P(k; 0) of the simulation (matched initial phases, so sample variance cancels) against CAMB's
non-linear ratio, in percentage points. Also the seconds per simulation.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from numl.sim.lensing import Cosmology
from numl.sim.lensing.nbody import (
    ParticleMeshSetup,
    ParticleMeshSimulation,
    camb_matter_power_z0,
    linear_tables,
    matter_power_spectrum,
)

K_BANDS = [(0.05, 0.1), (0.1, 0.2), (0.2, 0.4), (0.4, 0.7), (0.7, 1.0), (1.0, 1.5)]


def simulate_power(m_nu_ev: float, setup: ParticleMeshSetup, seed: int, device: str, cache_dir: str):
    tables = linear_tables(Cosmology(m_nu_ev=m_nu_ev), setup.z_init,
                           1.1 * np.sqrt(3) * np.pi * setup.n_mesh / setup.box_mpc_h, cache_dir)
    simulation = ParticleMeshSimulation(tables, setup, seed, device)
    start = time.perf_counter()
    positions, _ = simulation.run()
    seconds = time.perf_counter() - start
    k, power, modes = matter_power_spectrum(positions, simulation)
    return k, power, modes, seconds


def band_mean(k, values, weights, band):
    inside = (k >= band[0]) & (k < band[1])
    return float(np.sum(values[inside] * weights[inside]) / np.sum(weights[inside])) if inside.any() else np.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=["64,128,20", "128,256,20"],
                        help="particles,mesh,steps per side (box 256 Mpc/h)")
    parser.add_argument("--box", type=float, default=256.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache-dir", default=os.environ.get("NUML_CACHE", ".cache") + "/camb")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    print(f"box {args.box} Mpc/h, z_init 19, seed {args.seed}, device {args.device}")
    print("setting (particles, mesh, steps) | k band [h/Mpc] | P/P_HMcode | P/P_lin | suppression sim | CAMB | "
          "diff [pp]")
    for setting in args.settings:
        n_particles, n_mesh, n_steps = (int(v) for v in setting.split(","))
        setup = ParticleMeshSetup(box_mpc_h=args.box, n_particles=n_particles, n_mesh=n_mesh, n_steps=n_steps)
        k, p0, modes, t0 = simulate_power(0.0, setup, args.seed, args.device, args.cache_dir)
        _, p1, _, t1 = simulate_power(0.1, setup, args.seed, args.device, args.cache_dir)
        camb0 = camb_matter_power_z0(Cosmology(m_nu_ev=0.0), k, args.cache_dir)
        camb1 = camb_matter_power_z0(Cosmology(m_nu_ev=0.1), k, args.cache_dir)
        for band in K_BANDS:
            if band[0] > k.max():
                continue
            nl = band_mean(k, p0 / camb0["nonlinear"], modes, band)
            lin = band_mean(k, p0 / camb0["linear"], modes, band)
            sim_ratio = band_mean(k, p1 / p0, modes, band)
            camb_ratio = band_mean(k, camb1["nonlinear"] / camb0["nonlinear"], modes, band)
            print(f"{setting:>12} | {band[0]:.2f}-{band[1]:.2f} | {nl:.3f} | {lin:.3f} | {sim_ratio:.4f} | "
                  f"{camb_ratio:.4f} | {100 * (sim_ratio - camb_ratio):+.2f}")
        print(f"{setting:>12} | seconds per simulation: {0.5 * (t0 + t1):.1f}")


if __name__ == "__main__":
    main()
