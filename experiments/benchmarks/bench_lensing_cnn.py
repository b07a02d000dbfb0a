"""Training throughput of lensing_cnn: numl (BinaryClassificationTask + Lightning Trainer) vs a plain
PyTorch loop with the same model, data, optimizer, precision and memory format.

    python experiments/benchmarks/bench_lensing_cnn.py                      # auto: CUDA if present
    python experiments/benchmarks/bench_lensing_cnn.py --device cuda --compile --batches 200

Both sides train on the same maps, simulated once and held in memory (device-resident), so only the
training step is timed; the first epoch (warm-up, cuDNN autotuning, compilation) is not counted.
Writes results_<device>.json beside this script and prints the table.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from numl.utils.runtime import build_task, build_trainer, register_resolvers  # noqa: E402


def _config(batch_size: int, n_pix: int, device: torch.device, precision: str, epochs: int):
    """lensing_cnn as numl.train composes it; only the training steps are timed, so validation, checkpoints,
    loggers and the other callbacks are off (the plain loop has none of them either)."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(
            "train",
            overrides=["experiment=lensing_cnn", f"data.batch_size={batch_size}", f"data.n_pix={n_pix}",
                       "model.dropout=0.0", "callbacks=none", "logger=none",
                       f"trainer.accelerator={'gpu' if device.type == 'cuda' else device.type}", "trainer.devices=1",
                       f"trainer.precision={precision}", f"trainer.max_epochs={epochs}",
                       "++trainer.limit_val_batches=0", "++trainer.num_sanity_val_steps=0",
                       "++trainer.enable_checkpointing=false", "++trainer.enable_progress_bar=false",
                       "++trainer.enable_model_summary=false", f"paths.output_dir={tempfile.gettempdir()}"],
        )


def _maps(cfg, n_batches: int, device: torch.device, channels_last: bool) -> list[dict[str, torch.Tensor]]:
    datamodule = instantiate(cfg.data, n_train=n_batches * cfg.data.batch_size)
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_numl(cfg, batches, device, precision: str, channels_last: bool, compile_model: bool, epochs: int) -> float:
    torch.manual_seed(0)
    task = build_task(cfg)
    if channels_last:
        task.model.to(memory_format=torch.channels_last)
    if compile_model:
        task.model = torch.compile(task.model)
    timer = _Timer()
    trainer, _ = build_trainer(cfg, extra_callbacks=(timer,))  # numl.train's own Trainer assembly
    # batch_size=None hands out the prepared dict batches as they are: no collation, no host-device copies.
    trainer.fit(task, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    return (epochs - 1) * len(batches) * cfg.data.batch_size / timer.seconds


def bench_plain(cfg, batches, device, precision: str, channels_last: bool, compile_model: bool, epochs: int) -> float:
    torch.manual_seed(0)
    model = instantiate(cfg.model).to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if compile_model else model
    optimizer = instantiate(cfg.optimizer)(model.parameters())
    scheduler = instantiate(cfg.scheduler.scheduler)(optimizer)  # numl's per-epoch schedule, for parity
    loss_fn = torch.nn.BCEWithLogitsLoss()
    autocast = precision.startswith("bf16")
    model.train()
    for epoch in range(epochs):
        if epoch == 1:
            _sync(device)
            start = time.perf_counter()
        for batch in batches:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                logits = step_model(batch["convergence_map"]).reshape(-1)
                loss = loss_fn(logits.float(), batch["label"].float())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
    _sync(device)
    return (epochs - 1) * len(batches) * cfg.data.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--n-pix", type=int, default=128)
    parser.add_argument("--batches", type=int, default=20, help="batches per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="epochs; the first is warm-up")
    parser.add_argument("--precision", default="bf16-mixed", choices=["bf16-mixed", "32-true"])
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model on both sides")
    parser.add_argument("--repeats", type=int, default=2, help="alternate numl/plain this many times")
    args = parser.parse_args()

    device = torch.device(args.device)
    cfg = _config(args.batch_size, args.n_pix, device, args.precision, args.epochs)
    batches = _maps(cfg, args.batches, device, args.channels_last)
    options = (device, args.precision, args.channels_last, args.compile, args.epochs)
    numl_rates, plain_rates = [], []
    for _ in range(args.repeats):  # alternate, so that drifts in machine load hit both sides alike
        plain_rates.append(bench_plain(cfg, batches, *options))
        numl_rates.append(bench_numl(cfg, batches, *options))
    numl_best, plain_best = max(numl_rates), max(plain_rates)
    result = {
        "date": date.today().isoformat(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "pytorch_lightning": pl.__version__,
        "batch_size": args.batch_size, "n_pix": args.n_pix, "batches_per_epoch": args.batches,
        "timed_epochs": args.epochs - 1, "precision": args.precision, "channels_last": args.channels_last,
        "compile": args.compile,
        "numl_samples_per_s": numl_rates, "plain_samples_per_s": plain_rates,
        "numl_over_plain": numl_best / plain_best,
    }
    out = Path(__file__).parent / f"results_{device.type}{'_compile' if args.compile else ''}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"device: {result['device']}")
    print(f"numl : {numl_best:9.1f} samples/s (runs: {', '.join(f'{r:.1f}' for r in numl_rates)})")
    print(f"plain: {plain_best:9.1f} samples/s (runs: {', '.join(f'{r:.1f}' for r in plain_rates)})")
    print(f"numl / plain = {result['numl_over_plain']:.3f} (target >= 0.90); written {out}")


if __name__ == "__main__":
    main()
