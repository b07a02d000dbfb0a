"""`python -m numl.simulate` writes NEXT events to HDF5 and `python -m numl.train` trains on that file."""

from __future__ import annotations

import json

import h5py
import pytest

from tests.conftest import run_numl

pytestmark = pytest.mark.slow

SIZES = ["data.n_train=8", "data.n_val=8", "data.n_test=8"]


def test_simulate_then_train_from_hdf5(tmp_path):
    path = tmp_path / "next.h5"
    done = run_numl("simulate", "experiment=next_sparse_cnn", f"output={path}", *SIZES,
                    f"paths.log_dir={tmp_path / 'logs'}")
    assert done.returncode == 0, done.stderr
    assert "events/s" in done.stdout
    with h5py.File(path) as h5:
        assert h5.attrs["numl_simulator"] == "numl.sim.next"
        assert len(h5["test/events/label"]) == 8
    done = run_numl("train", "experiment=next_sparse_cnn", "debug=fast_dev_run", "data.source=hdf5",
                    f"data.hdf5_path={path}", f"paths.log_dir={tmp_path / 'logs'}")
    assert done.returncode == 0, done.stderr
    summary = json.loads(next((tmp_path / "logs").rglob("test_metrics.json")).read_text())
    assert "baseline/blob_cut/background_rejection_at_72" in summary["metrics"]


def test_file_from_another_config_is_refused_in_one_line(tmp_path):
    path = tmp_path / "next.h5"
    assert run_numl("simulate", "experiment=next_sparse_cnn", f"output={path}", *SIZES,
                    f"paths.log_dir={tmp_path / 'logs'}").returncode == 0
    done = run_numl("train", "experiment=next_sparse_cnn", "debug=fast_dev_run", "data.source=hdf5",
                    f"data.hdf5_path={path}", "data.sim.voxel_size_mm=5.0", f"paths.log_dir={tmp_path / 'logs'}")
    assert done.returncode == 2
    assert "data.sim" in done.stderr.strip().splitlines()[-1]
