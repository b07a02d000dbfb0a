"""Conditional GAN (numl.tasks.generative), numl.generate and the fidelity checks on PETALO."""

from __future__ import annotations

import json
import warnings

import h5py
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from torch import nn

from numl.data.petalo import PetaloDataModule
from numl.explain.generative import memorisation_check
from numl.generate import load_generator, split_sizes
from numl.models.conditional_gan import ConditionalGenerator, ModulatedConv2d, ProjectionDiscriminator
from numl.sim.petalo import EVENT_KEYS, PetaloConfig, simulate_events
from numl.tasks.generative import ConditionalGANTask, power_spectrum_distance, radial_power_spectrum
from numl.train import train
from numl.utils.errors import ConfigError
from tests.conftest import (
    assert_resumed_run_ends_with_the_same_weights,
    compose_config,
    generate_from,
    run_numl,
    train_run,
)

EVENT_SHAPE = [4, 16, 24]
GAN_SMALL = ["experiment=petalo_gan", "debug=small", "callbacks=[model_checkpoint,epoch_seed]", "seed=3"]


def _task(**kwargs) -> ConditionalGANTask:
    generator = ConditionalGenerator(EVENT_SHAPE, 3, latent_dim=8, channels=[16, 8, 8], embedding_dim=8)
    discriminator = ProjectionDiscriminator(EVENT_SHAPE, 3, channels=[8, 8, 16])
    return ConditionalGANTask(generator, torch.optim.Adam, discriminator=discriminator, **kwargs)


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory):
    """A small trained PETALO GAN run directory (two short epochs on 64 events)."""
    return train_run([*GAN_SMALL, "test=false"], tmp_path_factory.mktemp("petalo_gan"))


def test_networks_produce_the_event_shape_and_refuse_a_shape_they_cannot_build():
    generator = ConditionalGenerator(EVENT_SHAPE, 3, latent_dim=8, channels=[16, 8, 8], embedding_dim=8)
    discriminator = ProjectionDiscriminator(EVENT_SHAPE, 3, channels=[8, 8, 16])
    events = generator(torch.randn(5, 8), torch.randn(5, 3))
    assert events.shape == (5, *EVENT_SHAPE)
    assert discriminator(events, torch.randn(5, 3)).shape == (5,)
    with pytest.raises(ConfigError, match=r"^model.event_shape=\[4, 16, 22\]: rows and columns must be multiples of 4"):
        ConditionalGenerator([4, 16, 22], 3, channels=[16, 8, 8])


def test_projection_discriminator_score_depends_on_the_condition():
    torch.manual_seed(0)
    discriminator = ProjectionDiscriminator(EVENT_SHAPE, 3, channels=[8, 8, 16])
    event = torch.rand(2, *EVENT_SHAPE)
    a, b = discriminator(event, torch.zeros(2, 3)), discriminator(event, torch.ones(2, 3))
    assert not torch.allclose(a, b)


def test_generator_output_depends_on_the_condition_from_the_start():
    torch.manual_seed(0)
    generator = ConditionalGenerator(EVENT_SHAPE, 3, latent_dim=8, channels=[16, 8, 8], embedding_dim=8).eval()
    noise = torch.randn(2, 8)
    # The stem sees the condition embedding from the start; FiLM layers start as plain batch norm.
    assert not torch.allclose(generator(noise, torch.zeros(2, 3)), generator(noise, torch.ones(2, 3)))


def test_two_training_steps_move_both_networks_and_the_ema_and_records_the_condition_range():
    torch.manual_seed(0)
    task = _task(condition_sample_size=6)
    positions = torch.tensor([[160.0, 1.0, -10.0], [190.0, -2.0, 20.0], [170.0, 0.5, 0.0], [180.0, 0.0, 5.0]])
    batch = {"sipm_pattern": torch.rand(4, *EVENT_SHAPE) * 20, "position_mm": positions}
    loader = torch.utils.data.DataLoader([{k: v[i] for k, v in batch.items()} for i in range(4)], batch_size=4)
    before = {name: p.detach().clone() for name, p in task.named_parameters()}
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    trainer.fit(task, train_dataloaders=loader)
    for prefix in ("model.", "discriminator."):
        assert any(not torch.equal(p, before[n]) for n, p in task.named_parameters() if n.startswith(prefix)), prefix
    ema = dict(task.ema_generator.named_parameters())
    assert any(not torch.equal(p, before[f"ema_generator.{n}"]) for n, p in ema.items())
    assert any(not torch.equal(p, dict(task.model.named_parameters())[n]) for n, p in ema.items())
    assert torch.equal(task.condition_min, positions.min(0).values)
    assert torch.equal(task.condition_max, positions.max(0).values)
    assert int(task.condition_sample_count) == 6  # the first six of the eight conditions seen
    assert torch.equal(task.condition_sample[:4], positions)


