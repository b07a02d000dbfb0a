"""Simulation in blocks of events, each block from its own seed, so that processes can share a split.

numl's simulators are single-threaded numpy (NEXT's deconvolution is torch, held to one thread in a worker), so a
split of a slow simulator (KM3NeT light, NEXT's sensor chain with deconvolution: 0.5-6 events/s) is made faster only
by simulating parts of it side by side. Block k takes the
k-th child of ``SeedSequence(seed)``: the events are the same for any number of worker processes.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

import numpy as np
import torch

from numl.utils.errors import check_positive
from numl.utils.progress import track

T = TypeVar("T")

#: prctl option: the signal a process gets when its parent dies (linux/prctl.h)
PR_SET_PDEATHSIG = 1


def start_worker() -> None:
    """A block worker runs one torch thread (as many processes as cores is the point of the pool) and, on Linux,
    ends with its parent: a parent killed outright (SIGKILL, a scheduler's SIGTERM to the main process only) cannot
    shut its pool down, and its workers would otherwise go on simulating blocks nobody collects."""
    torch.set_num_threads(1)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != multiprocessing.parent_process().pid:  # the parent died before the line above
            os._exit(1)


def spawned_pool(workers: int) -> ProcessPoolExecutor:
    """`workers` processes for side-by-side simulation, each set up by `start_worker`. Spawned, not forked: a
    parent that has asked torch about CUDA (data.sim.deconvolution_device=cuda) cannot hand that state to forked
    children. Shut it down with ``cancel_futures=True``."""
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=start_worker)


def simulate_in_blocks(simulate_block: Callable[[int, np.random.SeedSequence], T], n_events: int, seed: int,
                       events_per_block: int, workers: int = 1, description: str | None = None) -> list[T]:
    """`simulate_block(size, seed_sequence)` for blocks of `events_per_block` events (the last one shorter) that
    make up `n_events`, in block order; `workers` processes run blocks side by side (`simulate_block` must then
    be picklable: a module-level function or a functools.partial of one). `description` shows progress per block.
    """
    check_positive("data.events_per_block", events_per_block, integer=True)
    check_positive("data.simulation_workers", workers, integer=True)
    sizes = [min(events_per_block, n_events - start) for start in range(0, n_events, events_per_block)]
    seeds = np.random.SeedSequence(seed).spawn(len(sizes))
    pool = spawned_pool(workers) if workers > 1 else None
    try:
        blocks = pool.map(simulate_block, sizes, seeds) if pool else map(simulate_block, sizes, seeds)
        if description:
            blocks = track(blocks, total=len(sizes), description=f"{description} in {len(sizes)} blocks, "
                                                                   f"{workers} worker(s)")
        return list(blocks)
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
