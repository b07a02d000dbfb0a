"""User-facing configuration errors: one line that names the key or file and what is allowed."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class ConfigError(ValueError):
    """A bad configuration value or input file. The message is a single line."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def check_positive(key: str, value: Any, *, integer: bool = False, allow_zero: bool = False) -> None:
    kind = "an integer" if integer else "a number"
    bound = ">= 0" if allow_zero else "> 0"
    ok_type = isinstance(value, int if integer else int | float) and not isinstance(value, bool)
    if not ok_type or (value < 0 if allow_zero else value <= 0):
        raise ConfigError(f"{key}={value!r}: must be {kind} {bound}")


def check_range(key: str, value: Any, lo: float | None = None, hi: float | None = None) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ConfigError(f"{key}={value!r}: must be a number in [{lo}, {hi}]")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"{key}={value!r}: must be in [{lo}, {hi}]")


def check_choice(key: str, value: Any, allowed: Iterable[Any]) -> None:
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(f"{key}={value!r}: must be one of {', '.join(map(str, allowed))}")


def check_keys(prefix: str, given: Iterable[str], allowed: Iterable[str]) -> None:
    """Every key of a config node `prefix` must be one of `allowed`; the first unknown one is named."""
    allowed = sorted(allowed)
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ConfigError(f"{prefix}.{unknown[0]}: unknown key; allowed: {', '.join(allowed)}")
