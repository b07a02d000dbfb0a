"""Writing files so that a crash never leaves a half-written one under the final name."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replaced_when_complete(path: Path, suffix: str = ".part") -> Iterator[Path]:
    """The path of a partial file beside `path` (its name plus `suffix`) for the caller to write; renamed onto `path`
    when the block ends normally, removed when it raises. A reader sees the complete file or none; a kill -9 can leave
    the partial file, which the next write replaces. (np.savez appends ".npz" to other names: pass ".part.npz".)"""
    path = Path(path)
    partial = path.with_name(path.name + suffix)
    try:
        yield partial
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(path)
