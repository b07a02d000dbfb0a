"""Callbacks numl adds to Lightning's."""

from __future__ import annotations

import pytorch_lightning as pl


class EpochSeed(pl.Callback):
    """Reseed every RNG at the start of each epoch from (seed, epoch).

    Lightning's checkpoints do not carry the RNG state, so without this a run resumed from
    last.ckpt would draw different dropout masks and augmentations than an uninterrupted run.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seed = (self.seed * 1_000_003 + trainer.current_epoch * 7919 + trainer.global_rank) % 2**32
        pl.seed_everything(seed, workers=True, verbose=False)
