"""Learning-rate schedules that need the run length, which only the Trainer knows.

`BaseTask.configure_optimizers` fills `total_steps` with `trainer.estimated_stepping_batches`
for any factory here that takes it. Exponential decay and reduce-on-plateau are torch's own
classes, configured directly in conf/scheduler/.
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR, OneCycleLR


def cosine_with_warmup(optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float = 0.05,
                       min_lr_ratio: float = 0.01) -> LambdaLR:
    """Linear warm-up over the first `warmup_fraction` of steps, then cosine decay to `min_lr_ratio`."""
    warmup_steps = max(1, int(warmup_fraction * total_steps))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def one_cycle(optimizer: torch.optim.Optimizer, total_steps: int, max_lr_factor: float = 10.0,
              pct_start: float = 0.3) -> OneCycleLR:
    """One-cycle policy peaking at `max_lr_factor` times the optimizer's configured learning rate."""
    max_lr = [group["lr"] * max_lr_factor for group in optimizer.param_groups]
    return OneCycleLR(optimizer, max_lr=max_lr, total_steps=total_steps, pct_start=pct_start)
