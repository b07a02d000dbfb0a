"""The physical conditions a generator task was trained on (numl.tasks.generative, numl.tasks.diffusion).

A generator is only trusted inside the conditions it has seen: the task records their range and a sample of them
in the checkpoint, so that `numl.generate` can refuse a condition outside the trained range (or warn, naming it)
and draw the conditions it is not given from the training distribution.
"""

from __future__ import annotations

import warnings

import torch

from numl.utils.errors import ConfigError


class TrainedConditions:
    """Mixin for a LightningModule: the trained condition range and sample, as checkpointed buffers.

    The subclass calls `init_trained_conditions` in its constructor, `remember_conditions` on every training
    batch, and sees conditions through `normalise_conditions`.
    """

    def init_trained_conditions(self, condition_names: list[str], condition_center: list[float],
                                condition_scale: list[float], condition_sample_size: int) -> None:
        n_conditions = len(condition_names)
        self.condition_names = list(condition_names)
        self.register_buffer("condition_center", torch.tensor(list(condition_center), dtype=torch.float32))
        self.register_buffer("condition_scale", torch.tensor(list(condition_scale), dtype=torch.float32))
        self.register_buffer("condition_min", torch.full((n_conditions,), torch.inf))
        self.register_buffer("condition_max", torch.full((n_conditions,), -torch.inf))
        self.register_buffer("condition_sample", torch.zeros(condition_sample_size, n_conditions))
        self.register_buffer("condition_sample_count", torch.tensor(0, dtype=torch.long))

    def normalise_conditions(self, conditions: torch.Tensor) -> torch.Tensor:
        return (conditions.float() - self.condition_center) / self.condition_scale

    def check_conditions(self, fixed: dict[str, float], allow_extrapolation: bool = False) -> None:
        """Refuse an unknown condition name, and a value outside the trained range unless `allow_extrapolation`
        (then warn, naming the range)."""
        if int(self.condition_sample_count) == 0:
            raise ConfigError("ckpt_path: this generator has not seen a training event (no trained condition range)")
        for name, value in fixed.items():
            if name not in self.condition_names:
                raise ConfigError(f"condition.{name}: unknown condition; this generator is conditioned on "
                                  f"{', '.join(self.condition_names)}")
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ConfigError(f"condition.{name}={value!r}: must be a number")
            i = self.condition_names.index(name)
            lo, hi = float(self.condition_min[i]), float(self.condition_max[i])
            if lo <= value <= hi:
                continue
            message = f"condition.{name}={value}: outside the trained range [{lo:.4g}, {hi:.4g}]"
            if not allow_extrapolation:
                raise ConfigError(f"{message}; set allow_extrapolation=true to generate there anyway")
            warnings.warn(f"{message}: extrapolating (allow_extrapolation=true)", stacklevel=2)

    def draw_conditions(self, n: int, fixed: dict[str, float], generator: torch.Generator) -> torch.Tensor:
        """n condition vectors: training conditions drawn at random, with the `fixed` names set to their values."""
        count = min(int(self.condition_sample_count), len(self.condition_sample))
        index = torch.randint(count, (n,), generator=generator)
        conditions = self.condition_sample.cpu()[index].clone()
        for name, value in fixed.items():
            conditions[:, self.condition_names.index(name)] = float(value)
        return conditions

    @torch.no_grad()
    def remember_conditions(self, conditions: torch.Tensor) -> None:
        conditions = conditions.float()
        self.condition_min.copy_(torch.minimum(self.condition_min, conditions.min(dim=0).values))
        self.condition_max.copy_(torch.maximum(self.condition_max, conditions.max(dim=0).values))
        start = int(self.condition_sample_count)
        take = min(len(self.condition_sample) - start, len(conditions))
        if take > 0:
            self.condition_sample[start:start + take] = conditions[:take]
            self.condition_sample_count += take
