"""The one base of every simulated-data DataModule: splits, per-split seeds, simulate vs HDF5, atomic files.

A domain supplies its simulator (`simulate_split`), how a split is stored (`write_split` / `read_split`),
how events become a Dataset (`dataset`) and its collate function; everything else lives here once:
argument checks, split sizes, seeds derived per split, setup from the simulator or from an HDF5 file
whose metadata must match the config, atomic HDF5 writes, and the DataLoaders.

Events are kept per split in the domain's own form (`events(split)`), which is what the classical
baselines (numl.baselines) and the figures (numl.figures) read: the DataModule itself runs neither.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import h5py
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from numl.sim.blocks import BlockStore, simulate_in_blocks
from numl.utils.errors import ConfigError, check_choice, check_positive
from numl.utils.files import replaced_when_complete
from numl.utils.hdf5 import open_checked, write_metadata
from numl.utils.seeds import derived_seed

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
#: the splits each Lightning stage uses (any other stage, or none, loads them all)
STAGE_SPLITS = {"validate": ("val",), "test": ("test",), "predict": ("test",)}


class EpochPermutation(Sampler[int]):
    """A random order of n events that is a function of (seed, epoch).

    Lightning calls `set_epoch` before every training epoch. Drawing the order from the global RNG, even
    reseeded per epoch (numl.callbacks.EpochSeed), is not enough: Lightning creates the first epoch's
    iterator before the epoch-start hooks run, so a resumed run's first epoch would get another order.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = int(n), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        generator = torch.Generator().manual_seed(derived_seed(self.seed, self.epoch))
        return iter(torch.randperm(self.n, generator=generator).tolist())