def test_conditions_outside_the_trained_range_are_refused_or_warned_about():
    task = _task()
    task.remember_conditions(torch.tensor([[150.0, -3.0, -30.0], [200.0, 3.0, 30.0]]))
    task.check_conditions({"z_mm": 12.5, "r_mm": 150})
    with pytest.raises(ConfigError, match=r"^condition.z_mm=40: outside the trained range \[-30, 30\]; set "
                                          r"allow_extrapolation=true"):
        task.check_conditions({"z_mm": 40})
    with pytest.warns(UserWarning, match=r"condition.r_mm=210: outside the trained range \[150, 200\]: extrapolating"):
        task.check_conditions({"r_mm": 210}, allow_extrapolation=True)
    with pytest.raises(ConfigError, match="^condition.energy_kev: unknown condition; .* r_mm, rphi_mm, z_mm"):
        task.check_conditions({"energy_kev": 511})
    drawn = task.draw_conditions(100, {"z_mm": 7.0}, torch.Generator().manual_seed(0))
    assert torch.all(drawn[:, 2] == 7.0)
    assert set(drawn[:, 0].tolist()) == {150.0, 200.0}  # the other coordinates come from training conditions


def test_a_scheduler_or_a_missing_discriminator_is_one_line():
    generator = ConditionalGenerator(EVENT_SHAPE, 3, latent_dim=8, channels=[16, 8, 8], embedding_dim=8)
    with pytest.raises(ConfigError, match="^task.discriminator: missing"):
        ConditionalGANTask(generator, torch.optim.Adam)
    with pytest.raises(ConfigError, match="^scheduler: the GAN task steps its two optimizers itself"):
        _task(scheduler={"scheduler": None})
    with pytest.raises(ConfigError, match=r"^task.event_scale: 2 values for the generator's 4 channels"):
        _task(event_scale=[1.0, 1.0])


def test_radial_power_spectrum_is_flat_for_white_noise_and_follows_a_power_law():
    torch.manual_seed(0)
    white = radial_power_spectrum(torch.randn(256, 1, 64, 64), 12)[0]
    # White noise of unit variance: |FFT|^2 averages to the number of pixels in every ring (the taper divided out).
    np.testing.assert_allclose(white.numpy(), 64 * 64, rtol=0.15)
    # A field with P(k) ~ k^-2: from ring to ring the power falls by the square of the rings' radius ratio
    # (8 log-spaced rings from 1 to the grid's corner, 32 sqrt(2) = 45.25).
    k_rows = torch.fft.fftfreq(64) * 64
    k = torch.sqrt(k_rows[:, None] ** 2 + k_rows[None, :] ** 2).clamp(min=1)
    red = torch.fft.ifft2(torch.fft.fft2(torch.randn(256, 1, 64, 64)) / k).real
    power = radial_power_spectrum(red, 8)[0]
    slopes = torch.diff(torch.log(power)) / np.log(45.25 ** (1 / 8))
    np.testing.assert_allclose(slopes[1:-1].numpy(), -2.0, atol=0.25)  # the corner ring is cut by the grid
    # Rings that hold no mode of a small grid are NaN and stay out of the distance.
    small = torch.randn(4, 2, 16, 24)
    assert radial_power_spectrum(small, 16).isnan().any()
    np.testing.assert_allclose(float(power_spectrum_distance(2 * small, small, 16)), (2 * np.log(2)) ** 2, rtol=1e-5)
    scale = torch.tensor(2.0, requires_grad=True)
    power_spectrum_distance(scale * small, small, 16).backward()
    assert torch.isfinite(scale.grad) and float(scale.grad) > 0  # empty rings give no NaN gradient


