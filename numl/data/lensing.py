"""Convergence maps of massive vs massless neutrino cosmologies, for classification or M_nu regression.

Two sources of maps:
- ``source="simulate"``: training maps are fresh every epoch and generated on the training device
  after the batch (just seeds and labels) has been moved there, so the GPU makes its own data.
  Validation and test maps are fixed, from seeds derived from ``seed``.
- ``source="hdf5"``: maps written by ``python -m numl.simulate``; a file whose metadata does not
  match the requested config is refused.

Batches are dicts: ``convergence_map`` [B, n_z, N, N] (divided by ``map_scale`` so the network sees
O(1) numbers), ``label`` (1 = massive), ``m_nu_ev``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytorch_lightning as pl
import torch
from rich.progress import track
from torch.utils.data import DataLoader, Dataset, Sampler

from numl.sim.lensing import (
    ConvergenceMapSimulator,
    Cosmology,
    convergence_power_spectra,
    measure_power_spectrum,
)
from numl.utils.errors import ConfigError, check_choice, check_positive
from numl.utils.hdf5 import open_checked, write_metadata
from numl.utils.seeds import derived_seed

SIMULATOR_NAME = "numl.sim.lensing"




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
        return self.dm.n_train

    def __getitem__(self, key):
        epoch, index = key
        seed = derived_seed(self.dm.seed, "train", epoch, index)
        labels, m_nu = self.dm.draw_labels(self.dm.batch_size, seed)
        return {"seed": torch.tensor(seed), "label": labels, "m_nu_ev": m_nu}


class _MapDataset(Dataset):
    def __init__(self, maps: torch.Tensor, labels: torch.Tensor, m_nu: torch.Tensor) -> None:
        self.maps, self.labels, self.m_nu = maps, labels, m_nu

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return {"convergence_map": self.maps[i], "label": self.labels[i], "m_nu_ev": self.m_nu[i]}


class LensingDataModule(pl.LightningDataModule):
    """Weak-lensing convergence maps for massive vs massless neutrinos.

    Args:
        cosmology: `numl.sim.lensing.Cosmology` fields shared by all classes (M_nu is set per class).
        target: "classification" (massless vs ``m_nu_massive_ev``) or "regression" (M_nu drawn from
            ``m_nu_grid_ev``, a grid of cosmologies, since each needs its own CAMB run).
        source_redshifts: source planes, one map channel each (tomography with several).
        field_deg, n_pix: side of the square periodic map in degrees, and pixels per side.
        field: "gaussian" or "lognormal".
        galaxy_density_arcmin2: source galaxies per arcmin^2 for shape noise; null = noise-free.
    """

    def __init__(self, cosmology: dict[str, Any] | None = None, target: str = "classification",
                 m_nu_massless_ev: float = 0.0, m_nu_massive_ev: float = 0.1,
                 m_nu_grid_ev: list[float] | None = None, source_redshifts: list[float] = (1.0,),
                 field_deg: float = 5.0, n_pix: int = 128, field: str = "gaussian",
                 shape_noise_sigma_e: float = 0.26, galaxy_density_arcmin2: float | None = 30.0,
                 smoothing_arcmin: float = 0.0, lognormal_shift: list[float] | None = None,
                 ell_max: int | None = None, n_train: int = 2048, n_val: int = 512, n_test: int = 1024,
                 batch_size: int = 64, num_workers: int = 0, seed: int = 0, source: str = "simulate",
                 hdf5_path: str | None = None, cache_dir: str | None = None, map_scale: float | None = None) -> None:
        super().__init__()
        check_choice("data.target", target, ("classification", "regression"))
        check_choice("data.field", field, ("gaussian", "lognormal"))
        check_choice("data.source", source, ("simulate", "hdf5"))
        check_positive("data.field_deg", field_deg)
        check_positive("data.n_pix", n_pix, integer=True)
        check_positive("data.shape_noise_sigma_e", shape_noise_sigma_e, allow_zero=True)
        if galaxy_density_arcmin2 is not None:
            check_positive("data.galaxy_density_arcmin2", galaxy_density_arcmin2)
        check_positive("data.smoothing_arcmin", smoothing_arcmin, allow_zero=True)
        for key in ("n_train", "n_val", "n_test", "batch_size"):
            check_positive(f"data.{key}", locals()[key], integer=True)
        source_redshifts = list(source_redshifts)
        if not source_redshifts:
            raise ConfigError("data.source_redshifts=[]: give at least one source redshift, e.g. [1.0]")
        for i, z in enumerate(source_redshifts):
            if not isinstance(z, int | float) or z <= 0:
                raise ConfigError(f"data.source_redshifts[{i}]={z!r}: a source redshift must be a number > 0")
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
        if source == "hdf5" and not hdf5_path:
            raise ConfigError("data.hdf5_path: missing; data.source=hdf5 needs the file written by numl.simulate")
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
        self.n_train, self.n_val, self.n_test = n_train, n_val, n_test
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, int(seed)
        self.source, self.hdf5_path = source, hdf5_path
        self.cache_dir = cache_dir
        self.map_scale = map_scale
        self.simulators: list[ConvergenceMapSimulator] = []
        self.spectra = []
        self._splits: dict[str, _MapDataset] = {}
        self._h5_train: _MapDataset | None = None

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
            self.simulators.append(ConvergenceMapSimulator(
                spectra, field=self.field, lognormal_shift=self.lognormal_shift, **self.observation_kwargs()))

    def observation_kwargs(self) -> dict[str, Any]:
        """Field, pixels, noise and smoothing: what the likelihood-ratio baseline must share with the maps."""
        return {"field_deg": self.field_deg, "n_pix": self.n_pix, "shape_noise_sigma_e": self.shape_noise_sigma_e,
                "galaxy_density_arcmin2": self.galaxy_density_arcmin2, "smoothing_arcmin": self.smoothing_arcmin}

    def ell_bin_edges(self, n_bins: int) -> np.ndarray:
        """Logarithmic multipole bins from twice the fundamental mode to the grid's edge, each at least
        1.5 fundamental modes wide so that small maps have Fourier modes in every bin."""
        ell_fundamental = 2 * np.pi / np.deg2rad(self.field_deg)
        edges = [2 * ell_fundamental]
        for edge in np.geomspace(edges[0], np.pi * self.n_pix / np.deg2rad(self.field_deg), n_bins + 1)[1:]:
            if edge >= edges[-1] + 1.5 * ell_fundamental:
                edges.append(edge)
        return np.asarray(edges)

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

    def _fixed_split(self, split: str, n: int, progress: bool = True) -> _MapDataset:
        """Validation/test maps: a fixed set, built in chunks from per-chunk seeds."""
        maps, labels, m_nu = [], [], []
        chunks = range(0, n, 256)
        for start in track(chunks, description=f"simulating {split} maps", disable=not progress or len(chunks) < 2):
            size = min(256, n - start)
            seed = derived_seed(self.seed, split, start)
            index, m = self.draw_labels(size, seed)
            maps.append(self.generate(index, seed))
            labels.append(index)
            m_nu.append(m)
        return _MapDataset(torch.cat(maps), torch.cat(labels), torch.cat(m_nu))

    def metadata(self) -> dict[str, Any]:
        """Everything that determines the maps; an HDF5 file must match it to be used."""
        return {
            "cosmology": self.cosmology(0.0).physics_dict() | {"m_nu_ev": None}, "target": self.target,
            "m_nu_values_ev": self.m_nu_values, "source_redshifts": self.source_redshifts,
            "field_deg": self.field_deg, "n_pix": self.n_pix, "field": self.field,
            "shape_noise_sigma_e": self.shape_noise_sigma_e, "galaxy_density_arcmin2": self.galaxy_density_arcmin2,
            "smoothing_arcmin": self.smoothing_arcmin, "lognormal_shift": self.lognormal_shift,
        }

    # ----- Lightning -----------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self._splits:
            return
        if self.source == "hdf5":
            self._load_hdf5()
        else:
            self.build_simulators()
            self._splits["val"] = self._fixed_split("val", self.n_val)
            self._splits["test"] = self._fixed_split("test", self.n_test)
        if self.map_scale is None:
            # One number for all channels and classes, from the validation maps: keeps inputs O(1).
            self.map_scale = float(self._splits["val"].maps.std())

    def _load_hdf5(self) -> None:
        with open_checked(self.hdf5_path, SIMULATOR_NAME, self.metadata()) as h5:
            for split in ("train", "val", "test"):
                if split not in h5:
                    raise ConfigError(f"data.hdf5_path={self.hdf5_path!r}: no {split!r} group in the file")
                group = h5[split]
                dataset = _MapDataset(torch.from_numpy(group["convergence_map"][...]),
                                      torch.from_numpy(group["label"][...]), torch.from_numpy(group["m_nu_ev"][...]))
                if split == "train":
                    self._h5_train = dataset
                else:
                    self._splits[split] = dataset

    def _loader_generator(self, split: str) -> torch.Generator:
        # A DataLoader draws its workers' base seed when an iterator starts; from its own generator that
        # draw leaves the global RNG (dropout) alone, so a resumed run sees the same dropout masks.
        return torch.Generator().manual_seed(derived_seed(self.seed, split, "loader"))

    def train_dataloader(self) -> DataLoader:
        if self.source == "hdf5":
            return DataLoader(self._h5_train, batch_size=self.batch_size, shuffle=True, num_workers=self.num_workers,
                              drop_last=True, persistent_workers=self.num_workers > 0,
                              generator=self._loader_generator("train"))
        n_batches = max(1, self.n_train // self.batch_size)
        return DataLoader(_SeedDataset(self), sampler=_BatchKeys(n_batches), batch_size=None,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          generator=self._loader_generator("train"))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self._splits["val"], batch_size=self.batch_size, num_workers=self.num_workers,
                          generator=self._loader_generator("val"))

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self._splits["test"], batch_size=self.batch_size, num_workers=self.num_workers,
                          generator=self._loader_generator("test"))

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    def on_after_batch_transfer(self, batch: dict[str, torch.Tensor], dataloader_idx: int) -> dict[str, torch.Tensor]:
        if "seed" in batch:  # an on-the-fly training batch: make its maps where the model lives
            device = batch["label"].device
            maps = self.generate(batch["label"], int(batch.pop("seed")), device=device)
            batch["convergence_map"] = maps
        batch["convergence_map"] = batch["convergence_map"] / self.map_scale
        return batch

    # ----- HDF5, baselines, figures --------------------------------------------------------
    def write_hdf5(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.build_simulators()
        tmp = path.with_suffix(path.suffix + ".part")  # a killed write never leaves a file that looks complete
        with h5py.File(tmp, "w") as h5:
            write_metadata(h5, SIMULATOR_NAME, self.metadata())
            h5.attrs["seed"] = self.seed
            for split, n in (("train", self.n_train), ("val", self.n_val), ("test", self.n_test)):
                data = self._fixed_split(split, n)
                group = h5.create_group(split)
                group.create_dataset("convergence_map", data=data.maps.numpy(), chunks=True, compression="lzf")
                group.create_dataset("label", data=data.labels.numpy())
                group.create_dataset("m_nu_ev", data=data.m_nu.numpy())
        tmp.replace(path)
        return path

    def run_baseline(self) -> dict[str, float]:
        """Likelihood-ratio test with the known spectra and a power-spectrum classifier, on the test maps."""
        from sklearn.metrics import roc_auc_score

        from numl.baselines.lensing import GaussianLikelihoodRatio, PowerSpectrumClassifier, PowerSpectrumGridRegressor

        self.build_simulators()
        test = self._splits["test"]
        labels = test.labels.numpy()
        # The power-spectrum methods learn means and covariances from training maps: at least 256 of
        # them per cosmology, so that the covariance is well conditioned even in debug runs.
        fit = self._h5_train
        n_fit = max(self.n_train, 256 * len(self.m_nu_values))
        if fit is None or len(fit) < n_fit:  # a small file (a debug run) gets simulated fitting maps instead
            fit = self._fixed_split("baseline_fit", n_fit)
        n_bins = int(min(20, max(2, min(int((fit.labels == k).sum()) for k in range(len(self.m_nu_values))) // 4)))
        ell_edges = self.ell_bin_edges(n_bins)
        if self.target == "regression":
            regressor = PowerSpectrumGridRegressor(self.field_deg, ell_edges).fit(fit.maps, fit.labels,
                                                                                   self.m_nu_values)
            mean, sigma = regressor.posterior(test.maps)
            truth = test.m_nu.numpy()
            return {"baseline/power_spectrum/rmse": float(np.sqrt(np.mean((mean - truth) ** 2))),
                    "baseline/power_spectrum/coverage_1sigma": float(np.mean(np.abs(mean - truth) <= sigma))}
        power_spectrum = PowerSpectrumClassifier(self.field_deg, ell_edges).fit(fit.maps, fit.labels)
        scores = {"power-spectrum classifier": power_spectrum.log_likelihood_ratio(test.maps)}
        if self.field == "gaussian":
            # Bayes-optimal on Gaussian maps only; on lognormal maps it is not the likelihood, so not reported.
            optimal = GaussianLikelihoodRatio(self.spectra[0], self.spectra[1], **self.observation_kwargs())
            scores["likelihood ratio (optimal)"] = optimal.log_likelihood_ratio(test.maps)
        metrics, self.baseline_scores = {}, {}
        for name, score in scores.items():
            score = score.detach().cpu().numpy()
            key = "power_spectrum" if name.startswith("power") else "likelihood_ratio"
            metrics[f"baseline/{key}/acc"] = float(((score > 0).astype(int) == labels).mean())
            metrics[f"baseline/{key}/auroc"] = float(roc_auc_score(labels, score))
            self.baseline_scores[name] = (score, labels)
        return metrics

    def save_figures(self, output_dir: Path, predictions: dict[str, torch.Tensor] | None = None) -> list[Path]:
        from numl.data.lensing_figures import plot_example_maps, plot_spectra_check

        self.build_simulators()
        test = self._splits["test"]
        paths = [plot_example_maps(test.maps, test.labels, self.m_nu_values, self.field_deg,
                                   output_dir / "example_maps.png")]
        ell_edges = self.ell_bin_edges(15)
        measured = [measure_power_spectrum(test.maps[test.labels == k][:256], self.field_deg, ell_edges)
                    for k in range(len(self.m_nu_values)) if (test.labels == k).any()]
        paths.append(plot_spectra_check(self.simulators, self.m_nu_values, measured, output_dir / "power_spectra.png"))
        if predictions is not None and "score" in predictions and getattr(self, "baseline_scores", None):
            from numl.utils.plots import save_roc_curve

            paths.append(save_roc_curve(predictions["score"], predictions["label"], output_dir / "roc_vs_baselines.png",
                                        positive="massive", negative="massless", extra_curves=self.baseline_scores))
        return paths
