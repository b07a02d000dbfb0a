"""A DataModule makes or reads only the splits a stage uses, and the same events as when it makes them all."""

from __future__ import annotations

import numpy as np
import pytest

from numl.data.petalo import PetaloDataModule

SMALL = dict(n_train=32, n_val=16, n_test=24, batch_size=8, seed=5, progress=False)


def assert_same_events(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)


def refuse_split(refused: str):
    def simulate_split(self, split):
        if split == refused:
            raise AssertionError(f"the {split!r} split was simulated")
        return original(self, split)
    original = PetaloDataModule.simulate_split
    return simulate_split


@pytest.fixture(scope="module")
def every_split():
    dm = PetaloDataModule(**SMALL)
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("stage, split", [("test", "test"), ("predict", "test"), ("validate", "val")])
def test_a_stage_simulates_only_its_split_and_the_same_events(stage, split, every_split, monkeypatch):
    monkeypatch.setattr(PetaloDataModule, "simulate_split", refuse_split("train"))
    dm = PetaloDataModule(**SMALL)
    dm.setup(stage)
    assert_same_events(dm.events(split), every_split.events(split))
    # another split, asked for later, is made then and is the one a full setup makes
    other = "val" if split == "test" else "test"
    assert_same_events(dm.events(other), every_split.events(other))
    with pytest.raises(AssertionError, match="'train' split was simulated"):
        dm.events("train")


def test_a_stage_reads_only_its_split_from_hdf5(every_split, tmp_path):
    path = every_split.write_hdf5(tmp_path / "petalo.h5")
    dm = PetaloDataModule(source="hdf5", hdf5_path=str(path), **SMALL)
    dm.setup("test")
    assert_same_events(dm.events("test"), every_split.events("test"))
    dm.setup("fit")  # training after testing reads the rest
    assert_same_events(dm.events("train"), every_split.events("train"))
