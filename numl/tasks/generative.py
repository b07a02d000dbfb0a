"""Conditional GAN that emulates a simulator: events (what a DataModule's `event_key` holds) given a vector of
named physical conditions (a `condition_key` column per name), e.g. PETALO SiPM patterns given the first
interaction point (r, r*phi, z), or weak-lensing convergence maps given M_nu.

Training: manual optimisation, one discriminator step then one generator step per batch, hinge loss,
spectrally normalised projection discriminator, FiLM-conditioned generator (numl.models.conditional_gan).
Sampling uses an exponential moving average of the generator weights (smoother than the last step's).
Optionally (`power_spectrum_weight` > 0) the generator also matches the batch's radially averaged Fourier power
spectrum per channel to the simulated batch's (the spectral regularisation of Durall, Keuper & Keuper, CVPR 2020,
"Watch your up-convolution"): up-sampling generators leave pixel-scale structure that the adversarial loss
alone removes slowly; the loss compares log power in rings of Fourier radius, so every scale counts alike.

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

import numpy as np
import torch
from torch import nn

from numl.callbacks import recomputed_batchnorm_statistics
from numl.sim.lensing.maps import apodisation_profile
from numl.tasks.base import BaseTask
from numl.tasks.conditions import EventUnits, GeneratedEvents, TrainedConditions, checked_generator_arguments
from numl.utils.errors import ConfigError, check_positive, check_range


def radial_power_spectrum(events: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Batch-mean Fourier power of events [B, C, rows, columns] in `n_bins` log-spaced rings of Fourier radius
    (in units of the fundamental mode, from 1 to the corner of the grid; the mean, radius 0, left out): [C, n_bins].
    A ring holding no mode of this grid is NaN. The events are tapered to zero over an eighth of each side first
    (numl.sim.lensing.maps.apodisation_profile, as numl's lensing spectra of non-periodic maps) and the power
    divided by the window's mean square: without the taper the jump between opposite edges leaks power into
    every ring, and a generator could match the spectrum by its edges. Written here because it must be
    differentiable and work on any event grid in pixels (numl.sim.lensing.maps' estimators work in multipoles of
    square maps of a given field)."""
    rows, columns = events.shape[-2:]
    window = np.outer(apodisation_profile(rows, rows // 8), apodisation_profile(columns, columns // 8))
    events = events.float() * torch.as_tensor(window, dtype=torch.float32, device=events.device)
    k_rows = torch.fft.fftfreq(rows, device=events.device) * rows
    k_columns = torch.fft.rfftfreq(columns, device=events.device) * columns
    radius = torch.sqrt(k_rows[:, None] ** 2 + k_columns[None, :] ** 2).flatten()
    edges = torch.logspace(0.0, float(torch.log10(radius.max())), n_bins + 1, device=events.device)
    edges[-1] = radius.max() * (1 + 1e-6)
    ring = torch.bucketize(radius, edges, right=True) - 1
    in_ring = (ring >= 0) & (ring < n_bins)
    weights = torch.nn.functional.one_hot(ring.clamp(0, n_bins - 1), n_bins).T.float() * in_ring.float()
    modes = weights.sum(dim=1)
    with torch.autocast(device_type=events.device.type, enabled=False):  # ring sums in float32 under bf16 runs
        power = torch.fft.rfft2(events).abs().square().mean(dim=0).flatten(1)  # [C, modes]
        ring_power = (power @ weights.T) / modes.clamp(min=1) / float(np.mean(window**2))
    # NaN set after the division, so that an empty ring gives no NaN gradient to the others
    return torch.where(modes > 0, ring_power, torch.full_like(ring_power, float("nan")))


def power_spectrum_distance(generated: torch.Tensor, simulated: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Mean squared difference of log ring power (radial_power_spectrum) between two batches, over channels and
    the rings that hold modes: 0.01 is a 10 % mismatch in every ring."""
    generated_power = radial_power_spectrum(generated, n_bins)
    simulated_power = radial_power_spectrum(simulated, n_bins)
    filled = torch.isfinite(simulated_power)
    tiny = torch.finfo(generated_power.dtype).tiny
    log_ratio = torch.log(generated_power[filled].clamp(min=tiny)) - torch.log(simulated_power[filled].clamp(min=tiny))
    return log_ratio.square().mean()


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
        power_spectrum_weight: weight of `power_spectrum_distance` (generated vs simulated batch, physical units)
            in the generator's loss; 0 leaves the pure hinge loss (the distance is logged either way).
        power_spectrum_bins: rings of Fourier radius of that distance.
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
        power_spectrum_weight: float = 0.0,
        power_spectrum_bins: int = 16,
        **hparams: Any,
    ) -> None:
        if discriminator is None:
            raise ConfigError("task.discriminator: missing; a GAN needs a discriminator network")
        if scheduler:
            raise ConfigError("scheduler: the GAN task steps its two optimizers itself; use scheduler=none")
        channel_names = checked_generator_arguments(model, "generator", condition_names, condition_center,
                                                    condition_scale, event_scale, channel_names, condition_sample_size)
        check_range("task.ema_decay", ema_decay, 0.0, 0.99999)
        check_positive("task.power_spectrum_weight", power_spectrum_weight, allow_zero=True)
        check_positive("task.power_spectrum_bins", power_spectrum_bins, integer=True)
        super().__init__(
            model, optimizer, None,
            event_key=event_key, condition_key=condition_key, condition_names=list(condition_names),
            condition_center=list(condition_center), condition_scale=list(condition_scale),
            event_scale=list(event_scale), event_transform=event_transform, channel_names=channel_names,
            ema_decay=ema_decay, condition_sample_size=condition_sample_size,
            power_spectrum_weight=power_spectrum_weight, power_spectrum_bins=power_spectrum_bins, **hparams,
        )
        # Two optimizers, stepped in training_step: Lightning's automatic loop would step both on one loss.
        self.automatic_optimization = False
        self.discriminator = discriminator
        self.ema_generator = copy.deepcopy(model).requires_grad_(False)
        self.input_key, self.event_key, self.condition_key = event_key, event_key, condition_key
        self.channel_names = channel_names
        self.ema_decay = float(ema_decay)
        self.power_spectrum_weight, self.power_spectrum_bins = float(power_spectrum_weight), int(power_spectrum_bins)
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
    def recompute_ema_batchnorm(self, n_batches: int, batch_size: int = 32,
                                generator: torch.Generator | None = None) -> None:
        """Recompute the batch-norm running statistics of the EMA generator with its own weights: the average over
        `n_batches` batches of noise at kept training conditions. During training they are copied from the
        current generator, whose weights differ from the average while they keep moving; the next training step
        copies them again (for measuring a trained generator, not during training)."""
        check_positive("n_batches", n_batches, integer=True)
        if int(self.condition_sample_count) == 0:
            raise ConfigError("recompute_ema_batchnorm: this generator kept no training conditions to draw from")
        conditions = self.condition_sample[: int(self.condition_sample_count)]
        device = conditions.device
        with recomputed_batchnorm_statistics(self.ema_generator) as norms:
            if not norms:
                raise ConfigError("recompute_ema_batchnorm: this generator has no batch norm "
                                  "(model.normalization=group or demodulation): nothing to recompute")
            for _ in range(n_batches):
                pick = torch.randint(len(conditions), (batch_size,), generator=generator)
                noise = torch.randn(batch_size, self.ema_generator.latent_dim, generator=generator)
                self.ema_generator(noise.to(device), self.normalise_conditions(conditions[pick.to(device)]))

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

        adversarial_loss = -self.discriminator(fake, conditions).mean()
        with torch.set_grad_enabled(self.power_spectrum_weight > 0):
            spectrum_distance = power_spectrum_distance(self.physical_event(fake), batch[self.event_key],
                                                        self.power_spectrum_bins)
        generator_loss = adversarial_loss
        if self.power_spectrum_weight > 0:  # weight 0: exactly the hinge loss, whatever the distance's value
            generator_loss = adversarial_loss + self.power_spectrum_weight * spectrum_distance
        generator_optimizer.zero_grad()
        self.manual_backward(generator_loss)
        generator_optimizer.step()
        self._update_ema()

        self.log_dict({"train/discriminator_loss": discriminator_loss, "train/generator_loss": adversarial_loss,
                       "train/power_spectrum_distance": spectrum_distance.detach(),
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