def test_power_spectrum_distance_measures_amplitude_and_pixel_scale_excess_and_is_differentiable():
    torch.manual_seed(1)
    maps = torch.randn(32, 1, 64, 64)
    assert float(power_spectrum_distance(maps, maps, 16)) == 0.0
    # 1.1 x the amplitude is 1.21 x the power in every ring.
    np.testing.assert_allclose(float(power_spectrum_distance(1.1 * maps, maps, 16)), (2 * np.log(1.1)) ** 2, rtol=1e-5)
    smooth = torch.nn.functional.avg_pool2d(maps, 3, stride=1, padding=1)
    speckled = smooth + 0.3 * torch.randn_like(smooth)
    assert float(power_spectrum_distance(speckled, smooth, 16)) > 0.1
    # Its gradient brings a generated amplitude to the simulated one.
    amplitude = torch.tensor(0.5, requires_grad=True)
    optimizer = torch.optim.Adam([amplitude], lr=0.05)
    for _ in range(200):
        optimizer.zero_grad()
        power_spectrum_distance(amplitude * maps, 2 * maps, 16).backward()
        optimizer.step()
    assert abs(float(amplitude) - 2.0) < 0.02


def test_radial_power_spectrum_tapers_the_edges_so_a_non_periodic_gradient_adds_little_small_scale_power():
    torch.manual_seed(2)
    maps = torch.randn(32, 1, 64, 64)
    # A smooth ramp across the map jumps between opposite edges: untapered, that step puts power ~k^-2 along the
    # axis into every ring (1000x white noise's at the highest row frequency, mostly in the kx = 0 column).
    ramp = torch.linspace(-30, 30, 64)[None, None, :, None].expand(32, 1, 64, 64)
    untapered = (torch.fft.rfft2(maps + ramp).abs().square().mean(0) / torch.fft.rfft2(maps).abs().square().mean(0))
    assert float(untapered[0, 32, 0]) > 100
    high_rings = slice(12, 16)
    ratio = radial_power_spectrum(maps + ramp, 16)[0, high_rings] / radial_power_spectrum(maps, 16)[0, high_rings]
    np.testing.assert_allclose(ratio.numpy(), 1.0, atol=0.05)


def test_recomputed_ema_batchnorm_statistics_fit_the_averaged_weights():
    torch.manual_seed(4)
    task = _task()
    task.remember_conditions(torch.tensor([[160.0, 1.0, -10.0], [190.0, -2.0, 20.0]]))
    # Averaged weights that have moved away from those the running statistics were taken with.
    with torch.no_grad():
        task.ema_generator.stem.bias.add_(3.0)
    noise, conditions = torch.randn(512, 8), task.normalise_conditions(torch.tensor([[170.0, 0.0, 0.0]]).repeat(512, 1))

    def eval_vs_batch_statistics() -> float:
        stem = task.ema_generator.blocks[0].norm1.norm
        inputs = []
        handle = stem.register_forward_hook(lambda module, args, output: inputs.append(args[0]))
        task.ema_generator.eval()
        task.ema_generator(noise, conditions)
        handle.remove()
        return float((inputs[0].mean(dim=(0, 2, 3)) - stem.running_mean).abs().max())

    assert eval_vs_batch_statistics() > 1.0
    task.recompute_ema_batchnorm(64, generator=torch.Generator().manual_seed(0))
    assert eval_vs_batch_statistics() < 0.2
    assert not torch.equal(task.ema_generator.blocks[0].norm1.norm.running_var, torch.ones(16))
    assert torch.equal(task.model.blocks[0].norm1.norm.running_mean, torch.zeros(16))  # the trained generator untouched
    assert task.ema_generator.blocks[0].norm1.norm.momentum == 0.1  # restored
    with pytest.raises(ConfigError, match=r"^n_batches=0: must be an integer > 0"):
        task.recompute_ema_batchnorm(0)


