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

from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from numl.data.base import SimulatedDataModule
from numl.sim.petalo import EVENT_KEYS, PetaloConfig, simulate_events
from numl.sim.petalo.light import column_phi_rad
from numl.utils.errors import check_choice
from numl.utils.progress import track

SIMULATOR_NAME = "numl.sim.petalo"
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


class PetaloDataModule(SimulatedDataModule):
    """PETALO ring events.

    Args:
        detector: `numl.sim.petalo.PetaloConfig` fields (geometry, light, timing, window); defaults are
            the petalosim ring of PHYSICS.md.
        use_time: add the first-photon time channels to the SiPM pattern.
        full_absorption_only: keep only gammas that deposit all 511 keV (what a photopeak energy window
            selects); otherwise every gamma that leaves at least one photoelectron.
        device: where the light simulation runs ("cpu" or "cuda").
        The split sizes, seed and source are those of `numl.data.base.SimulatedDataModule`.
    """

    simulator_name = SIMULATOR_NAME

    def __init__(self, detector: dict[str, Any] | None = None, use_time: bool = True,
                 full_absorption_only: bool = True, n_train: int = 20000, n_val: int = 2000, n_test: int = 5000,
                 batch_size: int = 256, num_workers: int = 0, seed: int = 0, source: str = "simulate",
                 hdf5_path: str | None = None, device: str = "cpu", progress: bool = True) -> None:
        super().__init__(n_train=n_train, n_val=n_val, n_test=n_test, batch_size=batch_size,
                         num_workers=num_workers, seed=seed, source=source, hdf5_path=hdf5_path)
        check_choice("data.use_time", use_time, (True, False))
        check_choice("data.full_absorption_only", full_absorption_only, (True, False))
        self.config = PetaloConfig.from_kwargs(prefix="data.detector", **dict(detector or {}))
        self.use_time, self.full_absorption_only = use_time, full_absorption_only
        self.device, self.progress = device, progress

    @property
    def pattern_shape(self) -> tuple[int, int, int]:
        """Shape of one `sipm_pattern`: (channels, rows, window columns)."""
        return (4 if self.use_time else 2, self.config.n_rows, self.config.window_columns)

    def metadata(self) -> dict[str, Any]:
        return {"detector": self.config.to_dict(), "full_absorption_only": self.full_absorption_only}

    def simulate_split(self, split: str) -> dict[str, np.ndarray]:
        """Events in chunks of CHUNK_EVENTS, each from its own seed (split, first event)."""
        n = self.split_sizes[split]
        chunks = range(0, n, CHUNK_EVENTS)
        parts = [
            simulate_events(self.config, min(CHUNK_EVENTS, n - start), self.split_seed(split, start),
                            full_absorption_only=self.full_absorption_only, device=self.device)
            for start in track(chunks, description=f"simulating PETALO {split} events",
                               disable=not self.progress or len(chunks) < 2)
        ]
        return {k: np.concatenate([p[k] for p in parts]) for k in EVENT_KEYS}

    def write_split(self, group: h5py.Group, events: dict[str, np.ndarray]) -> None:
        for key, value in events.items():
            group.create_dataset(key, data=value, chunks=True if value.ndim > 1 else None, compression="lzf")

    def split_length(self, group: h5py.Group) -> int:
        return len(group["position_mm"])

    def read_split(self, group: h5py.Group, n: int) -> dict[str, np.ndarray]:
        return {k: group[k][:n] for k in EVENT_KEYS}

    def generated_events(self, sipm_pattern: np.ndarray, position_mm: np.ndarray, seed: int) -> dict[str, np.ndarray]:
        """Events in `simulate_split`'s form from a generator's SiPM patterns at first interaction points.

        Charges are rounded to whole photoelectrons and a SiPM without charge gets time 0, as the readout
        gives. What a generator conditioned on the interaction point does not produce is marked unknown:
        `n_interactions` -1, `multi_site`, `photoelectric` and `barycentre_mm` NaN (and the times NaN for
        a charge-only generator). `total_charge_pe` is the window's charge (the simulator's counts the whole
        ring, ~10 % more), `energy_kev` the gamma energy with full_absorption_only (else NaN), and the
        window's reference column is uniform over the ring (the ring is symmetric in phi).
        """
        n, channels = len(sipm_pattern), self.pattern_shape[0]
        if sipm_pattern.shape[1:] != self.pattern_shape:
            raise ValueError(f"generated sipm_pattern shape {sipm_pattern.shape[1:]}: expected {self.pattern_shape}")
        charge = np.round(np.clip(sipm_pattern[:, :2], 0, None)).astype(np.float32)
        if channels == 4:
            time = np.where(charge > 0, sipm_pattern[:, 2:4], 0).astype(np.float32)
        else:
            time = np.full_like(charge, np.nan)
        column = np.random.default_rng(seed).integers(self.config.n_columns, size=n)
        unknown = np.full(n, np.nan, dtype=np.float32)
        energy = self.config.gamma_energy_kev if self.full_absorption_only else np.nan
        return {
            "sipm_charge": charge,
            "sipm_time": time,
            "total_charge_pe": charge.sum(axis=(1, 2, 3)),
            "phi_ref_rad": column_phi_rad(self.config).numpy()[column].astype(np.float32),
            "position_mm": np.asarray(position_mm, dtype=np.float32),
            "energy_kev": np.full(n, energy, dtype=np.float32),
            "n_interactions": np.full(n, -1, dtype=np.int64),
            "multi_site": unknown,
            "photoelectric": unknown.copy(),
            "barycentre_mm": np.full((n, 3), np.nan, dtype=np.float32),
        }

    def dataset(self, split: str) -> PetaloEvents:
        return PetaloEvents(self.events(split), self.use_time, self.config.inner_radius_mm)
