"""Conditional GAN that emulates a simulator: events (what a DataModule's `event_key` holds) given a vector of
named physical conditions (a `condition_key` column per name), e.g. PETALO SiPM patterns given the first
interaction point (r, r*phi, z), or weak-lensing convergence maps given M_nu.

Training: manual optimisation, one discriminator step then one generator step per batch, hinge loss,
spectrally normalised projection discriminator, FiLM-conditioned generator (numl.models.conditional_gan).
Sampling uses an exponential moving average of the generator weights (smoother than the last step's).

The networks see events through `event_transform`, per channel: "log1p" for non-negative detector readouts
(charges, times), log1p(value) / event_scale; "asinh" for signed fields such as lensing convergence,
asinh(value / event_scale), linear within a scale of zero and logarithmic in the tails (so that a map's rare
high peaks do not dominate the networks' inputs), sign preserved. The conditions enter as
(value - condition_center) / condition_scale. The task remembers the conditions it was
trained on (their range, and a sample of them), so that `numl.generate` can refuse a condition outside the
trained range and draw unspecified conditions from the training distribution.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from numl.tasks.base import BaseTask
from numl.tasks.conditions import EventUnits, GeneratedEvents, TrainedConditions, checked_generator_arguments
from numl.utils.errors import ConfigError, check_range


class ConditionalGANTask(TrainedConditions, EventUnits, GeneratedEvents, BaseTask):
    """Conditional GAN on the shared base.

    Args:
        model: the generator (noise, normalised conditions) -> normalised event.
        discriminator: the (event, conditions) -> score network.
        event_key: batch key of the events to generate.
        condition_key: batch key of the conditions [B, n_conditions], in the units of `condition_names`.
        condition_names: one name per condition column, with its unit (`r_mm`); `numl.generate condition.<name>=`.
        condition_center, condition_scale: the networks see (condition - center) / scale.
        event_scale: per channel, the scale of `event_transform`.
        event_transform: "log1p" (non-negative readouts) or "asinh" (signed fields), see the module docstring.
        channel_names: per channel, names the validation metrics `<stage>/<channel>_sum_ratio` ("log1p": total
            readout) or `<stage>/<channel>_std_ratio` ("asinh": fluctuation amplitude), generated / simulated.
        ema_decay: weight of the old value in the moving average of the generator weights.
        condition_sample_size: training conditions kept in the checkpoint to draw new conditions from.
    """

    module_arguments = ("discriminator",)

    def __init__(
        self,
        model: nn.Module,
        optimizer=None,
        scheduler=None,
        discriminator: nn.Module | None = None,
        event_key: str = "sipm_pattern",
        condition_key: str = "position_mm",
        condition_names: list[str] = ("r_mm", "rphi_mm", "z_mm"),
        condition_center: list[float] = (175.0, 0.0, 0.0),
        condition_scale: list[float] = (15.0, 15.0, 15.0),
        event_scale: list[float] = (4.0, 4.0, 3.0, 3.0),
        event_transform: str = "log1p",
        channel_names: list[str] | None = None,
        ema_decay: float = 0.999,
        condition_sample_size: int = 4096,
        **hparams: Any,
    ) -> None:
        if discriminator is None:
            raise ConfigError("task.discriminator: missing; a GAN needs a discriminator network")
        if scheduler:
            raise ConfigError("scheduler: the GAN task steps its two optimizers itself; use scheduler=none")
        channel_names = checked_generator_arguments(model, "generator", condition_names, condition_center,
                                                    condition_scale, event_scale, channel_names, condition_sample_size)
        check_range("task.ema_decay", ema_decay, 0.0, 0.99999)
        super().__init__(
            model, optimizer, None,
            event_key=event_key, condition_key=condition_key, condition_names=list(condition_names),
            condition_center=list(condition_center), condition_scale=list(condition_scale),
            event_scale=list(event_scale), event_transform=event_transform, channel_names=channel_names,
            ema_decay=ema_decay,
            condition_sample_size=condition_sample_size, **hparams,
        )
        # Two optimizers, stepped in training_step: Lightning's automatic loop would step both on one loss.
        self.automatic_optimization = False
        self.discriminator = discriminator
        self.ema_generator = copy.deepcopy(model).requires_grad_(False)
        self.input_key, self.event_key, self.condition_key = event_key, event_key, condition_key
        self.channel_names = channel_names
        self.ema_decay = float(ema_decay)
        self.init_event_units(event_scale, event_transform)
        self.init_trained_conditions(condition_names, condition_center, condition_scale, condition_sample_size)
        self.register_buffer("ema_updates", torch.tensor(0, dtype=torch.long))

    # ----- sampling ---------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, conditions: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Events in physical units at `conditions` [N, n_conditions] (physical units), from the EMA generator."""
        conditions = conditions.to(self.condition_center.device)
        noise = torch.randn(len(conditions), self.ema_generator.latent_dim, generator=generator).to(conditions.device)
        was_training = self.ema_generator.training
        self.ema_generator.eval()
        normalised = self.ema_generator(noise, self.normalise_conditions(conditions))
        self.ema_generator.train(was_training)
        return self.physical_event(normalised)

    @torch.no_grad()
    def _update_ema(self) -> None:
        # Warm-up: early on the average follows the generator closely, otherwise a short run samples
        # mostly the random initial weights (0.999 ** 250 = 0.78).
        self.ema_updates += 1
        updates = int(self.ema_updates)
        decay = min(self.ema_decay, (1 + updates) / (10 + updates))
        for ema, weight in zip(self.ema_generator.parameters(), self.model.parameters(), strict=True):
            ema.lerp_(weight, 1.0 - decay)
        for ema, buffer in zip(self.ema_generator.buffers(), self.model.buffers(), strict=True):
            ema.copy_(buffer)  # batch-norm statistics follow the current generator

    # ----- Lightning --------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.generate(self.batch_conditions(batch))

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise RuntimeError("no optimizer configured")
        return [self.optimizer_factory(params=list(self.model.parameters())),
                self.optimizer_factory(params=list(self.discriminator.parameters()))]

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        generator_optimizer, discriminator_optimizer = self.optimizers()
        physical_conditions = self.batch_conditions(batch)
        self.remember_conditions(physical_conditions)
        real = self.normalise_event(batch[self.event_key])
        conditions = self.normalise_conditions(physical_conditions)
        noise = torch.randn(len(real), self.model.latent_dim, device=real.device)
        fake = self.model(noise, conditions)

        # Hinge loss: the discriminator pushes real scores above +1 and generated ones below -1.
        real_score = self.discriminator(real, conditions)
        fake_score = self.discriminator(fake.detach(), conditions)
        discriminator_loss = torch.relu(1 - real_score).mean() + torch.relu(1 + fake_score).mean()
        discriminator_optimizer.zero_grad()
        self.manual_backward(discriminator_loss)
        discriminator_optimizer.step()

        generator_loss = -self.discriminator(fake, conditions).mean()
        generator_optimizer.zero_grad()
        self.manual_backward(generator_loss)
        generator_optimizer.step()
        self._update_ema()

        self.log_dict({"train/discriminator_loss": discriminator_loss, "train/generator_loss": generator_loss,
                       "train/real_score": real_score.mean(), "train/generated_score": fake_score.mean()},
                      on_step=True, on_epoch=True, prog_bar=True, batch_size=len(real))

    def _fidelity_step(self, batch: dict[str, torch.Tensor], batch_idx: int, stage: str) -> None:
        """Generated (EMA, fixed noise per batch) vs simulated events at the same conditions."""
        noise_source = torch.Generator().manual_seed(batch_idx)
        generated = self.generate(self.batch_conditions(batch), noise_source)
        simulated = batch[self.event_key].float()
        self.log_dict(self.fidelity_values(generated, simulated, stage), on_epoch=True, prog_bar=stage == "val",
                      batch_size=len(simulated), sync_dist=True)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._fidelity_step(batch, batch_idx, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._fidelity_step(batch, batch_idx, "test")
