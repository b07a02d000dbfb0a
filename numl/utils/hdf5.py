"""HDF5 metadata shared by every domain's dataset files: what simulated it, with which config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py

from numl.utils.errors import ConfigError

FORMAT_VERSION = 1


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def write_metadata(h5: h5py.File, simulator: str, config: dict[str, Any]) -> None:
    """Store the simulator name, the file-format version and every config value as attributes."""
    h5.attrs["numl_simulator"] = simulator
    h5.attrs["numl_format_version"] = FORMAT_VERSION
    h5.attrs["numl_config"] = _canonical(config)


def read_metadata(h5: h5py.File, added_defaults: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The config a file was written with; `added_defaults` ({group: {key: value}}, a data module's
    metadata_added_defaults) fills the keys of nested groups that were added after the file was written with the
    values such files were made with."""
    stored = json.loads(h5.attrs["numl_config"])
    for group, defaults in (added_defaults or {}).items():
        if isinstance(stored.get(group), dict):
            stored[group] = {**defaults, **stored[group]}
    return stored


def check_metadata(h5: h5py.File, path: str | Path, simulator: str, expected: dict[str, Any],
                   added_defaults: dict[str, dict[str, Any]] | None = None,
                   ignored: dict[str, tuple[str, ...]] | None = None) -> None:
    """Refuse a file written by another simulator, another format version or another config. `added_defaults`:
    keys of nested config groups added after files were written, with the values those files were made with
    ({group: {key: value}}); a file whose group lacks one is taken to have that value. `ignored`: keys of nested
    groups that some files store but that do not change the events ({group: (key, ...)})."""
    found = h5.attrs.get("numl_simulator")
    if found != simulator:
        raise ConfigError(f"{path}: written by simulator {found!r}, expected {simulator!r}")
    version = int(h5.attrs.get("numl_format_version", -1))
    if version != FORMAT_VERSION:
        raise ConfigError(f"{path}: numl file format version {version}, this numl reads version {FORMAT_VERSION}")
    stored = read_metadata(h5, added_defaults)
    for group, keys in (ignored or {}).items():
        if isinstance(stored.get(group), dict):
            stored[group] = {k: v for k, v in stored[group].items() if k not in keys}
    for key, value in expected.items():
        if key not in stored and value is None:
            continue  # an option added after the file was written, whose null default is what the file was made with
        if key not in stored:
            raise ConfigError(f"{path}: metadata has no {key!r}; regenerate it with python -m numl.simulate")
        if _canonical(stored[key]) != _canonical(value):
            raise ConfigError(
                f"{path}: data.{key}={_canonical(stored[key])} in the file but {_canonical(value)} requested; "
                "regenerate it with python -m numl.simulate or change the config"
            )


def open_checked(path: str | Path, simulator: str, expected: dict[str, Any],
                 added_defaults: dict[str, dict[str, Any]] | None = None,
                 ignored: dict[str, tuple[str, ...]] | None = None) -> h5py.File:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"data.hdf5_path={str(path)!r}: no such file; write one with python -m numl.simulate")
    try:
        h5 = h5py.File(path, "r")
    except OSError as err:
        raise ConfigError(f"data.hdf5_path={str(path)!r}: not an HDF5 file ({err})") from None
    try:
        check_metadata(h5, path, simulator, expected, added_defaults, ignored)
    except Exception:
        h5.close()
        raise
    return h5
