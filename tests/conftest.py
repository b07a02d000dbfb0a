"""Shared fixtures: compose numl's Hydra configs the way the command line does, into tmp_path."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

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


def train_run(overrides: list[str], run_dir: Path) -> Path:
    """Train like `python -m numl.train <overrides>` into run_dir, with the resolved config where a run directory
    holds it (.hydra/config.yaml: numl.generate and numl.evaluate read it from there)."""
    from numl.train import train

    cfg = compose_config("train", overrides, run_dir)
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), run_dir / ".hydra" / "config.yaml",
                   resolve=True)
    try:
        train(cfg)
    finally:
        GlobalHydra.instance().clear()
    return run_dir


def assert_resumed_run_ends_with_the_same_weights(overrides: list[str], tmp_path: Path) -> dict:
    """Train 3 epochs; train 1 epoch and resume it to 3 from last.ckpt: the resumed run's weights (EMA included)
    and every optimizer's second moments equal the uninterrupted run's. Returns the reference checkpoint."""
    def run(run_dir, epochs, *extra):
        train_run([*overrides, f"trainer.max_epochs={epochs}", "test=false", *extra], run_dir)
        return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)

    reference = run(tmp_path / "reference", 3)
    run(tmp_path / "killed", 1)
    resumed = run(tmp_path / "killed", 3, "resume=true")
    assert resumed["epoch"] == reference["epoch"] == 2
    for name, tensor in reference["state_dict"].items():
        assert torch.allclose(resumed["state_dict"][name].float(), tensor.float(), atol=1e-6), name
    for ref, res in zip(reference["optimizer_states"], resumed["optimizer_states"], strict=True):
        for key, state in ref["state"].items():
            assert torch.allclose(res["state"][key]["exp_avg_sq"], state["exp_avg_sq"], atol=1e-9)
    return reference


def generate_from(run_dir: Path, out_dir: Path, *overrides: str):
    """`python -m numl.generate ckpt_path=<run_dir>/checkpoints/last.ckpt <overrides>`, outputs in out_dir."""
    from numl.generate import generate

    cfg = compose_config("generate", [f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", *overrides], out_dir)
    try:
        return generate(cfg)
    finally:
        GlobalHydra.instance().clear()


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


def random_sparse_events(n_events=2, n_per_event=40, window=12, channels=1, seed=0):
    """Random voxels of `n_events` events in a window^3 grid, as spconv takes them: features [N, channels] and
    int coordinates [N, 4] (event, x, y, z), each voxel once per event."""
    g = torch.Generator().manual_seed(seed)
    coords = []
    for b in range(n_events):
        xyz = torch.unique(torch.randint(0, window, (n_per_event, 3), generator=g), dim=0)
        coords.append(torch.cat([torch.full((len(xyz), 1), b), xyz], dim=1))
    coords = torch.cat(coords).int()
    return torch.rand(len(coords), channels, generator=g), coords


def venv_seeing_this_environment(tmp_path: Path) -> tuple[Path, Path]:
    """A fresh venv (returns its python and its site-packages) that sees this environment's packages, torch
    among them, through a .pth line, which does not run this site's .pth files: the editable numl stays out, so
    a test must install numl into it to import it."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "numl_test_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return python, site
