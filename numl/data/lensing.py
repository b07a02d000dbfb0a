"""Convergence maps of massive vs massless neutrino cosmologies, for classification or M_nu regression.

Two sources of maps:
- ``source="simulate"``: training maps are fresh every epoch and generated on the training device
  after the batch (just seeds and labels) has been moved there, so the GPU makes its own data.
  Validation and test maps are fixed, from seeds derived from ``seed``.
- ``source="hdf5"``: maps written by ``python -m numl.simulate``; a file whose metadata does not
  match the requested config is refused.
- ``source="fits"``: a directory of FITS convergence maps (N-body suites such as MassiveNuS, or numl's own,
  ``python -m numl.simulate output_format=fits``), split by ``numl.data.lensing_fits``.

``field="nbody"`` maps are ray traced through particle-mesh simulations (numl.sim.lensing.nbody): every split,
training included, is a fixed set of maps from its own simulations (maps of one simulation share its modes),
made at setup or, better, once by ``python -m numl.simulate`` into HDF5.

Batches are dicts: ``convergence_map`` [B, n_z, N, N] (divided by ``map_scale`` so the network sees
O(1) numbers), ``label`` (1 = massive), ``m_nu_ev``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from numl.data.base import SPLITS, SimulatedDataModule
from numl.data.lensing_fits import DEFAULT_NAME_PATTERN, read_fits_directory, split_indices, write_fits_maps
from numl.sim.lensing import ConvergenceMapSimulator, Cosmology, convergence_power_spectra, required_ell_max
from numl.sim.lensing.maps import log_ell_bin_edges
from numl.sim.lensing.nbody import NBodySuite, simulation_folds, simulation_of_maps
from numl.utils.errors import ConfigError, check_choice, check_positive
from numl.utils.progress import track
from numl.utils.seeds import derived_seed

log = logging.getLogger(__name__)
SIMULATOR_NAME = "numl.sim.lensing"
# The smallest map side in pixels (see the n_pix check in LensingDataModule).
MIN_N_PIX = 8
# The largest multipole the maps may ask CAMB for. Each CAMB run grows with ell_max (the default 5 deg,
# 128 px maps need 6.5e3, a few seconds; 5e4 took 100 s on one core); far beyond it the runs become
# impractically slow and then fail inside CAMB with an error naming no key, and HMcode-2020 is not calibrated
# for the wavenumbers such multipoles probe at z ~ 1 (k = ell / chi > 10 h/Mpc for ell > 3e4).
MAX_ELL = 30_000
# Beam power below which a Fourier mode of a smoothed float32 map is round-off: the value
# numl.baselines.lensing uses to drop modes (kept here so the data need not import the baselines).
_MIN_BEAM_POWER = 1e-6


class _BatchKeys(Sampler):
    """Yields one key per training batch: (epoch, batch index). Lightning calls set_epoch every epoch,
    so each epoch draws fresh maps, and a resumed run redraws exactly the maps it would have seen."""

    def __init__(self, n_batches: int) -> None:
        self.n_batches = n_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self):
        for i in range(self.n_batches):
            yield (self.epoch, i)


class _SeedDataset(Dataset):
    """Maps a batch key to the seed and labels of that batch; the maps themselves are made on device."""

    def __init__(self, datamodule: LensingDataModule) -> None:
        self.dm = datamodule

    def __len__(self) -> int:
        return self.dm.split_sizes["train"]

    def __getitem__(self, key):
        epoch, index = key
        seed = self.dm.split_seed("train", epoch, index)
        labels, m_nu = self.dm.draw_labels(self.dm.batch_size, seed)
        return {"seed": torch.tensor(seed), "label": labels, "m_nu_ev": m_nu}


class MapSet(Dataset):
    """A fixed set of maps with their class index and M_nu: a split, or the baselines' fitting maps."""

    def __init__(self, maps: torch.Tensor, labels: torch.Tensor, m_nu: torch.Tensor) -> None:
        self.maps, self.labels, self.m_nu = maps, labels, m_nu

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return {"convergence_map": self.maps[i], "label": self.labels[i], "m_nu_ev": self.m_nu[i]}


