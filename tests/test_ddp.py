"""DDP trainer configs: two CPU processes (gloo) through numl.train, and the SLURM variant's composition."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

ROOT = Path(__file__).resolve().parents[1]


def test_ddp_configs_compose():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        ddp = compose("train", overrides=["+experiment=lensing_cnn", "trainer=ddp"]).trainer
        slurm = compose("train", overrides=["+experiment=lensing_cnn", "trainer=ddp_slurm"]).trainer
    assert (ddp.strategy, ddp.num_nodes, ddp.sync_batchnorm) == ("ddp", 1, True)
    assert slurm.strategy == "ddp"
    (environment,) = instantiate(slurm.plugins)
    # submitit, not Lightning, requeues preempted SLURM jobs.
    assert type(environment).__name__ == "SLURMEnvironment" and environment.auto_requeue is False


@pytest.mark.slow
def test_ddp_two_cpu_processes_train_and_agree(tmp_path):
    command = [
        sys.executable, "-m", "numl.train", "+experiment=lensing_cnn", "debug=small", "trainer=ddp",
        "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true", "trainer.max_epochs=1",
        "trainer.sync_batchnorm=false",  # SyncBatchNorm needs CUDA
        "data.n_pix=32", "data.n_train=32", "data.n_val=16", "data.n_test=16", "model.channels=[4,8]",
        "test=false", "baseline=false", f"hydra.run.dir={tmp_path}",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    # Lightning's own report of the process group: gloo backend, two ranks.
    assert "distributed_backend=gloo" in log
    assert "All distributed processes registered. Starting with 2 processes" in log
    summary = json.loads((tmp_path / "test_metrics.json").read_text())
    assert "val/acc" in summary["metrics"]
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
