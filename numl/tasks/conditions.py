"""What the generator tasks (numl.tasks.generative, numl.tasks.diffusion) share: the physical conditions they were
trained on, and the units in which their networks see events.

A generator is only trusted inside the conditions it has seen: the task records their range and a sample of them
in the checkpoint, so that `numl.generate` can refuse a condition outside the trained range (or warn, naming it)
and draw the conditions it is not given from the training distribution.
"""

from __future__ import annotations

import warnings

import torch

from numl.utils.errors import ConfigError, check_choice, check_positive, check_range

# log1p: non-negative readouts (PETALO charges and times), log(1 + value) / scale; asinh: signed fields (lensing
# kappa), asinh(value / scale), linear within a scale and logarithmic in the tails, the sign kept.
EVENT_TRANSFORMS = ("log1p", "asinh")


def checked_generator_arguments(model, role: str, condition_names, condition_center, condition_scale, event_scale,
                                channel_names, condition_sample_size) -> list[str]:
    """Refuse condition and channel settings that do not fit `model` (its `n_conditions` and `event_shape`; `role`
    names it in the message) or are not positive; returns the channel names (channel0, ... when not given)."""
    n_conditions, n_channels = int(model.n_conditions), int(model.event_shape[0])
    for key, values in (("condition_names", condition_names), ("condition_center", condition_center),
                        ("condition_scale", condition_scale)):
        if len(values) != n_conditions:
            raise ConfigError(f"task.{key}: {len(values)} values for the {role}'s {n_conditions} conditions")
    channel_names = list(channel_names or [f"channel{i}" for i in range(n_channels)])
    for key, values in (("event_scale", event_scale), ("channel_names", channel_names)):
        if len(values) != n_channels:
            raise ConfigError(f"task.{key}: {len(values)} values for the {role}'s {n_channels} channels")
    for key, values in (("condition_scale", condition_scale), ("event_scale", event_scale)):
        for i, value in enumerate(values):
            check_range(f"task.{key}[{i}]", value, 1e-12, None)
    check_positive("task.condition_sample_size", condition_sample_size, integer=True)
    return channel_names


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

    def batch_conditions(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The batch's conditions as [B, n_conditions]: a single condition may be stored as [B] (lensing M_nu)."""
        conditions = batch[self.condition_key]
        return conditions.reshape(len(conditions), -1)

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


class EventUnits:
    """Mixin: the units the generator networks see events in, per channel (`EVENT_TRANSFORMS`)."""

    def init_event_units(self, event_scale: list[float], event_transform: str) -> None:
        check_choice("task.event_transform", event_transform, EVENT_TRANSFORMS)
        self.event_transform = event_transform
        self.register_buffer("event_scale", torch.tensor(list(event_scale), dtype=torch.float32))

    def normalise_event(self, event: torch.Tensor) -> torch.Tensor:
        scale = self.event_scale[:, None, None]
        if self.event_transform == "asinh":
            return torch.asinh(event.float() / scale)
        return torch.log1p(event.float().clamp(min=0)) / scale

    def physical_event(self, normalised: torch.Tensor) -> torch.Tensor:
        scale = self.event_scale[:, None, None]
        if self.event_transform == "asinh":
            return torch.sinh(normalised) * scale
        return torch.expm1((normalised * scale).clamp(min=0))


class GeneratedEvents:
    """Mixin for a generator task with `generate(conditions, generator)`, the units of `EventUnits` and the
    conditions of `TrainedConditions`: fidelity figures and predictions shared by the generator families."""

    def fidelity_values(self, generated: torch.Tensor, simulated: torch.Tensor, stage: str) -> dict:
        """Generated vs simulated events at the same conditions: the distance of the mean normalised patterns and,
        per channel, the ratio of sums (of standard deviations for signed fields, whose sum is ~0)."""
        distance = (self.normalise_event(generated).mean(0) - self.normalise_event(simulated).mean(0)).abs().mean()
        values = {f"{stage}/mean_pattern_distance": distance}
        for i, name in enumerate(self.channel_names):
            if self.event_transform == "asinh":
                values[f"{stage}/{name}_std_ratio"] = generated[:, i].std() / simulated[:, i].std().clamp(min=1e-12)
            else:
                values[f"{stage}/{name}_sum_ratio"] = generated[:, i].sum() / simulated[:, i].sum().clamp(min=1e-12)
        return values

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0):
        generated = self.generate(self.batch_conditions(batch), torch.Generator().manual_seed(batch_idx))
        return {k: v.detach().cpu() for k, v in self.predictions(generated, batch).items()}

    def predictions(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {f"generated_{self.event_key}": outputs, self.condition_key: batch[self.condition_key]}
