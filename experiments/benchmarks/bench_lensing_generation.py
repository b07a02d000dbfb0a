"""Convergence maps per second, and what on-the-fly generation costs relative to a training step.

    python experiments/benchmarks/bench_lensing_generation.py                 # CPU
    python experiments/benchmarks/bench_lensing_generation.py --device cuda --precision bf16-mixed --channels-last

Reference setup (5 x 5 deg, 128 px, z_s = 1, shape noise): for each batch size, the median time to
generate a batch of Gaussian and of lognormal maps, and the median time of one lensing_cnn training
step (forward, backward, AdamW) on a pre-generated batch. The ratio is the share of a training step
that on-the-fly generation adds. Also, for Gaussian maps: the batch as training makes it
(LensingDataModule.generate: one simulator per class, what numl runs after each batch reaches the
device), and the parts of a batch that run on the CPU wherever the maps are made: drawing the white
noise from the CPU generator (which makes maps identical on every device) and copying it to the device.
Writes generation_<device>.json beside this script (or --out).
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
from numl.data.lensing import LensingDataModule  # noqa: E402
from numl.models.cnn2d import ConvNet2d  # noqa: E402
from numl.sim.lensing import ConvergenceMapSimulator, Cosmology, convergence_power_spectra  # noqa: E402


def _median_seconds(fn, device: str, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[16, 64, 256])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n-pix", type=int, default=128)
    parser.add_argument("--channels", type=int, nargs="+", default=[8, 16, 32, 64], help="lensing_cnn's by default")
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"],
                        help="of the training step (numl's trainer=gpu: bf16-mixed)")
    parser.add_argument("--channels-last", action="store_true", help="channels-last model and maps in the step")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    device = args.device
    cache_dir = ROOT / ".cache" / "camb"
    ell_max = LensingDataModule(n_pix=args.n_pix).ell_max  # what the data module asks CAMB for at this size
    spectra = convergence_power_spectra(Cosmology(m_nu_ev=0.1), [1.0], ell_max, cache_dir=cache_dir)
    simulators = {field: ConvergenceMapSimulator(spectra, field_deg=5.0, n_pix=args.n_pix, field=field)
                  for field in ("gaussian", "lognormal")}
    datamodule = LensingDataModule(n_pix=args.n_pix, cache_dir=str(cache_dir))
    datamodule.build_simulators()
    model = ConvNet2d(in_channels=1, channels=tuple(args.channels), dropout=0.1).to(device)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    autocast = args.precision == "bf16-mixed"
    device_type = torch.device(device).type
    rows = []
    for batch_size in args.batch_sizes:
        maps = (simulators["gaussian"].sample(batch_size, seed=0, device=device) / 0.02).contiguous(
            memory_format=memory_format)
        labels = (torch.arange(batch_size, device=device) % 2).float()

        def step(maps=maps, labels=labels):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=autocast):
                logits = model(maps).reshape(-1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), labels)
            loss.backward()
            optimizer.step()

        step_s = _median_seconds(step, device, args.repeats)
        row = {"batch_size": batch_size, "train_step_s": step_s}
        for field, sim in simulators.items():
            seconds = _median_seconds(lambda sim=sim, n=batch_size: sim.sample(n, seed=1, device=device),
                                      device, args.repeats)
            row[f"{field}_maps_per_s"] = batch_size / seconds
            row[f"{field}_share_of_step"] = seconds / step_s
        index = datamodule.draw_labels(batch_size, seed=1)[0].to(device)
        seconds = _median_seconds(lambda index=index: datamodule.generate(index, seed=1, device=device), device,
                                  args.repeats)
        row["training_batch_s"] = seconds  # LensingDataModule.generate: both classes, as training makes them
        row["training_batch_share_of_step"] = seconds / step_s
        shape = (batch_size, 1, args.n_pix, args.n_pix)
        generator = torch.Generator().manual_seed(1)
        # white noise and shape noise: two draws per map on the CPU generator
        row["cpu_rng_s"] = _median_seconds(
            lambda shape=shape, g=generator: (torch.randn(shape, generator=g), torch.randn(shape, generator=g)),
            device, args.repeats)
        host = torch.randn(shape)
        row["host_to_device_s"] = 2 * _median_seconds(lambda host=host: host.to(device), device, args.repeats)
        rows.append(row)
        print(f"batch {batch_size:5d}: gaussian {row['gaussian_maps_per_s']:8.0f} maps/s "
              f"({100 * row['gaussian_share_of_step']:.1f} % of a training step), lognormal "
              f"{row['lognormal_maps_per_s']:8.0f} maps/s ({100 * row['lognormal_share_of_step']:.1f} %), "
              f"training batch {100 * row['training_batch_share_of_step']:.1f} % (CPU noise "
              f"{1000 * row['cpu_rng_s']:.2f} ms, copy {1000 * row['host_to_device_s']:.2f} ms), "
              f"training step {1000 * step_s:.2f} ms", flush=True)
    machine = torch.cuda.get_device_name() if device_type == "cuda" else f"{platform.processor() or 'CPU'}, " \
        f"{torch.get_num_threads()} threads"
    out = args.out or Path(__file__).with_name(f"generation_{device_type}.json")
    result = {"date": str(date.today()), "device": machine, "torch": torch.__version__, "n_pix": args.n_pix,
              "channels": list(args.channels), "precision": args.precision, "channels_last": args.channels_last,
              "rows": rows}
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
