"""Train a model, test its best checkpoint, and run the classical baselines on the same test events.

    python -m numl.train experiment=lensing_cnn
    python -m numl.train experiment=lensing_cnn resume=true hydra.run.dir=<run dir of a killed run>
    python -m numl.train -m experiment=lensing_cnn hparams_search=lensing_optuna

Returns the value of `optimized_metric` so that a Hydra sweeper can optimise it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from lightning_fabric.plugins.environments import LightningEnvironment
from omegaconf import DictConfig, OmegaConf

from numl.figures.common import save_metric_history
from numl.pipeline import evaluate_test_events
from numl.utils.errors import ConfigError
from numl.utils.runtime import (
    build_task,
    build_trainer,
    check_checkpoint,
    check_checkpoint_matches_task,
    check_common_config,
    check_writable_dir,
    hydra_errors_in_one_line,
    one_line_errors,
    register_resolvers,
)

log = logging.getLogger("numl.train")


def _matching_checkpoint(cfg: DictConfig, key: str, path: str | Path) -> str:
    """A Lightning checkpoint whose weights fit this run's task (names and shapes), checked before anything trains.

    The task built here is thrown away: it is built before seeding, so the run's own task is unchanged.
    """
    path = check_checkpoint(key, path)
    check_checkpoint_matches_task(key, path, build_task(cfg), cfg.task._target_)
    return str(path)


def _resume_checkpoint(cfg: DictConfig, output_dir: Path) -> str | None:
    if cfg.get("ckpt_path"):
        return _matching_checkpoint(cfg, "ckpt_path", cfg.ckpt_path)
    if cfg.get("resume"):
        last = output_dir / "checkpoints" / "last.ckpt"
        if last.is_file():
            return _matching_checkpoint(cfg, "resume", last)
        log.info("resume=true but %s does not exist yet: starting from scratch", last)
    return None


def _to_float(value: Any) -> float:
    return float(value.item() if isinstance(value, torch.Tensor) else value)


def _finish_loggers(exit_code: int) -> None:
    """Close a W&B run even if training crashed, so the run is not left 'running' forever, and mark it failed."""
    import sys

    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish(exit_code=exit_code)


def _check_sync_batchnorm(trainer_cfg: DictConfig) -> None:
    """SyncBatchNorm runs on CUDA only: on CPU DDP would fail at its first step with a long traceback."""
    if not trainer_cfg.get("sync_batchnorm"):
        return
    accelerator = trainer_cfg.get("accelerator", "auto")
    if accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available()):
        raise ConfigError(f"trainer.sync_batchnorm=true: SyncBatchNorm needs CUDA devices, but trainer.accelerator="
                          f"{accelerator} runs on CPU; add trainer.sync_batchnorm=false")


def _prediction_trainer(trainer: pl.Trainer) -> pl.Trainer:
    """The trainer that predicts the test events after testing: `trainer` itself in one process; under DDP
    (call it on rank 0 only) a fresh one-device Trainer on rank 0's device, with the same precision.

    Why not `trainer.predict` on every rank: under DDP predict is a collective whose sampler splits the test
    events between the ranks (interleaved, uneven shards), so the predictions would have to be gathered and
    put back in order before the baselines and figures, which run once, could use them. One pass on rank 0
    gives every test event exactly once in the DataModule's order without any communication, and a pass
    over the test events is cheap next to training. The other ranks skip the post-test stage.
    """
    if trainer.world_size == 1:
        return trainer
    device = trainer.strategy.root_device
    # A plain environment: under srun, Lightning would otherwise detect SLURM again and install its own
    # requeue signal handlers, which ddp_slurm turns off (submitit requeues).
    return pl.Trainer(accelerator=device.type, devices=1 if device.index is None else [device.index],
                      plugins=[LightningEnvironment()],
                      precision=trainer.precision, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=trainer.default_root_dir)


def train(cfg: DictConfig) -> dict[str, float]:
    check_common_config(cfg)
    _check_sync_batchnorm(cfg.trainer)
    output_dir = check_writable_dir("paths.output_dir", cfg.paths.output_dir)
    # The whole run config, without Hydra's own node (present when composed by the tests).
    run_config = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    ckpt_path = _resume_checkpoint(cfg, output_dir)
    init_from = _matching_checkpoint(cfg, "init_from", cfg.init_from) if cfg.get("init_from") else None
    # The DataModule checks its arguments first (it draws no random numbers: each split has its own seed).
    datamodule: pl.LightningDataModule = instantiate(cfg.data, _convert_="all")
    datamodule.exact_resume_order = bool(cfg.get("exact_resume_order", False))
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    task = build_task(cfg)
    if init_from:  # fine-tuning: the weights only; optimizer, schedule and epochs start afresh
        task.load_state_dict(torch.load(init_from, map_location="cpu", weights_only=False)["state_dict"])
    trainer, loggers = build_trainer(cfg)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(run_config, resolve=True))

    trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = {k: _to_float(v) for k, v in trainer.callback_metrics.items()}
    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_path if checkpoint is not None else ""
    if checkpoint is not None and checkpoint.best_model_score is not None and checkpoint.monitor:
        metrics[f"{checkpoint.monitor}_best"] = _to_float(checkpoint.best_model_score)

    if cfg.get("test", True):
        test_ckpt = best if best else None
        if test_ckpt is None and not trainer.fast_dev_run:
            log.warning("no best checkpoint: testing the weights at the end of training")
        trainer.test(task, datamodule=datamodule, ckpt_path=test_ckpt)
        metrics.update({k: _to_float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
        if trainer.is_global_zero:
            baseline_metrics, _ = evaluate_test_events(_prediction_trainer(trainer), task, datamodule,
                                                       cfg.get("baseline"), cfg.get("figures"), output_dir)
            metrics.update(baseline_metrics)
            for lg in loggers:
                if isinstance(lg, pl.loggers.CSVLogger):
                    save_metric_history(Path(lg.log_dir) / "metrics.csv",
                                        output_dir / "figures" / "training_history.png")

    if trainer.is_global_zero:
        summary = {"run_dir": str(output_dir), "best_checkpoint": best, "metrics": metrics}
        (output_dir / "test_metrics.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
        _print_summary(metrics, output_dir)
    return metrics


def _print_summary(metrics: dict[str, float], output_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="numl results")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in sorted(metrics):
        if key.startswith(("test/", "baseline/")) or key.endswith("_best"):
            table.add_row(key, f"{metrics[key]:.4f}")
    console = Console()
    console.print(table)
    console.print(f"run directory: {output_dir}")


def _leave_process_group() -> None:
    """Under DDP every rank leaves the process group before its process exits. The other ranks skip the post-test
    stage and exit while rank 0 still works; a process exiting with gloo's threads still running aborts
    ("terminate called without an active exception"), which srun reports as a failed task."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


@hydra_errors_in_one_line
@hydra.main(version_base="1.3", config_path="pkg://numl.conf", config_name="train")
@one_line_errors
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
    except BaseException:
        _finish_loggers(exit_code=1)
        raise
    finally:
        _leave_process_group()
    _finish_loggers(exit_code=0)
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics:
        raise ConfigError(f"optimized_metric={name!r}: not among the run's metrics ({', '.join(sorted(metrics))})")
    return metrics[name]


register_resolvers()

if __name__ == "__main__":
    main()