def test_group_norm_generator_makes_each_event_alone_and_the_same_in_training_and_evaluation():
    """model.normalization=group: an event does not depend on the others in its batch, and the averaged generator
    gives in evaluation mode what it gives in training mode (no running statistics to go stale); there are no
    batch-norm statistics to recompute, and a bad value is one line."""
    torch.manual_seed(5)
    generator = ConditionalGenerator(EVENT_SHAPE, 3, latent_dim=8, channels=[16, 8, 8], embedding_dim=8,
                                     normalization="group")
    noise, conditions = torch.randn(6, 8), torch.randn(6, 3)
    batch = generator(noise, conditions)
    torch.testing.assert_close(generator(noise[:2], conditions[:2]), batch[:2])
    torch.testing.assert_close(generator.eval()(noise, conditions), batch)
    batch_norm = ConditionalGenerator(EVENT_SHAPE, 3, latent_dim=8, channels=[16, 8, 8], embedding_dim=8)
    assert not torch.allclose(batch_norm(noise[:2], conditions[:2]), batch_norm(noise, conditions)[:2])
    task = ConditionalGANTask(generator, torch.optim.Adam,
                              discriminator=ProjectionDiscriminator(EVENT_SHAPE, 3, channels=[8, 8, 16]))
    task.remember_conditions(torch.tensor([[160.0, 1.0, -10.0]]))
    with pytest.raises(ConfigError, match=r"^recompute_ema_batchnorm: this generator has no batch norm"):
        task.recompute_ema_batchnorm(4)
    odd_widths = ConditionalGenerator(EVENT_SHAPE, 3, latent_dim=8, channels=[20, 18, 10], embedding_dim=8,
                                      normalization="group")  # 5, 6 and 5 groups: each width split evenly
    assert odd_widths(noise, conditions).shape == (6, *EVENT_SHAPE)
    with pytest.raises(ConfigError, match=r"^model\.normalization='layer': must be one of batch, group, demodulation$"):
        ConditionalGenerator(EVENT_SHAPE, 3, normalization="layer")


def test_modulated_convolution_is_a_convolution_with_per_event_weights_and_demodulation_fixes_their_scale():
    """ModulatedConv2d with unit styles is the plain convolution of its scaled weights; each event gets its own
    weights; demodulated, a style scaled by any factor gives the same output and white noise keeps unit variance."""
    torch.manual_seed(3)
    conv = ModulatedConv2d(16, 8, 3, style_dim=4, demodulate=False)
    nn.init.zeros_(conv.style.weight)  # style = its bias, 1 for every channel
    x, style = torch.randn(5, 16, 12, 12), torch.randn(5, 4)
    plain = nn.functional.conv2d(x, conv.weight * conv.weight_gain, conv.bias, padding=1)
    torch.testing.assert_close(conv(x, style), plain)
    modulated = ModulatedConv2d(16, 8, 3, style_dim=4)
    out = modulated(x, style)
    torch.testing.assert_close(modulated(x[2:3], style[2:3]), out[2:3])  # one event alone: its own weights
    assert not torch.allclose(out[0], modulated(x[:1], style[1:2])[0])  # another style, another output
    with torch.no_grad():
        modulated.style.weight.mul_(7.0)
        modulated.style.bias.mul_(7.0)
    torch.testing.assert_close(modulated(x, style), out)
    wide = ModulatedConv2d(64, 32, 3, style_dim=4)
    with torch.no_grad():
        assert abs(float(wide(torch.randn(8, 64, 32, 32), torch.randn(8, 4)).std()) - 1.0) < 0.1


def test_demodulation_generator_has_no_batch_statistics_and_every_weight_learns():
    """model.normalization=demodulation: events independent of their batch, the same in training and evaluation
    mode, a style that depends on the noise (two noises, two styles), nothing to recompute, and gradients reach
    every weight of the generator."""
    torch.manual_seed(6)
    generator = ConditionalGenerator(EVENT_SHAPE, 3, latent_dim=8, channels=[16, 8, 8], embedding_dim=8,
                                     normalization="demodulation")
    noise, conditions = torch.randn(6, 8), torch.randn(6, 3)
    batch = generator(noise, conditions)
    assert batch.shape == (6, *EVENT_SHAPE)
    torch.testing.assert_close(generator(noise[:2], conditions[:2]), batch[:2])
    torch.testing.assert_close(generator.eval()(noise, conditions), batch)
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) for m in generator.modules())
    same_condition = conditions[:1].expand(2, -1)
    styles = generator.mapping(torch.cat([noise[:2], generator.embed(same_condition)], dim=1))
    assert not torch.allclose(styles[0], styles[1])
    task = ConditionalGANTask(generator.train(), torch.optim.Adam,
                              discriminator=ProjectionDiscriminator(EVENT_SHAPE, 3, channels=[8, 8, 16]))
    task.remember_conditions(torch.tensor([[160.0, 1.0, -10.0]]))
    with pytest.raises(ConfigError, match=r"^recompute_ema_batchnorm: this generator has no batch norm"):
        task.recompute_ema_batchnorm(4)
    loss = generator(noise, conditions).square().mean()
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in generator.parameters())


