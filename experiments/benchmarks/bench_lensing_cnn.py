"""Training throughput of lensing_cnn: numl (BinaryClassificationTask + Lightning Trainer) vs a plain
PyTorch loop with the same model, data, optimizer, precision and memory format.

    python experiments/benchmarks/bench_lensing_cnn.py                      # auto: CUDA if present
    python experiments/benchmarks/bench_lensing_cnn.py --device cuda --compile --batches 200
    python experiments/benchmarks/bench_lensing_cnn.py --device cuda --batch-size 256 --channels 32 64 128 256

Both sides train on the same maps, simulated once and held in memory (device-resident), so only the
training step is timed; the first epoch (warm-up, cuDNN autotuning, compilation) is not counted. The two
sides alternate `--repeats` times; the result has every repeat's samples/s, the best and the median of
each side, and the ratio of both. Unless --no-profile (and not with --compile), one more run of each side
splits the time of a training step into its parts (forward, loss, metrics, logging, backward, optimizer,
the rest of Lightning's loop), with the device synchronised around each part so that the parts add up
to the step; that run is slower and not counted in the samples/s. Writes results_<device>[_compile].json
beside this script (or --out) after every repeat, and prints the table.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import date
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from numl.utils.runtime import build_task, build_trainer, register_resolvers  # noqa: E402


def _config(batch_size: int, n_pix: int, device: torch.device, precision: str, epochs: int,
            channels: list[int] | None = None):
    """lensing_cnn as numl.train composes it; only the training steps are timed, so validation, checkpoints,
    loggers and the other callbacks are off (the plain loop has none of them either)."""
    register_resolvers()
    overrides = ["experiment=lensing_cnn", f"data.batch_size={batch_size}", f"data.n_pix={n_pix}",
                 "model.dropout=0.0", "callbacks=none", "logger=none",
                 f"trainer.accelerator={'gpu' if device.type == 'cuda' else device.type}", "trainer.devices=1",
                 f"trainer.precision={precision}", f"trainer.max_epochs={epochs}",
                 "++trainer.limit_val_batches=0", "++trainer.num_sanity_val_steps=0",
                 "++trainer.enable_checkpointing=false", "++trainer.enable_progress_bar=false",
                 "++trainer.enable_model_summary=false", f"paths.output_dir={tempfile.gettempdir()}"]
    if channels:
        overrides.append(f"model.channels=[{','.join(str(c) for c in channels)}]")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides)


def _maps(cfg, n_batches: int, device: torch.device, channels_last: bool) -> list[dict[str, torch.Tensor]]:
    # n_test: the test maps are never used here (setup("fit") simulates them all the same).
    datamodule = instantiate(cfg.data, n_train=n_batches * cfg.data.batch_size, n_test=cfg.data.batch_size)
    datamodule.setup("fit")
    batches = []
    for batch in datamodule.train_dataloader():
        # numl simulates training maps on the fly after the batch reaches the device; do it once here.
        batch = datamodule.on_after_batch_transfer({k: v.to(device) for k, v in batch.items()}, 0)
        maps = batch["convergence_map"]
        if channels_last:
            maps = maps.contiguous(memory_format=torch.channels_last)
        batches.append({"convergence_map": maps, "label": batch["label"].to(device)})
    return batches[:n_batches]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Timer(pl.Callback):
    def __init__(self) -> None:
        self.start = self.seconds = 0.0

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            _sync(pl_module.device)
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        _sync(pl_module.device)
        self.seconds = time.perf_counter() - self.start


class _Split:
    """Accumulates the wall time of named parts of a training step after the warm-up epoch; the device is
    synchronised before and after each part, so a part's time is its own and the parts add up. A part called
    again from inside itself (log_dict calls log) is counted once."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.active = False
        self.seconds: dict[str, float] = defaultdict(float)
        self._depth: dict[str, int] = defaultdict(int)

    def wrap(self, name: str, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if not self.active or self._depth[name]:
                return fn(*args, **kwargs)
            self._depth[name] += 1
            _sync(self.device)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                _sync(self.device)
                self.seconds[name] += time.perf_counter() - start
                self._depth[name] -= 1
        return timed

    def per_step_ms(self, steps: int, total_s: float) -> dict[str, float]:
        """ms per step of each part, in the order of a step. numl's optimizer_step runs the closure
        (training_step, zero_grad, backward) inside it, and training_step runs forward, loss, metrics and
        logging: each is reported without its children (`optimizer`: the optimizer's own step,
        `training_step_other`: the rest of training_step). `rest`: the step's time outside every part
        (Lightning's loop, hooks and callbacks; the plain loop's Python)."""
        ms = {name: 1000 * seconds / steps for name, seconds in self.seconds.items()}
        out = {"step": 1000 * total_s / steps}
        for name in ("forward", "compute_loss", "update_metrics", "log"):
            if name in ms:
                out[name] = ms[name]
        if "training_step" in ms:
            out["training_step_other"] = ms["training_step"] - sum(
                ms.get(n, 0.0) for n in ("forward", "compute_loss", "update_metrics", "log"))
        for name in ("optimizer_zero_grad", "backward"):
            out[name] = ms.get(name, 0.0)
        if "optimizer_step" in ms:  # numl: the closure's parts run inside optimizer_step
            out["optimizer"] = ms["optimizer_step"] - sum(
                ms.get(n, 0.0) for n in ("training_step", "optimizer_zero_grad", "backward"))
            top = ms["optimizer_step"]
        else:
            out["optimizer"] = ms.get("optimizer", 0.0)
            top = sum(ms.get(n, 0.0) for n in ("forward", "compute_loss", "optimizer_zero_grad", "backward",
                                                 "optimizer"))
        out["rest"] = out["step"] - top
        return out


class _SplitSwitch(pl.Callback):
    """Turns the split on from the second epoch (the first is warm-up) and times the timed epochs."""

    def __init__(self, split: _Split) -> None:
        self.split, self.timer = split, _Timer()

    def on_train_epoch_start(self, trainer, pl_module):
        self.timer.on_train_epoch_start(trainer, pl_module)
        self.split.active = trainer.current_epoch >= 1

    def on_train_end(self, trainer, pl_module):
        self.timer.on_train_end(trainer, pl_module)
        self.split.active = False


def bench_numl(cfg, batches, device, precision: str, channels_last: bool, compile_model: bool, epochs: int,
               split: bool = False):
    torch.manual_seed(0)
    task = build_task(cfg)
    if channels_last:
        task.model.to(memory_format=torch.channels_last)
    if compile_model:
        task.model = torch.compile(task.model)
    if split:
        parts = _Split(device)
        timer = _SplitSwitch(parts)
        for name in ("training_step", "forward", "compute_loss", "update_metrics", "backward", "optimizer_step",
                     "optimizer_zero_grad"):
            setattr(task, name, parts.wrap(name, getattr(task, name)))
        task.log = parts.wrap("log", task.log)
        task.log_dict = parts.wrap("log", task.log_dict)
    else:
        timer = _Timer()
    trainer, _ = build_trainer(cfg, extra_callbacks=(timer,))  # numl.train's own Trainer assembly
    # batch_size=None hands out the prepared dict batches as they are: no collation, no host-device copies.
    trainer.fit(task, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    seconds = timer.timer.seconds if split else timer.seconds
    steps = (epochs - 1) * len(batches)
    if split:
        return parts.per_step_ms(steps, seconds)
    return steps * cfg.data.batch_size / seconds


def bench_plain(cfg, batches, device, precision: str, channels_last: bool, compile_model: bool, epochs: int,
                split: bool = False):
    torch.manual_seed(0)
    model = instantiate(cfg.model).to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if compile_model else model
    optimizer = instantiate(cfg.optimizer)(model.parameters())
    scheduler = instantiate(cfg.scheduler.scheduler)(optimizer)  # numl's per-epoch schedule, for parity
    loss_fn = torch.nn.BCEWithLogitsLoss()
    autocast = precision.startswith("bf16")
    parts = _Split(device)
    forward = parts.wrap("forward", step_model) if split else step_model
    loss_of = parts.wrap("compute_loss", loss_fn) if split else loss_fn
    zero_grad = parts.wrap("optimizer_zero_grad", optimizer.zero_grad) if split else optimizer.zero_grad
    opt_step = parts.wrap("optimizer", optimizer.step) if split else optimizer.step

    def backward(loss):
        loss.backward()

    backward = parts.wrap("backward", backward) if split else backward
    model.train()
    for epoch in range(epochs):
        if epoch == 1:
            _sync(device)
            parts.active = split
            start = time.perf_counter()
        for batch in batches:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                logits = forward(batch["convergence_map"]).reshape(-1)
                loss = loss_of(logits.float(), batch["label"].float())
            zero_grad(set_to_none=True)
            backward(loss)
            opt_step()
        scheduler.step()
    _sync(device)
    seconds = time.perf_counter() - start
    steps = (epochs - 1) * len(batches)
    if split:
        return parts.per_step_ms(steps, seconds)
    return steps * cfg.data.batch_size / seconds


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--n-pix", type=int, default=128)
    parser.add_argument("--channels", type=int, nargs="+", default=None,
                        help="model.channels (default: lensing_cnn's, 8 16 32 64); the H100 anchor: 32 64 128 256")
    parser.add_argument("--batches", type=int, default=20, help="batches per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="epochs; the first is warm-up")
    parser.add_argument("--precision", default="bf16-mixed", choices=["bf16-mixed", "32-true"])
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model on both sides")
    parser.add_argument("--repeats", type=int, default=3, help="alternate plain/numl this many times")
    parser.add_argument("--no-profile", dest="profile", action="store_false",
                        help="skip the extra run of each side that splits a step into its parts")
    parser.add_argument("--out", type=Path, default=None, help="result file (default: beside this script)")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    cfg = _config(args.batch_size, args.n_pix, device, args.precision, args.epochs, args.channels)
    batches = _maps(cfg, args.batches, device, args.channels_last)
    options = (device, args.precision, args.channels_last, args.compile, args.epochs)
    out = args.out or Path(__file__).parent / f"results_{device.type}{'_compile' if args.compile else ''}.json"
    result = {
        "date": date.today().isoformat(), "device": _device_name(device), "torch": torch.__version__,
        "pytorch_lightning": pl.__version__, "batch_size": args.batch_size, "n_pix": args.n_pix,
        "channels": list(cfg.model.channels), "batches_per_epoch": args.batches, "timed_epochs": args.epochs - 1,
        "precision": args.precision, "channels_last": args.channels_last, "compile": args.compile,
        "numl_samples_per_s": [], "plain_samples_per_s": [],
    }

    def save() -> None:
        numl_rates, plain_rates = result["numl_samples_per_s"], result["plain_samples_per_s"]
        if numl_rates and plain_rates:
            result.update({
                "numl_best": max(numl_rates), "plain_best": max(plain_rates),
                "numl_median": statistics.median(numl_rates), "plain_median": statistics.median(plain_rates),
            })
            result["numl_over_plain"] = result["numl_best"] / result["plain_best"]  # best of each side
            result["numl_over_plain_median"] = result["numl_median"] / result["plain_median"]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")

    for repeat in range(args.repeats):  # alternate, so that drifts in machine load hit both sides alike
        result["plain_samples_per_s"].append(bench_plain(cfg, batches, *options))
        result["numl_samples_per_s"].append(bench_numl(cfg, batches, *options))
        save()
        print(f"repeat {repeat + 1}/{args.repeats}: plain {result['plain_samples_per_s'][-1]:.1f}, "
              f"numl {result['numl_samples_per_s'][-1]:.1f} samples/s", flush=True)
    if args.profile and not args.compile:
        result["step_split_ms"] = {"plain": bench_plain(cfg, batches, *options, split=True),
                                   "numl": bench_numl(cfg, batches, *options, split=True)}
        save()

    print(f"device: {result['device']}")
    for side in ("numl", "plain"):
        rates = result[f"{side}_samples_per_s"]
        print(f"{side:5s}: best {result[f'{side}_best']:9.1f}, median {result[f'{side}_median']:9.1f} samples/s "
              f"(runs: {', '.join(f'{r:.1f}' for r in rates)})")
    print(f"numl / plain = {result['numl_over_plain']:.3f} best of each, {result['numl_over_plain_median']:.3f} "
          f"median of each (target >= 0.90); written {out}")
    if "step_split_ms" in result:
        print("ms per step, device synchronised around each part:")
        for side, split in result["step_split_ms"].items():
            print(f"  {side:5s}: " + ", ".join(f"{k} {v:.2f}" for k, v in split.items()))
    return result


if __name__ == "__main__":
    main()
