"""Progress of long work in log files: a SLURM job's output or a pipe gets logged lines, a terminal rich's bar."""

from __future__ import annotations

import logging

import pytest

from numl.utils import progress as progress_module
from numl.utils.progress import ProgressLog, progress, track


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "numl.progress"]


def test_track_off_a_terminal_logs_counts_rate_and_time_left(caplog):
    caplog.set_level(logging.INFO, logger="numl.progress")
    assert list(track(range(4), "simulating things", log_every_s=0.0)) == [0, 1, 2, 3]
    lines = _lines(caplog)
    assert len(lines) == 5  # one per item (log_every_s=0) and the final count
    assert lines[0].startswith("simulating things: 1/4 (25 %), ") and "s left" in lines[0]
    assert lines[-1].startswith("simulating things: 4/4 (100 %), ") and "left" not in lines[-1]


def test_progress_logs_at_most_every_interval_and_knows_no_total(caplog):
    caplog.set_level(logging.INFO, logger="numl.progress")
    with progress("blocks", None, log_every_s=3600.0) as bar:
        for _ in range(10):
            bar.advance()
    lines = _lines(caplog)
    assert len(lines) == 1 and lines[0].startswith("blocks: 10, ")  # the final line only
    reporter = ProgressLog("events", 10)
    reporter.advance(3)
    assert reporter.done == 3
    reporter.report()  # advance(n) counts n towards the total
    assert _lines(caplog)[-1].startswith("events: 3/10 (30 %), ") and "s left" in _lines(caplog)[-1]


def test_disabled_and_terminal_progress_log_nothing(caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="numl.progress")
    assert list(track(iter("abc"), "quiet", disable=True)) == ["a", "b", "c"]

    class TerminalConsole:
        is_terminal = True

        def __init__(self, *args, **kwargs):
            pass

    monkeypatch.setattr(progress_module, "Console", TerminalConsole)
    assert list(track(range(3), "on a terminal", log_every_s=0.0)) == [0, 1, 2]
    assert _lines(caplog) == []


def test_an_error_inside_is_not_reported_as_done(caplog):
    caplog.set_level(logging.INFO, logger="numl.progress")
    with pytest.raises(RuntimeError), progress("failing", 5, log_every_s=3600.0) as bar:
        bar.advance()
        raise RuntimeError("simulation failed")
    assert _lines(caplog) == []
