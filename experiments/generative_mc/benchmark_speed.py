"""Events per second of the PETALO simulator and of a trained generator, side by side in one process on this CPU.

    python experiments/generative_mc/benchmark_speed.py --checkpoint <gan run>/checkpoints/last.ckpt --n 2000
    python experiments/generative_mc/benchmark_speed.py --checkpoint <diffusion run>/checkpoints/last.ckpt --n 2000 \
        --sampling-steps 10 25 50

Both produce photopeak events in the HDF5 format (the generator's include rounding and the event dict of
numl.generate); the simulator also transports the gammas and draws the interaction points, the generator
draws them from its training conditions. Prints the rates and their ratio; not a test (timings vary).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from numl.generate import load_generator
from numl.sim.petalo import simulate_events
from numl.utils.runtime import register_resolvers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", "--gan", dest="gan", type=Path, required=True,
                        help="generator checkpoint (experiment=petalo_gan or petalo_diffusion)")
    parser.add_argument("--sampling-steps", type=int, nargs="+",
                        help="diffusion generators: time each of these DDIM step counts (default: the run's)")
    parser.add_argument("--n", type=int, default=2000, help="events per timing")
    parser.add_argument("--batch-size", type=int, default=1024)
    args = parser.parse_args()
    register_resolvers()
    gan, run_cfg = load_generator(args.gan)
    datamodule = instantiate(OmegaConf.merge(run_cfg.data, {"progress": False}), _convert_="all")

    start = time.perf_counter()
    simulate_events(datamodule.config, args.n, seed=1, full_absorption_only=datamodule.full_absorption_only)
    simulator_rate = args.n / (time.perf_counter() - start)

    print(f"torch threads: {torch.get_num_threads()}, events: {args.n}")
    print(f"simulator (numl.sim.petalo):  {simulator_rate:10.1f} events/s")
    if args.sampling_steps and not hasattr(gan, "set_sampling"):
        parser.error("--sampling-steps: only a diffusion generator samples in steps")
    for steps in args.sampling_steps or [None]:
        label = "EMA"
        if steps is not None:
            gan.set_sampling(steps, gan.sampling_eta, "--sampling-steps ")
            label = f"EMA, {steps} DDIM steps"
        start = time.perf_counter()
        noise_source = torch.Generator().manual_seed(1)
        conditions = gan.draw_conditions(args.n, {}, noise_source)
        for i in range(0, args.n, args.batch_size):
            pattern = gan.generate(conditions[i:i + args.batch_size], noise_source)
            datamodule.generated_events(pattern.numpy(), conditions[i:i + args.batch_size].numpy(), seed=i)
        generator_rate = args.n / (time.perf_counter() - start)
        print(f"generator ({label}, batch {args.batch_size}): {generator_rate:10.1f} events/s, "
              f"speed-up {generator_rate / simulator_rate:.2f}x")


if __name__ == "__main__":
    main()
