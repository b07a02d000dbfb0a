"""Sparse 3D CNN on the active voxels only, with spconv (submanifold convolutions keep the set of
active sites; strided sparse convolutions downsample), as the NEXT sparse-CNN work does."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from numl.utils.errors import ConfigError, check_positive, check_range

try:
    import spconv.pytorch as spconv
    from spconv.pytorch import ops as _spconv_ops
except ImportError:  # optional extra: pip install numl[sparse]
    spconv = None
else:
    if not torch.cuda.is_available():
        # spconv 2.3's CPU backward asks torch.cuda for a stream it never uses on CPU, which raises on
        # CPU-only torch builds; a null stream lets the CPU gather-mm-scatter path run
        # (tests/test_next_models.py checks its gradients against dense convolutions).
        _spconv_ops.get_current_stream = lambda: 0


class _ThreadsInBackward(torch.autograd.Function):
    """Identity on the features; its backward sets torch's thread count, so that the backward pass between two of
    these (the spconv layers) runs on one thread."""

    @staticmethod
    def forward(ctx, features: torch.Tensor, anchor: torch.Tensor, threads: int) -> torch.Tensor:
        ctx.threads = threads
        return features.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        torch.set_num_threads(ctx.threads)
        return grad, None, None


class _OneThreadBackward:
    """Brackets spconv's layers: `enter` on their input features, `leave` on their output features. The backward
    pass reaches `leave` first (one thread from there) and `enter` last (the former count restored)."""

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def enter(self, features: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return features
        # the input voxels need no gradient; the anchor keeps this node in the graph so its backward runs
        anchor = torch.zeros((), requires_grad=True)
        return _ThreadsInBackward.apply(features, anchor, self.threads)

    def leave(self, features: torch.Tensor) -> torch.Tensor:
        return _ThreadsInBackward.apply(features, None, 1) if features.requires_grad else features


class _Unguarded:
    @staticmethod
    def enter(features: torch.Tensor) -> torch.Tensor:
        return features

    leave = enter


@contextmanager
def spconv_cpu_safe(device: torch.device):
    """Run spconv on one torch thread on CPU, forward and backward: with two threads spconv 2.3's CPU kernels race.
    The forward of a strided SparseConv3d returned wrong values at a few output sites in about 1 of 300 calls, its
    backward wrong input gradients in 7 of 300 (0 of 300 each on one thread; tests/test_next_models.py). Yields a
    guard whose `enter` / `leave` wrap the features going into and coming out of the spconv layers, so that the
    backward pass, which runs after this block, is on one thread as well."""
    if device.type != "cpu" or torch.get_num_threads() == 1:
        yield _Unguarded()
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield _OneThreadBackward(threads)
    finally:
        torch.set_num_threads(threads)


def require_spconv() -> None:
    if spconv is None:
        raise ConfigError("model: the sparse NEXT networks need spconv; install it with pip install 'numl[sparse]'")


def sparse_tensor(features: torch.Tensor, coords: torch.Tensor, batch_size: int, window_voxels: int):
    """A spconv tensor from (N, C) features and (N, 4) int coordinates (event, x, y, z)."""
    return spconv.SparseConvTensor(features, coords.int().contiguous(), [window_voxels] * 3, batch_size)


def sparse_block(in_channels: int, out_channels: int, key: str) -> nn.Module:
    return spconv.SparseSequential(
        spconv.SubMConv3d(in_channels, out_channels, 3, padding=1, bias=False, indice_key=key),
        nn.BatchNorm1d(out_channels), nn.ReLU(inplace=True),
        spconv.SubMConv3d(out_channels, out_channels, 3, padding=1, bias=False, indice_key=key),
        nn.BatchNorm1d(out_channels), nn.ReLU(inplace=True),
    )


def sparse_down(in_channels: int, out_channels: int, key: str) -> nn.Module:
    return spconv.SparseSequential(
        spconv.SparseConv3d(in_channels, out_channels, 2, stride=2, bias=False, indice_key=key),
        nn.BatchNorm1d(out_channels), nn.ReLU(inplace=True),
    )


def pool_events(features: torch.Tensor, event_index: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Mean and max of the active-site features of each event: (B, 2C)."""
    index = event_index.long()[:, None].expand_as(features)
    total = torch.zeros(batch_size, features.shape[1], dtype=features.dtype, device=features.device)
    total = total.scatter_add(0, index, features)
    count = torch.bincount(event_index.long(), minlength=batch_size).clamp(min=1)[:, None]
    peak = torch.full_like(total, float("-inf")).scatter_reduce(0, index, features, reduce="amax")
    return torch.cat([total / count, torch.nan_to_num(peak, neginf=0.0)], dim=1)


class SparseCNN3D(nn.Module):
    """Active voxels -> (B, n_outputs) logits. Call with (features (N, C), coords (N, 4), batch_size)."""

    sparse_input = True

    def __init__(self, in_channels: int = 1, channels: tuple[int, ...] = (16, 32, 64, 128), n_outputs: int = 1,
                 window_voxels: int = 32, dropout: float = 0.2) -> None:
        super().__init__()
        require_spconv()
        check_positive("model.in_channels", in_channels, integer=True)
        check_positive("model.n_outputs", n_outputs, integer=True)
        check_positive("model.window_voxels", window_voxels, integer=True)
        check_range("model.dropout", dropout, 0.0, 1.0)
        self.window_voxels = window_voxels
        stages: list[nn.Module] = []
        previous = in_channels
        for i, c in enumerate(channels):
            if i > 0:
                stages.append(sparse_down(previous, c, key=f"down{i}"))
                previous = c
            stages.append(sparse_block(previous, c, key=f"subm{i}"))
            previous = c
        self.stages = spconv.SparseSequential(*stages)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * previous, n_outputs))

    def forward(self, features: torch.Tensor, coords: torch.Tensor, batch_size: int) -> torch.Tensor:
        with spconv_cpu_safe(features.device) as guard:
            x = self.stages(sparse_tensor(guard.enter(features), coords, batch_size, self.window_voxels))
            pooled = pool_events(guard.leave(x.features), x.indices[:, 0], batch_size)
        return self.head(pooled)
