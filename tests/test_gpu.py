"""The CUDA paths of numl (issue 18): maps made on the device, spconv on CUDA, a bf16 training step, the exported
PETALO tagger on CUDA. Marked `gpu` and skipped without CUDA; `experiments/gpu/run_all.sh` runs them on a CUDA
machine and records the counts (`pytest -m gpu tests/test_gpu.py`).

NUML_GPU_TEST_DEVICE=cpu runs the same tests on the CPU: a check of the tests themselves, not of CUDA."""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from numl.data.lensing import LensingDataModule
from numl.utils.runtime import build_task, build_trainer
from tests.conftest import random_sparse_events

CUDA = torch.device(os.environ.get("NUML_GPU_TEST_DEVICE", "cuda"))

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(CUDA.type == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _cache_dir() -> str:
    return str(Path(os.environ["NUML_CACHE"]) / "camb")  # set by conftest: the session's CAMB cache


@pytest.fixture
def no_tf32():
    """Float32 references in float32: no TF32 in cuDNN convolutions or matrix products for the test's duration."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


# ----- lensing maps made on the device -------------------------------------------------------------------


@pytest.mark.parametrize("field", ["gaussian", "lognormal"])
def test_maps_made_on_cuda_match_the_cpu_maps_of_the_same_seed(field):
    """The white noise comes from a CPU generator on every device (ConvergenceMapSimulator.sample), so a seed gives
    the same maps on CUDA as on the CPU, to float32 round-off of the FFTs; through the training path too
    (LensingDataModule.generate: one simulator and sub-seed per class)."""
    datamodule = LensingDataModule(n_pix=64, field=field, cache_dir=_cache_dir())
    datamodule.build_simulators()
    simulator = datamodule.simulators[1]
    on_cpu = simulator.sample(8, seed=11)
    on_cuda = simulator.sample(8, seed=11, device=CUDA)
    assert on_cuda.device.type == CUDA.type and on_cuda.dtype == torch.float32
    scale = float(on_cpu.std())
    torch.testing.assert_close(on_cuda.cpu(), on_cpu, rtol=1e-4, atol=1e-4 * scale)
    assert on_cpu.mean().abs() < 0.5 * scale  # not all zeros or a constant
    index = datamodule.draw_labels(16, seed=5)[0]
    training_cpu = datamodule.generate(index, seed=5)
    training_cuda = datamodule.generate(index.to(CUDA), seed=5, device=CUDA)
    torch.testing.assert_close(training_cuda.cpu(), training_cpu, rtol=1e-4, atol=1e-4 * scale)


def test_on_the_fly_training_batch_is_made_on_cuda():
    datamodule = LensingDataModule(n_pix=32, n_train=32, n_val=16, n_test=16, batch_size=16, cache_dir=_cache_dir())
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    seed = int(batch["seed"])
    on_cuda = datamodule.on_after_batch_transfer({k: v.to(CUDA) for k, v in batch.items()}, 0)
    on_cpu = datamodule.on_after_batch_transfer({"label": batch["label"].clone(), "seed": torch.tensor(seed)}, 0)
    assert on_cuda["convergence_map"].device.type == CUDA.type
    torch.testing.assert_close(on_cuda["convergence_map"].cpu(), on_cpu["convergence_map"], rtol=1e-4, atol=1e-4)


# ----- spconv on CUDA ----------------------------------------------------------------------------------


def _spconv():
    """spconv, or a skip if it is not installed; installed but failing to import (a CUDA build that does not load
    here) fails the test with the import error."""
    from numl.models.sparse_cnn3d import spconv

    if spconv is None:
        if importlib.util.find_spec("spconv") is None:
            pytest.skip("spconv is not installed (pip install 'numl[sparse]'; on CUDA 12/13 spconv-cu126)")
        try:
            import spconv.pytorch  # noqa: F401
        except Exception as err:  # noqa: BLE001
            pytest.fail(f"spconv is installed but does not import: {type(err).__name__}: {err}")
    return spconv


@pytest.mark.parametrize("layer", ["SparseConv3d", "SubMConv3d"])
def test_spconv_on_cuda_matches_the_dense_convolution_and_its_gradients(layer):
    """Forward and backward of spconv's CUDA kernels against F.conv3d on the dense grid (float64 on the CPU)."""
    spconv = _spconv()
    torch.manual_seed(0)
    window, n_events = 10, 2
    features, coords = random_sparse_events(n_per_event=60, window=window, channels=2)
    conv = getattr(spconv, layer)(2, 3, 3, padding=1, bias=False).to(CUDA)
    features_cuda = features.to(CUDA, copy=True).requires_grad_(True)
    out = conv(spconv.SparseConvTensor(features_cuda, coords.to(CUDA), [window] * 3, n_events)).dense()
    (out**2).sum().backward()

    c = coords.long()
    dense_in = torch.zeros(n_events, 2, window, window, window, dtype=torch.float64)
    dense_in[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]] = features.double()
    dense_in.requires_grad_(True)
    # spconv 2 stores weights as (out, kx, ky, kz, in)
    weight = conv.weight.detach().cpu().double().permute(0, 4, 1, 2, 3).clone().requires_grad_(True)
    reference = F.conv3d(dense_in, weight, padding=1)
    if layer == "SubMConv3d":  # submanifold: output only at the active input sites
        mask = torch.zeros(n_events, 1, window, window, window, dtype=torch.float64)
        mask[c[:, 0], 0, c[:, 1], c[:, 2], c[:, 3]] = 1
        reference = reference * mask
    (reference**2).sum().backward()

    assert out.device.type == CUDA.type
    torch.testing.assert_close(out.detach().cpu().double(), reference.detach(), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(features_cuda.grad.cpu().double(), dense_in.grad[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]],
                               atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(conv.weight.grad.cpu().double().permute(0, 4, 1, 2, 3), weight.grad,
                               atol=1e-4, rtol=1e-4)


def test_sparse_next_cnn_on_cuda_matches_cpu(no_tf32):
    """numl's SparseCNN3D (the NEXT sparse classifier): the same weights give the same logits and gradients on CUDA
    as on the CPU."""
    _spconv()
    from numl.models.sparse_cnn3d import SparseCNN3D

    torch.manual_seed(0)
    window, n_events = 16, 3
    features, coords = random_sparse_events(n_events=n_events, n_per_event=200, window=window, channels=1, seed=3)
    model = SparseCNN3D(in_channels=1, channels=(4, 8, 16), window_voxels=window, dropout=0.0).eval()
    on_cpu = model(features, coords, n_events)
    on_cpu.sum().backward()
    grads_cpu = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    model.to(CUDA)
    on_cuda = model(features.to(CUDA), coords.to(CUDA), n_events)
    on_cuda.sum().backward()
    torch.testing.assert_close(on_cuda.detach().cpu(), on_cpu.detach(), atol=1e-4, rtol=1e-4)
    for grad_cpu, parameter in zip(grads_cpu, model.parameters(), strict=True):
        torch.testing.assert_close(parameter.grad.cpu(), grad_cpu, atol=1e-4, rtol=1e-3)


# ----- bf16 training ------------------------------------------------------------------------------------


def test_bf16_training_steps_of_lensing_cnn_on_cuda_are_finite(compose_train):
    """numl's lensing_cnn as numl.train assembles it with trainer=gpu (bf16-mixed), maps made on the device."""
    cfg = compose_train(["experiment=lensing_cnn", "trainer=gpu", "data.n_pix=32", "data.batch_size=16",
                         "data.n_train=64", "data.n_val=32", "data.n_test=32", "logger=none", "callbacks=none",
                         "trainer.max_epochs=2", "++trainer.enable_progress_bar=false",
                         "++trainer.enable_model_summary=false", "++trainer.enable_checkpointing=false",
                         *(["trainer.accelerator=cpu"] if CUDA.type == "cpu" else [])])
    assert cfg.trainer.precision == "bf16-mixed"
    from hydra.utils import instantiate

    datamodule = instantiate(cfg.data, _convert_="all")
    devices = []
    make_maps = datamodule.on_after_batch_transfer

    def recorded(batch, dataloader_idx):
        out = make_maps(batch, dataloader_idx)
        devices.append(out["convergence_map"].device.type)
        return out

    datamodule.on_after_batch_transfer = recorded
    task = build_task(cfg)
    before = [p.detach().clone() for p in task.parameters()]
    trainer, _ = build_trainer(cfg)
    trainer.fit(task, datamodule=datamodule)
    assert trainer.global_step == 8
    assert devices and set(devices) == {CUDA.type}
    for key in ("train/loss", "val/loss"):
        assert math.isfinite(float(trainer.callback_metrics[key])), key
    after = list(task.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a.detach().cpu(), b.cpu()) for a, b in zip(after, before, strict=True))