class SimulatedDataModule(pl.LightningDataModule):
    """Train / val / test splits of simulated events, made at setup or read from `python -m numl.simulate` files.

    Args:
        n_train, n_val, n_test: events per split (an HDF5 file must hold at least that many; the first are used).
        batch_size, num_workers: of every DataLoader.
        seed: every split's events follow from it (`split_seed`).
        source: "simulate" or "hdf5" (or a domain's own, `sources`).
        hdf5_path: the file, with source="hdf5".
        events_per_block: None simulates a split from one random stream; N simulates it in blocks of N events,
            each from its own seed (numl.sim.blocks), for a domain whose `simulate_split` uses `simulate_blocks`.
        simulation_workers: processes simulating blocks side by side (needs events_per_block; the same events for
            any number).
    """

    #: written into and checked against every HDF5 file, with `metadata()`
    simulator_name: ClassVar[str]
    #: keys of nested metadata groups added after files were written, with the values those files were made with
    #: (numl.utils.hdf5.check_metadata): a new option whose default changes nothing keeps older files readable
    metadata_added_defaults: ClassVar[dict[str, dict[str, Any]]] = {}
    #: keys of nested metadata groups that some files store but that do not change the events
    metadata_ignored_keys: ClassVar[dict[str, tuple[str, ...]]] = {}
    #: set by the run's `exact_resume_order` (numl.train): shuffle by (seed, epoch) so that a resumed run is bit
    #: for bit the run never killed. Off by default until the study READMEs are rebuilt with it, since it changes
    #: every fresh run's batch order once.
    exact_resume_order: bool = False
    #: where events can come from; a domain that reads other files adds its source and `read_source`
    sources: ClassVar[tuple[str, ...]] = ("simulate", "hdf5")

    def __init__(self, n_train: int, n_val: int, n_test: int, batch_size: int, num_workers: int = 0, seed: int = 0,
                 source: str = "simulate", hdf5_path: str | None = None, events_per_block: int | None = None,
                 simulation_workers: int = 1) -> None:
        super().__init__()
        if events_per_block is not None:
            check_positive("data.events_per_block", events_per_block, integer=True)
        check_positive("data.simulation_workers", simulation_workers, integer=True)
        if simulation_workers > 1 and events_per_block is None:
            raise ConfigError(f"data.simulation_workers={simulation_workers}: needs data.events_per_block (events "
                              "are shared out in blocks)")
        self.events_per_block, self.simulation_workers = events_per_block, int(simulation_workers)
        sizes = {"train": n_train, "val": n_val, "test": n_test}
        for split, n in sizes.items():
            check_positive(f"data.n_{split}", n, integer=True)
        check_positive("data.batch_size", batch_size, integer=True)
        check_positive("data.num_workers", num_workers, integer=True, allow_zero=True)
        check_choice("data.source", source, self.sources)
        if source == "hdf5" and not hdf5_path:
            raise ConfigError("data.hdf5_path: missing; data.source=hdf5 needs the file written by numl.simulate")
        if source == "hdf5" and not Path(hdf5_path).is_file():
            # Here rather than in setup(): before the Trainer starts, so nothing is written first.
            raise ConfigError(f"data.hdf5_path={str(hdf5_path)!r}: no such file; write one with "
                              "python -m numl.simulate")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ConfigError(f"data.seed={seed!r}: must be an integer")
        self.split_sizes = sizes
        self.batch_size, self.num_workers, self.seed = int(batch_size), int(num_workers), int(seed)
        self.source, self.hdf5_path = source, hdf5_path
        self._events: dict[str, Any] = {}
        self._datasets: dict[str, Dataset] = {}
        self._source_read = False
        self._block_store: BlockStore | None = None

    # ----- what a domain supplies ---------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        """Everything that determines the events; an HDF5 file must match it to be used."""
        raise NotImplementedError

    def simulate_split(self, split: str) -> Any:
        """The events of one split, from `split_seed(split)`."""
        raise NotImplementedError

    def write_split(self, group: h5py.Group, events: Any) -> None:
        raise NotImplementedError

    def split_length(self, group: h5py.Group) -> int:
        """Number of events stored in a split's group."""
        raise NotImplementedError

    def read_split(self, group: h5py.Group, n: int) -> Any:
        """The first `n` events of a split's group."""
        raise NotImplementedError

    def dataset(self, split: str) -> Dataset:
        raise NotImplementedError

    def collate_fn(self):
        """How a list of items becomes a batch; None is torch's default."""
        return None

    def simulated_splits(self) -> tuple[str, ...]:
        """Splits made at setup (the lensing training maps are made per batch instead)."""
        return SPLITS

    def read_source(self) -> dict[str, Any]:
        """Every split's events from a source other than "simulate" and "hdf5" (see `sources`)."""
        raise NotImplementedError

    def check_events(self, split: str, events: Any) -> None:
        """Refuse events the networks cannot use (a domain override raises ConfigError)."""

    def file_attributes(self) -> dict[str, Any]:
        """Extra attributes of an HDF5 file, for readers outside numl."""
        return {}

    # ----- shared ---------------------------------------------------------------------------------
    def split_seed(self, split: str, *parts: Any) -> int:
        return derived_seed(self.seed, split, *parts)

    def simulate_blocks(self, split: str, simulate: Callable[..., Any], description: str | None = None) -> list[Any]:
        """`simulate(size, seed, progress=...)` for a whole split, the results in block order: once from
        `split_seed(split)` with the simulator's own progress (events_per_block None), or per block with
        `simulation_workers` processes (numl.sim.blocks) and progress per block. `description` None: no progress."""
        n = self.split_sizes[split]
        if self.events_per_block is None:
            return [simulate(n, self.split_seed(split), progress=description is not None)]
        return simulate_in_blocks(partial(simulate, progress=False), n, self.split_seed(split), self.events_per_block,
                                  self.simulation_workers, description=description and f"{description} ({split})",
                                  store=self._block_store, split=split)

    def events(self, split: str) -> Any:
        """The events of a split in the domain's form (made or read on first use)."""
        self.load_splits((split,))
        if split not in self._events:
            raise KeyError(f"{type(self).__name__} has no {split!r} events (it has {sorted(self._events)})")
        return self._events[split]

    def setup(self, stage: str | None = None) -> None:
        # Training makes every split up front, so that a bad test set fails before hours of training, not after;
        # evaluating, validating or predicting alone makes only the split it uses (a test set of a large
        # simulated dataset no longer waits for its training events).
        self.load_splits(STAGE_SPLITS.get(stage, SPLITS))

    def load_splits(self, splits: tuple[str, ...]) -> None:
        """Make or read those of `splits` not yet loaded; every split follows from its own seed, so loading
        them one at a time gives the same events as all at once."""
        if self.source == "simulate":
            missing = [s for s in splits if s not in self._events and s in self.simulated_splits()]
            loaded = {split: self.simulate_split(split) for split in missing}
        elif self.source == "hdf5":
            missing = [s for s in splits if s not in self._events]
            loaded = self.read_hdf5(self.hdf5_path, missing) if missing else {}
        elif not self._source_read:
            loaded, self._source_read = self.read_source(), True
        else:
            loaded = {}
        for split, events in loaded.items():
            self.check_events(split, events)
        self._events.update({split: self.select_events(split, events) for split, events in loaded.items()})

    def select_events(self, split: str, events: Any) -> Any:
        """An event selection every split passes after it is made or read (files keep every event); default: all."""
        return events

    def read_hdf5(self, path: str | Path, splits: list[str] | tuple[str, ...] = SPLITS,
                  whole: bool = False) -> dict[str, Any]:
        """The first n_<split> events of `splits` (all of them if `whole`), from a file whose metadata matches the
        config."""
        out = {}
        with open_checked(path, self.simulator_name, self.metadata(), self.metadata_added_defaults,
                          self.metadata_ignored_keys) as h5:
            for split in splits:
                if split not in h5:
                    raise ConfigError(f"data.hdf5_path={str(path)!r}: no {split!r} group in the file "
                                      f"(groups: {sorted(h5)})")
                available = self.split_length(h5[split])
                wanted = available if whole else self.split_sizes[split]
                if wanted > available:
                    raise ConfigError(f"data.n_{split}={wanted}: {path} holds only {available} {split} events")
                out[split] = self.read_split(h5[split], wanted)
        return out

    def write_hdf5(self, path: str | Path, split_events: Callable[[str], Any] | None = None,
                   attributes: dict[str, Any] | None = None) -> Path:
        """Every split into one file: simulated, or `split_events(split)` in the domain's form (numl.generate
        writes a generator's events so, with its provenance in `attributes`). It is written beside the target and
        renamed when complete, so a killed write never leaves a file that looks complete. Simulated in blocks
        (events_per_block), each finished block is kept in `<file>.blocks/` until the file is complete: the same
        command after a kill or a crash simulates only the missing blocks."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if split_events is None and self.events_per_block is not None:
            self._block_store = BlockStore(path.with_name(path.name + ".blocks"), {
                "simulator": self.simulator_name, "metadata": self.metadata(), "seed": self.seed,
                "events_per_block": self.events_per_block})
        split_events = split_events or self.simulate_split
        try:
            with replaced_when_complete(path) as partial, h5py.File(partial, "w") as h5:
                write_metadata(h5, self.simulator_name, self.metadata())
                h5.attrs["seed"] = self.seed
                for key, value in (self.file_attributes() | (attributes or {})).items():
                    h5.attrs[key] = value
                for split in SPLITS:
                    group = h5.create_group(split)
                    group.attrs["seed"] = self.split_seed(split)
                    self.write_split(group, split_events(split))
            if self._block_store is not None:
                self._block_store.remove()
        except BaseException:
            if self._block_store is not None and any(self._block_store.root.glob("*/*.pkl")):
                log.warning("simulated blocks kept in %s: the same command simulates only the missing ones",
                            self._block_store.root)
            raise
        finally:
            self._block_store = None
        return path

    def cached_dataset(self, split: str) -> Dataset:
        if split not in self._datasets:
            self._datasets[split] = self.dataset(split)
        return self._datasets[split]

    def loader_generator(self, split: str) -> torch.Generator:
        # A DataLoader draws its workers' base seed when an iterator starts; from its own generator that draw
        # leaves the global RNG (dropout) alone, so a resumed run sees the same dropout masks.
        return torch.Generator().manual_seed(derived_seed(self.seed, split, "loader"))

    def loader(self, split: str, shuffle: bool = False) -> DataLoader:
        if shuffle and self.exact_resume_order:
            # The order is a function of (seed, epoch) (EpochPermutation) and no loader draws from the global RNG:
            # a resumed run sees the same batches and dropout masks as one never killed.
            dataset = self.cached_dataset(split)
            return DataLoader(dataset, batch_size=self.batch_size,
                              sampler=EpochPermutation(len(dataset), derived_seed(self.seed, split, "shuffle")),
                              num_workers=self.num_workers, collate_fn=self.collate_fn(),
                              persistent_workers=self.num_workers > 0, generator=self.loader_generator(split))
        # Otherwise a shuffled loader takes its permutation from the global RNG, which the EpochSeed callback
        # reseeds every epoch; Lightning makes the first epoch's iterator before that reseed, so a resumed run's
        # first epoch sees another order (statistically equivalent, not bit for bit).
        return DataLoader(self.cached_dataset(split), batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, collate_fn=self.collate_fn(),
                          persistent_workers=self.num_workers > 0,
                          generator=None if shuffle else self.loader_generator(split))

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")

    def predict_dataloader(self) -> DataLoader:
        """The test events, in order: predictions line up with `events("test")` and the baselines' outputs."""
        return self.test_dataloader()
