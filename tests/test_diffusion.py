"""Conditional diffusion generator (numl.tasks.diffusion, numl.models.diffusion_unet) and numl.generate on it."""

from __future__ import annotations

import importlib.util
import json
import math

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from numl.generate import load_generator
from numl.models.diffusion_unet import ConditionalUNet
from numl.tasks.diffusion import ConditionalDiffusionTask, noise_schedule
from numl.utils.errors import ConfigError
from tests.conftest import assert_resumed_run_ends_with_the_same_weights, generate_from, train_run

# The schedule and sampler come from the optional diffusers package; the network itself does not need it.
needs_diffusers = pytest.mark.skipif(importlib.util.find_spec("diffusers") is None,
                                     reason="the diffusion task needs pip install numl[diffusion]")

DIFFUSION_SMALL = ["experiment=petalo_diffusion", "debug=small", "callbacks=[model_checkpoint,epoch_seed]", "seed=3",
                   "task.sampling_steps=4", "task.validation_sampling_steps=2", "task.validation_sampling_batches=1"]


class OracleNetwork(nn.Module):
    """Predicts the exact noise (or velocity) that turns a known clean event into the current sample: DDIM fed
    with it must return that clean event, whatever the number of steps or eta."""

    def __init__(self, clean: torch.Tensor, prediction_type: str) -> None:
        super().__init__()
        self.register_buffer("clean", clean)
        self.register_buffer("alphas_cumprod", noise_schedule(1000, prediction_type).alphas_cumprod.float())
        self.prediction_type, self.event_shape, self.n_conditions = prediction_type, tuple(clean.shape[1:]), 1

    def forward(self, sample, steps, conditions):
        alpha_bar = self.alphas_cumprod[steps].view(-1, 1, 1, 1)
        noise = (sample - alpha_bar.sqrt() * self.clean) / (1 - alpha_bar).sqrt()
        if self.prediction_type == "epsilon":
            return noise
        return alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * self.clean


def _task(model: nn.Module, **kwargs) -> ConditionalDiffusionTask:
    return ConditionalDiffusionTask(model, torch.optim.Adam, condition_names=["m_nu_ev"], condition_center=[0.0],
                                    condition_scale=[0.1], event_scale=[2.0] * model.event_shape[0], **kwargs)


@needs_diffusers
def test_cosine_schedule_is_nichol_and_dhariwals():
    alpha_bar = noise_schedule(1000, "v_prediction").alphas_cumprod.double()

    def cosine(t):  # Nichol & Dhariwal 2021, eq. 17, offset s = 0.008
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    expected = torch.tensor([cosine((i + 1) / 1000) / cosine(0.0) for i in range(1000)], dtype=torch.float64)
    assert torch.all(alpha_bar[1:] < alpha_bar[:-1])  # strictly more noise at every step
    assert alpha_bar[0] > 0.9999 and alpha_bar[-1] < 1e-4  # from almost the clean event to almost pure noise
    # betas are capped at 0.999 only in the last few steps
    torch.testing.assert_close(alpha_bar[:990], expected[:990], rtol=1e-4, atol=1e-7)


