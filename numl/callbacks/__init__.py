"""Callbacks numl adds to Lightning's."""

from __future__ import annotations

import pytorch_lightning as pl
import torch


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


class PreciseBatchNorm(pl.Callback):
    """Recompute BatchNorm statistics on fresh training batches before every validation.

    BatchNorm's running averages trail the weights by about 1/momentum steps. When the label lives
    in a small change of amplitude (massive neutrinos lower the convergence RMS by ~3 %), that lag
    alone shifts every validation logit to one class. Re-estimating the statistics with the final
    weights ("precise BN", Wu & Johnson 2021) removes the shift at the cost of a few forward passes.
    """

    def __init__(self, n_batches: int = 8) -> None:
        self.n_batches = int(n_batches)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        norms = [m for m in pl_module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        if not norms or trainer.sanity_checking or trainer.train_dataloader is None:
            return
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
        was_training = pl_module.training
        pl_module.train()
        with torch.no_grad():
            for i, batch in enumerate(trainer.train_dataloader):
                if i >= self.n_batches:
                    break
                pl_module(pl_module._apply_batch_transfer_handler(batch))
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        pl_module.train(was_training)
