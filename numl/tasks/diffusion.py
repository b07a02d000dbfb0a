"""Conditional denoising diffusion model that emulates a simulator: events (what a DataModule's `event_key` holds)
given a vector of named physical conditions, the second generator family beside the conditional GAN
(numl.tasks.generative); same event units, same trained-condition bookkeeping, same `numl.generate`.

Training: the DDPM objective (Ho et al. 2020) with the cosine noise schedule (Nichol & Dhariwal 2021): a random
diffusion step t, the event noised to sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise, and the network
(numl.models.diffusion_unet) regresses the noise ("epsilon") or the velocity sqrt(alpha_bar_t) noise -
sqrt(1 - alpha_bar_t) x0 ("v_prediction", Salimans & Ho 2022) with a mean squared error.
Sampling: DDIM (Song et al. 2021) in `sampling_steps` steps, deterministic (eta = 0) or stochastic (eta > 0, eta = 1
is DDPM's ancestral sampling), from an exponential moving average of the network weights.

The schedule and the DDIM update are Hugging Face diffusers' DDPMScheduler / DDIMScheduler (optional dependency,
`pip install numl[diffusion]`): a kept, widely used implementation of exactly these formulas, with the
"trailing" step spacing that starts sampling at the last training step (Lin et al. 2024: the default "leading"
spacing never starts from pure noise).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from numl.tasks.base import BaseTask
from numl.tasks.conditions import EventUnits, GeneratedEvents, TrainedConditions, checked_generator_arguments
from numl.utils.errors import ConfigError, check_choice, check_positive, check_range

PREDICTION_TYPES = ("epsilon", "v_prediction")


def noise_schedule(train_steps: int, prediction_type: str):
    """The cosine-schedule DDPM scheduler the task trains with; its config also builds the DDIM sampler."""
    try:
        from diffusers import DDPMScheduler
    except ImportError as error:
        raise ConfigError("task: the diffusion task needs the diffusers package; "
                          "pip install numl[diffusion]") from error
    # clip_sample=False: normalised events are not in [-1, 1] (log1p charges reach ~1.5), clipping would cut spots.
    return DDPMScheduler(num_train_timesteps=train_steps, beta_schedule="squaredcos_cap_v2",
                         prediction_type=prediction_type, clip_sample=False, timestep_spacing="trailing")


class ConditionalDiffusionTask(TrainedConditions, EventUnits, GeneratedEvents, BaseTask):
    """Conditional DDPM / DDIM on the shared base.

    Args:
        model: the denoising network (noisy normalised event, step, normalised conditions) -> prediction.
        event_key, condition_key, condition_names, condition_center, condition_scale, event_scale, event_transform,
            channel_names, condition_sample_size: as numl.tasks.generative.ConditionalGANTask.
        prediction_type: what the network predicts, "epsilon" (the noise) or "v_prediction" (the velocity).
        train_steps: diffusion steps of the training schedule (Ho et al. 2020: 1000).
        sampling_steps: DDIM steps per generated event (numl.generate sampling_steps= overrides).
        sampling_eta: 0 deterministic DDIM, 1 DDPM-like stochastic steps.
        validation_sampling_steps, validation_sampling_batches: validation generates events with this many steps
            for its first batches only (the loss is computed on every batch): sampling costs many forward passes.
        ema_decay: weight of the old value in the moving average of the network weights used for sampling.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer=None,
        scheduler=None,
        event_key: str = "sipm_pattern",
        condition_key: str = "position_mm",
        condition_names: list[str] = ("r_mm", "rphi_mm", "z_mm"),
        condition_center: list[float] = (175.0, 0.0, 0.0),
        condition_scale: list[float] = (15.0, 15.0, 15.0),
        event_scale: list[float] = (4.0, 4.0, 3.0, 3.0),
        event_transform: str = "log1p",
        channel_names: list[str] | None = None,
        prediction_type: str = "v_prediction",
        train_steps: int = 1000,
        sampling_steps: int = 25,
        sampling_eta: float = 0.0,
        validation_sampling_steps: int = 10,
        validation_sampling_batches: int = 4,
        ema_decay: float = 0.999,
        condition_sample_size: int = 4096,
        **hparams: Any,
    ) -> None:
        channel_names = checked_generator_arguments(model, "network", condition_names, condition_center,
                                                    condition_scale, event_scale, channel_names, condition_sample_size)
        check_choice("task.prediction_type", prediction_type, PREDICTION_TYPES)
        for key, value in (("train_steps", train_steps), ("validation_sampling_steps", validation_sampling_steps),
                           ("validation_sampling_batches", validation_sampling_batches)):
            check_positive(f"task.{key}", value, integer=True)
        check_range("task.ema_decay", ema_decay, 0.0, 0.99999)
        super().__init__(
            model, optimizer, scheduler,
            event_key=event_key, condition_key=condition_key, condition_names=list(condition_names),
            condition_center=list(condition_center), condition_scale=list(condition_scale),
            event_scale=list(event_scale), event_transform=event_transform, channel_names=channel_names,
            prediction_type=prediction_type,
            train_steps=train_steps, sampling_steps=sampling_steps, sampling_eta=sampling_eta,
            validation_sampling_steps=validation_sampling_steps,
            validation_sampling_batches=validation_sampling_batches, ema_decay=ema_decay,
            condition_sample_size=condition_sample_size, **hparams,
        )
        self.input_key, self.event_key, self.condition_key = event_key, event_key, condition_key
        self.channel_names = channel_names
        self.prediction_type, self.train_steps = prediction_type, int(train_steps)
        self.validation_sampling_steps = int(validation_sampling_steps)
        self.validation_sampling_batches = int(validation_sampling_batches)
        self.set_sampling(sampling_steps, sampling_eta, "task.")
        self.noise_schedule = noise_schedule(self.train_steps, prediction_type)
        self.init_event_units(event_scale, event_transform)
        self.init_trained_conditions(condition_names, condition_center, condition_scale, condition_sample_size)
        self.ema_decay = float(ema_decay)
        # The averaged copy is no optimizer's parameter: the base task optimizes what requires a gradient.
        self.ema_model = AveragedModel(model, avg_fn=self._ema_average, use_buffers=True).requires_grad_(False)

    def set_sampling(self, steps: int, eta: float, prefix: str = "") -> None:
        """DDIM steps and eta of `generate` (numl.generate's sampling_steps / sampling_eta)."""
        check_positive(f"{prefix}sampling_steps", steps, integer=True)
        if steps > self.train_steps:
            raise ConfigError(f"{prefix}sampling_steps={steps}: must be <= the {self.train_steps} training steps")
        check_range(f"{prefix}sampling_eta", eta, 0.0, 1.0)
        self.sampling_steps, self.sampling_eta = int(steps), float(eta)

    def _ema_average(self, average: torch.Tensor, current: torch.Tensor, n_averaged: torch.Tensor) -> torch.Tensor:
        # Warm-up as the GAN's EMA: early on the average follows the network, otherwise a short run samples
        # mostly its random initial weights.
        updates = int(n_averaged)
        decay = min(self.ema_decay, (1 + updates) / (10 + updates))
        return average + (current - average) * (1.0 - decay)

    # ----- diffusion --------------------------------------------------------------------------
    def diffusion_loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
        """DDPM objective on the batch: MSE of the network's noise or velocity at a random step per event."""
        clean = self.normalise_event(batch[self.event_key])
        conditions = self.normalise_conditions(self.batch_conditions(batch))
        noise = torch.randn(clean.shape, generator=generator).to(clean.device)
        steps = torch.randint(self.train_steps, (len(clean),), generator=generator).to(clean.device)
        noisy = self.noise_schedule.add_noise(clean, noise, steps)
        target = noise if self.prediction_type == "epsilon" else self.noise_schedule.get_velocity(clean, noise, steps)
        return nn.functional.mse_loss(self.model(noisy, steps, conditions), target)

    @torch.no_grad()
    def generate(self, conditions: torch.Tensor, generator: torch.Generator | None = None,
                 steps: int | None = None) -> torch.Tensor:
        """Events in physical units at `conditions` [N, n_conditions] (physical units): DDIM from the EMA network."""
        from diffusers import DDIMScheduler

        conditions = conditions.to(self.condition_center.device)
        sampler = DDIMScheduler.from_config(self.noise_schedule.config)
        sampler.set_timesteps(steps or self.sampling_steps)
        network = self.ema_model.module
        was_training = network.training
        network.eval()
        normalised_conditions = self.normalise_conditions(conditions)
        sample = torch.randn((len(conditions), *network.event_shape), generator=generator).to(conditions.device)
        for step in sampler.timesteps:
            prediction = network(sample, step.expand(len(sample)).to(sample.device), normalised_conditions)
            sample = sampler.step(prediction, step, sample, eta=self.sampling_eta, generator=generator).prev_sample
        network.train(was_training)
        return self.physical_event(sample)

    # ----- Lightning --------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.generate(self.batch_conditions(batch))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.remember_conditions(self.batch_conditions(batch))
        loss = self.diffusion_loss(batch)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch[self.event_key]))
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.ema_model.update_parameters(self.model)

    def _evaluation_step(self, batch: dict[str, torch.Tensor], batch_idx: int, stage: str) -> None:
        """The loss with fixed noise per batch (comparable between epochs) and, for the batches that sample,
        generated (EMA) vs simulated events at the same conditions."""
        batch_size = len(batch[self.event_key])
        fixed = torch.Generator().manual_seed(batch_idx)
        self.log(f"{stage}/loss", self.diffusion_loss(batch, fixed), on_epoch=True, prog_bar=True,
                 batch_size=batch_size, sync_dist=True)
        if stage == "val" and batch_idx >= self.validation_sampling_batches:
            return
        steps = self.validation_sampling_steps if stage == "val" else None
        generated = self.generate(self.batch_conditions(batch), fixed, steps)
        simulated = batch[self.event_key].float()
        self.log_dict(self.fidelity_values(generated, simulated, stage), on_epoch=True, batch_size=batch_size,
                      sync_dist=True)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluation_step(batch, batch_idx, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluation_step(batch, batch_idx, "test")
