"""Fidelity of a PETALO generator on held-out simulated events: the numbers and figures of the study README.

    python experiments/generative_mc/petalo_fidelity.py --checkpoint <generator run>/checkpoints/last.ckpt \
        --simulated data/petalo_heldout.h5 --position-simulated <run>/checkpoints/<best>.ckpt \
        --position-generated <run>/checkpoints/<best>.ckpt --output-dir <generator run>/fidelity

--simulated: a `numl.simulate` file with another seed than the GAN's training data: its test events are the
held-out true points, its train events fit the centroid's r-map. The generator makes one event at each
held-out true point. Writes fidelity.json and the figures into --output-dir and prints the table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import h5py
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from numl.baselines.petalo import CentroidRMap
from numl.data.petalo import PetaloEvents
from numl.evaluate import run_config_for
from numl.explain.generative import (
    classifier_two_sample_test,
    memorisation_check,
    petalo_fidelity,
    position_resolution,
)
from numl.figures.generative import plot_centroid_residuals, plot_side_by_side, plot_total_charge
from numl.generate import load_generator
from numl.utils.runtime import load_task_from_run, register_resolvers

#: noise seed of the generated events at the held-out points
GENERATION_SEED = 2024


def read_simulated(datamodule, path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Every split of a numl.simulate file, checked against the generator's data config."""
    with h5py.File(path) as h5:
        sizes = {split: len(h5[split]["position_mm"]) for split in ("train", "val", "test")}
    datamodule.split_sizes = sizes
    return datamodule.read_hdf5(path)


def predict_position_mm(ckpt_path: Path, events: dict[str, np.ndarray], datamodule) -> np.ndarray:
    """A trained PETALO position network's (r, r*phi, z) [mm] on events in the simulator's format."""
    task = load_task_from_run(run_config_for(ckpt_path), ckpt_path).eval()
    pattern = PetaloEvents(events, datamodule.use_time, datamodule.config.inner_radius_mm).pattern
    with torch.no_grad():
        return torch.cat([task.to_mm(task({"sipm_pattern": pattern[i:i + 1024]}))[0]
                          for i in range(0, len(pattern), 1024)]).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", "--gan", dest="gan", type=Path, required=True,
                        help="generator checkpoint (experiment=petalo_gan or petalo_diffusion)")
    parser.add_argument("--simulated", type=Path, required=True, help="held-out numl.simulate file (other seed)")
    parser.add_argument("--position-simulated", type=Path, help="position network trained on simulated events")
    parser.add_argument("--position-generated", type=Path, help="position network trained on generated events")
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--generator", choices=("ema", "last"), default="ema",
                        help="sample the moving average of the generator weights (what numl.generate uses) or the "
                             "weights of the last training step")
    parser.add_argument("--sampling-steps", type=int, help="diffusion generators: DDIM steps (default: the run's)")
    args = parser.parse_args()
    register_resolvers()
    out_dir = args.output_dir
    out_dir.mkdir(parents=True, exist_ok=True)

    gan, run_cfg = load_generator(args.gan)
    if args.generator == "last":
        averaged = gan.ema_model.module if hasattr(gan, "ema_model") else gan.ema_generator
        averaged.load_state_dict(gan.model.state_dict())
    if args.sampling_steps:
        gan.set_sampling(args.sampling_steps, gan.sampling_eta)
    datamodule = instantiate(OmegaConf.merge(run_cfg.data, {"progress": False}), _convert_="all")
    simulated = read_simulated(datamodule, args.simulated)
    test = simulated["test"]
    noise_source = torch.Generator().manual_seed(GENERATION_SEED)
    positions = torch.as_tensor(test["position_mm"])
    pattern = torch.cat([gan.generate(positions[i:i + 1024], noise_source) for i in range(0, len(positions), 1024)])
    generated = datamodule.generated_events(pattern.numpy(), test["position_mm"], GENERATION_SEED)

    centroid = CentroidRMap(datamodule.config).fit(simulated["train"])
    results = {"n_held_out_events": len(positions), "generator": f"{args.gan.resolve()} ({args.generator})",
               "sampling_steps": getattr(gan, "sampling_steps", None),
               "simulated_file": str(args.simulated.resolve())}
    results |= petalo_fidelity(test, generated["sipm_charge"], centroid)

    # The generator's own training events: the reference of the memorisation check.
    training = datamodule.simulate_split("train")
    results |= memorisation_check(training["sipm_charge"], test["sipm_charge"], generated["sipm_charge"])

    # Classifier two-sample test on log(1 + charge) of both faces (the spot spans 0-300 pe): generated vs simulated
    # at the same true points; the reference is two simulated sets, the held-out test events against the held-out
    # validation events (other true points from the same distribution), which a perfect generator would match.
    results |= {f"c2st/generated_vs_simulated/{k}": v for k, v in classifier_two_sample_test(
        np.log1p(test["sipm_charge"]), np.log1p(generated["sipm_charge"]), scale=1.0).items()}
    results |= {f"c2st/simulated_vs_simulated/{k}": v for k, v in classifier_two_sample_test(
        np.log1p(test["sipm_charge"]), np.log1p(simulated["val"]["sipm_charge"]), scale=1.0).items()}

    true_mm = test["position_mm"]
    if args.position_simulated:
        results |= position_resolution(predict_position_mm(args.position_simulated, test, datamodule), true_mm,
                                       "position_net_trained_on_simulated/on_simulated")
        results |= position_resolution(predict_position_mm(args.position_simulated, generated, datamodule), true_mm,
                                       "position_net_trained_on_simulated/on_generated")
    if args.position_generated:
        results |= position_resolution(predict_position_mm(args.position_generated, test, datamodule), true_mm,
                                       "position_net_trained_on_generated/on_simulated")
    if args.position_simulated and args.position_generated:
        for name in ("r", "rphi", "z"):
            key = f"{name}_fwhm_mm"
            results[f"position_{key}_ratio_trained_on_generated_over_simulated"] = (
                results[f"position_net_trained_on_generated/on_simulated/{key}"]
                / results[f"position_net_trained_on_simulated/on_simulated/{key}"])

    plot_side_by_side(test["sipm_charge"], generated["sipm_charge"], true_mm,
                      out_dir / "generated_vs_simulated_events.png")
    plot_total_charge(test["sipm_charge"], generated["sipm_charge"], out_dir / "total_charge.png")
    plot_centroid_residuals(test, generated["sipm_charge"], centroid, out_dir / "centroid_residuals.png")
    (out_dir / "fidelity.json").write_text(json.dumps(results, indent=2, sort_keys=True))
    for key, value in results.items():
        print(f"{key:75s} {value:.4g}" if isinstance(value, float) else f"{key:75s} {value}")
    print(f"figures and fidelity.json in {out_dir}")


if __name__ == "__main__":
    main()
