"""`python -m numl.attribute` on a lensing run directory, and the end-of-training attribution callback."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from numl.attribute import attribute_run
from numl.callbacks.attribution import AttributionCallback
from numl.utils.errors import ConfigError
from numl.utils.runtime import build_task

from .conftest import compose_config, run_numl

SMALL_LENSING = ["experiment=lensing_cnn", "debug=fast_dev_run", "data.n_pix=32", "data.n_val=8", "data.n_test=16",
                 "model.channels=[8,8]", "model.head_hidden=8"]


def make_run_dir(root: Path, overrides: list[str]) -> Path:
    """What numl.train leaves behind: <run>/.hydra/config.yaml and <run>/checkpoints/last.ckpt."""
    cfg = compose_config("train", overrides, root)
    run_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    (root / ".hydra").mkdir(parents=True)
    OmegaConf.save(run_cfg, root / ".hydra" / "config.yaml")
    torch.manual_seed(0)
    task = build_task(run_cfg)
    (root / "checkpoints").mkdir()
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)},
               root / "checkpoints" / "last.ckpt")
    return root / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def lensing_ckpt(tmp_path_factory) -> Path:
    return make_run_dir(tmp_path_factory.mktemp("lensing_run"), SMALL_LENSING)


def attribute_cfg(tmp_path: Path, overrides: list[str]):
    cfg = compose_config("attribute", overrides, tmp_path)
    with open_dict(cfg):
        cfg.output_dir = cfg.output_dir or str(tmp_path / "attribution")
    return cfg


def test_attribute_writes_hdf5_figures_and_voids_vs_clusters(lensing_ckpt, tmp_path):
    cfg = attribute_cfg(tmp_path, [f"ckpt_path={lensing_ckpt}", "n_events=12", "attribution.n_steps=8",
                                   "voids_vs_clusters.enabled=true", "voids_vs_clusters.masking_fractions=[0.05]"])
    summary = attribute_run(cfg)
    out = tmp_path / "attribution"
    with h5py.File(out / "attributions.h5") as h5:
        assert h5["convergence_map"].shape == (12, 1, 32, 32)
        assert h5["attributions"].shape == (12, 1, 32, 32)
        assert set(h5["predictions"]) == {"score", "label"}
        assert set(h5["batch"]) == {"label", "m_nu_ev"}
        assert "lensing_cnn" not in h5.attrs["task"] and h5.attrs["task"].endswith("BinaryClassificationTask")
    for name in ("input_maps.png", "attribution_overlay.png", "class_mean_attribution.png",
                 "kappa_binned_attribution.png", "masking_experiment.png", "summary.json", "voids_vs_clusters.json"):
        assert (out / name).is_file(), name
    vvc = json.loads((out / "voids_vs_clusters.json").read_text())
    assert sum(vvc["pixel_fraction"]) == pytest.approx(1.0)
    assert set(vvc["masking"]) == {"unmasked", "highest", "lowest", "random"}
    # Completeness of IG on the real CNN (GELU, batch norm, circular padding), 8 Gauss-Legendre points.
    assert summary["convergence_delta_relative_median"] < 0.05


def test_default_output_dir_is_next_to_the_run(lensing_ckpt, tmp_path):
    cfg = attribute_cfg(tmp_path, [f"ckpt_path={lensing_ckpt}", "n_events=2", "attribution=saliency"])
    with open_dict(cfg):
        cfg.output_dir = None
    attribute_run(cfg)
    assert (lensing_ckpt.parent.parent / "attribution" / "saliency" / "attributions.h5").is_file()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["target=1"], r"target=1: out of range; BinaryClassificationTask gives one score per event"),
        (["attribution=deeplift"], r"attribution=deeplift: .*GELU"),
        (["attribution.n_steps=0"], r"attribution.n_steps=0: must be an integer > 0"),
        (["+voids_vs_clusters.bins=3"], r"voids_vs_clusters.bins: unknown key"),
        (["device=tpu"], r"device='tpu': must be one of cpu, cuda"),
    ],
)
def test_bad_input_is_one_line_naming_it(lensing_ckpt, tmp_path, overrides, message):
    cfg = attribute_cfg(tmp_path, [f"ckpt_path={lensing_ckpt}", "n_events=2", *overrides])
    with pytest.raises(ConfigError, match=message) as err:
        attribute_run(cfg)
    assert "\n" not in str(err.value)


def test_checkpoint_of_another_task_is_refused(lensing_ckpt, tmp_path):
    """A checkpoint whose weights do not fit the run's task (here another network) is named."""
    other = make_run_dir(tmp_path / "other", [*SMALL_LENSING, "model.channels=[4]"])
    (lensing_ckpt.parent / "foreign.ckpt").write_bytes(other.read_bytes())
    cfg = attribute_cfg(tmp_path, [f"ckpt_path={lensing_ckpt.parent / 'foreign.ckpt'}"])
    with pytest.raises(ConfigError, match=r"foreign.ckpt'?: checkpoint does not match task"):
        attribute_run(cfg)
    cfg = attribute_cfg(tmp_path, [f"ckpt_path={tmp_path / 'nowhere.ckpt'}"])
    with pytest.raises(ConfigError, match="no such checkpoint file"):
        attribute_run(cfg)
    torch.save({"state_dict": {}}, tmp_path / "loose.ckpt")
    cfg = attribute_cfg(tmp_path, [f"ckpt_path={tmp_path / 'loose.ckpt'}"])
    with pytest.raises(ConfigError, match=r"no .*\.hydra/config.yaml next to it"):
        attribute_run(cfg)


