"""Captum attributions of the tested model at the end of `numl.train` (conf/callbacks/attribution.yaml)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from numl.explain.attribution import AttributionConfig
from numl.explain.run import check_task, load_test_batches, run_and_save

log = logging.getLogger("numl.attribute")


class AttributionCallback(pl.Callback):
    """After `trainer.test`, attribute the first `n_events` test events with the weights just tested.

    Runs at the end of testing rather than of fitting, so the attributions belong to the model whose
    test metrics are reported (the best checkpoint). Writes what `python -m numl.attribute` writes,
    into `output_dir`; with `voids_vs_clusters` (lensing tasks only) also the peaks-vs-voids analysis.
    """

    def __init__(self, attribution: dict[str, Any], output_dir: str, n_events: int = 128, target: int | None = None,
                 seed: int = 0, n_examples: int = 4, channel: int = 0,
                 voids_vs_clusters: dict[str, Any] | None = None) -> None:
        # Checked now, so a bad method or argument stops the run before training, not after it.
        self.config = AttributionConfig.from_mapping(dict(attribution), key="callbacks.attribution.attribution")
        self.output_dir = Path(output_dir) / self.config.method
        self.n_events, self.target, self.seed = n_events, target, seed
        self.n_examples, self.channel = n_examples, channel
        self.voids_vs_clusters = None if voids_vs_clusters is None else dict(voids_vs_clusters)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        check_task(pl_module, "task")
        if self.voids_vs_clusters is not None:
            from numl.explain.lensing import check_lensing_task

            check_lensing_task(pl_module, "callbacks.attribution.voids_vs_clusters")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.datamodule is None:
            return
        # The test loop runs under inference mode; attributions need gradients.
        with torch.inference_mode(False), torch.enable_grad():
            batches = load_test_batches(trainer.datamodule, self.n_events, pl_module.device)
            summary = run_and_save(pl_module, batches, self.config, self.output_dir, self.target, self.seed,
                                   self.n_examples, self.channel, {"task": type(pl_module).__name__})
            if self.voids_vs_clusters is not None:
                from numl.explain.lensing import voids_vs_clusters

                voids_vs_clusters(pl_module, batches, summary["result"], self.output_dir, seed=self.seed,
                                  **self.voids_vs_clusters)