def test_power_spectrum_weight_enters_the_generator_step_and_bad_values_are_one_line():
    batch = {"sipm_pattern": torch.rand(4, *EVENT_SHAPE) * 20, "position_mm": torch.full((4, 3), 170.0)}
    loader = torch.utils.data.DataLoader([{k: v[i] for k, v in batch.items()} for i in range(4)], batch_size=4)
    generators = {}
    for weight in (0.0, 10.0):
        torch.manual_seed(0)
        task = _task(power_spectrum_weight=weight)
        trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, accelerator="cpu")
        trainer.fit(task, train_dataloaders=loader)
        generators[weight] = torch.cat([p.detach().flatten() for p in task.model.parameters()])
        assert "train/power_spectrum_distance_step" in trainer.logged_metrics
    assert not torch.equal(generators[0.0], generators[10.0])
    assert torch.isfinite(generators[10.0]).all()  # the PETALO grid has empty rings
    with pytest.raises(ConfigError, match=r"^task.power_spectrum_weight=-1.0: must be a number >= 0"):
        _task(power_spectrum_weight=-1.0)
    with pytest.raises(ConfigError, match=r"^task.power_spectrum_bins=0: must be an integer > 0"):
        _task(power_spectrum_bins=0)


def test_generated_petalo_events_have_the_simulator_format():
    datamodule = PetaloDataModule(n_train=4, n_val=1, n_test=1, progress=False)
    simulated = simulate_events(PetaloConfig(), 3, seed=1, full_absorption_only=True)
    pattern = np.concatenate([simulated["sipm_charge"] + 0.3, simulated["sipm_time"]], axis=1)
    events = datamodule.generated_events(pattern, simulated["position_mm"], seed=0)
    assert set(events) == set(EVENT_KEYS)
    for key in EVENT_KEYS:
        assert events[key].dtype == simulated[key].dtype, key
        assert events[key].shape == simulated[key].shape, key
    np.testing.assert_array_equal(events["sipm_charge"], simulated["sipm_charge"])  # rounded to whole pe
    assert np.all(events["sipm_time"][events["sipm_charge"] == 0] == 0)
    assert np.all(events["energy_kev"] == 511.0) and np.all(events["n_interactions"] == -1)
    assert np.isnan(events["multi_site"]).all()


def test_split_sizes_follow_the_run_proportions():
    data = OmegaConf.create({"n_train": 8000, "n_val": 1000, "n_test": 2000})
    assert split_sizes(11000, data) == {"train": 8000, "val": 1000, "test": 2000}
    assert split_sizes(3, data) == {"train": 1, "val": 1, "test": 1}
    with pytest.raises(ConfigError, match=r"^n=2: must be >= 3"):
        split_sizes(2, data)


def test_memorisation_check_sees_a_generator_that_copies_its_training_set():
    rng = np.random.default_rng(0)
    training, held_out = rng.poisson(5.0, (200, 2, 4, 4)), rng.poisson(5.0, (100, 2, 4, 4))
    copied = memorisation_check(training, held_out, training[:100])
    fresh = memorisation_check(training, held_out, rng.poisson(5.0, (100, 2, 4, 4)))
    assert copied["nn_distance_ratio_generated_over_test"] == 0.0
    assert 0.9 < fresh["nn_distance_ratio_generated_over_test"] < 1.1


