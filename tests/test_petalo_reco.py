"""PETALO reconstruction: baseline, networks, bad input, export, DataModule and HDF5."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from numl.baselines.petalo import CentroidRMap, MultiSiteSpread, fwhm, resolution_metrics
from numl.data.petalo import PetaloDataModule
from numl.export import export_torchscript
from numl.metrics import ONE_SIGMA_COVERAGE, position_coverage, sigma_cut_curve
from numl.models.petalo_mlp import SiPMPatternMLP
from numl.tasks.petalo import PetaloPositionTask, PetaloTaggerTask, fit_sigma_scale
from numl.utils.errors import ConfigError


@pytest.fixture(scope="module")
def datamodule():
    dm = PetaloDataModule(n_train=400, n_val=64, n_test=200, batch_size=64, seed=11, progress=False)
    dm.setup()
    return dm


def test_fwhm_of_a_gaussian():
    x = np.random.default_rng(0).normal(0.3, 2.0, 20000)
    assert fwhm(x) == pytest.approx(2 * math.sqrt(2 * math.log(2)) * 2.0, rel=0.05)


def test_centroid_rmap_baseline_reconstructs_single_site_events(datamodule):
    baseline = CentroidRMap(datamodule.config).fit(datamodule.events("train"))
    test = datamodule.events("test")
    predicted = baseline.predict(test["sipm_charge"])
    single = test["multi_site"] < 0.5
    metrics = resolution_metrics(predicted[single], test["position_mm"][single])
    # Few-mm resolution on single-site events, against a 50 mm depth and +-48 mm phi window.
    assert metrics["rphi_fwhm_mm"] < 4.0
    assert metrics["r_fwhm_mm"] < 8.0
    assert metrics["reconstructed_fraction"] == 1.0
    # The r-map is monotonic in the charge spread: deeper events spread more light on the inner face.
    assert np.corrcoef(baseline.map_spread, baseline.map_r_mm)[0, 1] > 0.9


def test_bad_sipm_patterns_are_flagged_or_refused(datamodule):
    config = datamodule.config
    baseline = CentroidRMap(config).fit(datamodule.events("train"))
    charge = datamodule.events("test")["sipm_charge"][:3].copy()
    charge[1] = 0.0
    charge[2, 0, 0, 0] = np.nan
    predicted = baseline.predict(charge)
    assert np.isfinite(predicted[0]).all() and np.isnan(predicted[1:]).all()
    with pytest.raises(ValueError, match="expected"):
        baseline.predict(charge[:, :, :, :-1])

    model = SiPMPatternMLP(in_channels=4, n_rows=config.n_rows, n_columns=config.window_columns, hidden=[32])
    pattern = datamodule.cached_dataset("test").pattern[:4].clone()
    pattern[1] = 0.0
    pattern[2, 0, 0, 0] = float("nan")
    pattern[3, 3, 0, 0] = float("inf")
    out = model(pattern)
    assert torch.isfinite(out[0]).all() and torch.isnan(out[1:]).all()
    with pytest.raises(ValueError, match="expected"):
        model(pattern[:, :2])
    task = PetaloPositionTask(model)
    position, sigma = task.to_mm(task({"sipm_pattern": pattern}))
    assert torch.isnan(position[1:]).all() and torch.isinf(sigma[1:]).all()  # any error cut rejects them

    tagger = SiPMPatternMLP(
        in_channels=2,
        n_rows=config.n_rows,
        n_columns=config.window_columns,
        hidden=[8],
        n_outputs=1,
        invalid_output=math.inf,
    )
    logits = tagger(pattern[:, :2])
    assert torch.isfinite(logits[0]).all() and (logits[1:3] == math.inf).all()  # always discarded


def test_torchscript_export_gives_identical_outputs(tmp_path, datamodule):
    config = datamodule.config
    pattern = datamodule.cached_dataset("test").pattern[:32].clone()
    pattern[5] = 0.0
    pattern[6, 1, 2, 3] = float("nan")
    for projections in (False, True):
        tagger = SiPMPatternMLP(
            in_channels=2,
            n_rows=config.n_rows,
            n_columns=config.window_columns,
            hidden=[16, 8],
            n_outputs=1,
            invalid_output=math.inf,
            projections=projections,
        )
        path = export_torchscript(tagger, pattern[:, :2], tmp_path / "tagger.pt")
        loaded = torch.jit.load(str(path))
        x = datamodule.cached_dataset("test").pattern[32:96, :2]
        with torch.inference_mode():
            assert torch.equal(loaded(x), tagger(x))
            flagged = loaded(pattern[:, :2])
            assert torch.isinf(flagged[5:7]).all() and torch.isfinite(flagged[:5]).all()
            with pytest.raises(Exception, match="expected"):  # TorchScript re-raises the ValueError
                loaded(pattern[:, :2, :, :-1])
    task = PetaloPositionTask(
        SiPMPatternMLP(n_rows=config.n_rows, n_columns=config.window_columns, hidden=[16], n_outputs=3),
        error_model=SiPMPatternMLP(n_rows=config.n_rows, n_columns=config.window_columns, hidden=[8], n_outputs=3),
        uncertainty="error_net",
    )
    module = task.export_module()
    path = export_torchscript(module, pattern, tmp_path / "position.pt")
    out = torch.jit.load(str(path))(pattern)
    assert out.shape == (32, 6) and torch.isnan(out[5:7, :3]).all() and torch.isinf(out[5:7, 3:]).all()


def _fit_position_task(datamodule, hidden: list[int], lr: float, epochs: int, **task_options):
    """A Gaussian-NLL position task trained on the small test events; returns (task, trainer)."""
    import pytorch_lightning as pl

    config = datamodule.config
    pl.seed_everything(0, workers=True, verbose=False)  # weights and shuffling must not depend on earlier tests
    task = PetaloPositionTask(
        SiPMPatternMLP(n_rows=config.n_rows, n_columns=config.window_columns, hidden=hidden, n_outputs=6),
        partial(torch.optim.AdamW, lr=lr),
        **task_options,
    )
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(task, datamodule=datamodule)
    return task, trainer


@pytest.mark.slow
def test_position_network_learns_and_reports_calibration(datamodule):
    task, trainer = _fit_position_task(datamodule, [128, 64], lr=2e-3, epochs=6)
    batches = trainer.predict(task, dataloaders=datamodule.test_dataloader())
    pred = {k: torch.cat([b[k] for b in batches]).numpy() for k in batches[0]}
    true = pred["position_mm"]
    # Better than guessing the mean position on every coordinate.
    rms = np.sqrt(np.mean((pred["position_mm_pred"] - true) ** 2, axis=0))
    assert (rms < true.std(axis=0)).all()
    cover = position_coverage(pred)
    assert all(0.0 < v < 1.0 for v in cover.values())
    curve = sigma_cut_curve(pred)
    efficiencies = [row["efficiency"] for row in curve]
    assert efficiencies == sorted(efficiencies) and curve[-1]["cut_mm"] == 12.0


@pytest.mark.slow
def test_tagger_task_sets_an_operating_point(datamodule):
    import pytorch_lightning as pl

    config = datamodule.config
    dm = PetaloDataModule(n_train=400, n_val=64, n_test=200, batch_size=64, seed=11, use_time=False, progress=False)
    dm._events = {s: datamodule.events(s) for s in ("train", "val", "test")}  # the fixture's events, charge only
    task = PetaloTaggerTask(
        SiPMPatternMLP(
            in_channels=2,
            n_rows=config.n_rows,
            n_columns=config.window_columns,
            hidden=[32],
            n_outputs=1,
            invalid_output=math.inf,
        ),
        partial(torch.optim.AdamW, lr=2e-3),
        keep_efficiency=0.8,
    )
    pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(task, datamodule=dm)
    with torch.inference_mode():
        val = dm.cached_dataset("val")
        logits = task.model(val.pattern)[:, 0]
    good = val.tensors["multi_site"] < 0.5
    kept = (logits[good] <= task.discard_threshold_logit).float().mean()
    assert float(kept) == pytest.approx(0.8, abs=0.06)


def test_datamodule_hdf5_round_trip_and_mismatch(tmp_path):
    dm = PetaloDataModule(n_train=16, n_val=8, n_test=8, batch_size=8, seed=3, progress=False)
    path = dm.write_hdf5(tmp_path / "petalo.h5")
    from_file = PetaloDataModule(
        n_train=16, n_val=8, n_test=8, batch_size=8, seed=3, source="hdf5", hdf5_path=str(path)
    )
    from_file.setup()
    dm.setup()
    torch.testing.assert_close(from_file.cached_dataset("test").pattern, dm.cached_dataset("test").pattern)
    other = PetaloDataModule(
        detector={"lxe_depth_mm": 40.0}, n_train=16, n_val=8, n_test=8, source="hdf5", hdf5_path=str(path)
    )
    with pytest.raises(ConfigError, match="detector"):
        other.setup()
    with pytest.raises(ConfigError, match="data.n_train"):
        PetaloDataModule(n_train=64, n_val=8, n_test=8, source="hdf5", hdf5_path=str(path)).setup()
    with pytest.raises(ConfigError, match="data.source"):
        PetaloDataModule(source="root")


def test_sigma_scale_fit_restores_one_sigma_coverage():
    rng = np.random.default_rng(4)
    sigma = rng.uniform(0.5, 3.0, size=(20000, 3))
    true_factor = np.array([2.0, 1.0, 0.5])  # over-confident, right, under-confident
    residual = rng.normal(size=sigma.shape) * sigma * true_factor
    sigma[:10] = np.inf  # flagged events carry no information on the scale
    scale = fit_sigma_scale(residual, sigma)
    np.testing.assert_allclose(scale, true_factor, rtol=0.03)
    held_out = rng.normal(size=sigma.shape) * sigma * true_factor
    pred = {"position_mm_pred": held_out, "position_mm": np.zeros_like(held_out), "sigma_mm": sigma * scale}
    assert all(v == pytest.approx(ONE_SIGMA_COVERAGE, abs=0.015) for v in position_coverage(pred).values())
    assert position_coverage({**pred, "sigma_mm": sigma})["r"] < 0.45
    with pytest.raises(ValueError, match="expected"):
        fit_sigma_scale(residual[:, 0], sigma[:, 0])


def test_position_task_calibrates_sigma_on_validation_and_exports_it(datamodule):
    task, trainer = _fit_position_task(datamodule, [32], lr=1e-3, epochs=1)
    scale = task.sigma_scale.clone()
    assert not torch.allclose(scale, torch.ones(3))
    # The factor is the one that puts 68.3 % of the validation events within one sigma.
    val = datamodule.cached_dataset("val")
    with torch.inference_mode():
        position, raw_sigma = task.to_mm(task({"sipm_pattern": val.pattern}), calibrated=False)
    expected = fit_sigma_scale((position - val.tensors["position_mm"]).numpy(), raw_sigma.numpy())
    np.testing.assert_allclose(scale.numpy(), expected, rtol=1e-5)
    batches = trainer.predict(task, dataloaders=datamodule.test_dataloader())
    pred = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
    torch.testing.assert_close(pred["sigma_mm"], pred["sigma_raw_mm"] * scale)
    with torch.inference_mode():
        exported = task.export_module()(datamodule.cached_dataset("test").pattern)
    torch.testing.assert_close(exported[:, 3:], pred["sigma_mm"])
    # recalibrate_sigma=False leaves the network's own sigma.
    task_off, _ = _fit_position_task(datamodule, [8], lr=1e-3, epochs=1, recalibrate_sigma=False)
    assert torch.equal(task_off.sigma_scale, torch.ones(3))


def test_network_input_is_charge_fractions_plus_log_total(datamodule):
    config = datamodule.config
    pattern = datamodule.cached_dataset("test").pattern[:16]
    for in_channels, projections in ((4, False), (2, False), (2, True)):
        model = SiPMPatternMLP(
            in_channels=in_channels,
            n_rows=config.n_rows,
            n_columns=config.window_columns,
            hidden=[16],
            n_outputs=2,
            projections=projections,
        )
        x = pattern[:, :in_channels]
        scaled = x.clone()
        scaled[:, :2] *= 3.0  # same light pattern, three times the energy
        with torch.no_grad():
            torch.testing.assert_close(model(scaled), model(x))  # total_weight starts at zero
            model.total_weight.fill_(1.0)
            assert not torch.allclose(model(scaled), model(x))
    with pytest.raises(ValueError, match="in_channels=2"):
        SiPMPatternMLP(in_channels=4, projections=True)


def test_classical_multi_site_spread(datamodule):
    config = datamodule.config
    spread = MultiSiteSpread(config)
    one = np.zeros((2, 2, config.n_rows, config.window_columns))
    one[:, 0, 7:9, 11:13] = 50.0
    one[1, 0, 2:4, 3:5] = 20.0  # a second light spot
    score = spread(one)
    assert score[1] > score[0] > 0
    bad = np.repeat(one[:1], 3, axis=0)
    bad[1] = 0.0
    bad[2, 1, 0, 0] = np.nan
    assert np.isfinite(spread(bad[:1])).all() and np.isinf(spread(bad)[1:]).all()
    with pytest.raises(ValueError, match="expected"):
        spread(one[:, :, :, :-1])
    # On simulated events it separates multi-site from single-site events (weakly: AUROC about 0.6).
    events = datamodule.events("train")
    assert roc_auc_score(events["multi_site"], spread(events["sipm_charge"])) > 0.53
