"""LightningDataModule for NEXT 0vbb topology: voxelised events as sparse points or a dense grid.

Events are simulated once per split (numl.sim.next) or read from an HDF5 file written by
`python -m numl.simulate`. The networks see a cube of `sim.window_voxels` voxels around the event's
energy centroid; the training split is augmented with mirror flips and x-y axis swaps (the drift
axis z has its own diffusion, so it is never swapped).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from numl.data.base import SimulatedDataModule
from numl.sim.next import FEATURE_SCALE_KEV
from numl.sim.next.generator import SEGMENT_CLASSES, SIMULATOR_NAME, NextEvent, NextSimConfig, simulate_events
from numl.sim.next.response import slice_width_mm
from numl.sim.next.tracks import count_tracks
from numl.utils.errors import ConfigError, check_choice

log = logging.getLogger("numl.data.next")

#: event selections a NEXT data module can apply: every event in the energy window, or NEXT's single-track events
EVENT_SELECTIONS = ("all", "single_track")


def check_event(event: NextEvent, cfg: NextSimConfig, where: str) -> None:
    """Refuse an event the networks and the blob cut cannot use: no voxels, or voxels outside the detector."""
    if len(event.voxel_energy_kev) == 0:
        raise ConfigError(f"{where}: empty event (no voxels above threshold); drop it or lower "
                          "data.sim.energy_threshold_kev")
    grid = np.array(cfg.grid_shape)
    bad = np.any((event.voxel_index < 0) | (event.voxel_index >= grid), axis=1)
    if bad.any():
        raise ConfigError(f"{where}: voxel {event.voxel_index[bad][0].tolist()} outside the detector grid "
                          f"{grid.tolist()} (voxel_size_mm={cfg.voxel_size_mm})")


#: What the networks see as voxel energy (data.voxel_energy_scale). "q_bb": each event's voxel energies scaled so
#: that they sum to Q_bb, so the networks judge the topology only: within the ROI the 214Bi background peaks at
#: its 2447.7 keV line, 10 keV (one sigma of the resolution) below Q_bb, and the event energy alone separates the
#: classes (AUROC 0.76, experiments/next_topology/background_check.py), information a topology comparison with
#: the blob cut must not hand the networks (the energy fit is a separate step of the NEXT analysis). "measured":
#: the smeared energies as simulated (the input before the gamma backgrounds, bit for bit).
VOXEL_ENERGY_SCALES = ("q_bb", "measured")


class NextVoxelDataset(Dataset):
    """Events cropped to the network window; `augment` draws flips and an x-y swap per access."""

    def __init__(self, events: list[NextEvent], cfg: NextSimConfig, augment: bool, seed: int,
                 voxel_energy_scale: str = "q_bb") -> None:
        self.events, self.cfg, self.augment = events, cfg, augment
        self.voxel_energy_scale = voxel_energy_scale
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.events)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        event = self.events[i]
        coords, keep = window_coordinates(event, self.cfg.window_voxels)
        voxel_kev = event.voxel_energy_kev
        if self.voxel_energy_scale == "q_bb":
            voxel_kev = voxel_kev * np.float32(self.cfg.q_bb_kev / voxel_kev.sum(dtype=np.float64))
        if self.augment:
            flips = self.rng.uniform(size=3) < 0.5
            coords = np.where(flips, self.cfg.window_voxels - 1 - coords, coords)
            if self.rng.uniform() < 0.5:
                coords = coords[:, [1, 0, 2]]
        return {
            "label": torch.tensor(event.label, dtype=torch.long),
            "coords": torch.from_numpy(coords.astype(np.int64)),
            "features": torch.from_numpy(voxel_kev[keep, None] / FEATURE_SCALE_KEV).float(),
            "segment": torch.from_numpy(event.voxel_segment[keep].astype(np.int64)),
            "energy_kev": torch.tensor(event.energy_kev, dtype=torch.float32),
        }


def window_coordinates(event: NextEvent, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Voxel coordinates inside a cube of `window` voxels centred on the energy centroid, and which voxels fit."""
    centroid = np.average(event.voxel_index, axis=0, weights=event.voxel_energy_kev)
    local = event.voxel_index - (np.round(centroid).astype(np.int64) - window // 2)
    keep = np.all((local >= 0) & (local < window), axis=1)
    return local[keep], keep


def collate_voxels(items: list[dict[str, torch.Tensor]], window: int, dense: bool) -> dict[str, torch.Tensor]:
    """Concatenate events into one sparse batch: coords (N, 4) = (event, x, y, z); `voxels` adds a dense grid."""
    coords = torch.cat([torch.nn.functional.pad(it["coords"], (1, 0), value=b) for b, it in enumerate(items)])
    batch = {
        "label": torch.stack([it["label"] for it in items]),
        "coords": coords.int(),
        "features": torch.cat([it["features"] for it in items]),
        "segment": torch.cat([it["segment"] for it in items]),
        "energy_kev": torch.stack([it["energy_kev"] for it in items]),
    }
    if dense:
        grid = torch.zeros(len(items), 1, window, window, window)
        c = coords.long()
        grid[c[:, 0], 0, c[:, 1], c[:, 2], c[:, 3]] = batch["features"][:, 0]
        batch["voxels"] = grid
    return batch


class NextDataModule(SimulatedDataModule):
    """NEXT signal/background events. `representation` "sparse" gives coords + features, "dense" adds
    `voxels` (B, 1, W, W, W). Keys beyond the SimulatedDataModule's: `sim` (NextSimConfig fields) and
    `augment` for the training split; `selection` single_track keeps the events whose voxels form one connected group
    (26-neighbour), NEXT's classical selection (Ferrario et al. 2019), in every split, so networks and the blob cut
    train and test on what the classical analysis sees."""

    simulator_name = SIMULATOR_NAME
    #: the deconvolution's tolerance and precision came after NEXT files were first written, whose events were made
    #: with their defaults (all iterations, float64); files written before deconvolution_slices existed read one
    #: slice per voxel layer ("layer_centre"); files written before sipm_topology_threshold_pe existed kept every hit
    #: above sipm_threshold_pe (null)
    metadata_added_defaults = {"sim": {**{name: NextSimConfig.__dataclass_fields__[name].default
                                          for name in ("deconvolution_tolerance", "deconvolution_precision")},
                                       "deconvolution_slices": "layer_centre", "sipm_topology_threshold_pe": None}}

    @property
    def metadata_ignored_keys(self) -> dict[str, tuple[str, ...]]:
        # where the deconvolution ran does not change the events (files of 2026-12-06 store it), nor how it reads
        # the slices when there is no deconvolution or the slices are not thinner than the voxels (2 mm), nor the
        # topology threshold when the hits are deconvolved or voxelised without sensors
        slices_matter = self.sim.deconvolution != "none" and slice_width_mm(self.sim) < self.sim.voxel_size_mm
        topology_threshold_matters = self.sim.detector_response == "sensors" and self.sim.deconvolution == "none"
        return {"sim": ("deconvolution_device",) + (() if slices_matter else ("deconvolution_slices",))
                + (() if topology_threshold_matters else ("sipm_topology_threshold_pe",))}

    def __init__(self, sim: dict[str, Any] | None = None, representation: str = "sparse", augment: bool = True,
                 voxel_energy_scale: str = "q_bb", n_train: int = 4000, n_val: int = 1000, n_test: int = 2000,
                 batch_size: int = 32, num_workers: int = 0, seed: int = 0, source: str = "simulate",
                 hdf5_path: str | None = None, events_per_block: int | None = None,
                 simulation_workers: int = 1, selection: str = "all") -> None:
        super().__init__(n_train=n_train, n_val=n_val, n_test=n_test, batch_size=batch_size,
                         num_workers=num_workers, seed=seed, source=source, hdf5_path=hdf5_path,
                         events_per_block=events_per_block, simulation_workers=simulation_workers)
        self.sim = NextSimConfig.from_dict(dict(sim or {}))
        check_choice("data.selection", selection, EVENT_SELECTIONS)
        self.selection = selection
        check_choice("data.representation", representation, ("sparse", "dense"))
        check_choice("data.augment", augment, (True, False))
        check_choice("data.voxel_energy_scale", voxel_energy_scale, VOXEL_ENERGY_SCALES)
        self.representation, self.augment = representation, augment
        self.voxel_energy_scale = voxel_energy_scale

    def metadata(self) -> dict[str, Any]:
        # the blocks change the events, the number of workers does not (files written before blocks existed have
        # no events_per_block, which matches null); nor do the keys metadata_ignored_keys names
        sim = {k: v for k, v in self.sim.as_dict().items() if k not in self.metadata_ignored_keys["sim"]}
        return {"sim": sim, "seed": self.seed, "events_per_block": self.events_per_block}

    def file_attributes(self) -> dict[str, Any]:
        return {"segment_classes": ",".join(SEGMENT_CLASSES)}

    def simulate_split(self, split: str, progress: bool = True) -> list[NextEvent]:
        blocks = self.simulate_blocks(split, partial(simulate_events, self.sim),
                                      description="simulating NEXT events" if progress else None)
        return [event for block in blocks for event in block]

    def check_events(self, split: str, events: list[NextEvent]) -> None:
        for i, event in enumerate(events):
            check_event(event, self.sim, f"data split {split} event {i}")

    def select_events(self, split: str, events: list[NextEvent]) -> list[NextEvent]:
        if self.selection == "all":
            return events
        size = self.sim.voxel_size_mm
        kept = [e for e in events if count_tracks(e.voxel_centres_mm(size), size) == 1]
        labels = np.array([e.label for e in events])
        kept_signal = sum(e.label for e in kept)
        log.info("data.selection=single_track: %d of %d %s events kept (signal %d of %d, background %d of %d)",
                 len(kept), len(events), split, kept_signal, labels.sum(), len(kept) - kept_signal,
                 len(events) - labels.sum())
        return kept

    def write_split(self, group: h5py.Group, events: list[NextEvent]) -> None:
        write_events(group, events)

    def split_length(self, group: h5py.Group) -> int:
        return len(group["events"]["label"])

    def read_split(self, group: h5py.Group, n: int) -> list[NextEvent]:
        return read_events(group, n)

    def dataset(self, split: str) -> NextVoxelDataset:
        return NextVoxelDataset(self.events(split), self.sim, augment=self.augment and split == "train",
                                seed=self.split_seed(split, "augment"), voxel_energy_scale=self.voxel_energy_scale)

    def collate_fn(self):
        return partial(collate_voxels, window=self.sim.window_voxels, dense=self.representation == "dense")


EVENT_COLUMNS = ("label", "energy_kev", "path_length_mm", "deposited_kev", "escaped_kev")


def write_events(group: h5py.Group, events: list[NextEvent]) -> None:
    """An events table (one row per event) and the sparse voxels of all events with per-event offsets."""
    table = group.create_group("events")
    for column in EVENT_COLUMNS:
        table.create_dataset(column, data=np.array([getattr(e, column) for e in events]))
    table.create_dataset("vertex_mm", data=np.stack([e.vertex_mm for e in events]))
    table.create_dataset("track_ends_mm", data=np.stack([e.track_ends_mm for e in events]))
    counts = np.array([len(e.voxel_energy_kev) for e in events])
    table.create_dataset("voxel_offset", data=np.concatenate([[0], np.cumsum(counts)]))
    voxels = group.create_group("voxels")
    voxels.create_dataset("index", data=np.concatenate([e.voxel_index for e in events]), compression="gzip")
    voxels.create_dataset("energy_kev", data=np.concatenate([e.voxel_energy_kev for e in events]), compression="gzip")
    voxels.create_dataset("segment", data=np.concatenate([e.voxel_segment for e in events]), compression="gzip")


def read_events(group: h5py.Group, n: int) -> list[NextEvent]:
    """The first n events of a split's group."""
    table, voxels = group["events"], group["voxels"]
    offsets = table["voxel_offset"][: n + 1]
    index = voxels["index"][: offsets[-1]]
    energy = voxels["energy_kev"][: offsets[-1]]
    segment = voxels["segment"][: offsets[-1]]
    columns = {c: table[c][:n] for c in EVENT_COLUMNS}
    vertex, ends = table["vertex_mm"][:n], table["track_ends_mm"][:n]
    events = []
    for i in range(n):
        voxels_of = slice(offsets[i], offsets[i + 1])
        events.append(NextEvent(
            label=int(columns["label"][i]), voxel_index=index[voxels_of], voxel_energy_kev=energy[voxels_of],
            voxel_segment=segment[voxels_of], energy_kev=float(columns["energy_kev"][i]), vertex_mm=vertex[i],
            track_ends_mm=ends[i], path_length_mm=float(columns["path_length_mm"][i]),
            deposited_kev=float(columns["deposited_kev"][i]), escaped_kev=float(columns["escaped_kev"][i])))
    return events
