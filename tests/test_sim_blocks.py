"""Block simulation (numl.sim.blocks): workers end with their parent, so a parent killed outright leaves no
workers simulating blocks nobody collects; finished blocks survive a kill, and the same command resumes from them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from numl.sim import blocks as sim_blocks
from numl.sim.blocks import BlockStore, simulate_in_blocks

PARENT = '''
import os, sys, time
from pathlib import Path

def slow_block(size, seed):
    Path(sys.argv[1], str(os.getpid())).touch()
    time.sleep(120)
    return size

if __name__ == "__main__":
    from numl.sim.blocks import simulate_in_blocks
    simulate_in_blocks(slow_block, 4, seed=0, events_per_block=1, workers=2)
'''


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has ended; in a container nobody may reap it


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's prctl")
def test_workers_end_when_their_parent_is_killed(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    started = tmp_path / "started"
    started.mkdir()
    parent = subprocess.Popen([sys.executable, str(script), str(started)])
    try:
        deadline = time.monotonic() + 120
        while len(list(started.iterdir())) < 2:
            assert time.monotonic() < deadline, "the two workers did not start"
            assert parent.poll() is None, "the parent ended early"
            time.sleep(0.2)
        workers = [int(p.name) for p in started.iterdir()]
        assert all(alive(pid) for pid in workers)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 20
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(alive(pid) for pid in workers), "workers outlived their killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
        for path in started.iterdir():
            try:
                os.kill(int(path.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


KILLED_AT_THIRD_BLOCK = '''
import os, signal, sys
import numpy as np
from numl.sim.blocks import BlockStore, simulate_in_blocks

def block(size, seed):
    if seed.spawn_key[-1] == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # as a scheduler's kill or the OOM killer: no handler runs
    return np.random.default_rng(seed).normal(size=size)

if __name__ == "__main__":
    simulate_in_blocks(block, 10, seed=5, events_per_block=3, store=BlockStore(sys.argv[1], {"seed": 5}))
'''


def normal_block(size, seed):
    return np.random.default_rng(seed).normal(size=size)


def test_a_killed_simulation_resumes_from_its_finished_blocks(tmp_path):
    """Killed (SIGKILL) in its third block, a run leaves its first two blocks; run again, it simulates only the
    other two and returns the events of a run never killed."""
    script = tmp_path / "killed.py"
    script.write_text(KILLED_AT_THIRD_BLOCK)
    root = tmp_path / "events.h5.blocks"
    killed = subprocess.run([sys.executable, str(script), str(root)])
    assert killed.returncode == -signal.SIGKILL
    assert sorted(p.name for p in (root / "events").iterdir()) == ["block00000_3events.pkl", "block00001_3events.pkl"]

    simulated = []

    def counting_block(size, seed):
        simulated.append(seed.spawn_key[-1])
        return normal_block(size, seed)

    resumed = simulate_in_blocks(counting_block, 10, seed=5, events_per_block=3, store=BlockStore(root, {"seed": 5}))
    assert simulated == [2, 3]
    never_killed = simulate_in_blocks(normal_block, 10, seed=5, events_per_block=3)
    assert [len(b) for b in resumed] == [3, 3, 3, 1]
    for a, b in zip(resumed, never_killed, strict=True):
        np.testing.assert_array_equal(a, b)


def test_blocks_of_another_configuration_or_code_are_not_reused(tmp_path, monkeypatch):
    """Kept blocks are events of one key (config and seeds) and one numl source: a store opened with another key,
    or by other code (a simulator fix changes no option), starts empty."""
    root = tmp_path / "blocks"
    simulate_in_blocks(normal_block, 4, seed=1, events_per_block=2, store=BlockStore(root, {"sigma": 1}))
    assert len(list(root.glob("*/*.pkl"))) == 2
    BlockStore(root, {"sigma": 1})
    assert len(list(root.glob("*/*.pkl"))) == 2
    BlockStore(root, {"sigma": 2})
    assert not list(root.glob("*/*.pkl"))

    simulate_in_blocks(normal_block, 4, seed=1, events_per_block=2, store=BlockStore(root, {"sigma": 1}))
    monkeypatch.setattr(sim_blocks, "code_fingerprint", lambda: "other code")
    BlockStore(root, {"sigma": 1})
    assert not list(root.glob("*/*.pkl"))
