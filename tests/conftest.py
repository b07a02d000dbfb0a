"""Shared fixtures: compose numl's Hydra configs the way the command line does, into tmp_path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from numl.utils.runtime import register_resolvers

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))

# CAMB spectra are cached across the whole session (and across sessions on a developer machine).
os.environ.setdefault("NUML_CACHE", str(ROOT / ".cache"))
register_resolvers()


def compose_config(config_name: str, overrides: list[str], output_dir: Path):
    """Compose like `python -m numl.<entry> <overrides>` and point every output into output_dir."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir / "logs")
        cfg.paths.data_dir = str(output_dir / "data")
    return cfg


@pytest.fixture
def compose_train(tmp_path):
    def _compose(overrides: list[str]):
        return compose_config("train", overrides, tmp_path)

    yield _compose
    GlobalHydra.instance().clear()


def run_numl(entry: str, *args: str, cwd: Path | None = None, timeout: float = 600, env: dict | None = None):
    """Run `python -m numl.<entry> args...` as a user would; returns the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", f"numl.{entry}", *args], cwd=cwd or ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})
