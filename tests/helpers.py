"""Callbacks the tests inject through Hydra overrides (+callbacks.x._target_=tests.helpers.X)."""

from __future__ import annotations

import pytorch_lightning as pl


class CrashAfterFirstEpoch(pl.Callback):
    """Simulates a crash mid-training (a bug, an OOM) after the first epoch's checkpoint is written."""

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch >= 1:
            raise RuntimeError("deliberate crash for the test")
