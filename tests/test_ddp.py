"""DDP: trainer configs, two CPU processes (gloo) through numl.train, and calibration fitted on all ranks' events."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.utils.data import DataLoader, Dataset

from numl.metrics import fwhm, rms
from numl.models.petalo_mlp import SiPMPatternMLP
from numl.tasks.petalo import PetaloPositionTask, fit_sigma_scale

ROOT = Path(__file__).resolve().parents[1]


def test_ddp_configs_compose():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        ddp = compose("train", overrides=["experiment=lensing_cnn", "trainer=ddp"]).trainer
        slurm = compose("train", overrides=["experiment=lensing_cnn", "trainer=ddp_slurm"]).trainer
    assert (ddp.strategy, ddp.num_nodes, ddp.sync_batchnorm) == ("ddp", 1, True)
    assert slurm.strategy == "ddp"
    (environment,) = instantiate(slurm.plugins)
    # submitit, not Lightning, requeues preempted SLURM jobs.
    assert type(environment).__name__ == "SLURMEnvironment" and environment.auto_requeue is False


@pytest.mark.slow
def test_ddp_two_cpu_processes_train_and_agree(tmp_path):
    command = [
        sys.executable, "-m", "numl.train", "experiment=lensing_cnn", "debug=small", "trainer=ddp",
        "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true", "trainer.max_epochs=1",
        "trainer.sync_batchnorm=false",  # SyncBatchNorm needs CUDA
        "data.n_pix=32", "data.n_train=32", "data.n_val=16", "data.n_test=16", "model.channels=[4,8]",
        "test=false", "baseline=none", f"hydra.run.dir={tmp_path}",
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


class _Patterns(Dataset):
    """Random SiPM charge patterns and interaction points: enough to train a few steps and calibrate."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.pattern = torch.rand(n, 2, 4, 4, generator=g) + 0.1
        self.position = torch.tensor([175.0, 0.0, 0.0]) + 10.0 * torch.randn(n, 3, generator=g)

    def __len__(self) -> int:
        return len(self.pattern)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"sipm_pattern": self.pattern[i], "position_mm": self.position[i]}


class _PatternData(pl.LightningDataModule):
    def train_dataloader(self):
        return DataLoader(_Patterns(64, 0), batch_size=8)

    def val_dataloader(self):
        return DataLoader(_Patterns(48, 1), batch_size=8)  # 24 events per rank, no padding by the sampler


class _SaveRankState(pl.Callback):
    """Each rank writes its final weights, buffers and logged metrics (ddp_spawn returns only rank 0's)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def on_fit_end(self, trainer, pl_module) -> None:
        torch.save({"state": pl_module.state_dict(),
                    "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()}},
                   self.directory / f"rank{trainer.global_rank}.pt")


def _position_task() -> PetaloPositionTask:
    model = SiPMPatternMLP(in_channels=2, n_rows=4, n_columns=4, hidden=[8], n_outputs=6)
    return PetaloPositionTask(model, partial(torch.optim.SGD, lr=1e-3))


def _trainer(**options) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, **options)


@pytest.mark.slow
def test_ddp_ranks_agree_on_weights_metrics_and_sigma_calibration(tmp_path):
    pl.seed_everything(3, verbose=False)
    _trainer(strategy="ddp_spawn", devices=2, max_epochs=2,
             callbacks=[_SaveRankState(tmp_path)]).fit(_position_task(), datamodule=_PatternData())
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for key, value in ranks[0]["state"].items():  # DDP keeps the weights, and the calibration buffer, in step
        torch.testing.assert_close(ranks[1]["state"][key], value, rtol=0, atol=0, msg=key)
    # val/: loss, FWHM, RMS and coverage of 3 coordinates, 3 sigma scales (train/ losses are per rank)
    val_metrics = [{k: v for k, v in rank["metrics"].items() if k.startswith("val/")} for rank in ranks]
    assert len(val_metrics[0]) == 13 and val_metrics[0] == pytest.approx(val_metrics[1], rel=1e-6)

    # One process, the final weights, every validation event: the same calibration and metrics.
    task = _position_task().eval()
    task.load_state_dict(ranks[0]["state"])
    val = _Patterns(48, 1)
    with torch.inference_mode():
        position, raw_sigma = task.to_mm(task({"sipm_pattern": val.pattern}), calibrated=False)
    residual = (position - val.position).numpy()
    union = fit_sigma_scale(residual, raw_sigma.numpy())
    np.testing.assert_allclose(ranks[0]["state"]["sigma_scale"].numpy(), union, rtol=1e-5)
    # rank 0's shard alone (DistributedSampler: every second event) gives another factor: the gather matters
    assert not np.allclose(fit_sigma_scale(residual[0::2], raw_sigma.numpy()[0::2]), union, rtol=1e-3)
    metrics = ranks[0]["metrics"]
    assert metrics["val/z_rms_mm"] == pytest.approx(rms(residual[:, 2]), rel=1e-5)
    assert metrics["val/r_fwhm_mm"] == pytest.approx(fwhm(residual[:, 0]), rel=1e-4)


def test_no_calibration_from_the_sanity_check():
    task = _position_task()
    # one training epoch without validation: only the sanity check sees validation batches
    _trainer(max_epochs=1, num_sanity_val_steps=2, check_val_every_n_epoch=2).fit(task, datamodule=_PatternData())
    assert torch.equal(task.sigma_scale, torch.ones(3))
