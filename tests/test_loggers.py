"""W&B is one switch away, works offline without an account, and its run is finished even on a crash."""

from __future__ import annotations

import os

import pytest

from tests.conftest import run_numl

TINY = ["experiment=lensing_cnn", "debug=small", "data.n_pix=32", "model.channels=[4,8]", "baseline=none",
        "callbacks.rich_progress_bar=null"]


@pytest.mark.slow
def test_wandb_offline_run_is_finished_after_a_crash(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    result = run_numl("train", *TINY, "logger=wandb", f"hydra.run.dir={tmp_path}", "trainer.max_epochs=3",
                      "+callbacks.crash._target_=tests.helpers.CrashAfterFirstEpoch", env=env)
    assert result.returncode != 0 and "deliberate crash" in result.stderr
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "W&B must log offline when no API key is set"
    log = (runs[0] / "logs" / "debug.log").read_text()
    assert "finishing run" in log
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file(), "the crash must not lose the last checkpoint"


@pytest.mark.slow
def test_default_loggers_write_csv_and_tensorboard(tmp_path):
    result = run_numl("train", *TINY, f"hydra.run.dir={tmp_path}", "trainer.max_epochs=1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "csv" / "metrics.csv").is_file()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert (tmp_path / "figures" / "training_history.png").is_file()
    assert (tmp_path / "test_metrics.json").is_file()
    assert "run directory:" in result.stdout