@needs_diffusers
@pytest.mark.parametrize(("prediction_type", "eta"), [("v_prediction", 0.0), ("epsilon", 0.0), ("v_prediction", 1.0)])
def test_ddim_with_the_true_noise_recovers_the_clean_event(prediction_type, eta):
    clean = torch.rand(3, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    task = _task(OracleNetwork(clean, prediction_type), prediction_type=prediction_type, sampling_eta=eta)
    # Step counts that divide the 1000 training steps: otherwise diffusers' last DDIM step lands on step 0
    # (alpha_bar 0.99996, a residual noise of 0.006 in normalised units) instead of the clean event. One step
    # from pure noise (alpha_bar 2e-9) loses float32 precision in the epsilon parametrisation: two at least.
    for steps in (2, 8, 50):
        generated = task.generate(torch.zeros(3, 1), torch.Generator().manual_seed(steps), steps=steps)
        torch.testing.assert_close(generated, task.physical_event(clean), rtol=1e-4, atol=1e-4)


def test_unet_keeps_the_event_shape_for_petalo_and_lensing_and_refuses_a_shape_it_cannot_pool():
    petalo = ConditionalUNet([4, 16, 24], 3, channels=[8, 16, 16], embedding_dim=16)
    assert petalo(torch.randn(2, 4, 16, 24), torch.tensor([0, 999]), torch.randn(2, 3)).shape == (2, 4, 16, 24)
    lensing = ConditionalUNet([1, 64, 64], 1, channels=[8, 16, 16], embedding_dim=16)
    assert lensing(torch.randn(2, 1, 64, 64), torch.tensor([5, 500]), torch.randn(2, 1)).shape == (2, 1, 64, 64)
    with pytest.raises(ConfigError, match=r"^model.event_shape=\[4, 16, 22\]: rows and columns must be multiples of 4"):
        ConditionalUNet([4, 16, 22], 3, channels=[8, 16, 16])


def test_prediction_depends_on_step_and_condition_once_the_head_has_learnt():
    torch.manual_seed(0)
    network = ConditionalUNet([1, 8, 8], 1, channels=[8, 8], embedding_dim=8)
    nn.init.normal_(network.head[-1].weight)  # the zero-initialised head would hide every input
    noisy = torch.randn(1, 1, 8, 8)
    reference = network(noisy, torch.tensor([10]), torch.zeros(1, 1))
    assert not torch.allclose(reference, network(noisy, torch.tensor([900]), torch.zeros(1, 1)))
    assert not torch.allclose(reference, network(noisy, torch.tensor([10]), torch.ones(1, 1)))


def _blob_events(conditions: torch.Tensor) -> torch.Tensor:
    """Light spots of ~20 pe on an 8 x 8 grid whose column follows the condition: a toy conditional simulator."""
    grid = torch.arange(8.0)
    column = 3.5 + 20 * conditions[:, 0]
    rows = (grid - 3.5)[None, :, None] ** 2
    spot = torch.exp(-0.5 * rows - 0.5 * (grid[None, None, :] - column[:, None, None]) ** 2)
    return 20 * spot[:, None]


@needs_diffusers
def test_training_steps_reduce_the_denoising_loss_and_move_the_ema():
    torch.manual_seed(0)
    task = _task(ConditionalUNet([1, 8, 8], 1, channels=[16, 16], embedding_dim=16))
    conditions = torch.linspace(-0.1, 0.1, 32)[:, None]
    batch = {"sipm_pattern": _blob_events(conditions), "position_mm": conditions}
    optimizer = torch.optim.Adam(task.model.parameters(), lr=3e-3)

    def loss():
        with torch.no_grad():
            return float(task.diffusion_loss(batch, torch.Generator().manual_seed(0)))

    before = loss()
    for _ in range(60):
        optimizer.zero_grad()
        task.diffusion_loss(batch).backward()
        optimizer.step()
        task.ema_model.update_parameters(task.model)
    assert loss() < 0.5 * before
    ema, live = dict(task.ema_model.module.named_parameters()), dict(task.model.named_parameters())
    assert any(not torch.equal(ema[name], live[name]) for name in live)  # an average, not a copy


@needs_diffusers
def test_bad_diffusion_settings_are_one_line():
    network = ConditionalUNet([1, 8, 8], 1, channels=[8, 8], embedding_dim=8)
    with pytest.raises(ConfigError, match=r"^task.prediction_type='sample': must be one of epsilon, v_prediction"):
        _task(network, prediction_type="sample")
    with pytest.raises(ConfigError, match=r"^task.sampling_steps=2000: must be <= the 1000 training steps"):
        _task(network, sampling_steps=2000)
    with pytest.raises(ConfigError, match=r"^task.sampling_eta=1.5: must be in \[0.0, 1.0\]"):
        _task(network, sampling_eta=1.5)
    with pytest.raises(ConfigError, match=r"^task.event_scale: 2 values for the network's 1 channels"):
        ConditionalDiffusionTask(network, condition_names=["m"], condition_center=[0.0], condition_scale=[1.0],
                                 event_scale=[1.0, 1.0])


@pytest.fixture(scope="module")
def diffusion_run(tmp_path_factory):
    """A small trained PETALO diffusion run directory (two short epochs on 64 events)."""
    return train_run([*DIFFUSION_SMALL, "test=false"], tmp_path_factory.mktemp("petalo_diffusion"))


@needs_diffusers
def test_generate_writes_the_simulator_format_from_a_diffusion_checkpoint(diffusion_run, tmp_path):
    path = generate_from(diffusion_run, tmp_path / "generate", "n=40", "sampling_steps=3", "sampling_eta=1.0",
                     f"output={tmp_path / 'generated.h5'}", "+condition.z_mm=5.0")
    with h5py.File(path) as h5:
        assert h5.attrs["numl_simulator"] == "numl.sim.petalo"
        provenance = json.loads(h5.attrs["numl_generator"])
        assert provenance["task"] == "numl.tasks.diffusion.ConditionalDiffusionTask"
        assert provenance["sampling"] == {"steps": 3, "eta": 1.0}
        assert np.all(h5["train/position_mm"][:, 2] == 5.0)
        charge = h5["train/sipm_charge"][:]
        assert charge.shape[1:] == (2, 16, 24) and np.all(charge >= 0) and np.all(np.isfinite(charge))
    task, _ = load_generator(diffusion_run / "checkpoints" / "last.ckpt")
    assert int(task.condition_sample_count) == 64 * 2 and torch.all(task.condition_min < task.condition_max)
    with pytest.raises(ConfigError, match=r"^sampling_steps=0: must be an integer > 0"):
        generate_from(diffusion_run, tmp_path, "n=10", "sampling_steps=0")
    with pytest.raises(ConfigError, match=r"^condition.r_mm=400: outside the trained range"):
        generate_from(diffusion_run, tmp_path, "n=10", "+condition.r_mm=400")


@needs_diffusers
@pytest.mark.slow
def test_resumed_diffusion_run_ends_with_the_same_weights(tmp_path):
    """The optimizer, the EMA and the recorded conditions continue exactly from last.ckpt."""
    reference = assert_resumed_run_ends_with_the_same_weights(DIFFUSION_SMALL, tmp_path)
    assert any(name.startswith("ema_model.") for name in reference["state_dict"])
