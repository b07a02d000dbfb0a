"""Fidelity of a lensing-map generator on held-out N-body maps: the numbers and figures of the study README.

    python experiments/generative_mc/lensing_fidelity.py --gan <gan run>/checkpoints/last.ckpt \
        --simulated data/lensing_gan_nbody.h5 --output-dir <gan run>/fidelity [--speed]

--simulated: the `numl.simulate` file the generator was trained on (experiment=lensing_gan). Its test maps come
from simulations the generator never saw (their own seeds): they are the reference; its training maps are the
reference of the memorisation check. Per cosmology the generator makes --n-generated maps, both cosmologies
from the same noise vectors (as the simulations share their initial phases), and every statistic is compared
with the error of the mean of each set. The same comparisons of the file's validation maps (other simulations
again) with its test maps, keys `simulator_vs_simulator/...`, show what two simulated sets give: maps of one
simulation share its modes, so the errors of the mean understate the scatter between sets of few simulations.
Writes fidelity.json and the figures into --output-dir, prints the table.
--speed: maps per second of the simulator (one N-body simulation ray traced into the suite's maps per
simulation) and of the generator, one after the other in this process.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from numl.explain.generative import (
    classifier_two_sample_test,
    compare_statistics,
    lensing_statistics,
    memorisation_check,
    ratio_with_error,
)
from numl.figures.generative import plot_lensing_maps, plot_lensing_statistics
from numl.generate import load_generator
from numl.sim.lensing.nbody import born_convergence, light_cone_planes
from numl.utils.runtime import register_resolvers

#: noise seed of the generated maps (the same noise for every cosmology)
GENERATION_SEED = 2024
#: multipole bins of the power spectrum (LensingDataModule.ell_bin_edges)
N_ELL_BINS = 8


def generate_maps(gan, m_nu_ev: float, n: int, batch_size: int = 256) -> torch.Tensor:
    noise_source = torch.Generator().manual_seed(GENERATION_SEED)
    conditions = torch.full((n, 1), float(m_nu_ev))
    return torch.cat([gan.generate(conditions[i:i + batch_size], noise_source) for i in range(0, n, batch_size)])


def maps_per_second(datamodule, gan, n_generated: int) -> dict[str, float]:
    """Simulator: one N-body light cone (not from the cache) ray traced into the suite's maps per training
    simulation; generator: n_generated maps. One thread each, this process."""
    suite, cosmology = datamodule.nbody_suite, datamodule.cosmology(datamodule.m_nu_values[-1])
    tables = suite.tables(cosmology, datamodule.cache_dir)
    chi_max = max(tables.chi_of_z(z) for z in datamodule.source_redshifts)
    maps_per_simulation = datamodule.split_sizes["train"] // (len(datamodule.m_nu_values) * suite.simulations["train"])
    start = time.perf_counter()
    planes = light_cone_planes(tables, suite.setup, chi_max, seed=987654, device="cpu")
    born_convergence(planes, tables, datamodule.source_redshifts, datamodule.field_deg, datamodule.n_pix,
                     maps_per_simulation, seed=1)
    simulator_seconds = time.perf_counter() - start
    start = time.perf_counter()
    generate_maps(gan, datamodule.m_nu_values[-1], n_generated)
    generator_seconds = time.perf_counter() - start
    return {"speed/simulator_maps_per_s": maps_per_simulation / simulator_seconds,
            "speed/simulator_maps_per_simulation": maps_per_simulation,
            "speed/simulator_seconds_per_simulation": simulator_seconds,
            "speed/generator_maps_per_s": n_generated / generator_seconds,
            "speed/generator_over_simulator": (n_generated / generator_seconds)
            / (maps_per_simulation / simulator_seconds),
            "speed/torch_threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", "--gan", dest="gan", type=Path, required=True,
                        help="generator checkpoint (experiment=lensing_gan or lensing_diffusion)")
    parser.add_argument("--simulated", type=Path, required=True, help="the numl.simulate file it was trained on")
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--n-generated", type=int, default=1024, help="generated maps per cosmology")
    parser.add_argument("--speed", action="store_true", help="also measure simulator and generator maps per second")
    parser.add_argument("--recompute-batchnorm", type=int, default=0, metavar="N",
                        help="GAN only: first recompute the averaged generator's batch-norm statistics from N batches")
    args = parser.parse_args()
    register_resolvers()
    out_dir = args.output_dir
    out_dir.mkdir(parents=True, exist_ok=True)

    gan, run_cfg = load_generator(args.gan)
    if args.recompute_batchnorm:
        if not hasattr(gan, "recompute_ema_batchnorm"):
            parser.error(f"--recompute-batchnorm: only a GAN has batch-norm statistics to recompute ({args.gan} is a "
                         f"{type(gan).__name__})")
        gan.recompute_ema_batchnorm(args.recompute_batchnorm, generator=torch.Generator().manual_seed(GENERATION_SEED))
    datamodule = instantiate(OmegaConf.merge(run_cfg.data, {"source": "hdf5", "hdf5_path": str(args.simulated)}),
                             _convert_="all")
    with h5py.File(args.simulated) as h5:
        datamodule.split_sizes = {split: len(h5[split]["label"]) for split in ("train", "val", "test")}
    splits = datamodule.read_hdf5(args.simulated)  # refused unless it matches the generator's data config
    test, training, validation = splits["test"], splits["train"], splits["val"]
    sigma, periodic = float(test.maps.std()), datamodule.periodic_maps
    ell_edges = datamodule.ell_bin_edges(N_ELL_BINS)
    ell = np.sqrt(ell_edges[1:] * ell_edges[:-1])
    results: dict = {"generator": str(args.gan.resolve()), "simulated_file": str(args.simulated.resolve()),
                     "recompute_batchnorm_batches": args.recompute_batchnorm,
                     "ell_bin_centres": ell.tolist(), "sigma_kappa_simulated_test": sigma}

    simulated_by, generated_by, stats = {}, {}, {}
    for m_nu in datamodule.m_nu_values:
        simulated_by[m_nu] = test.maps[np.isclose(test.m_nu.numpy(), m_nu)]
        other = validation.maps[np.isclose(validation.m_nu.numpy(), m_nu)]
        reference = compare_statistics(
            lensing_statistics(simulated_by[m_nu], datamodule.field_deg, ell_edges, sigma, periodic),
            lensing_statistics(other, datamodule.field_deg, ell_edges, sigma, periodic))
        key = f"simulator_vs_simulator/m_nu_{m_nu:g}"
        results[f"{key}/n_maps"] = len(other)
        for name, comparison in reference.items():
            results[f"{key}/{name}/chi2_per_bin"] = comparison["chi2_per_bin"]
        results[f"{key}/power_spectrum/ratio"] = reference["power_spectrum"]["ratio"].tolist()
        generated_by[m_nu] = generate_maps(gan, m_nu, args.n_generated)
        stats[m_nu] = (lensing_statistics(simulated_by[m_nu], datamodule.field_deg, ell_edges, sigma, periodic),
                       lensing_statistics(generated_by[m_nu], datamodule.field_deg, ell_edges, sigma, periodic))
        key = f"m_nu_{m_nu:g}"
        results[f"{key}/n_simulated"], results[f"{key}/n_generated"] = len(simulated_by[m_nu]), args.n_generated
        results[f"{key}/sigma_kappa_ratio"] = float(generated_by[m_nu].std() / simulated_by[m_nu].std())
        for name, comparison in compare_statistics(*stats[m_nu]).items():
            results[f"{key}/{name}/chi2_per_bin"] = comparison["chi2_per_bin"]
            results[f"{key}/{name}/ratio"] = comparison["ratio"].tolist()
            results[f"{key}/{name}/ratio_error"] = (comparison["ratio"] * np.hypot(
                comparison["simulated_error"] / comparison["simulated"],
                comparison["generated_error"] / comparison["generated"])).tolist()
        ratio = np.asarray(results[f"{key}/power_spectrum/ratio"])
        results[f"{key}/power_spectrum/max_abs_deviation"] = float(np.max(np.abs(ratio - 1)))
        results[f"{key}/power_spectrum/bins_within_5pct"] = int(np.sum(np.abs(ratio - 1) <= 0.05))
        # Classifier two-sample test per cosmology: can a CNN tell this M_nu's generated maps from simulated ones?
        results |= {f"{key}/{k}": v for k, v in
                    classifier_two_sample_test(simulated_by[m_nu], generated_by[m_nu], sigma).items()}

    if len(datamodule.m_nu_values) == 2:
        (m0, (sim0, gen0)), (m1, (sim1, gen1)) = stats.items()
        sim_ratio, sim_error = ratio_with_error(sim1["power_spectrum"], sim0["power_spectrum"], paired=False)
        gen_ratio, gen_error = ratio_with_error(gen1["power_spectrum"], gen0["power_spectrum"], paired=True)
        results |= {"m_nu_ratio/simulated": sim_ratio.tolist(), "m_nu_ratio/simulated_error": sim_error.tolist(),
                    "m_nu_ratio/generated": gen_ratio.tolist(), "m_nu_ratio/generated_error": gen_error.tolist(),
                    "m_nu_ratio/difference_pp": (100 * (gen_ratio - sim_ratio)).tolist(),
                    "m_nu_ratio/difference_error_pp": (100 * np.hypot(sim_error, gen_error)).tolist(),
                    "m_nu_ratio/bins_within_1pp": int(np.sum(np.abs(gen_ratio - sim_ratio) <= 0.01))}
    # All cosmologies together, in the test split's proportions.
    generated_all = torch.cat([generated_by[m][:len(simulated_by[m])] for m in datamodule.m_nu_values])
    results |= {f"all/{k}": v for k, v in classifier_two_sample_test(test.maps, generated_all, sigma).items()}
    results |= {f"simulator_vs_simulator/all/{k}": v
                for k, v in classifier_two_sample_test(test.maps, validation.maps, sigma).items()}
    results |= memorisation_check(training.maps, test.maps, generated_all,
                                  features=lambda maps: torch.as_tensor(maps).flatten(1) / sigma)
    if args.speed:
        results |= maps_per_second(datamodule, gan, args.n_generated)

    plot_lensing_maps(simulated_by, generated_by, out_dir / "generated_vs_simulated_maps.png")
    plot_lensing_statistics(stats, ell_edges, out_dir / "lensing_statistics.png", paired_generated=True)
    (out_dir / "fidelity.json").write_text(json.dumps(results, indent=2, sort_keys=True))
    for key, value in results.items():
        if isinstance(value, list):
            value = " ".join(f"{v:.4g}" for v in value)
        print(f"{key:55s} {value:.4g}" if isinstance(value, float) else f"{key:55s} {value}")
    print(f"figures and fidelity.json in {out_dir}")


if __name__ == "__main__":
    main()
