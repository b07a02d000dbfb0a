"""A run killed mid-training resumes from last.ckpt and ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import ROOT

CONFIG = [
    "experiment=lensing_cnn", "data.n_pix=32", "data.n_train=384", "data.n_val=64", "data.n_test=64",
    "data.batch_size=16", "trainer.max_epochs=4", "trainer.accelerator=cpu", "model.channels=[8,16]",
    "callbacks=[model_checkpoint,epoch_seed]", "baseline=none", "seed=7",
]


def _run(run_dir, *extra, wait=True):
    cmd = [sys.executable, "-m", "numl.train", *CONFIG, f"hydra.run.dir={run_dir}", *extra]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if wait:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
    return proc


def _epoch_rows(run_dir, column):
    """Epochs of csv/metrics.csv's rows that hold `column`, in file order."""
    with (run_dir / "csv" / "metrics.csv").open(newline="") as f:
        return [int(float(row["epoch"])) for row in csv.DictReader(f) if row.get(column)]


def _saved_epoch(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=False)["epoch"]
    except Exception:  # being written right now
        return -1


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(tmp_path):
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    _run(reference_dir)
    reference = json.loads((reference_dir / "test_metrics.json").read_text())["metrics"]

    proc = _run(killed_dir, wait=False)
    last = killed_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if last.is_file() and _saved_epoch(last) >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed: make its epochs longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed_dir / "test_metrics.json").exists()
    killed_at = _saved_epoch(last)
    assert 1 <= killed_at < 3

    _run(killed_dir, "resume=true")
    resumed = json.loads((killed_dir / "test_metrics.json").read_text())["metrics"]
    for key in ("test/loss", "test/acc", "val/acc_best"):
        assert abs(resumed[key] - reference[key]) < 1e-6, (key, resumed[key], reference[key])

    # The killed run's rows are kept and the epochs it logged after its last checkpoint are not repeated:
    # every epoch's val and epoch-level train rows appear once, then the test row.
    epochs = list(range(4))  # trainer.max_epochs
    assert _epoch_rows(killed_dir, "val/loss") == epochs
    assert _epoch_rows(killed_dir, "train/loss_epoch") == epochs
    assert len(_epoch_rows(killed_dir, "test/loss")) == 1
