"""The conditional GAN on weak-lensing maps (experiment lensing_gan), numl.generate for lensing checkpoints, and
the lensing fidelity checks (numl.explain.generative) on inputs whose answer is known."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from numl.data.lensing import LensingDataModule
from numl.explain.generative import (
    classifier_two_sample_test,
    compare_statistics,
    lensing_statistics,
    memorisation_check,
    ratio_with_error,
)
from numl.models.conditional_gan import ConditionalGenerator, ProjectionDiscriminator
from numl.tasks.generative import ConditionalGANTask
from numl.utils.errors import ConfigError
from tests.conftest import generate_from, train_run

FIELD_DEG = 3.5


def gaussian_fields(n: int, n_pix: int, amplitude: float, seed: int) -> torch.Tensor:
    """Gaussian random maps [n, 1, n_pix, n_pix] with a power-law spectrum P(k) ~ k^-2 (a red field, as kappa's)."""
    generator = torch.Generator().manual_seed(seed)
    k = torch.fft.fftfreq(n_pix)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    amplitude_k = torch.where(k2 > 0, 1 / k2.clamp(min=1e-12).sqrt(), torch.zeros(()))
    white = torch.randn(n, 1, n_pix, n_pix, generator=generator)
    maps = torch.fft.ifft2(torch.fft.fft2(white) * amplitude_k).real
    # Each pixel's expected variance is the mean of amplitude_k^2: a fixed normalisation, not the set's own std.
    return (amplitude * maps / amplitude_k.square().mean().sqrt()).float()


def _lensing_task(**kwargs) -> ConditionalGANTask:
    generator = ConditionalGenerator([1, 16, 16], 1, latent_dim=8, channels=[16, 8, 8], embedding_dim=8)
    discriminator = ProjectionDiscriminator([1, 16, 16], 1, channels=[8, 8, 16], coordinate_channels=False)
    settings = {"event_key": "convergence_map", "condition_key": "m_nu_ev", "condition_names": ["m_nu_ev"],
                "condition_center": [0.05], "condition_scale": [0.05], "event_scale": [0.01],
                "event_transform": "asinh", "channel_names": ["kappa"]}
    return ConditionalGANTask(generator, torch.optim.Adam, discriminator=discriminator, **(settings | kwargs))


def test_asinh_transform_keeps_the_sign_and_inverts_exactly():
    task = _lensing_task()
    kappa = torch.tensor([-0.03, -0.01, 0.0, 0.002, 0.01, 0.08]).reshape(1, 1, 2, 3)
    normalised = task.normalise_event(kappa)
    assert torch.equal(torch.sign(normalised), torch.sign(kappa))
    assert normalised[0, 0, 1, 1] == pytest.approx(np.arcsinh(1.0))  # kappa = scale
    torch.testing.assert_close(task.physical_event(normalised), kappa, rtol=1e-5, atol=1e-8)
    with pytest.raises(ConfigError, match=r"^task.event_transform='log': must be one of"):
        _lensing_task(event_transform="log")


def test_bilinear_generator_makes_maps_and_an_unknown_upsampling_is_one_line():
    generator = ConditionalGenerator([1, 16, 16], 1, latent_dim=8, channels=[16, 8, 8], upsampling="bilinear")
    assert generator(torch.randn(3, 8), torch.zeros(3, 1)).shape == (3, 1, 16, 16)
    with pytest.raises(ConfigError, match=r"^model.upsampling='cubic': must be one of"):
        ConditionalGenerator([1, 16, 16], 1, upsampling="cubic")


def test_lensing_gan_trains_on_maps_with_one_dimensional_m_nu_and_records_its_range():
    torch.manual_seed(0)
    task = _lensing_task()
    maps, m_nu = gaussian_fields(8, 16, 0.01, seed=1), torch.tensor([0.0, 0.1] * 4)
    loader = torch.utils.data.DataLoader([{"convergence_map": maps[i], "m_nu_ev": m_nu[i]} for i in range(8)],
                                         batch_size=4)
    before = [p.detach().clone() for p in task.model.parameters()]
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    trainer.fit(task, train_dataloaders=loader)
    assert any(not torch.equal(p, b) for p, b in zip(task.model.parameters(), before, strict=True))
    assert task.condition_min.tolist() == [0.0] and task.condition_max.tolist() == pytest.approx([0.1])
    generated = task.generate(torch.tensor([[0.0], [0.1]]))
    assert generated.shape == (2, 1, 16, 16) and torch.isfinite(generated).all()


def test_generated_maps_take_the_class_of_their_m_nu_and_refuse_another_m_nu():
    datamodule = LensingDataModule(field_deg=FIELD_DEG, n_pix=16, galaxy_density_arcmin2=None)
    maps = gaussian_fields(3, 16, 0.01, seed=2).numpy()
    events = datamodule.generated_events(maps, np.array([[0.1], [0.0], [0.1]]), seed=0)
    assert events.labels.tolist() == [1, 0, 1] and events.m_nu.tolist() == pytest.approx([0.1, 0.0, 0.1])
    with pytest.raises(ConfigError, match=r"^condition.m_nu_ev=0.05: the generator's data classify M_nu 0 vs 0.1 eV"):
        datamodule.generated_events(maps, np.array([[0.05], [0.0], [0.1]]), seed=0)


def test_statistics_of_two_sets_from_one_distribution_agree_and_a_brighter_set_does_not():
    edges = np.geomspace(250, 1500, 5)
    reference = gaussian_fields(400, 32, 0.01, seed=3)
    sigma = float(reference.std())
    same = compare_statistics(lensing_statistics(reference, FIELD_DEG, edges, sigma),
                              lensing_statistics(gaussian_fields(400, 32, 0.01, seed=4), FIELD_DEG, edges, sigma))
    brighter = compare_statistics(lensing_statistics(reference, FIELD_DEG, edges, sigma),
                                  lensing_statistics(gaussian_fields(400, 32, 0.012, seed=4), FIELD_DEG, edges, sigma))
    assert set(same) == {"power_spectrum", "one_point_pdf", "peak_counts", "minkowski_v0", "minkowski_v1",
                         "minkowski_v2"}
    np.testing.assert_allclose(same["power_spectrum"]["ratio"], 1.0, atol=0.1)
    # 1.2 x the amplitude of the same white noise: 1.44 x the power in every bin, to round-off.
    np.testing.assert_allclose(brighter["power_spectrum"]["ratio"], 1.44 * same["power_spectrum"]["ratio"], rtol=1e-5)
    for name in same:
        assert same[name]["chi2_per_bin"] < 4, name
    for name in ("power_spectrum", "one_point_pdf", "minkowski_v0", "minkowski_v1"):
        assert brighter[name]["chi2_per_bin"] > 10, name


def test_the_massive_massless_ratio_of_paired_maps_has_no_sample_variance():
    massless = np.random.default_rng(0).lognormal(size=(50, 4))
    ratio, error = ratio_with_error(0.9 * massless, massless, paired=True)
    np.testing.assert_allclose(ratio, 0.9)
    np.testing.assert_allclose(error, 0.0, atol=1e-12)
    _, unpaired_error = ratio_with_error(0.9 * massless, massless, paired=False)
    assert np.all(unpaired_error > 0.01)


def test_classifier_two_sample_test_cannot_tell_one_distribution_apart_but_tells_a_wrong_one():
    simulated = gaussian_fields(300, 16, 0.01, seed=5)
    same = classifier_two_sample_test(simulated, gaussian_fields(300, 16, 0.01, seed=6), 0.01, epochs=6)
    wrong = classifier_two_sample_test(simulated, gaussian_fields(300, 16, 0.015, seed=6), 0.01, epochs=6)
    assert same["c2st_test_maps"] == 300 and same["c2st_auroc_error"] == pytest.approx(0.033, abs=0.005)
    assert abs(same["c2st_auroc"] - 0.5) < 3 * same["c2st_auroc_error"]
    assert wrong["c2st_auroc"] > 0.8


def test_memorisation_check_on_maps_sees_copies():
    training, held_out = gaussian_fields(100, 16, 0.01, seed=7), gaussian_fields(50, 16, 0.01, seed=8)
    flat = lambda maps: torch.as_tensor(maps).flatten(1)  # noqa: E731
    copied = memorisation_check(training, held_out, training[:50], features=flat)
    fresh = memorisation_check(training, held_out, gaussian_fields(50, 16, 0.01, seed=9), features=flat)
    assert copied["nn_distance_ratio_generated_over_test"] == 0.0
    assert 0.9 < fresh["nn_distance_ratio_generated_over_test"] < 1.1


@pytest.mark.slow  # CAMB lognormal maps and a GAN run (~20 s)
def test_lensing_gan_checkpoint_generates_a_file_the_lensing_data_module_reads(tmp_path):
    # The data= switch of the experiment: lognormal CAMB maps instead of the N-body suite, small maps.
    run_dir = train_run(["experiment=lensing_gan", "data=lensing", "data.field=lognormal", "debug=small",
                         "data.n_pix=16", "callbacks=[model_checkpoint,epoch_seed]", "test=false"], tmp_path / "run")

    path = generate_from(run_dir, tmp_path / "generate", "n=40", f"output={tmp_path / 'generated.h5'}",
                     "+condition.m_nu_ev=0.1")
    with h5py.File(path) as h5:
        assert h5.attrs["numl_simulator"] == "numl.sim.lensing"
        provenance = json.loads(h5.attrs["numl_generator"])
        assert provenance["fixed_conditions"] == {"m_nu_ev": 0.1}
        assert np.all(h5["train/label"][:] == 1) and np.allclose(h5["test/m_nu_ev"][:], 0.1)
    # The GAN's own data config with source=hdf5 reads the file through the usual metadata checks.
    data_cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml").data
    datamodule = instantiate(OmegaConf.merge(data_cfg, {"source": "hdf5", "hdf5_path": str(path), "n_train": 20,
                                                        "n_val": 5, "n_test": 10}), _convert_="all")
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["convergence_map"].shape == (16, 1, 16, 16) and torch.isfinite(batch["convergence_map"]).all()

    with pytest.raises(ConfigError, match=r"^condition.m_nu_ev=0.3: outside the trained range \[0, 0.1\]"):
        generate_from(run_dir, tmp_path / "bad", "n=10", "+condition.m_nu_ev=0.3")
    with pytest.raises(ConfigError, match=r"^condition.m_nu_ev=0.05: the generator's data classify M_nu 0 vs 0.1"):
        generate_from(run_dir, tmp_path / "bad", "n=10", "+condition.m_nu_ev=0.05", f"output={tmp_path / 'y.h5'}")
    with pytest.raises(ConfigError, match="^n=-1: must be an integer > 0"):
        generate_from(run_dir, tmp_path / "bad", "n=-1")
