"""Throughput of a trained PETALO discard tagger on this machine's CPU (or a CUDA device): the module
`python -m numl.export` writes (TorchScript, scripted and frozen) against the same network run eagerly in PyTorch,
at several batch sizes.

    python experiments/petalo_reconstruction/bench_tagger.py <run dir of experiment=petalo_reconstruction/tagger_*>
    python experiments/petalo_reconstruction/bench_tagger.py <run dir> --device cuda --batch-sizes 1024 8192 65536

On CUDA the exported module is loaded onto the device (map_location) and fed batches that are already there
(the events/s of the network, not of a host-device copy); each row also gives the largest difference between
its outputs on the device and on the CPU.

Exports the run's best checkpoint to <run dir>/exported_model.pt, simulates test patterns with the run's data
config, times both modules (interleaved per batch size, so they share the machine's load), prints a Markdown
table and writes <run dir>/tagger_throughput.json (or --out). The exported/eager ratio is the robust figure on
a shared machine; events/s depend on the load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from numl.utils.runtime import load_task_from_run, register_resolvers

BATCH_SIZES = (1, 64, 1024, 8192, 65536)
# The exported taggers' events/s before the restructure (run_study.py --benchmark-only, 1 thread, full-size
# taggers, 2-core CPU under a load of 2.5-3.3, 2026-11-23; two runs each), keyed by model.projections.
BEFORE = {
    False: {1: (13901, 15403), 64: (413940, 433002), 1024: (737233, 618977), 8192: (551758, 543150),
            65536: (416374, 397506)},
    True: {1: (15331, 10236), 64: (570111, 542011), 1024: (1408716, 1507717), 8192: (881223, 979677),
           65536: (771277, 1024240)},
}


def export_run(run_dir: Path) -> Path:
    """The run's best checkpoint exported by numl's own entry point (which checks identical outputs)."""
    done = subprocess.run([sys.executable, "-m", "numl.export", str(run_dir)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"python -m numl.export {run_dir} failed:\n{done.stderr}")
    return Path(done.stdout.strip().splitlines()[-1])


def test_patterns(cfg, n_events: int) -> torch.Tensor:
    """SiPM patterns of freshly simulated test events (the run's data config: same detector and inputs)."""
    data_cfg = OmegaConf.merge(cfg.data, {"n_train": 1, "n_val": 1, "n_test": n_events, "source": "simulate",
                                          "progress": False, "num_workers": 0})
    datamodule = instantiate(data_cfg, _convert_="all")
    datamodule.setup("test")
    return datamodule.dataset("test").pattern.contiguous()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def events_per_second(module, batch: torch.Tensor, seconds: float) -> float:
    with torch.inference_mode():
        for _ in range(3):  # warm-up: TorchScript's profiling executor optimises on the first calls
            module(batch)
        _sync(batch.device)
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            module(batch)
            calls += 1
        _sync(batch.device)  # CUDA runs the calls asynchronously: count them once they are done
        return calls * len(batch) / (time.perf_counter() - start)


def max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest |a - b| over the finite outputs; a non-finite output (a flagged event) must be so in both."""
    a, b = a.float().cpu(), b.float().cpu()
    if not torch.equal(torch.isfinite(a), torch.isfinite(b)):
        return float("inf")
    return float((a - b).abs().nan_to_num(0.0).max()) if a.numel() else 0.0


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a numl.train run of a tagger experiment")
    parser.add_argument("--out", type=Path, default=None, help="result file (default <run dir>/tagger_throughput.json)")
    parser.add_argument("--seconds", type=float, default=1.0, help="timing per batch size and module")
    parser.add_argument("--n-events", type=int, default=4096, help="simulated test patterns, repeated to fill a batch")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's, i.e. OMP)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    register_resolvers()
    cfg = OmegaConf.load(args.run_dir / ".hydra" / "config.yaml")

    device = torch.device(args.device)
    exported_path = export_run(args.run_dir)
    exported = torch.jit.load(str(exported_path), map_location=device)
    exported_cpu = torch.jit.load(str(exported_path), map_location="cpu") if device.type != "cpu" else exported
    checkpoint = sorted((args.run_dir / "checkpoints").glob("best-*.ckpt"))[-1]  # the one numl.export exports
    eager = load_task_from_run(cfg, checkpoint).model.eval().to(device)
    patterns = test_patterns(cfg, args.n_events)

    load_before = os.getloadavg()
    rows = []
    for batch_size in args.batch_sizes:
        batch = patterns.repeat(-(-batch_size // len(patterns)), 1, 1, 1)[:batch_size].contiguous()
        host_batch, batch = batch, batch.to(device)
        with torch.inference_mode():
            exported_out = exported(batch)
            row = {"batch_size": batch_size, "max_abs_logit_difference": max_difference(exported_out, eager(batch))}
            if device.type != "cpu":
                row["max_abs_logit_difference_device_vs_cpu"] = max_difference(exported_out, exported_cpu(host_batch))
        row["exported_events_per_s"] = events_per_second(exported, batch, args.seconds)
        row["eager_events_per_s"] = events_per_second(eager, batch, args.seconds)
        row["exported_over_eager"] = row["exported_events_per_s"] / row["eager_events_per_s"]
        rows.append(row)
    projections = bool(cfg.model.get("projections", False))
    result = {
        "run_dir": str(args.run_dir), "experiment": cfg.task_name, "projections": projections,
        "exported": str(exported_path),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"),
        "load_average_before": load_before, "load_average_after": os.getloadavg(), "rows": rows,
    }
    out = args.out or args.run_dir / "tagger_throughput.json"
    out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"{cfg.task_name}: {torch.get_num_threads()} torch thread(s), load average "
          f"{load_before[0]:.1f} -> {result['load_average_after'][0]:.1f}; {out}\n")
    print("| batch size | exported, before (2 runs) | exported, now | eager, now | exported / eager |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        known = BEFORE[projections].get(row["batch_size"]) if device.type == "cpu" else None
        before = " / ".join(f"{v:,}" for v in known) if known else "-"
        print(f"| {row['batch_size']:,} | {before} | {row['exported_events_per_s']:,.0f} | "
              f"{row['eager_events_per_s']:,.0f} | {row['exported_over_eager']:.2f} |")
    return result


if __name__ == "__main__":
    main()