class LensingDataModule(SimulatedDataModule):
    """Weak-lensing convergence maps for massive vs massless neutrinos.

    Args:
        cosmology: `numl.sim.lensing.Cosmology` fields shared by all classes (M_nu is set per class).
        target: "classification" (massless vs ``m_nu_massive_ev``) or "regression" (M_nu drawn from
            ``m_nu_grid_ev``, a grid of cosmologies, since each needs its own CAMB run).
        source_redshifts: source planes, one map channel each (tomography with several).
        field_deg, n_pix: side of the square periodic map in degrees, and pixels per side.
        field: "gaussian", "lognormal" or "nbody" (ray-traced particle-mesh simulations, set by ``nbody``:
            the `numl.sim.lensing.nbody.ParticleMeshSetup` fields, ``simulations`` per split and cosmology,
            ``matched_phases``, ``device``, ``workers``: processes simulating a split's light cones side by side).
        galaxy_density_arcmin2: source galaxies per arcmin^2 for shape noise, in total, split equally among the
            source planes; null = noise-free. shape_noise_sigma_e: ellipticity dispersion per component.
        The split sizes, seed and source are those of `numl.data.base.SimulatedDataModule`.
        fits_dir, fits_name_pattern, fits_m_nu_key, fits_angle_key: with source="fits", the directory of FITS
            maps, the regular expression of their relative paths, and the header keys of M_nu [eV] and of the
            map's side [deg] (`numl.data.lensing_fits`). The maps' size, side and M_nu values come from the
            files: classification keeps the maps at m_nu_massless_ev and m_nu_massive_ev, regression the maps at
            m_nu_grid_ev (null: every M_nu found). fits_split_fractions: train, val, test shares of each M_nu's
            maps (whole simulations); n_<split> caps each split.
        simulation_fold: with an N-body suite read from HDF5, errors over simulations rather than maps: the
            suite's simulations (numbered over train, val, test) rotate by `fold` x the number of test
            simulations before they are dealt to train, val and test again, whole, with all their maps
            (n_<split> then does not apply). Fold 0 is the file's own splits; folds 0 .. (simulations / test
            simulations) - 1 test every simulation once (`simulation_folds`).
    """

    simulator_name = SIMULATOR_NAME
    # files written before multi-plane ray tracing existed are Born maps
    metadata_added_defaults = {"nbody": {"ray_tracing": "born"}}
    sources = ("simulate", "hdf5", "fits")

    def __init__(self, cosmology: dict[str, Any] | None = None, target: str = "classification",
                 m_nu_massless_ev: float = 0.0, m_nu_massive_ev: float = 0.1,
                 m_nu_grid_ev: list[float] | None = None, source_redshifts: list[float] = (1.0,),
                 field_deg: float = 5.0, n_pix: int = 128, field: str = "gaussian",
                 shape_noise_sigma_e: float = 0.26, galaxy_density_arcmin2: float | None = 30.0,
                 smoothing_arcmin: float = 0.0, lognormal_shift: list[float] | None = None,
                 ell_max: int | None = None, n_train: int = 2048, n_val: int = 512, n_test: int = 1024,
                 batch_size: int = 64, num_workers: int = 0, seed: int = 0, source: str = "simulate",
                 hdf5_path: str | None = None, cache_dir: str | None = None, map_scale: float | None = None,
                 fits_dir: str | None = None, fits_name_pattern: str = DEFAULT_NAME_PATTERN,
                 fits_m_nu_key: str = "M_NU", fits_angle_key: str = "ANGLE",
                 fits_split_fractions: list[float] = (0.7, 0.15, 0.15), nbody: dict[str, Any] | None = None,
                 simulation_fold: int | None = None) -> None:
        super().__init__(n_train=n_train, n_val=n_val, n_test=n_test, batch_size=batch_size,
                         num_workers=num_workers, seed=seed, source=source, hdf5_path=hdf5_path)
        check_choice("data.target", target, ("classification", "regression"))
        check_choice("data.field", field, ("gaussian", "lognormal", "nbody"))
        check_positive("data.field_deg", field_deg)
        check_positive("data.n_pix", n_pix, integer=True)
        check_positive("data.shape_noise_sigma_e", shape_noise_sigma_e, allow_zero=True)
        if galaxy_density_arcmin2 is not None:
            check_positive("data.galaxy_density_arcmin2", galaxy_density_arcmin2)
        check_positive("data.smoothing_arcmin", smoothing_arcmin, allow_zero=True)
        if n_pix < MIN_N_PIX:
            # The power-spectrum baseline bins multipoles from 2 fundamental modes up to the Nyquist multipole,
            # n_pix / 2 fundamental modes, each bin at least 1.5 fundamental modes wide (ell_bin_edges): one bin
            # needs n_pix >= 7; 8 keeps that bin off the round-off edge of the comparison.
            raise ConfigError(f"data.n_pix={n_pix}: must be >= {MIN_N_PIX}, so that the maps have Fourier modes for "
                              f"at least one multipole bin of the power-spectrum baseline")
        if ell_max is None and field_deg < self.min_field_deg(n_pix):
            raise ConfigError(f"data.field_deg={field_deg}: must be >= {self.min_field_deg(n_pix):.4g} for "
                              f"data.n_pix={n_pix}, whose pixels would need multipoles beyond ell = {MAX_ELL} from "
                              f"CAMB; use a larger field or fewer pixels")
        if ell_max is not None:
            check_positive("data.ell_max", ell_max, integer=True)
            needed = required_ell_max(field_deg, n_pix)
            if not needed <= ell_max <= MAX_ELL:
                raise ConfigError(f"data.ell_max={ell_max}: must be in [{needed}, {MAX_ELL}]: the {n_pix}-pixel "
                                  f"grid of a {field_deg} deg field has multipoles up to {needed}, and CAMB beyond "
                                  f"{MAX_ELL} is impractically slow; or leave data.ell_max unset (null)")
        field_arcmin = 60.0 * field_deg
        max_smoothing = np.sqrt(-np.log(_MIN_BEAM_POWER)) * field_arcmin / (4 * np.pi)
        if smoothing_arcmin >= max_smoothing:
            # A Gaussian beam of width theta scales the power at multipole ell by exp(-(ell theta)^2). The lowest
            # multipole the baselines use is 2 fundamental modes, ell = 4 pi / field; the beam must leave it more
            # power than float32 round-off (_MIN_BEAM_POWER), else every mode is smoothed away and the maps are
            # round-off noise (NaN in the baselines): theta < sqrt(ln(1 / _MIN_BEAM_POWER)) field / (4 pi).
            raise ConfigError(f"data.smoothing_arcmin={smoothing_arcmin}: must be < {max_smoothing:.4g} arcmin "
                              f"({max_smoothing / field_arcmin:.3g} x the {field_arcmin:g} arcmin field), or the "
                              f"smoothing erases every Fourier mode of the map")
        source_redshifts = list(source_redshifts)
        if not source_redshifts:
            raise ConfigError("data.source_redshifts=[]: give at least one source redshift, e.g. [1.0]")
        for i, z in enumerate(source_redshifts):
            if not isinstance(z, int | float) or z <= 0:
                raise ConfigError(f"data.source_redshifts[{i}]={z!r}: a source redshift must be a number > 0")
        self.m_nu_grid_given = m_nu_grid_ev is not None  # else FITS regression takes every M_nu it finds
        if target == "classification":
            for key, value in (("m_nu_massless_ev", m_nu_massless_ev), ("m_nu_massive_ev", m_nu_massive_ev)):
                check_positive(f"data.{key}", value, allow_zero=True)
            if m_nu_massive_ev <= m_nu_massless_ev:
                raise ConfigError(f"data.m_nu_massive_ev={m_nu_massive_ev}: must exceed data.m_nu_massless_ev="
                                  f"{m_nu_massless_ev}")
            self.m_nu_values = [float(m_nu_massless_ev), float(m_nu_massive_ev)]
        else:
            grid = list(m_nu_grid_ev or [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3])
            for i, m in enumerate(grid):
                check_positive(f"data.m_nu_grid_ev[{i}]", m, allow_zero=True)
            if len(grid) < 2:
                raise ConfigError(f"data.m_nu_grid_ev={grid}: regression needs at least two M_nu values")
            self.m_nu_values = sorted(float(m) for m in grid)
        self.cosmology_kwargs = dict(cosmology or {})
        self.target = target
        self.source_redshifts = [float(z) for z in source_redshifts]
        self.field_deg, self.n_pix, self.field = float(field_deg), int(n_pix), field
        self.shape_noise_sigma_e = float(shape_noise_sigma_e)
        self.galaxy_density_arcmin2 = None if galaxy_density_arcmin2 is None else float(galaxy_density_arcmin2)
        self.smoothing_arcmin = float(smoothing_arcmin)
        self.lognormal_shift = None if lognormal_shift is None else [float(s) for s in lognormal_shift]
        # Highest multipole on the grid is at the corner of Fourier space: sqrt(2) * pi / pixel.
        pixel_rad = np.deg2rad(self.field_deg) / self.n_pix
        self.ell_max = int(ell_max) if ell_max else int(np.ceil(np.sqrt(2) * np.pi / pixel_rad)) + 10
        self.cache_dir = cache_dir
        self.map_scale = map_scale
        if source == "fits":
            if not fits_dir or not Path(fits_dir).is_dir():
                raise ConfigError(f"data.fits_dir={fits_dir!r}: no such directory; data.source=fits reads the FITS "
                                  f"maps in it")
            fractions = list(fits_split_fractions)
            if len(fractions) != 3 or not all(isinstance(f, int | float) and f > 0 for f in fractions):
                raise ConfigError(f"data.fits_split_fractions={fractions}: must be three numbers > 0 (train, val, "
                                  f"test)")
        self.fits_dir, self.fits_name_pattern = fits_dir, fits_name_pattern
        self.fits_m_nu_key, self.fits_angle_key = fits_m_nu_key, fits_angle_key
        self.fits_split_fractions = [float(f) for f in fits_split_fractions]
        # Read here rather than in setup(): a bad file stops the run before the Trainer writes anything.
        self._fits_splits = self._read_fits_splits() if source == "fits" else None
        self.simulators: list[ConvergenceMapSimulator] = []
        self.spectra = []
        self.nbody_suite = None
        if field == "nbody":
            self.nbody_suite = NBodySuite.from_config(nbody or {}, key_prefix="data.nbody")
            self.nbody_suite.check_light_cone(self.source_redshifts, self.field_deg,
                                              self.cosmology(self.m_nu_values[-1]), cache_dir)
        elif nbody:
            raise ConfigError(f"data.nbody: set, but data.field={field}; use data.field=nbody for N-body maps")
        if simulation_fold is not None:
            if field != "nbody" or source != "hdf5":
                raise ConfigError(f"data.simulation_fold={simulation_fold}: deals the simulations of an N-body suite "
                                  f"read from HDF5 to the splits; needs data.field=nbody and data.source=hdf5, not "
                                  f"field={field}, source={source}")
            simulations = self.nbody_suite.simulations
            total = sum(simulations.values())
            if total % simulations["test"]:
                raise ConfigError(f"data.simulation_fold={simulation_fold}: the suite's {total} simulations do not "
                                  f"divide into folds of {simulations['test']} test simulations "
                                  f"(data.nbody.simulations={simulations}); some would never be tested")
            n_folds = total // simulations["test"]
            if isinstance(simulation_fold, bool) or not isinstance(simulation_fold, int) \
                    or not 0 <= simulation_fold < n_folds:
                raise ConfigError(f"data.simulation_fold={simulation_fold!r}: must be an integer in 0 .. {n_folds - 1} "
                                  f"(the suite's {n_folds} folds of test simulations)")
        self.simulation_fold = simulation_fold
        self._map_simulations: dict[str, np.ndarray] = {}

    @staticmethod
    def min_field_deg(n_pix: int) -> float:
        """The smallest field whose pixel grid needs no multipole above MAX_ELL (the corner mode,
        sqrt(2) pi / pixel, plus the margin of 10 that ell_max adds)."""
        return float(np.rad2deg(np.sqrt(2) * np.pi * n_pix / (MAX_ELL - 11)))

    # ----- physics -------------------------------------------------------------------------
    def cosmology(self, m_nu_ev: float) -> Cosmology:
        try:
            return Cosmology(**{**self.cosmology_kwargs, "m_nu_ev": m_nu_ev}, key_prefix="data.cosmology")
        except TypeError as err:
            raise ConfigError(f"data.cosmology: {err}") from None

    def build_simulators(self) -> None:
        if self.simulators:
            return
        for m_nu in self.m_nu_values:
            spectra = convergence_power_spectra(self.cosmology(m_nu), self.source_redshifts, self.ell_max,
                                                cache_dir=self.cache_dir)
            self.spectra.append(spectra)
            # N-body maps keep Gaussian simulators of the same spectra for the noise, the beam and the spectra check.
            self.simulators.append(ConvergenceMapSimulator(
                spectra, field="gaussian" if self.field == "nbody" else self.field,
                lognormal_shift=self.lognormal_shift, **self.observation_kwargs()))

    def observation_kwargs(self) -> dict[str, Any]:
        """Field, pixels, noise and smoothing: what the likelihood-ratio baseline must share with the maps."""
        return {"field_deg": self.field_deg, "n_pix": self.n_pix, "shape_noise_sigma_e": self.shape_noise_sigma_e,
                "galaxy_density_arcmin2": self.galaxy_density_arcmin2, "smoothing_arcmin": self.smoothing_arcmin}

    @property
    def periodic_maps(self) -> bool:
        """Whether opposite map edges are neighbours: Gaussian and lognormal maps are made on a periodic grid;
        ray-traced N-body maps and FITS maps are cut out of a larger sky (numl.sim.lensing.statistics)."""
        return self.field in ("gaussian", "lognormal") and self.source != "fits"

    def ell_bin_edges(self, n_bins: int) -> np.ndarray:
        """The maps' logarithmic multipole bins (``log_ell_bin_edges``)."""
        return log_ell_bin_edges(self.field_deg, self.n_pix, n_bins)

    def draw_labels(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Class index per map, every class equally often (to within one) in random order, and its M_nu.

        Exact balance keeps the class mixture, and so BatchNorm's batch statistics, the same in every batch.
        """
        generator = torch.Generator().manual_seed(seed)
        index = (torch.arange(n) % len(self.m_nu_values))[torch.randperm(n, generator=generator)]
        m_nu = torch.tensor(self.m_nu_values)[index]
        return index, m_nu

    def generate(self, class_index: torch.Tensor, seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Maps for the given class indices: each class's maps from its own simulator and sub-seed."""
        self.build_simulators()
        maps = torch.empty(len(class_index), len(self.source_redshifts), self.n_pix, self.n_pix, device=device)
        for k, simulator in enumerate(self.simulators):
            members = (class_index == k).nonzero().reshape(-1).to(device)
            if len(members):
                maps[members] = simulator.sample(len(members), seed=derived_seed(seed, k), device=device)
        return maps

    def simulate_maps(self, name: str, n: int, progress: bool = True) -> MapSet:
        """A fixed set of `n` maps, built in chunks of 256 from per-chunk seeds derived from (seed, name, start):
        the validation and test splits, the maps of an HDF5 file, the baselines' fitting maps."""
        maps, labels, m_nu = [], [], []
        chunks = range(0, n, 256)
        for start in track(chunks, description=f"simulating {name} maps", disable=not progress or len(chunks) < 2):
            size = min(256, n - start)
            seed = self.split_seed(name, start)
            index, m = self.draw_labels(size, seed)
            maps.append(self.generate(index, seed))
            labels.append(index)
            m_nu.append(m)
        return MapSet(torch.cat(maps), torch.cat(labels), torch.cat(m_nu))

    def fitting_maps(self, n: int) -> MapSet:
        """Maps for fitting the summary-statistic baselines: the training split when it has `n` maps or holds
        N-body or FITS maps (no other maps have their physics), else `n` maps from their own seeds."""
        if self.field == "nbody" or self.source == "fits" or (self.source == "hdf5" and len(self.events("train")) >= n):
            return self.events("train")
        return self.simulate_maps("baseline_fit", n)

    def nbody_maps(self, split: str, n: int) -> MapSet:
        """`n` maps of a split from its own N-body simulations: every class in equal numbers, spread evenly over
        the split's simulations of that class, shape noise and smoothing added as for the other fields."""
        self.build_simulators()
        index, m_nu = self.draw_labels(n, self.split_seed(split, "labels"))
        seed = self.split_seed(split, "nbody")
        self.nbody_suite.simulate_light_cones(
            [(self.cosmology(m), sim_seed) for k, m in enumerate(self.m_nu_values)
             for sim_seed in self.nbody_suite.simulation_seeds(split, seed, k)],
            self.source_redshifts, self.cache_dir, description=f"N-body simulations ({split})")
        maps = torch.empty(n, len(self.source_redshifts), self.n_pix, self.n_pix)
        for k, m in enumerate(self.m_nu_values):
            members = (index == k).nonzero().reshape(-1)
            maps[members] = self.nbody_suite.convergence_maps(
                self.cosmology(m), split, len(members), self.source_redshifts, self.field_deg, self.n_pix,
                seed=seed, class_index=k, cache_dir=self.cache_dir)
        simulator = self.simulators[0]
        generator = torch.Generator().manual_seed(self.split_seed(split, "shape_noise"))
        return MapSet(simulator.observe(maps, generator), index, m_nu)

    def metadata(self) -> dict[str, Any]:
        """Everything that determines the maps; an HDF5 file must match it to be used."""
        return {
            "cosmology": self.cosmology(0.0).physics_dict() | {"m_nu_ev": None}, "target": self.target,
            "m_nu_values_ev": self.m_nu_values, "source_redshifts": self.source_redshifts,
            "field_deg": self.field_deg, "n_pix": self.n_pix, "field": self.field,
            "shape_noise_sigma_e": self.shape_noise_sigma_e, "galaxy_density_arcmin2": self.galaxy_density_arcmin2,
            "smoothing_arcmin": self.smoothing_arcmin, "lognormal_shift": self.lognormal_shift,
        } | ({"nbody": self.nbody_suite.metadata()} if self.nbody_suite else {})

    # ----- FITS maps ---------------------------------------------------------------------------
    def read_source(self) -> dict[str, MapSet]:
        return self._fits_splits

    def _read_fits_splits(self) -> dict[str, MapSet]:
        """The FITS directory's maps in train / val / test (source="fits"); sets the field, pixels and M_nu
        values from the files."""
        found = read_fits_directory(self.fits_dir, self.source_redshifts, self.fits_name_pattern, self.fits_m_nu_key,
                                    self.fits_angle_key, self.field_deg)
        wanted = (self.m_nu_values if self.target == "classification" or self.m_nu_grid_given
                  else sorted(set(found.m_nu_ev.tolist())))
        class_index = np.full(len(found.m_nu_ev), -1)
        for k, m_nu in enumerate(wanted):
            class_index[np.abs(found.m_nu_ev - m_nu) < 1e-4] = k
            if not (class_index == k).any():
                raise ConfigError(f"data.fits_dir={self.fits_dir!r}: no map at M_nu = {m_nu:g} eV (found "
                                  f"{', '.join(f'{m:g}' for m in sorted(set(found.m_nu_ev.tolist())))} eV)")
        keep = class_index >= 0
        self.m_nu_values = [float(m) for m in wanted]
        self.field_deg, self.n_pix = found.field_deg, int(found.maps.shape[-1])
        index = split_indices(found.m_nu_ev[keep], [g for g, k in zip(found.groups, keep, strict=True) if k],
                              self.fits_split_fractions, self.seed)
        maps, labels = found.maps[keep], torch.from_numpy(class_index[keep])
        m_nu = torch.tensor(self.m_nu_values, dtype=torch.float32)[labels]
        index = {split: torch.from_numpy(idx[:self.split_sizes[split]]) for split, idx in index.items()}
        return {split: MapSet(maps[idx], labels[idx], m_nu[idx]) for split, idx in index.items()}

    def write_fits(self, directory: str | Path) -> list[Path]:
        """Every split's maps (training maps from their own seeds) as FITS files in MassiveNuS's layout, for
        data.source=fits; the reader makes its own splits."""
        self.build_simulators()
        splits = [self.nbody_maps(split, self.split_sizes[split]) if self.field == "nbody"
                  else self.simulate_maps(split, self.split_sizes[split]) for split in SPLITS]
        return write_fits_maps(torch.cat([s.maps for s in splits]), torch.cat([s.m_nu for s in splits]), directory,
                               self.field_deg, self.source_redshifts, self.fits_m_nu_key, self.fits_angle_key)

    # ----- SimulatedDataModule hooks -----------------------------------------------------------
    def simulated_splits(self) -> tuple[str, ...]:
        if self.field == "nbody":
            return ("train", "val", "test")
        return ("val", "test")  # training maps are made per batch, on the training device

    def simulate_split(self, split: str) -> MapSet:
        if self.field == "nbody":
            return self.nbody_maps(split, self.split_sizes[split])
        self.build_simulators()
        return self.simulate_maps(split, self.split_sizes[split])

    def write_split(self, group: h5py.Group, events: MapSet) -> None:
        group.create_dataset("convergence_map", data=events.maps.numpy(), chunks=True, compression="lzf")
        group.create_dataset("label", data=events.labels.numpy())
        group.create_dataset("m_nu_ev", data=events.m_nu.numpy())

    def split_length(self, group: h5py.Group) -> int:
        return len(group["label"])

    def read_split(self, group: h5py.Group, n: int) -> MapSet:
        return MapSet(torch.from_numpy(group["convergence_map"][:n]), torch.from_numpy(group["label"][:n]),
                      torch.from_numpy(group["m_nu_ev"][:n]))

    def read_hdf5(self, path: str | Path, splits: list[str] | tuple[str, ...] = SPLITS,
                  whole: bool = False) -> dict[str, MapSet]:
        """N-body suites: each map's simulation from the split's stored labels (`map_simulations`); with
        `simulation_fold` the whole suite is read and its simulations dealt to the splits (`simulation_folds`)."""
        if self.field != "nbody" or whole:
            return super().read_hdf5(path, splits, whole)
        simulations = self.nbody_suite.simulations
        if self.simulation_fold is None:
            out = super().read_hdf5(path, splits)
            with h5py.File(path, "r") as h5:  # the whole split's labels place its first n_<split> maps
                if "numl_generator" not in h5.attrs:  # generated maps come from no simulation
                    for split in splits:
                        groups = simulation_of_maps(h5[split]["label"][:], simulations, split)
                        self._map_simulations[split] = groups[:len(out[split])]
            return out
        with h5py.File(path, "r") as h5:
            if "numl_generator" in h5.attrs:
                raise ConfigError(f"data.simulation_fold={self.simulation_fold}: {path} holds maps written by "
                                  "numl.generate, not traced through simulations; read it without a fold")
        stored = super().read_hdf5(path, SPLITS, whole=True)
        groups = {split: simulation_of_maps(stored[split].labels.numpy(), simulations, split) for split in SPLITS}
        out = {}
        for split, members in simulation_folds(simulations, self.simulation_fold).items():
            taken = {s: torch.from_numpy(np.isin(groups[s], members)) for s in SPLITS}  # in the file's order
            out[split] = MapSet(*(torch.cat([getattr(stored[s], key)[taken[s]] for s in SPLITS])
                                  for key in ("maps", "labels", "m_nu")))
            self._map_simulations[split] = np.concatenate([groups[s][taken[s].numpy()] for s in SPLITS])
            self.split_sizes[split] = len(out[split])
        log.info("data.simulation_fold=%d: %s", self.simulation_fold, "; ".join(
            f"{split} simulations {members.tolist()} ({len(out[split])} maps)"
            for split, members in simulation_folds(simulations, self.simulation_fold).items()))
        return {split: out[split] for split in splits}

    def map_simulations(self, split: str) -> np.ndarray:
        """The simulation each map of an N-body split was traced through, numbered over the suite's train, val
        and test simulations (with matched phases one number is the same initial phases in every cosmology).
        Maps of one simulation share its modes: an error that treats them as independent is too small."""
        if self.field != "nbody" or self.source == "fits":
            raise ConfigError(f"map_simulations: data.field={self.field}, data.source={self.source}; only N-body "
                              "maps numl traced know their simulations")
        events = self.events(split)
        if self.source == "hdf5" and split not in self._map_simulations:
            raise ConfigError(f"map_simulations: {self.hdf5_path} holds maps written by numl.generate, not traced "
                              "through simulations")
        if split not in self._map_simulations:  # made here, whole: every split follows simulation_of_maps
            self._map_simulations[split] = simulation_of_maps(events.labels.numpy(), self.nbody_suite.simulations,
                                                              split)
        return self._map_simulations[split]

    def dataset(self, split: str) -> MapSet:
        return self.events(split)

    def generated_events(self, convergence_map: np.ndarray, conditions: np.ndarray, seed: int) -> MapSet:
        """Maps in `simulate_split`'s form from a generator's convergence maps [N, n_z, n_pix, n_pix] at M_nu
        [N, 1] (eV): class index of each M_nu among `m_nu_values` (classification: M_nu must be one of them;
        regression: the nearest grid value). `seed` is unused: nothing else in the maps is random."""
        expected = (len(self.source_redshifts), self.n_pix, self.n_pix)
        if convergence_map.shape[1:] != expected:
            raise ValueError(f"generated convergence_map shape {convergence_map.shape[1:]}: expected {expected}")
        m_nu = torch.as_tensor(np.asarray(conditions, dtype=np.float32).reshape(len(conditions), -1)[:, 0])
        distance = (m_nu[:, None] - torch.tensor(self.m_nu_values)[None, :]).abs()
        index = distance.argmin(dim=1)
        if self.target == "classification" and bool((distance.min(dim=1).values > 1e-6).any()):
            off = float(m_nu[distance.min(dim=1).values > 1e-6][0])
            raise ConfigError(f"condition.m_nu_ev={off:g}: the generator's data classify M_nu "
                              f"{' vs '.join(f'{m:g}' for m in self.m_nu_values)} eV; generated maps need one of these")
        return MapSet(torch.as_tensor(convergence_map, dtype=torch.float32), index, m_nu)

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self.map_scale is None:
            # One number for all channels and classes, from the validation maps: keeps inputs O(1).
            self.map_scale = float(self.events("val").maps.std())

    # ----- Lightning -----------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        if self.source != "simulate" or self.field == "nbody":  # a fixed set of training maps
            if len(self.events("train")) < self.batch_size:  # drop_last would leave no training step at all
                raise ConfigError(f"data.n_train={len(self.events('train'))}: fewer training maps than "
                                  f"data.batch_size={self.batch_size}; lower data.batch_size or add maps")
            return DataLoader(self.events("train"), batch_size=self.batch_size, shuffle=True,
                              num_workers=self.num_workers, drop_last=True, persistent_workers=self.num_workers > 0,
                              generator=self.loader_generator("train"))
        n_batches = max(1, self.split_sizes["train"] // self.batch_size)
        return DataLoader(_SeedDataset(self), sampler=_BatchKeys(n_batches), batch_size=None,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          generator=self.loader_generator("train"))

    def on_after_batch_transfer(self, batch: dict[str, torch.Tensor], dataloader_idx: int) -> dict[str, torch.Tensor]:
        if "seed" in batch:  # an on-the-fly training batch: make its maps where the model lives
            device = batch["label"].device
            maps = self.generate(batch["label"], int(batch.pop("seed")), device=device)
            batch["convergence_map"] = maps
        batch["convergence_map"] = batch["convergence_map"] / self.map_scale
        return batch
