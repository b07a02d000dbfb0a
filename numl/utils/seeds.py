"""Seeds derived from a base seed and a path (split, epoch, chunk), shared by every simulator's DataModule."""

from __future__ import annotations

import hashlib
from typing import Any


def derived_seed(*parts: Any) -> int:
    """A 63-bit seed from any parts, e.g. (seed, "train", epoch, batch): independent, reproducible streams."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1
