"""Multi-plane ray tracing against the Born approximation on the same N-body maps: what the post-Born terms change.

    python experiments/lensing_nbody/born_check.py --born data/lensing_nbody_study_noise_free.h5 \
        --multi-plane data/lensing_nbody_study_noise_free_multi_plane.h5

Both files are `python -m numl.simulate` outputs of one config that differ only in data.nbody.ray_tracing: the
same light cones, and the same plane orientations map by map, so every difference is post-Born (lens-lens
coupling, rays off the straight line) and statistics are compared map by map (paired). Printed for every source
plane, over all maps of both classes (and per class for the neutrino signal): C_ell per multipole bin (tapered
estimator, as the study), the massive/massless C_ell ratio, kappa rms, skewness and kurtosis, peak counts above 1
and 3 sigma, and how much the maps themselves differ. Errors: 68 % intervals over 1,000 resamplings of the maps
(maps of one simulation share its modes, so these are lower bounds).

`--paired-runs BORN_RUN MULTI_PLANE_RUN`: two `numl.train` run directories tested on the same test maps ray traced
both ways: every estimator in both runs, its accuracy in each, the difference per test simulation, and McNemar's
test of the difference (the maps that one gets right and the other wrong), without the ray-tracing files.
McNemar's test counts maps as independent, which maps of one simulation are not: its p is too small
(simulation_cv.py tests the statistics over simulations).

`--speed N`: both ray tracers on one light cone of the files' setup (simulated once into the cache, seed 0),
N maps each, alternately three times in this process; prints maps per second and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from scipy.stats import binomtest
from simulation_cv import classified_right, run_test_data

from numl.pipeline import PREDICTIONS_FILE
from numl.sim.lensing import Cosmology
from numl.sim.lensing.maps import binned_power_spectra, default_apodisation_pixels, fourier_ell
from numl.sim.lensing.nbody import RAY_TRACING, NBodySuite
from numl.sim.lensing.statistics import peak_counts

RESAMPLES = 1000


def read_maps(path: str) -> tuple[torch.Tensor, np.ndarray, dict]:
    """All splits' maps [n, n_z, n_pix, n_pix] (float64), their M_nu [eV] and the file's config."""
    with h5py.File(path) as h5:
        config = json.loads(h5.attrs["numl_config"])
        maps = np.concatenate([h5[s]["convergence_map"][:] for s in ("train", "val", "test")])
        m_nu = np.concatenate([h5[s]["m_nu_ev"][:] for s in ("train", "val", "test")])
    return torch.from_numpy(maps).double(), m_nu, config


def interval(samples: np.ndarray) -> str:
    low, high = np.percentile(samples, [16, 84])
    return f"({low:+.2f} to {high:+.2f})"


def moments(maps: torch.Tensor) -> np.ndarray:
    """Per map: rms, skewness and excess kurtosis of the pixels [n, 3]."""
    flat = maps[:, 0].flatten(1)
    centred = flat - flat.mean(1, keepdim=True)
    sigma = centred.pow(2).mean(1).sqrt()
    return torch.stack([sigma, centred.pow(3).mean(1) / sigma**3, centred.pow(4).mean(1) / sigma**4 - 3], 1).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--born", help="numl.simulate file with data.nbody.ray_tracing=born")
    parser.add_argument("--multi-plane", help="the same config with data.nbody.ray_tracing=multi_plane")
    parser.add_argument("--paired-runs", nargs=2, metavar=("BORN_RUN", "MULTI_PLANE_RUN"),
                        help="compare two numl.train runs' test predictions instead")
    parser.add_argument("--speed", type=int, default=0, metavar="N", help="time both ray tracers on N maps each")
    parser.add_argument("--cache-dir", default=str(Path(os.environ.get("NUML_CACHE") or Path.home() / ".cache" / "numl")
                                                   / "camb"), help="numl's CAMB and light-cone cache")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if not args.paired_runs and not (args.born and args.multi_plane):
        parser.error("give --born and --multi-plane files, or --paired-runs")
    if args.paired_runs:
        paired_accuracy(*args.paired_runs)
        return
    born, m_nu, born_config = read_maps(args.born)
    traced, m_nu_traced, traced_config = read_maps(args.multi_plane)
    ray_tracing = (born_config["nbody"].pop("ray_tracing", "born"), traced_config["nbody"].pop("ray_tracing"))
    if ray_tracing != ("born", "multi_plane") or born_config != traced_config or not np.array_equal(m_nu, m_nu_traced):
        raise SystemExit(f"{args.born}, {args.multi_plane}: not the same config with Born and multi-plane ray tracing")
    if born_config["galaxy_density_arcmin2"] is not None:
        raise SystemExit(f"{args.born}: has shape noise; compare noise-free files (data.galaxy_density_arcmin2=null)")
    field_deg, n_pix = born_config["field_deg"], born_config["n_pix"]
    rng = np.random.default_rng(0)
    resamples = [rng.integers(0, len(born), len(born)) for _ in range(RESAMPLES)]
    print(f"{len(born)} maps ({', '.join(f'{np.sum(m_nu == m):d} at M_nu={m:.3g} eV' for m in np.unique(m_nu))}), "
          f"{field_deg} deg, {n_pix}^2 px, z_s={born_config['source_redshifts']}, noise-free; N-body "
          f"{born_config['nbody']['n_particles']}^3 particles, {born_config['nbody']['n_mesh']}^3 mesh")

    for j, z_source in enumerate(born_config["source_redshifts"]):
        print(f"\n=== source plane z_s = {z_source}")
        compare_source_plane(born[:, j:j + 1], traced[:, j:j + 1], m_nu, field_deg, n_pix, resamples)

    if args.speed:
        measure_speed(born_config, args.speed, args.cache_dir)


def compare_source_plane(born: torch.Tensor, traced: torch.Tensor, m_nu: np.ndarray, field_deg: float, n_pix: int,
                         resamples: list[np.ndarray]) -> None:
    """The paired comparison of one source plane's maps [n, 1, n_pix, n_pix], Born against multi-plane."""
    difference = (traced - born)[:, 0]
    print(f"maps: rms of multi-plane minus Born {float(difference.std()):.5f} = "
          f"{100 * float(difference.std() / born.std()):.1f} % of Born's kappa rms; correlation "
          f"{np.corrcoef(born.flatten().numpy(), traced.flatten().numpy())[0, 1]:.4f}")

    edges = np.geomspace(200, 3000, 8)
    taper = default_apodisation_pixels(periodic=False, n_pix=n_pix)
    cl_born = binned_power_spectra(born, field_deg, edges, taper)[:, 0, 0].numpy()
    cl_traced = binned_power_spectra(traced, field_deg, edges, taper)[:, 0, 0].numpy()
    ell = fourier_ell(field_deg, n_pix)
    print(f"\nC_ell, {taper}-pixel taper | multi-plane / Born - 1 [%] (68 %) | massive/massless Born | multi-plane | "
          "difference [pp]")
    massive, massless = m_nu == m_nu.max(), m_nu == m_nu.min()
    for b, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        change = 100 * (cl_traced[:, b].mean() / cl_born[:, b].mean() - 1)
        spread = [100 * (cl_traced[r, b].mean() / cl_born[r, b].mean() - 1) for r in resamples]
        ratios = [cl[massive, b].mean() / cl[massless, b].mean() for cl in (cl_born, cl_traced)]
        centre = ell[(ell >= lo) & (ell < hi)].mean()
        print(f"ell {centre:6.0f} | {change:+.2f} {interval(np.array(spread))} | {ratios[0]:.4f} | {ratios[1]:.4f} | "
              f"{100 * (ratios[1] - ratios[0]):+.2f}")

    moments_born, moments_traced = moments(born), moments(traced)
    print("\none-point | Born | multi-plane | multi-plane / Born - 1 [%] (68 %)")
    for k, name in enumerate(("kappa rms", "skewness", "excess kurtosis")):
        b, t = moments_born[:, k].mean(), moments_traced[:, k].mean()
        spread = [100 * (moments_traced[r, k].mean() / moments_born[r, k].mean() - 1) for r in resamples]
        print(f"{name} | {b:.4f} | {t:.4f} | {100 * (t / b - 1):+.2f} {interval(np.array(spread))}")

    sigma = float(born.std())
    border = 1  # the outermost pixels see the opposite edge as neighbours: ray-traced maps are not periodic
    for threshold in (1.0, 3.0):
        counts = [peak_counts(maps, [threshold * sigma, np.inf], border)[:, 0, 0].numpy() for maps in (born, traced)]
        area = field_deg**2 * ((n_pix - 2 * border) / n_pix) ** 2
        spread = [100 * (counts[1][r].mean() / counts[0][r].mean() - 1) for r in resamples]
        print(f"peaks above {threshold:.0f} sigma (Born's sigma) per deg^2 | {counts[0].mean() / area:.2f} | "
              f"{counts[1].mean() / area:.2f} | {100 * (counts[1].mean() / counts[0].mean() - 1):+.2f} "
              f"{interval(np.array(spread))}")


