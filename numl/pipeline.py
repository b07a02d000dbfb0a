"""After a network is tested: its predictions on the test events, the classical baselines on the same events,
the figures, and one file with every per-event output. Shared by numl.train and numl.evaluate.

The stages only meet here: the DataModule serves events, the baselines (`baseline` config group) fit and
score them, the figures (`figures` config group) draw what they are given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from numl.baselines.base import Baseline, BaselineResult, baseline_metrics, run_baselines
from numl.utils.errors import ConfigError
from numl.utils.files import replaced_when_complete

PREDICTIONS_FILE = "test_predictions.npz"


def build_baselines(node: DictConfig | None) -> dict[str, Baseline]:
    """The `baseline` group: {name: {_target_: ...}} for each chosen config; empty for baseline=none."""
    if node is None:
        return {}
    if not isinstance(node, DictConfig):
        raise ConfigError(f"baseline={node!r}: choose configs of the baseline group, e.g. baseline=none or "
                          "baseline=[power_spectrum,likelihood_ratio]")
    baselines = {}
    for name, sub in node.items():
        if not isinstance(sub, DictConfig) or "_target_" not in sub:
            raise ConfigError(f"baseline.{name}: not a baseline config (it needs a _target_)")
        baselines[str(name)] = instantiate(sub, _convert_="all")
    return baselines


def predict_test_events(trainer: pl.Trainer, task: pl.LightningModule,
                        datamodule: pl.LightningDataModule) -> dict[str, torch.Tensor]:
    """The task's predictions on the test events, in their order (predict_dataloader serves them), on CPU."""
    if trainer.world_size > 1:
        # Under DDP each rank would predict only its shard of the events, interleaved: never the full set.
        raise RuntimeError("predict_test_events needs a one-process Trainer; under DDP predict on rank 0 with a "
                           "one-device Trainer (see numl.train._prediction_trainer)")
    batches = trainer.predict(task, datamodule=datamodule)
    return {key: torch.cat([batch[key] for batch in batches]) for key in batches[0]}


def save_test_outputs(path: Path, predictions: dict[str, torch.Tensor],
                      baselines: dict[str, BaselineResult]) -> Path:
    """`network/<key>` and `baseline/<name>/<key>` arrays, one row per test event: what studies read."""
    arrays = {f"network/{k}": v.numpy() for k, v in predictions.items()}
    arrays |= {f"baseline/{name}/{k}": np.asarray(v) for name, r in baselines.items() for k, v in r.outputs.items()}
    with replaced_when_complete(path, ".part.npz") as partial:
        np.savez_compressed(partial, **arrays)
    return path


def evaluate_test_events(trainer: pl.Trainer, task: pl.LightningModule, datamodule: pl.LightningDataModule,
                         baseline_cfg: DictConfig | None, figures_cfg: DictConfig | None,
                         output_dir: Path) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Predictions, baselines and figures for a tested task; returns the baseline metrics and the predictions."""
    baselines = build_baselines(baseline_cfg)
    predictions = predict_test_events(trainer, task, datamodule)
    results: dict[str, Any] = run_baselines(baselines, datamodule,
                                            {key: value.numpy() for key, value in predictions.items()})
    if figures_cfg is not None and "_target_" in figures_cfg:
        draw = instantiate(figures_cfg, _partial_=True)
        draw(datamodule=datamodule, predictions=predictions, baselines=results, output_dir=output_dir / "figures")
    save_test_outputs(output_dir / PREDICTIONS_FILE, predictions, results)
    return baseline_metrics(results), predictions
