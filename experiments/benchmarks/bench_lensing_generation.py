"""Convergence maps per second, and what on-the-fly generation costs relative to a training step.

    python experiments/benchmarks/bench_lensing_generation.py                 # CPU
    python experiments/benchmarks/bench_lensing_generation.py --device cuda

Reference setup (5 x 5 deg, 128 px, z_s = 1, shape noise): for each batch size, the median time to
generate a batch of Gaussian and of lognormal maps, and the median time of one lensing_cnn training
step (forward, backward, AdamW) on a pre-generated batch. The ratio is the share of a training step
that on-the-fly generation adds. Writes generation_<device>.json beside this script.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from numl.models.cnn2d import ConvNet2d  # noqa: E402
from numl.sim.lensing import ConvergenceMapSimulator, Cosmology, convergence_power_spectra  # noqa: E402


def _median_seconds(fn, device: str, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[16, 64, 256])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    spectra = convergence_power_spectra(Cosmology(m_nu_ev=0.1), [1.0], 6600, cache_dir=ROOT / ".cache" / "camb")
    simulators = {field: ConvergenceMapSimulator(spectra, field_deg=5.0, n_pix=128, field=field)
                  for field in ("gaussian", "lognormal")}
    model = ConvNet2d(in_channels=1, channels=(8, 16, 32, 64), dropout=0.1).to(args.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rows = []
    for batch_size in args.batch_sizes:
        maps = simulators["gaussian"].sample(batch_size, seed=0, device=args.device) / 0.02
        labels = (torch.arange(batch_size, device=args.device) % 2).float()

        def step(maps=maps, labels=labels):
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(maps).reshape(-1), labels)
            loss.backward()
            optimizer.step()

        step_s = _median_seconds(step, args.device, args.repeats)
        row = {"batch_size": batch_size, "train_step_s": step_s}
        for field, sim in simulators.items():
            seconds = _median_seconds(lambda sim=sim, n=batch_size: sim.sample(n, seed=1, device=args.device),
                                      args.device, args.repeats)
            row[f"{field}_maps_per_s"] = batch_size / seconds
            row[f"{field}_share_of_step"] = seconds / step_s
        rows.append(row)
        print(f"batch {batch_size:4d}: gaussian {row['gaussian_maps_per_s']:8.0f} maps/s "
              f"({100 * row['gaussian_share_of_step']:.1f} % of a training step), lognormal "
              f"{row['lognormal_maps_per_s']:8.0f} maps/s ({100 * row['lognormal_share_of_step']:.1f} %), "
              f"training step {1000 * step_s:.1f} ms", flush=True)
    machine = torch.cuda.get_device_name() if args.device == "cuda" else f"{platform.processor() or 'CPU'}, " \
        f"{torch.get_num_threads()} threads"
    out = Path(__file__).with_name(f"generation_{args.device}.json")
    out.write_text(json.dumps({"date": str(date.today()), "device": machine, "torch": torch.__version__,
                               "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
