"""Simulation in blocks of events, each block from its own seed, so that processes can share a split.

numl's simulators are single-threaded numpy (NEXT's deconvolution is torch, held to one thread in a worker), so a
split of a slow simulator (KM3NeT light, NEXT's sensor chain with deconvolution: 0.5-6 events/s) is made faster only
by simulating parts of it side by side. Block k takes the
k-th child of ``SeedSequence(seed)``: the events are the same for any number of worker processes.

A block is also the unit that survives a kill: with a `BlockStore` every finished block is pickled to disk as it
ends, and the same command run again simulates only the blocks that are missing (numl.simulate keeps them beside
the file it writes until the file is complete).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import multiprocessing
import os
import pickle
import shutil
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from numl.utils.errors import check_positive
from numl.utils.files import replaced_when_complete
from numl.utils.progress import track

T = TypeVar("T")
log = logging.getLogger(__name__)

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


def code_fingerprint() -> str:
    """A digest of numl's source files: blocks simulated by other code are other events, even under the same
    config (a simulator fix changes no option), so a store never hands them on."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


class BlockStore:
    """Finished blocks of one dataset on disk, so that a killed simulation resumes where it stopped.

    `key` is everything that determines the events (the simulator's metadata and seeds); with numl's source
    fingerprint it is written to the directory, and a directory holding blocks of another key is emptied first.
    Block files are named by split, index and size: block k of a split is the same events for any split size
    (the k-th child seed), so a larger request reuses the smaller one's full blocks. Files are pickles that numl
    wrote itself; they are written under a temporary name and renamed, so a kill never leaves half a block."""

    def __init__(self, root: str | Path, key: dict[str, Any]) -> None:
        self.root = Path(root)
        stamp = json.dumps({"key": key, "code": code_fingerprint()}, sort_keys=True, default=str)
        key_file = self.root / "key.json"
        if self.root.is_dir() and (not key_file.is_file() or key_file.read_text() != stamp):
            stale = len(list(self.root.glob("*/*.pkl")))
            log.warning("%s: discarding %d simulated blocks of another configuration or numl version", self.root,
                        stale)
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        key_file.write_text(stamp)

    def path(self, split: str, index: int, size: int) -> Path:
        return self.root / split / f"block{index:05d}_{size}events.pkl"

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _simulate_and_keep(simulate_block: Callable[[int, np.random.SeedSequence], T], size: int,
                       seed: np.random.SeedSequence, path: Path | None) -> T:
    block = simulate_block(size, seed)
    if path is not None:  # in the worker, so a block is kept as soon as it ends, whatever the others do
        path.parent.mkdir(parents=True, exist_ok=True)
        with replaced_when_complete(path) as partial_file, open(partial_file, "wb") as f:
            pickle.dump(block, f, protocol=pickle.HIGHEST_PROTOCOL)
    return block


def simulate_in_blocks(simulate_block: Callable[[int, np.random.SeedSequence], T], n_events: int, seed: int,
                       events_per_block: int, workers: int = 1, description: str | None = None,
                       store: BlockStore | None = None, split: str = "events") -> list[T]:
    """`simulate_block(size, seed_sequence)` for blocks of `events_per_block` events (the last one shorter) that
    make up `n_events`, in block order; `workers` processes run blocks side by side (`simulate_block` must then
    be picklable: a module-level function or a functools.partial of one). `description` shows progress per block.
    With a `store`, blocks of `split` found there are read instead of simulated and new ones are kept there.
    """
    check_positive("data.events_per_block", events_per_block, integer=True)
    check_positive("data.simulation_workers", workers, integer=True)
    sizes = [min(events_per_block, n_events - start) for start in range(0, n_events, events_per_block)]
    seeds = np.random.SeedSequence(seed).spawn(len(sizes))
    paths = [store.path(split, k, size) if store else None for k, size in enumerate(sizes)]
    kept = {k: path for k, path in enumerate(paths) if path is not None and path.is_file()}
    if kept:
        log.info("%s: %d of %d blocks of split %s already simulated (%s); simulating the other %d", store.root,
                 len(kept), len(sizes), split, ", ".join(str(k) for k in sorted(kept)), len(sizes) - len(kept))
    todo = [k for k in range(len(sizes)) if k not in kept]
    task = partial(_simulate_and_keep, simulate_block)
    pool = spawned_pool(workers) if workers > 1 and len(todo) > 1 else None
    try:
        args = ([sizes[k] for k in todo], [seeds[k] for k in todo], [paths[k] for k in todo])
        made = pool.map(task, *args) if pool else map(task, *args)
        if description:
            made = track(made, total=len(todo), description=f"{description} in {len(todo)} blocks, "
                                                             f"{workers} worker(s)")
        blocks = dict(zip(todo, made, strict=True))
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    for k, path in kept.items():
        with open(path, "rb") as f:
            blocks[k] = pickle.load(f)
    return [blocks[k] for k in range(len(sizes))]
