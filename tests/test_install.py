"""numl installs as a library: its configs ship inside the package (numl.conf), every entry point finds them
from any directory, and a user's own configs compose beside numl's through Hydra's search path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from tests.conftest import CONF, ROOT, run_numl, venv_seeing_this_environment

USER_EXPERIMENT = """# @package _global_
defaults:
  - lensing_cnn
task_name: my_lensing
data:
  n_pix: 64
"""
USER_LOCAL = """# @package _global_
trainer:
  max_epochs: 3
"""


@pytest.fixture
def user_configs(tmp_path):
    """A user's project outside the repository: an experiment extending numl's, and machine settings."""
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "my_lensing.yaml").write_text(USER_EXPERIMENT)
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "default.yaml").write_text(USER_LOCAL)
    yield tmp_path
    GlobalHydra.instance().clear()


def _compose_installed(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="numl.conf", version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def test_user_experiment_composes_beside_numls_configs(user_configs):
    searchpath = f"hydra.searchpath=[file://{user_configs}]"
    cfg = _compose_installed([searchpath, "experiment=my_lensing"])
    assert cfg.task_name == "my_lensing" and cfg.data.n_pix == 64
    assert cfg.data._target_ == "numl.data.lensing.LensingDataModule"  # from numl's lensing_cnn
    assert cfg.trainer.max_epochs == 3  # local/default.yaml wins over the experiment (6 epochs)
    assert _compose_installed([searchpath, "experiment=my_lensing", "debug=small"]).trainer.max_epochs == 2
    assert _compose_installed([searchpath, "experiment=my_lensing", "trainer.max_epochs=9"]).trainer.max_epochs == 9


@pytest.mark.slow  # a python subprocess running numl end to end: with the slow tests
def test_entry_point_finds_its_configs_from_another_directory(tmp_path):
    done = run_numl("train", "experiment=lensing_cnn", "debug=fast_dev_run", "--cfg", "job", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert OmegaConf.create(done.stdout).trainer.fast_dev_run is True


def _copy_sources(dest: Path) -> Path:
    """What the wheel is built from, outside the checkout, so the build writes nothing into it."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "local")
    for name in ("numl", "conf", "hydra_plugins"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, dest / name)
    return dest


@pytest.mark.slow
def test_wheel_runs_fast_dev_run_from_another_directory(tmp_path):
    source = _copy_sources(tmp_path / "src")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(source)],
                   check=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("numl-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"numl/conf/{p.relative_to(CONF).as_posix()}" for p in CONF.rglob("*.yaml")
               if p.relative_to(CONF).parts[0] != "local"}
    code = {p.relative_to(ROOT).as_posix() for p in (ROOT / "numl").rglob("*.py")}
    assert configs | code <= shipped, sorted((configs | code) - shipped)

    # A fresh venv that sees numl only through the wheel; its dependencies come from the test's environment
    # (a .pth line adds that site-packages without running its .pth files, so the editable numl stays out).
    python, site = venv_seeing_this_environment(tmp_path)
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", str(wheel)], check=True, timeout=300)

    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NUML_ROOT")}
    where = subprocess.run([str(python), "-c", "import numl.conf; print(numl.conf.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert Path(where.strip()).is_relative_to(site), where

    done = subprocess.run([str(python), "-m", "numl.train", "experiment=lensing_cnn", "debug=fast_dev_run"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (work / "logs" / "lensing_cnn" / "runs").iterdir()
    assert (run_dir / "test_metrics.json").is_file()
    # The saved config is the one the run used: debug's values, composed after the experiment.
    saved = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    assert saved.trainer.fast_dev_run is True and saved.data.n_train == 8
