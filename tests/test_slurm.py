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

from tests.test_ddp import check_ddp_agrees_with_one_process, lensing_command

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

    # The requeued job can wait minutes for its start and then trains the rest of its epochs: a loaded 2-core
    # machine took 8.5 min in one run, so the limit is far above what an idle machine needs.
    output, _ = sweep.communicate(timeout=900)
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


def test_ddp_through_srun_two_tasks_agrees_with_one_process(tmp_path):
    """trainer=ddp_slurm started by srun (2 tasks on the local node): Lightning takes ranks and world size
    from SLURM, rank 0 alone writes the results, and they agree with a one-process run."""
    options = ["trainer.sync_batchnorm=false", "trainer.accelerator=cpu"]
    srun = ["srun", "--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1", "--mem=6G", "--time=20",
            f"--job-name=numl-ddp-{uuid.uuid4().hex[:8]}"]
    ddp = subprocess.run(
        [*srun, *lensing_command(tmp_path / "ddp", "trainer=ddp_slurm", "trainer.devices=2", "data.batch_size=8",
                                 *options)],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    log = ddp.stdout + ddp.stderr
    assert "distributed_backend=gloo" in log
    assert "All distributed processes registered. Starting with 2 processes" in log
    assert "[rank: 0]" in log and "[rank: 1]" in log
    assert "SLURM auto-requeueing enabled" not in log  # submitit requeues, not Lightning
    single = subprocess.run(lensing_command(tmp_path / "single", "data.batch_size=16", "trainer.accelerator=cpu"),
                            cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert single.returncode == 0, single.stderr[-3000:]
    check_ddp_agrees_with_one_process(tmp_path / "ddp", tmp_path / "single")


@pytest.mark.parametrize(("override", "message"), [
    # The launcher's default, 4 CPUs per task, on this machine's 2-CPU node: it would stay PENDING for ever.
    ("hydra.launcher.cpus_per_task=4", "hydra.launcher.cpus_per_task=4: a job needs 4 CPUs on one node "
     "(x tasks_per_node=1); the nodes of partition 'debug' have at most 2, so it could never start"),
    ("hydra.launcher.mem_gb=100000", "hydra.launcher.mem_gb=100000: the nodes of partition 'debug' have at most"),
    ("hydra.launcher.gpus_per_node=1", "hydra.launcher.gpus_per_node=1: the nodes of partition 'debug' have no GPUs"),
    ("hydra.launcher.partition=no_such_partition",
     "hydra.launcher.partition='no_such_partition': no such SLURM partition; have debug"),
    # What sinfo cannot say, the controller does (sbatch --test-only).
    ("hydra.launcher.gres=no_such_gres:1",
     "hydra.launcher: SLURM would refuse the job (sbatch --test-only: Invalid generic resource"),
])
def test_a_job_that_could_never_start_stops_the_sweep_in_one_line(tmp_path, override, message):
    name = f"numl-never-{uuid.uuid4().hex[:8]}"
    command = _sweep_command(tmp_path, "hydra.sweeper.n_trials=1", f"hydra.launcher.name={name}", override)
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"numl: error: {message}"), result.stderr[-3000:]
    # Nothing was submitted, nothing written.
    queued = subprocess.run(["squeue", "-h", "-n", name], capture_output=True, text=True, timeout=30).stdout
    assert queued.strip() == ""
    assert not (tmp_path / ".submitit").exists() and not (tmp_path / "optuna.db").exists()
