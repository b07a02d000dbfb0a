"""numl sweeps on a real SLURM cluster: trials as sbatch jobs (submitit), and a preempted trial resuming.

Needs a running cluster: `sudo scripts/slurm/start_cluster.sh` (CI runs it first), then
`pytest -m slurm tests/test_slurm.py`. Skips when `sinfo` cannot reach a controller.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]


def _cluster_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    result = subprocess.run(["sinfo", "-h", "-p", "debug", "-o", "%a"], capture_output=True, text=True, timeout=30)
    return result.returncode == 0 and "up" in result.stdout


pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(
        not _cluster_up(), reason="no SLURM controller with partition 'debug' (run scripts/slurm/start_cluster.sh)"
    ),
]

# A tiny lensing CNN on 32 x 32 maps: each trial is a few seconds of training on one CPU.
TINY = [
    "experiment=lensing_cnn", "hparams_search=lensing_optuna", "debug=small", "data.n_pix=32", "data.n_train=32",
    "data.n_val=16", "model.channels=[4,8]", "test=false",
    "hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=2", "hydra.launcher.timeout_min=15",
]


def _sweep_command(sweep_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "numl.train", "-m", *TINY, f"hydra.sweep.dir={sweep_dir}",
            f"paths.root_dir={sweep_dir}", *overrides]


def _study(sweep_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name="lensing_cnn", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")


def test_sweep_of_four_trials_through_sbatch(tmp_path):
    name = f"numl-test-{uuid.uuid4().hex[:8]}"
    command = _sweep_command(
        tmp_path, "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=4", f"hydra.launcher.name={name}"
    )
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=420)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = _study(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert all(sorted(t.intermediate_values) == [0, 1] for t in trials)  # pruning reports from inside the jobs
    # Each trial ran as a task of one SLURM array job submitted by sbatch.
    job_dirs = [p.name for p in (tmp_path / ".submitit").iterdir() if p.is_dir()]
    assert sorted(d.rsplit("_", 1)[1] for d in job_dirs if "_" in d) == ["0", "1", "2", "3"]


def _wait_for(predicate, timeout_s: float, what: str, process: subprocess.Popen):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        if process.poll() is not None:
            pytest.fail(f"sweep ended before {what}: {process.communicate()[0][-3000:]}")
        time.sleep(0.2)
    process.kill()
    pytest.fail(f"timed out waiting for {what}")


def test_preempted_trial_is_requeued_and_resumes_from_checkpoint(tmp_path):
    name = f"numl-preempt-{uuid.uuid4().hex[:8]}"
    max_epochs, n_train = 12, 1024  # long enough that the kill lands mid-training on an idle machine
    command = _sweep_command(
        tmp_path, "hydra.sweeper.n_trials=1", f"trainer.max_epochs={max_epochs}", f"data.n_train={n_train}",
        f"hydra.launcher.name={name}",
    )
    sweep = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
    last = tmp_path / "trial_0000" / "checkpoints" / "last.ckpt"
    _wait_for(last.is_file, 300, "the first checkpoint", sweep)
    job_id = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True, text=True).stdout.split()[0]
    time.sleep(1)  # let the checkpoint file be complete before the job is killed
    epoch_at_kill = torch.load(last, map_location="cpu", weights_only=False)["epoch"]
    assert epoch_at_kill < max_epochs - 1, "training finished before it could be preempted; make it longer"
    subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=30)
    # SLURM holds a requeued job for a while (Reason=BeginTime); let it start again at once.
    subprocess.run(["scontrol", "update", f"jobid={job_id}", "starttime=now"], timeout=30)

    output, _ = sweep.communicate(timeout=420)
    assert sweep.returncode == 0, output[-3000:]
    (trial,) = _study(tmp_path).trials
    assert trial.state == TrialState.COMPLETE
    # SLURM ran the job twice, and the second run continued from the checkpoint of the first.
    show = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    assert "Restarts=1" in show
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / ".submitit").rglob("*_log.*"))
    assert "Restoring states from the checkpoint path at" in logs and "trial_0000/checkpoints/last.ckpt" in logs
    # Resumed, not restarted: the optimizer steps add up to one uninterrupted run of max_epochs.
    steps_per_epoch = n_train // trial.params["data.batch_size"]
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == max_epochs * steps_per_epoch
