"""DDP: trainer configs, models without unused parameters, two CPU processes (gloo) through numl.train for
several epochs with testing, and calibration fitted on all ranks' events."""

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
from numl.models.cnn2d import ConvNet2d
from numl.models.petalo_mlp import SiPMPatternMLP
from numl.tasks.petalo import PetaloPositionTask, fit_sigma_scale
from numl.train import _check_sync_batchnorm
from numl.utils.errors import ConfigError

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


def test_sync_batchnorm_on_cpu_is_refused_naming_the_key():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cpu = compose("train", overrides=["experiment=lensing_cnn", "trainer=ddp", "trainer.accelerator=cpu"])
        gpu = compose("train", overrides=["experiment=lensing_cnn", "trainer=ddp"])
    with pytest.raises(ConfigError, match=r"trainer\.sync_batchnorm=true: .*trainer\.sync_batchnorm=false"):
        _check_sync_batchnorm(cpu.trainer)
    cpu.trainer.sync_batchnorm = False
    _check_sync_batchnorm(cpu.trainer)
    _check_sync_batchnorm(gpu.trainer)  # accelerator=gpu: Lightning itself reports a missing GPU


@pytest.mark.parametrize(("residual", "in_channels"), [(False, 1), (True, 1), (True, 4)])
def test_every_cnn2d_parameter_gets_a_gradient(residual, in_channels):
    # DDP without find_unused_parameters fails at its second step on a parameter that gets no gradient.
    model = ConvNet2d(in_channels=in_channels, channels=(4, 4, 8), residual=residual)
    model(torch.randn(4, in_channels, 16, 16)).sum().backward()
    assert [name for name, p in model.named_parameters() if p.grad is None] == []
    n_shortcut_convs = sum(".shortcut." in name for name, _ in model.named_parameters())
    assert n_shortcut_convs == (0 if not residual else (in_channels != 4) + 1)  # channels 1->4 (or not), 4->8


def test_cnn2d_loads_state_dicts_with_the_old_unused_shortcut():
    model = ConvNet2d(channels=(4, 8))
    old = dict(model.state_dict())
    old["features.0.shortcut.weight"] = torch.randn(4, 1, 1, 1)  # what residual=False blocks used to hold
    old["features.2.shortcut.weight"] = torch.randn(8, 4, 1, 1)
    ConvNet2d(channels=(4, 8)).load_state_dict(old)  # strict: only the unused shortcut keys are dropped
    with pytest.raises(RuntimeError, match="shortcut"):  # a residual block still needs its own
        ConvNet2d(channels=(4, 8), residual=True).load_state_dict(model.state_dict())


def lensing_command(run_dir: Path, *options: str) -> list[str]:
    """Tiny lensing_cnn that learns in a few epochs (test/acc ~0.67 against 0.5 by chance, the likelihood
    ratio's 0.72), with 512 test maps so that accuracies are known to +-0.02."""
    return [
        sys.executable, "-m", "numl.train", "experiment=lensing_cnn", "debug=small", "trainer.precision=32-true",
        "trainer.max_epochs=4", "optimizer.lr=1e-2", "data.n_pix=32", "model.channels=[4,8]", "data.n_train=512",
        "data.n_val=256", "data.n_test=512", f"hydra.run.dir={run_dir}", *options,
    ]


def _lensing_run(run_dir: Path, *options: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(lensing_command(run_dir, *options), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_ddp_two_cpu_processes_train_test_and_agree_with_one_process(tmp_path):
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
    refused = _lensing_run(tmp_path / "refused", *ddp)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert refused.stderr.strip().splitlines() == [
        "numl: error: trainer.sync_batchnorm=true: SyncBatchNorm needs CUDA devices, but trainer.accelerator=cpu "
        "runs on CPU; add trainer.sync_batchnorm=false"]

    # data.batch_size is per process: 2 x 8 maps per step is the single process's batch of 16, the same
    # steps per epoch and the same maps per epoch (2 x 16 would halve the steps, and the network learns less).
    result = _lensing_run(tmp_path / "ddp", *ddp, "trainer.sync_batchnorm=false", "data.batch_size=8")
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    # Lightning's own report of the process group: gloo backend, two ranks.
    assert "distributed_backend=gloo" in log
    assert "All distributed processes registered. Starting with 2 processes" in log
    # Four epochs of 32 steps per rank: the steps after the first that an unused parameter used to break.
    assert (tmp_path / "ddp" / "checkpoints" / "last.ckpt").is_file()
    single = _lensing_run(tmp_path / "single", "data.batch_size=16")
    assert single.returncode == 0, single.stderr[-3000:]
    check_ddp_agrees_with_one_process(tmp_path / "ddp", tmp_path / "single")


def check_ddp_agrees_with_one_process(ddp_dir: Path, single_dir: Path) -> None:
    """A DDP run of lensing_command and a one-process run: one set of results each, the same test maps
    and baselines, and test accuracies that agree within their statistical error."""
    dirs = {"ddp": ddp_dir, "single": single_dir}
    # One summary and one predictions file, written by rank 0 only (no .part file left behind).
    written = sorted(str(p.relative_to(ddp_dir)) for p in ddp_dir.rglob("test_*"))
    assert written == ["test_metrics.json", "test_predictions.npz"]
    assert not list(ddp_dir.rglob("*.part*"))
    runs = {name: json.loads((d / "test_metrics.json").read_text())["metrics"] for name, d in dirs.items()}
    outputs = {name: dict(np.load(d / "test_predictions.npz")) for name, d in dirs.items()}
    for name in ("ddp", "single"):
        metrics, arrays = runs[name], outputs[name]
        for key in ("test/acc", "test/auroc", "test/loss", "baseline/likelihood_ratio/acc",
                    "baseline/power_spectrum/acc"):
            assert key in metrics, (name, key)
        # Every test map exactly once, in the DataModule's order: the baselines' labels (from events("test"))
        # line up, and the predictions give the accuracy that the (all-rank) test loop measured.
        assert arrays["network/score"].shape == (512,)
        np.testing.assert_array_equal(arrays["network/label"], arrays["baseline/likelihood_ratio/label"])
        accuracy = np.mean((arrays["network/score"] > 0.5) == (arrays["network/label"] == 1))
        assert accuracy == pytest.approx(metrics["test/acc"], abs=1e-6), name

    # The same test maps and baselines in both runs.
    np.testing.assert_array_equal(outputs["ddp"]["network/label"], outputs["single"]["network/label"])
    for key in ("baseline/likelihood_ratio/acc", "baseline/power_spectrum/acc", "baseline/power_spectrum/auroc"):
        assert runs["ddp"][key] == pytest.approx(runs["single"][key], abs=1e-6), key
    # DDP learns as well as one process: the accuracies differ by less than 3 binomial errors of a difference
    # (sqrt(2) sigma, sigma = sqrt(p(1-p)/512) ~ 0.02), and both are well above chance, so the check has teeth.
    p = runs["single"]["test/acc"]
    sigma = np.sqrt(p * (1 - p) / 512)
    assert abs(runs["ddp"]["test/acc"] - p) < 3 * np.sqrt(2) * sigma, (runs["ddp"]["test/acc"], p)
    for name in ("ddp", "single"):
        assert runs[name]["test/acc"] > 0.5 + 3 * sigma, (name, runs[name]["test/acc"])


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