def test_generated_file_trains_a_petalo_experiment_and_records_its_provenance(gan_run, tmp_path):
    path = generate_from(gan_run, tmp_path / "generate", "n=300", f"output={tmp_path / 'generated.h5'}",
                     "+condition.z_mm=5.0")
    with h5py.File(path) as h5:
        assert h5.attrs["numl_simulator"] == "numl.sim.petalo"
        provenance = json.loads(h5.attrs["numl_generator"])
        assert provenance["checkpoint"].endswith("last.ckpt") and len(provenance["checkpoint_sha256"]) == 64
        assert provenance["fixed_conditions"] == {"z_mm": 5.0}
        assert provenance["run_config"]["task"]["_target_"] == "numl.tasks.generative.ConditionalGANTask"
        assert np.all(h5["train/position_mm"][:, 2] == 5.0)
        assert len(h5["test/position_mm"]) == 75  # the run's 64 : 32 : 32 proportions
    # The position experiment reads the generated events like numl.simulate's (same metadata checks).
    cfg = compose_config("train", ["experiment=petalo_position", "debug=fast_dev_run", "data.source=hdf5",
                                   f"data.hdf5_path={path}"], tmp_path / "position")
    metrics = train(cfg)
    assert np.isfinite(metrics["test/loss"])


def test_generation_is_repeatable_for_a_seed(gan_run, tmp_path):
    first = generate_from(gan_run, tmp_path / "a", "n=30", f"output={tmp_path / 'a.h5'}")
    second = generate_from(gan_run, tmp_path / "b", "n=30", f"output={tmp_path / 'b.h5'}")
    with h5py.File(first) as a, h5py.File(second) as b:
        np.testing.assert_array_equal(a["train/sipm_charge"][:], b["train/sipm_charge"][:])
        np.testing.assert_array_equal(a["val/position_mm"][:], b["val/position_mm"][:])


def test_generate_bad_input_is_one_line(gan_run, tmp_path):
    with pytest.raises(ConfigError, match="^n=0: must be an integer > 0"):
        generate_from(gan_run, tmp_path, "n=0")
    with pytest.raises(ConfigError, match=r"^condition.r_mm=400: outside the trained range \[1"):
        generate_from(gan_run, tmp_path, "n=10", "+condition.r_mm=400")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numl.generate logs the extrapolation warning instead of raising it
        generate_from(gan_run, tmp_path, "n=10", "+condition.r_mm=400", "allow_extrapolation=true",
                  f"output={tmp_path / 'x.h5'}")
    # A numl checkpoint of another task: refused before its weights are read.
    other = tmp_path / "position_run"
    (other / ".hydra").mkdir(parents=True)
    (other / ".hydra" / "config.yaml").write_text("task:\n  _target_: numl.tasks.petalo.PetaloPositionTask\n")
    torch.save({"state_dict": {}}, other / "last.ckpt")
    with pytest.raises(ConfigError, match=r"^ckpt_path='.*last.ckpt': not a generator checkpoint \(its task is "
                                          r"numl.tasks.petalo.PetaloPositionTask\)"):
        load_generator(other / "last.ckpt")


def test_sampling_steps_are_refused_for_a_gan(gan_run, tmp_path):
    with pytest.raises(ConfigError, match=r"^sampling_steps, sampling_eta: only a diffusion generator samples in "
                                          r"steps \(this one is numl.tasks.generative.ConditionalGANTask\)"):
        generate_from(gan_run, tmp_path, "n=10", "sampling_steps=10")


@pytest.mark.slow  # a full numl.generate process (6 s): the bad-input lines above cover the fast suite
def test_a_condition_without_plus_is_one_line_that_says_how(gan_run):
    # Hydra cannot declare the condition names of every generator, so a new one takes a '+'.
    result = run_numl("generate", f"ckpt_path={gan_run / 'checkpoints' / 'last.ckpt'}", "n=5", "condition.z_mm=3")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "numl: error: condition.z_mm: no such key (to add one: +condition.z_mm=...)"]


@pytest.mark.slow
def test_resumed_gan_run_ends_with_the_same_weights(tmp_path):
    """Both optimizers, the EMA and the recorded conditions continue exactly from last.ckpt."""
    reference = assert_resumed_run_ends_with_the_same_weights(GAN_SMALL, tmp_path)
    assert len(reference["optimizer_states"]) == 2
