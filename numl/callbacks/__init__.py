"""Callbacks numl adds to Lightning's."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytorch_lightning as pl
import torch


@contextlib.contextmanager
def recomputed_batchnorm_statistics(module: torch.nn.Module) -> Iterator[list[torch.nn.Module]]:
    """Within the block, forward passes of `module` (training mode, no gradients) replace the running statistics
    of its BatchNorm layers by their cumulative average over those passes ("precise BN", Wu & Johnson 2021);
    momenta and the module's mode are restored after. Yields the BatchNorm layers (empty: nothing to do)."""
    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the passes in the block
    was_training = module.training
    module.train()
    try:
        with torch.no_grad():
            yield norms
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        module.train(was_training)


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
        has_batchnorm = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in pl_module.modules())
        if not has_batchnorm or trainer.sanity_checking or trainer.train_dataloader is None:
            return
        with recomputed_batchnorm_statistics(pl_module):
            for i, batch in enumerate(trainer.train_dataloader):
                if i >= self.n_batches:
                    break
                pl_module(pl_module._apply_batch_transfer_handler(batch))
