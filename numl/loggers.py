"""A CSV logger whose metrics.csv survives `resume=true`.

Lightning's CSVLogger deletes an existing metrics.csv as soon as its writer is created, so a run resumed
in the directory of a killed run (`resume=true hydra.run.dir=<run dir>`) lost every row the killed run
had written, and the training-history figure of the resumed run started at the resumed epoch.
"""

from __future__ import annotations

import csv
import logging
from typing import Any

from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger as _LightningCSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

log = logging.getLogger("numl.loggers")


def _position(row: dict[str, Any]) -> tuple[float, float] | None:
    """(epoch, step) of a row, or None when it has no epoch (not written by the training loop)."""
    try:
        return float(row["epoch"]), float(row.get("step") or 0)
    except (KeyError, TypeError, ValueError):
        return None


class _ResumingExperimentWriter(ExperimentWriter):
    """Keeps the rows of an existing metrics.csv that come before the first row this run logs.

    The file is left untouched until this run's first save, then rewritten once (killed run's kept rows
    followed by the new rows, under the union of both headers); later saves append as Lightning does.
    Deleting it at start instead, as Lightning does, would lose the killed run's rows a second time if the
    resumed run is itself killed before it logs anything.
    """

    def __init__(self, log_dir: str) -> None:
        self._previous_rows: list[dict[str, str]] | None = None
        self._previous_keys: list[str] = []
        super().__init__(log_dir=log_dir)

    def _check_log_dir_exists(self) -> None:
        # Replaces Lightning's version, which warns and deletes metrics.csv here.
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            reader = csv.DictReader(file)
            self._previous_rows = list(reader)
            self._previous_keys = list(reader.fieldnames or [])

    def save(self) -> None:
        if self._previous_rows is None or not self.metrics:
            super().save()
            return
        # Which rows of the old file does this run log again? A resumed run restarts at the epoch (and, for a
        # mid-epoch checkpoint, the step) after its checkpoint; the killed run may have logged rows past its
        # last checkpoint, and those are logged again by this run. Logging is deterministic in (epoch, step),
        # so every old row at or after this run's first (epoch, step) is dropped and every row before it is
        # kept, each epoch then appears once. A fresh run in a used directory starts at (0, 0) and so drops
        # every old row, which is Lightning's overwrite. Old rows without an epoch are kept.
        first = _position(self.metrics[0])
        kept = [row for row in self._previous_rows
                if first is None or (pos := _position(row)) is None or pos < first]
        dropped = len(self._previous_rows) - len(kept)
        if kept:
            log.info("%s: kept %d rows of the previous run, dropped %d logged again from epoch %s",
                     self.metrics_file_path, len(kept), dropped, self.metrics[0].get("epoch"))
        self.metrics_keys = sorted(set(self._previous_keys).union(*self.metrics))
        tmp_path = self.metrics_file_path + ".tmp"
        with self._fs.open(tmp_path, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(kept)
            writer.writerows(self.metrics)
        # Written aside and moved over the old file, so a kill during the rewrite leaves one complete file.
        self._fs.mv(tmp_path, self.metrics_file_path)
        self.metrics = []
        self._previous_rows = None


class CSVLogger(_LightningCSVLogger):
    """Lightning's CSVLogger, except that rows already in metrics.csv before the run's first logged
    (epoch, step) are kept (see `_ResumingExperimentWriter`)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is not None:
            return self._experiment
        self._fs.makedirs(self.root_dir, exist_ok=True)
        self._experiment = _ResumingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
