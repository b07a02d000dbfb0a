"""Convergence maps from FITS files, the format of ray-traced N-body suites (MassiveNuS, LensTools), read with
astropy; and numl's own maps written in that format.

Layout (MassiveNuS's public maps): one 2D image per file and source plane, in a folder per cosmology, e.g.
``mnv0.10000_om0.30000_As2.1000/WLconv_z1.00_0001r.fits``; the header holds the map's side in degrees
(``ANGLE``). Which file is what comes from a regular expression matched against the path relative to the
directory (``name_pattern``), with named groups:

- ``m_nu_ev``: M_nu in eV (used where the header has no ``m_nu_key``);
- ``z_s``: the source redshift; files that differ only in it are the planes of one map (tomography);
- ``simulation`` (optional): maps with the same M_nu and simulation id stay in one split, since maps ray-traced
  through one N-body simulation share its modes. Without it every map is its own group.

Splits are deterministic: the groups of each M_nu, sorted by name, are shuffled by a generator seeded from
the DataModule's seed and cut by ``split_fractions``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from numl.utils.errors import ConfigError
from numl.utils.files import replaced_when_complete
from numl.utils.seeds import derived_seed

# MassiveNuS's names: the cosmology's folder gives M_nu, the file name the source redshift.
DEFAULT_NAME_PATTERN = r"mnv(?P<m_nu_ev>[0-9.]+)_[^/]*/WLconv_z(?P<z_s>[0-9.]+)_(?P<realisation>[0-9]+)r\.fits$"
FITS_SUFFIXES = (".fits", ".fit", ".fts")
# Two M_nu or z_s values closer than this are the same (the names print them with 5 and 2 decimals).
_SAME_VALUE = 1e-4


@dataclass
class FitsMaps:
    """Maps read from a FITS directory: ``maps`` [n, n_z, N, N] float32, M_nu per map, split group per map."""

    maps: torch.Tensor
    m_nu_ev: np.ndarray
    groups: list[str]
    field_deg: float
    paths: list[str]  # the first plane's file of each map, for messages


def _fits_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in FITS_SUFFIXES)


def _read_image(path: Path):
    from astropy.io import fits  # a dependency only where FITS maps are read or written

    try:
        with fits.open(path, memmap=False) as hdus:
            for hdu in hdus:
                if hdu.data is not None:
                    return np.asarray(hdu.data, dtype=np.float32), hdu.header
    except (OSError, ValueError, TypeError) as err:
        raise ConfigError(f"data.fits_dir: {path}: not a readable FITS file ({str(err).splitlines()[0]})") from None
    raise ConfigError(f"data.fits_dir: {path}: no image in any HDU of the file")


def read_fits_directory(directory: str | Path, source_redshifts: list[float], name_pattern: str = DEFAULT_NAME_PATTERN,
                        m_nu_key: str = "M_NU", angle_key: str = "ANGLE",
                        field_deg: float | None = None) -> FitsMaps:
    """Every map of the directory, its planes ordered as ``source_redshifts``.

    M_nu from the header key ``m_nu_key`` or else the pattern's ``m_nu_ev`` group; the side in degrees from
    ``angle_key`` or else ``field_deg``. Maps must all have the same size and side.
    """
    directory = Path(directory)
    try:
        pattern = re.compile(name_pattern)
    except re.error as err:
        raise ConfigError(f"data.fits_name_pattern={name_pattern!r}: not a regular expression ({err})") from None
    files = _fits_files(directory)
    if not files:
        raise ConfigError(f"data.fits_dir={str(directory)!r}: no FITS files ({', '.join(FITS_SUFFIXES)}) in it")
    by_map: dict[str, dict[float, tuple[Path, np.ndarray]]] = defaultdict(dict)
    m_nu_of: dict[str, float] = {}
    group_of: dict[str, str] = {}
    shape, angle, first = None, None, None
    for path in files:
        relative = path.relative_to(directory).as_posix()
        match = pattern.search(relative)
        image, header = _read_image(path)
        if image.ndim != 2 or image.shape[0] != image.shape[1]:
            raise ConfigError(f"data.fits_dir: {path}: image of shape {image.shape}; a convergence map is one "
                              f"square 2D image per file")
        if shape is None:
            shape, first = image.shape, path
        elif image.shape != shape:
            raise ConfigError(f"data.fits_dir: maps of mixed sizes: {path} is {image.shape[0]}x{image.shape[1]} "
                              f"pixels, {first} is {shape[0]}x{shape[1]}")
        this_angle = float(header[angle_key]) if angle_key in header else field_deg
        if this_angle is None:
            raise ConfigError(f"data.fits_dir: {path}: no header key {angle_key!r} (data.fits_angle_key) and no "
                              f"data.field_deg to fall back on")
        if angle is None:
            angle = this_angle
        elif abs(this_angle - angle) > 1e-6 * angle:
            raise ConfigError(f"data.fits_dir: maps of mixed sides: {path} has {angle_key}={this_angle} deg, "
                              f"{first} has {angle} deg")
        if m_nu_key in header:
            m_nu = float(header[m_nu_key])
        elif match is not None and match.groupdict().get("m_nu_ev") is not None:
            m_nu = float(match["m_nu_ev"])
        else:
            raise ConfigError(f"data.fits_dir: {path}: no M_nu label: the header has no key {m_nu_key!r} "
                              f"(data.fits_m_nu_key) and the path does not match data.fits_name_pattern="
                              f"{name_pattern!r} with an m_nu_ev group")
        z_s = None if match is None or match.groupdict().get("z_s") is None else float(match["z_s"])
        if z_s is None and len(source_redshifts) > 1:
            raise ConfigError(f"data.fits_dir: {path}: no source redshift in its path (a z_s group of "
                              f"data.fits_name_pattern), needed for data.source_redshifts={source_redshifts}")
        planes = [z for z in source_redshifts if z_s is None or abs(z_s - z) < _SAME_VALUE]
        if not planes:
            continue  # a plane the run does not use
        plane_z = planes[0]
        key = relative if z_s is None else relative[:match.start("z_s")] + "*" + relative[match.end("z_s"):]
        by_map[key][plane_z] = (path, image)
        m_nu_of[key] = m_nu
        simulation = None if match is None else match.groupdict().get("simulation")
        group_of[key] = key if simulation is None else f"{m_nu:.6g}/{simulation}"
    if not by_map:
        raise ConfigError(f"data.fits_dir={str(directory)!r}: no map at data.source_redshifts={source_redshifts} "
                          f"(source redshifts from the z_s group of data.fits_name_pattern)")
    keys = sorted(by_map)
    for key in keys:
        missing = [z for z in source_redshifts if z not in by_map[key]]
        if missing:
            present = next(iter(by_map[key].values()))[0]
            raise ConfigError(f"data.fits_dir: {present}: no plane at z_s={missing[0]} beside it "
                              f"(data.source_redshifts={source_redshifts})")
    maps = torch.from_numpy(np.stack([np.stack([by_map[k][z][1] for z in source_redshifts]) for k in keys]))
    return FitsMaps(maps=maps, m_nu_ev=np.array([m_nu_of[k] for k in keys]), groups=[group_of[k] for k in keys],
                    field_deg=float(angle), paths=[str(by_map[k][source_redshifts[0]][0]) for k in keys])


def split_indices(m_nu_ev: np.ndarray, groups: list[str], fractions: list[float], seed: int) -> dict[str, np.ndarray]:
    """Map indices of train / val / test: per M_nu, whole groups shuffled (seeded) and cut by ``fractions``."""
    rng = np.random.default_rng(derived_seed(seed, "fits_split"))
    out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for m_nu in np.unique(m_nu_ev):
        members = np.flatnonzero(m_nu_ev == m_nu)
        names = sorted({groups[i] for i in members})
        if len(names) < 3:
            raise ConfigError(f"data.fits_dir: {len(names)} group(s) of maps at M_nu = {m_nu:g} eV; train, val and "
                              f"test need at least one each (maps of one simulation stay in one split)")
        order = [names[i] for i in rng.permutation(len(names))]
        cuts = np.round(np.cumsum(fractions)[:2] / np.sum(fractions) * len(order)).astype(int)
        cuts = np.clip(cuts, [1, 2], [len(order) - 2, len(order) - 1])  # every split gets a group
        chosen = {"train": order[:cuts[0]], "val": order[cuts[0]:cuts[1]], "test": order[cuts[1]:]}
        for split, split_groups in chosen.items():
            wanted = set(split_groups)
            out[split].extend(int(i) for i in members if groups[i] in wanted)
    return {split: np.array(sorted(idx), dtype=np.int64) for split, idx in out.items()}


def remove_fits_maps(directory: str | Path) -> None:
    """Remove the maps `write_fits_maps` writes (its ``mnv<M_nu>_numl`` folders) from `directory`, and nothing
    else: a dataset written again over a larger one must not keep the larger one's extra maps."""
    import shutil

    for folder in Path(directory).glob("mnv*_numl"):
        if folder.is_dir():
            shutil.rmtree(folder)