@pytest.mark.slow  # a fresh interpreter: imports and data setup take ~10 s
def test_command_line_error_exits_2_with_one_line(lensing_ckpt, tmp_path):
    result = run_numl("attribute", f"ckpt_path={lensing_ckpt}", "target=3", "n_events=2", f"output_dir={tmp_path}",
                      f"paths.log_dir={tmp_path / 'logs'}", timeout=180)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("numl: error: target=3: out of range")


def test_callback_attributes_the_tested_model(tmp_path):
    cfg = compose_config("train", [*SMALL_LENSING, "callbacks=[default,attribution]",
                                   "attribution@callbacks.attribution.attribution=gradient_shap",
                                   "callbacks.attribution.n_events=6", "callbacks.attribution.n_examples=1",
                                   "callbacks.attribution.voids_vs_clusters={masking_fractions: [0.1]}",
                                   "callbacks.attribution.attribution.n_samples=4"], tmp_path)
    callback = instantiate(cfg.callbacks.attribution)
    assert isinstance(callback, AttributionCallback) and callback.config.method == "gradient_shap"
    task = build_task(cfg)
    trainer = pl.Trainer(fast_dev_run=True, accelerator="cpu", callbacks=[callback], logger=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.test(task, datamodule=instantiate(cfg.data))
    out = tmp_path / "attribution" / "gradient_shap"
    with h5py.File(out / "attributions.h5") as h5:
        assert h5["attributions"].shape == (6, 1, 32, 32)
    assert (out / "voids_vs_clusters.json").is_file()


def test_callback_refuses_a_bad_method_before_training():
    with pytest.raises(ConfigError, match=r"callbacks.attribution.attribution.method='shap'"):
        AttributionCallback({"method": "shap"}, output_dir="unused")


@pytest.mark.slow  # trains for a few steps, then attributes its checkpoint, each in a fresh interpreter
def test_train_then_attribute_end_to_end(tmp_path):
    run_dir = tmp_path / "run"
    train = run_numl("train", *[o for o in SMALL_LENSING if not o.startswith("debug")], "trainer.max_epochs=1",
                     "data.n_train=32", "data.batch_size=8", "baseline=none", f"hydra.run.dir={run_dir}",
                     f"paths.log_dir={tmp_path / 'logs'}", timeout=600)
    assert train.returncode == 0, train.stderr[-3000:]
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    result = run_numl("attribute", f"ckpt_path={ckpt}", "attribution=occlusion", "n_events=8",
                      "voids_vs_clusters.enabled=true", f"paths.log_dir={tmp_path / 'logs'}", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = run_dir / "attribution" / "occlusion"
    assert (out / "attributions.h5").is_file() and (out / "voids_vs_clusters.json").is_file()