def paired_accuracy(born_run: str, traced_run: str) -> None:
    """Accuracy of every estimator in both runs on the same test maps, and McNemar's exact test of the pair."""
    runs = [np.load(Path(run) / PREDICTIONS_FILE) for run in (born_run, traced_run)]
    simulation = run_test_data(born_run).map_simulations("test")
    print(f"{born_run} (Born) against {traced_run} (multi-plane), same test maps")
    print("estimator | accuracy Born | multi-plane | difference [points] | per test simulation | right only in Born / "
          "only in multi-plane | McNemar z | p (maps as independent)")
    for key in [k.removesuffix("/score") for k in runs[0].files if k.endswith("/score") and k in runs[1].files]:
        labels = runs[0][f"{key}/label"]
        if not np.array_equal(labels, runs[1][f"{key}/label"]):
            raise SystemExit(f"{born_run}, {traced_run}: {key} was tested on other maps (labels differ)")
        right = [classified_right(run, key) for run in runs]
        only_born, only_traced = int(np.sum(right[0] & ~right[1])), int(np.sum(right[1] & ~right[0]))
        discordant = only_born + only_traced
        z = (only_traced - only_born) / np.sqrt(discordant) if discordant else 0.0
        p = binomtest(only_traced, discordant).pvalue if discordant else 1.0
        per_simulation = " / ".join(
            f"{100 * (right[1][simulation == i].mean() - right[0][simulation == i].mean()):+.1f}"
            for i in np.unique(simulation))
        print(f"{key.removeprefix('baseline/')} | {right[0].mean():.3f} | {right[1].mean():.3f} | "
              f"{100 * (right[1].mean() - right[0].mean()):+.1f} | {per_simulation} | {only_born} / {only_traced} | "
              f"{z:+.2f} | {p:.3f}")


def measure_speed(config: dict, n_maps: int, cache_dir: str) -> None:
    cosmology = Cosmology(**(config["cosmology"] | {"m_nu_ev": 0.0}))
    suite = NBodySuite.from_config(config["nbody"])
    tables = suite.tables(cosmology, cache_dir)
    planes = suite.light_cone(cosmology, 0, suite.chi_max(cosmology, config["source_redshifts"], cache_dir),
                              cache_dir, "speed")
    seconds = {name: [] for name in RAY_TRACING}
    for repeat in range(3):
        for name, ray_trace in RAY_TRACING.items():
            start = time.perf_counter()
            ray_trace(planes, tables, config["source_redshifts"], config["field_deg"], config["n_pix"], n_maps,
                      seed=repeat)
            seconds[name].append(time.perf_counter() - start)
    rate = {name: n_maps / np.median(s) for name, s in seconds.items()}
    print(f"\nspeed, {n_maps} maps, {len(planes.a_centre)} lens planes, {torch.get_num_threads()} thread(s), "
          "median of 3: " + ", ".join(f"{name} {r:.0f} maps/s" for name, r in rate.items())
          + f"; Born / multi-plane {rate['born'] / rate['multi_plane']:.1f}x")


if __name__ == "__main__":
    main()