def write_fits_maps(maps: torch.Tensor, m_nu_ev: torch.Tensor, directory: str | Path, field_deg: float,
                    source_redshifts: list[float], m_nu_key: str = "M_NU", angle_key: str = "ANGLE") -> list[Path]:
    """Write maps [n, n_z, N, N] in MassiveNuS's layout: ``<directory>/mnv<M_nu>_numl/WLconv_z<z_s>_<i>r.fits``,
    one file per map and plane, numbered per cosmology from 1, with the side (deg), M_nu (eV) and z_s in the
    header. Each file is written beside its name and renamed when complete."""
    from astropy.io import fits

    directory = Path(directory)
    written = []
    count: dict[float, int] = defaultdict(int)
    for image, m_nu in zip(maps.cpu().numpy(), m_nu_ev.cpu().numpy().tolist(), strict=True):
        count[m_nu] += 1
        folder = directory / f"mnv{m_nu:.5f}_numl"
        folder.mkdir(parents=True, exist_ok=True)
        for plane, z_s in zip(image, source_redshifts, strict=True):
            header = fits.Header()
            header[angle_key] = (float(field_deg), "side of the map [deg]")
            header[m_nu_key] = (float(m_nu), "sum of neutrino masses [eV]")
            header["Z_S"] = (float(z_s), "source redshift")
            path = folder / f"WLconv_z{z_s:.2f}_{count[m_nu]:04d}r.fits"
            with replaced_when_complete(path) as partial:
                fits.PrimaryHDU(data=plane.astype(np.float32), header=header).writeto(partial, overwrite=True)
            written.append(path)
    return written
