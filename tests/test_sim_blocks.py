"""Block simulation workers (numl.sim.blocks): they end with their parent, so a parent killed outright leaves no
workers simulating blocks nobody collects."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

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
