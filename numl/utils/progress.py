"""Progress of long simulations, on a terminal and in log files alike.

rich's progress bars draw only on a terminal: in a log file, a SLURM job's output or a pipe they print nothing
until the end (and a transient bar nothing at all), so an hour-long simulation looked stalled. Here a terminal
gets rich's bar and anything else a logged line at most every ``log_every_s`` seconds: done / total, rate and time
left.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console
from rich.progress import Progress

log = logging.getLogger("numl.progress")
T = TypeVar("T")


class ProgressLog:
    """Counts work done and logs it: at most every ``log_every_s`` seconds, and once at the end."""

    def __init__(self, description: str, total: int | None, log_every_s: float = 30.0) -> None:
        self.description, self.total, self.log_every_s = description, total, float(log_every_s)
        self.done = 0
        self.start = self.last_logged = time.perf_counter()

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last_logged >= self.log_every_s:
            self.last_logged = now
            self.report(now)

    def report(self, now: float | None = None) -> None:
        elapsed = (now if now is not None else time.perf_counter()) - self.start
        rate = self.done / elapsed if elapsed > 0 else float("inf")
        line = f"{self.description}: {self.done}"
        if self.total:
            line += f"/{self.total} ({100 * self.done / self.total:.0f} %)"
        line += f", {rate:.3g}/s, {elapsed:.0f} s"
        if self.total and 0 < rate < float("inf") and self.done < self.total:
            line += f", about {(self.total - self.done) / rate:.0f} s left"
        log.info(line)


class _RichBar:
    def __init__(self, bar: Progress, task) -> None:
        self.bar, self.task = bar, task

    def advance(self, n: int = 1) -> None:
        self.bar.advance(self.task, n)


class _Silent:
    def advance(self, n: int = 1) -> None:
        pass


@contextmanager
def progress(description: str, total: int | None, disable: bool = False, log_every_s: float = 30.0,
             transient: bool = False):
    """A context whose value has ``advance(n=1)``: rich's bar on a terminal (``transient``: erased when done),
    ``ProgressLog`` elsewhere."""
    if disable:
        yield _Silent()
    elif Console().is_terminal:
        with Progress(transient=transient) as bar:
            yield _RichBar(bar, bar.add_task(description, total=total))
    else:
        reporter = ProgressLog(description, total, log_every_s)
        yield reporter
        reporter.report()


def track(sequence: Iterable[T], description: str, total: int | None = None, disable: bool = False,
          log_every_s: float = 30.0) -> Iterator[T]:
    """The items of `sequence`, with ``progress`` advanced after each."""
    if total is None and hasattr(sequence, "__len__"):
        total = len(sequence)
    with progress(description, total, disable, log_every_s) as bar:
        for item in sequence:
            yield item
            bar.advance()
