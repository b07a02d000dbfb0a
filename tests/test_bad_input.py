"""A user's mistake gets one clear line naming the key or path, a non-zero exit, and no run directory."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from numl.data.lensing import LensingDataModule
from numl.sim.km3net import EventConfig
from numl.sim.next.generator import NextSimConfig
from numl.sim.petalo.config import PetaloConfig
from numl.train import train
from numl.utils.errors import ConfigError
from numl.utils.runtime import build_task, check_common_config
from tests.conftest import run_numl


def _error_line(result) -> str:
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
    assert lines, f"no error message (exit {result.returncode}); stdout: {result.stdout[-500:]}"
    return lines[-1]


def test_bad_value_one_line(tmp_path):
    result = run_numl("train", "experiment=lensing_cnn", "debug=fast_dev_run", f"paths.log_dir={tmp_path}",
                      "optimizer.lr=-1")
    assert result.returncode == 2, result.stderr[-2000:]
    line = _error_line(result)
    assert line.startswith("numl: error: optimizer.lr=-1"), line
    assert len([ln for ln in result.stderr.splitlines() if ln.startswith("numl: error")]) == 1
    assert not list(tmp_path.rglob("*.ckpt"))


def test_hydra_composition_error_one_line(tmp_path):
    # Hydra finds a misspelt key before numl runs; numl still reports it in one line, exit 2.
    result = run_numl("train", "experiment=lensing_cnn", "data.bacth_size=3", f"paths.log_dir={tmp_path}")
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        _error_line(result)] and _error_line(result).startswith("numl: error: data.bacth_size: no such key; data has:")


def test_missing_experiment_names_the_group(tmp_path):
    result = run_numl("train", f"paths.log_dir={tmp_path}")
    assert result.returncode == 2
    assert "data: missing" in _error_line(result)


@pytest.mark.slow
def test_hdf5_of_other_config_refused(tmp_path):
    out = tmp_path / "maps.h5"
    small = ["data.n_train=8", "data.n_val=8", "data.n_test=8", "data.n_pix=32", f"paths.log_dir={tmp_path}"]
    written = run_numl("simulate", "experiment=lensing_cnn", f"output={out}", *small)
    assert written.returncode == 0, written.stderr[-2000:]
    assert out.is_file()
    refused = run_numl("train", "experiment=lensing_cnn", "debug=fast_dev_run", "data.source=hdf5",
                       f"data.hdf5_path={out}", "data.n_pix=64", f"paths.log_dir={tmp_path}")
    assert refused.returncode == 2
    line = _error_line(refused)
    assert str(out) in line and "n_pix" in line, line
    accepted = run_numl("train", "experiment=lensing_cnn", "debug=fast_dev_run", "data.source=hdf5",
                        f"data.hdf5_path={out}", "data.n_pix=32", f"paths.log_dir={tmp_path}")
    assert accepted.returncode == 0, accepted.stderr[-2000:]
    assert Path(out).stat().st_size > 0


@pytest.mark.slow
def test_simulate_never_replaces_a_dataset_unless_told(tmp_path):
    # written where the experiment reads (data.hdf5_path) when no output is given; then kept, then replaced
    out = tmp_path / "maps.h5"
    small = ["data.n_train=8", "data.n_val=8", "data.n_test=8", "data.n_pix=32", f"paths.log_dir={tmp_path}",
             f"data.hdf5_path={out}"]
    assert run_numl("simulate", "experiment=lensing_cnn", *small).returncode == 0
    first = out.read_bytes()
    refused = run_numl("simulate", "experiment=lensing_cnn", *small, "data.seed=5")
    assert refused.returncode == 2 and "set overwrite=true" in _error_line(refused)
    assert out.read_bytes() == first
    replaced = run_numl("simulate", "experiment=lensing_cnn", *small, "data.seed=5", "overwrite=true")
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    assert out.read_bytes() != first


def test_dataset_outputs_are_never_replaced_silently(tmp_path):
    from numl.utils.runtime import check_new_output

    existing = tmp_path / "events.h5"
    existing.write_text("a dataset")
    with pytest.raises(ConfigError, match=r"output='.*events.h5': already holds a dataset; set overwrite=true"):
        check_new_output("output", existing, overwrite=False)
    assert check_new_output("output", existing, overwrite=True) == existing
    assert check_new_output("output", tmp_path / "new" / "events.h5", overwrite=False).parent.is_dir()
    with pytest.raises(ConfigError, match="is a directory; give a file"):
        check_new_output("output", tmp_path, overwrite=True)
    with pytest.raises(ConfigError, match="is a file; give a directory"):
        check_new_output("output", existing, overwrite=True, directory=True)
    maps = tmp_path / "maps"
    assert check_new_output("output", maps, overwrite=False, directory=True).is_dir()  # created, empty: fine
    (maps / "WLconv.fits").write_text("a map")
    with pytest.raises(ConfigError, match="already holds a dataset"):
        check_new_output("output", maps, overwrite=False, directory=True)


@pytest.mark.parametrize("build", [
    lambda: EventConfig.from_dict({"noise_hz": 1.0}),
    lambda: NextSimConfig.from_dict({"noise_hz": 1.0}),
    lambda: PetaloConfig.from_kwargs(noise_hz=1.0),
])
def test_every_simulator_names_an_unknown_key_and_lists_the_allowed_ones(build):
    with pytest.raises(ConfigError, match=r"\.noise_hz: unknown key; allowed: ") as err:
        build()
    assert "\n" not in str(err.value)


# ----- issue 13: bad inputs refused before anything trains ------------------------------------------------


def _save_task_checkpoint(compose_train, overrides: list[str], path: Path) -> Path:
    """A Lightning-style checkpoint holding the weights of the task that `overrides` compose."""
    task = build_task(compose_train(overrides))
    torch.save({"state_dict": task.state_dict(), "pytorch-lightning_version": "2.0.0"}, path)
    return path


@pytest.mark.parametrize("other", [
    ["experiment=lensing_cnn", "model.channels=[4,8]"],  # same names, other shapes: another model size
    ["experiment=petalo_position"],  # another experiment: other names
])
def test_train_refuses_checkpoint_of_another_run(compose_train, tmp_path, other):
    ckpt = _save_task_checkpoint(compose_train, other, tmp_path / "other.ckpt")
    cfg = compose_train(["experiment=lensing_cnn", "debug=fast_dev_run", f"ckpt_path={ckpt}"])
    with pytest.raises(ConfigError, match=r"^ckpt_path=.*other\.ckpt': checkpoint does not match task") as err:
        train(cfg)
    assert "\n" not in str(err.value)
    assert not list(tmp_path.rglob("*.png")) and not list(tmp_path.rglob("test_metrics.json"))


def test_init_from_refuses_a_checkpoint_of_another_task_and_loads_a_matching_one(compose_train, tmp_path):
    other = _save_task_checkpoint(compose_train, ["experiment=petalo_position"], tmp_path / "other.ckpt")
    cfg = compose_train(["experiment=lensing_cnn", "debug=fast_dev_run", f"init_from={other}"])
    with pytest.raises(ConfigError, match=r"^init_from=.*other\.ckpt': checkpoint does not match task"):
        train(cfg)
    # a matching checkpoint with every weight 0.5: the fine-tuning run starts from exactly those (lr 1e-30 keeps them)
    task = build_task(compose_train(["experiment=lensing_cnn"]))
    state = {k: torch.full_like(v, 0.5) if v.is_floating_point() else v for k, v in task.state_dict().items()}
    torch.save({"state_dict": state, "pytorch-lightning_version": "2.0.0"}, tmp_path / "same.ckpt")
    cfg = compose_train(["experiment=lensing_cnn", f"init_from={tmp_path / 'same.ckpt'}", "optimizer.lr=1e-30",
                         "trainer.max_epochs=1", "+trainer.limit_train_batches=1", "+trainer.limit_val_batches=1",
                         "test=false", "data.n_train=32", "data.n_val=32", "data.n_test=32"])
    train(cfg)
    saved = torch.load(next(tmp_path.rglob("last.ckpt")), map_location="cpu", weights_only=False)
    weights = [v for k, v in saved["state_dict"].items() if v.is_floating_point() and "running" not in k]
    assert weights and all(torch.all(v == 0.5) for v in weights)


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"n_pix": 1}, "data.n_pix=1: must be >= 8"),
    ({"n_pix": 7}, "data.n_pix=7: must be >= 8"),
    ({"smoothing_arcmin": 1000.0}, "data.smoothing_arcmin=1000.0: must be < 88.7"),
    ({"smoothing_arcmin": 89.0}, "data.smoothing_arcmin=89.0: must be <"),
    ({"field_deg": 1e-4}, "data.field_deg=0.0001: must be >= "),
])
def test_lensing_datamodule_refuses(kwargs, expected):
    with pytest.raises(ConfigError) as err:
        LensingDataModule(**kwargs)
    assert str(err.value).startswith(expected), str(err.value)


def test_lensing_datamodule_accepts_the_limits():
    LensingDataModule(n_pix=8)
    LensingDataModule(smoothing_arcmin=88.0)  # 5 deg field: the bound is 88.7 arcmin
    LensingDataModule(field_deg=LensingDataModule.min_field_deg(128))


@pytest.mark.parametrize(("overrides", "expected"), [
    (["data.n_pix=8", "model.kernel_size=5"], "data.n_pix=8: model.channels has 4 stages with kernel_size 5, "
                                              "which need n_pix >= 16"),
    (["data.n_pix=8", "model.channels=[4,8,16,32,64]"], "need n_pix >= 16"),
    (["trainer.max_epochs=-1"], "trainer.max_epochs=-1: trains for ever without a stopping rule"),
])
def test_common_config_refuses(compose_train, overrides, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        check_common_config(compose_train(["experiment=lensing_cnn", *overrides]))


@pytest.mark.parametrize("stop", [["+trainer.max_steps=10"], ["+trainer.max_time=00:00:10:00"],
                                  ["callbacks=[default,early_stopping]"]])
def test_endless_epochs_need_a_stopping_rule(compose_train, stop):
    with pytest.raises(ConfigError, match=r"^trainer\.max_epochs=-1: "):
        check_common_config(compose_train(["experiment=lensing_cnn", "trainer.max_epochs=-1"]))
    check_common_config(compose_train(["experiment=lensing_cnn", "trainer.max_epochs=-1", *stop]))
