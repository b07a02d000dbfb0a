"""PETALO events for position regression and on-the-fly event tagging.

Events are simulated once per split (seeds derived from ``seed``) and kept in memory, or read from an
HDF5 file written by ``python -m numl.simulate`` (``source="hdf5"``).

Batches are dicts:
- ``sipm_pattern`` [B, C, n_rows, window_columns]: channels inner-face charge, outer-face charge [pe] and,
  with ``use_time``, inner and outer first-photon time [ns] relative to the earliest photon.
- ``position_mm`` [B, 3]: first interaction point (r, r * (phi - phi_ref), z); ``depth_mm`` = r - R_in.
- ``multi_site`` (1 = a deposit lies more than ``multi_site_distance_mm`` from the first interaction),
  ``photoelectric``, ``energy_kev``, ``n_interactions``, ``total_charge_pe``, ``phi_ref_rad``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytorch_lightning as pl
import torch
from rich.progress import track
from torch.utils.data import DataLoader, Dataset

from numl.sim.petalo import EVENT_KEYS, PetaloConfig, simulate_events
from numl.utils.errors import ConfigError, check_choice, check_positive
from numl.utils.hdf5 import open_checked, write_metadata
from numl.utils.seeds import derived_seed

SIMULATOR_NAME = "numl.sim.petalo"
SPLITS = ("train", "val", "test")
#: events simulated per call, so that a progress bar can move and memory stays bounded
CHUNK_EVENTS = 2048




class PetaloEvents(Dataset):
    """Simulated events (numpy arrays from `simulate_events`) served as dicts of tensors."""

    def __init__(self, events: dict[str, np.ndarray], use_time: bool, inner_radius_mm: float) -> None:
        channels = [events["sipm_charge"]]
        if use_time:
            channels.append(events["sipm_time"])
        self.pattern = torch.from_numpy(np.concatenate(channels, axis=1).astype(np.float32))
        self.tensors = {
            k: torch.from_numpy(np.asarray(events[k])) for k in EVENT_KEYS if k not in ("sipm_charge", "sipm_time")
        }
        self.tensors["depth_mm"] = self.tensors["position_mm"][:, 0] - inner_radius_mm
        self.events = events

    def __len__(self) -> int:
        return len(self.pattern)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"sipm_pattern": self.pattern[i], **{k: v[i] for k, v in self.tensors.items()}}


class PetaloDataModule(pl.LightningDataModule):
    """PETALO ring events.

    Args:
        detector: `numl.sim.petalo.PetaloConfig` fields (geometry, light, timing, window); defaults are
            the petalosim ring of PHYSICS.md.
        use_time: add the first-photon time channels to the SiPM pattern.
        full_absorption_only: keep only gammas that deposit all 511 keV (what a photopeak energy window
            selects); otherwise every gamma that leaves at least one photoelectron.
        device: where the light simulation runs ("cpu" or "cuda").
    """

    def __init__(
        self,
        detector: dict[str, Any] | None = None,
        use_time: bool = True,
        full_absorption_only: bool = True,
        n_train: int = 20000,
        n_val: int = 2000,
        n_test: int = 5000,
        batch_size: int = 256,
        num_workers: int = 0,
        seed: int = 0,
        source: str = "simulate",
        hdf5_path: str | None = None,
        device: str = "cpu",
        progress: bool = True,
    ) -> None:
        super().__init__()
        check_choice("data.source", source, ("simulate", "hdf5"))
        check_choice("data.use_time", use_time, (True, False))
        check_choice("data.full_absorption_only", full_absorption_only, (True, False))
        for key, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test), ("batch_size", batch_size)):
            check_positive(f"data.{key}", value, integer=True)
        check_positive("data.num_workers", num_workers, integer=True, allow_zero=True)
        if source == "hdf5" and not hdf5_path:
            raise ConfigError("data.hdf5_path: missing; data.source=hdf5 needs the file written by numl.simulate")
        self.config = PetaloConfig.from_kwargs(prefix="data.detector", **dict(detector or {}))
        self.use_time, self.full_absorption_only = use_time, full_absorption_only
        self.sizes = {"train": n_train, "val": n_val, "test": n_test}
        self.n_train, self.n_val, self.n_test = n_train, n_val, n_test
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, int(seed)
        self.source, self.hdf5_path, self.device, self.progress = source, hdf5_path, device, progress
        self.splits: dict[str, PetaloEvents] = {}

    @property
    def pattern_shape(self) -> tuple[int, int, int]:
        """Shape of one `sipm_pattern`: (channels, rows, window columns)."""
        return (4 if self.use_time else 2, self.config.n_rows, self.config.window_columns)

    def metadata(self) -> dict[str, Any]:
        """Everything that determines the events; an HDF5 file must match it to be used."""
        return {"detector": self.config.to_dict(), "full_absorption_only": self.full_absorption_only}

    def simulate_split(self, split: str, n: int) -> dict[str, np.ndarray]:
        chunks = range(0, n, CHUNK_EVENTS)
        parts = [
            simulate_events(
                self.config,
                min(CHUNK_EVENTS, n - start),
                derived_seed(self.seed, split, start),
                full_absorption_only=self.full_absorption_only,
                device=self.device,
            )
            for start in track(
                chunks, description=f"simulating PETALO {split} events", disable=not self.progress or len(chunks) < 2
            )
        ]
        return {k: np.concatenate([p[k] for p in parts]) for k in EVENT_KEYS}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        if self.source == "hdf5":
            with open_checked(self.hdf5_path, SIMULATOR_NAME, self.metadata()) as h5:
                for split in SPLITS:
                    if split not in h5:
                        raise ConfigError(f"data.hdf5_path={self.hdf5_path!r}: no {split!r} group in the file")
                    n_file = len(h5[split]["position_mm"])
                    if n_file < self.sizes[split]:
                        raise ConfigError(
                            f"data.n_{split}={self.sizes[split]}: the file {self.hdf5_path} holds only "
                            f"{n_file} {split} events"
                        )
                    events = {k: h5[split][k][: self.sizes[split]] for k in EVENT_KEYS}
                    self.splits[split] = PetaloEvents(events, self.use_time, self.config.inner_radius_mm)
        else:
            for split in SPLITS:
                self.splits[split] = PetaloEvents(
                    self.simulate_split(split, self.sizes[split]), self.use_time, self.config.inner_radius_mm
                )

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        return DataLoader(
            self.splits[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    def write_hdf5(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".part")  # a killed write never leaves a file that looks complete
        with h5py.File(tmp, "w") as h5:
            write_metadata(h5, SIMULATOR_NAME, self.metadata())
            h5.attrs["seed"] = self.seed
            for split in SPLITS:
                events = self.simulate_split(split, self.sizes[split])
                group = h5.create_group(split)
                group.attrs["seed"] = derived_seed(self.seed, split, 0)
                for key, value in events.items():
                    group.create_dataset(key, data=value, chunks=True if value.ndim > 1 else None, compression="lzf")
        tmp.replace(path)
        return path

    def run_baseline(self) -> dict[str, float]:
        """Charge centroid + r-map (fit on the training events) on the test events, same metrics as the network."""
        from numl.baselines.petalo import CentroidRMap, resolution_metrics

        self.setup()
        baseline = CentroidRMap(self.config).fit(self.splits["train"].events)
        test = self.splits["test"].events
        predicted = baseline.predict(test["sipm_charge"])
        self.baseline_prediction = predicted
        return {f"baseline/{k}": v for k, v in resolution_metrics(predicted, test["position_mm"]).items()}

    def save_figures(self, output_dir: Path, predictions: dict[str, torch.Tensor] | None = None) -> list[Path]:
        """Example events; with position predictions and a baseline run, network vs centroid plots."""
        from numl.baselines.petalo import plot_example_events

        self.setup()
        output_dir = Path(output_dir)
        paths = [plot_example_events(self.splits["test"].events, self.config, output_dir / "example_events.png")]
        baseline = getattr(self, "baseline_prediction", None)
        if predictions is not None and "position_mm_pred" in predictions and baseline is not None:
            from numl.tasks.petalo import plot_residuals, plot_resolution_vs_depth

            numpy_predictions = {k: v.numpy() for k, v in predictions.items()}
            # The test loader is not shuffled: predictions cover the first test events (all but in fast_dev_run).
            baseline = baseline[: len(numpy_predictions["position_mm"])]
            paths.append(plot_residuals(numpy_predictions, output_dir / "residuals_vs_centroid.png", baseline))
            paths.append(
                plot_resolution_vs_depth(numpy_predictions, output_dir / "resolution_vs_depth.png", baseline)[0]
            )
        return paths