# ----- exported PETALO tagger ---------------------------------------------------------------------------


def test_exported_tagger_gives_the_same_outputs_on_cpu_and_cuda(compose_train, tmp_path, no_tf32):
    """The TorchScript module `python -m numl.export` writes for petalo_tagger, loaded onto CUDA with map_location:
    the same logits as on the CPU, and the same flags (+inf) for events that cannot be reconstructed."""
    from numl.export import export_torchscript

    cfg = compose_train(["experiment=petalo_tagger"])
    task = build_task(cfg).eval()
    module = task.export_module() if hasattr(task, "export_module") else task.model
    model = task.model
    g = torch.Generator().manual_seed(0)
    patterns = torch.rand(256, model.in_channels, model.n_rows, model.n_columns, generator=g) * 20
    patterns[0] = float("nan")
    patterns[1, 0, 0, 0] = float("inf")
    patterns[2] = 0.0
    path = export_torchscript(module, patterns[:16], tmp_path / "tagger.pt")  # checks CPU == eager itself
    on_cpu = torch.jit.load(str(path), map_location="cpu")
    on_cuda = torch.jit.load(str(path), map_location=CUDA)
    with torch.inference_mode():
        expected, got = on_cpu(patterns), on_cuda(patterns.to(CUDA))
    assert got.device.type == CUDA.type
    got = got.cpu()
    assert torch.equal(torch.isfinite(got), torch.isfinite(expected))
    assert torch.isinf(got[:3]).all() and torch.isfinite(got[3:]).all()
    torch.testing.assert_close(got[3:], expected[3:], atol=1e-4, rtol=1e-4)
