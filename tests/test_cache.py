"""The cache of expensive physics inputs: in the user's cache directory, movable, readable by the group."""

from __future__ import annotations

import stat
from pathlib import Path

from numl.sim.lensing.spectra import Cosmology, convergence_power_spectra
from tests.conftest import compose_config


def _cache_dir(overrides: list[str], tmp_path: Path) -> str:
    return compose_config("train", overrides, tmp_path).paths.cache_dir


def test_cache_dir_is_the_xdg_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("NUML_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _cache_dir([], tmp_path) == str(tmp_path / "xdg" / "numl")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert _cache_dir([], tmp_path) == str(tmp_path / "home" / ".cache" / "numl")


def test_cache_dir_is_overridable(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("NUML_CACHE", str(tmp_path / "team"))
    assert _cache_dir([], tmp_path) == str(tmp_path / "team")
    assert _cache_dir([f"paths.cache_dir={tmp_path / 'mine'}"], tmp_path) == str(tmp_path / "mine")
    cfg = compose_config("train", ["experiment=lensing_cnn"], tmp_path)
    assert cfg.data.cache_dir == str(tmp_path / "team" / "camb")


def test_camb_cache_file_is_readable_by_the_group(tmp_path):
    convergence_power_spectra(Cosmology(), [1.0], ell_max=50, cache_dir=tmp_path, route="limber")
    (cache_file,) = tmp_path.glob("cl_kappa_*.npz")
    mode = cache_file.stat().st_mode
    assert mode & stat.S_IRUSR and mode & stat.S_IRGRP and not mode & stat.S_IWGRP
