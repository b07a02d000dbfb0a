"""Report a trial's validation metric to Optuna each epoch and stop the trial when the pruner says so.

The sweeper adds this callback to every trial through overrides (`++callbacks.optuna_pruning.*`), so
`numl.train` needs no Optuna code. The callback runs in the trial's own process (possibly a SLURM job):
it opens the study from the shared storage, reports, asks the pruner, and on pruning records the trial
as PRUNED itself before stopping the trainer; the sweeper then leaves the finished trial alone.
"""

from __future__ import annotations

import logging
import math

import optuna
import pytorch_lightning as pl
import torch

from numl.sweeps.storage import open_storage
from numl.utils.errors import ConfigError

log = logging.getLogger(__name__)


class OptunaPruningCallback(pl.Callback):
    def __init__(
        self,
        storage: str,
        study_name: str,
        trial_number: int,
        monitor: str,
        pruner: optuna.pruners.BasePruner | None = None,
    ) -> None:
        self.storage = storage
        self.study_name = study_name
        self.trial_number = int(trial_number)
        self.monitor = monitor
        self.pruner = pruner if pruner is not None else optuna.pruners.NopPruner()
        self._trial: optuna.trial.Trial | None = None
        self._study: optuna.Study | None = None

    def _open_trial(self) -> optuna.trial.Trial:
        if self._trial is None:
            storage = open_storage(self.storage, key="callbacks.optuna_pruning.storage")
            self._study = optuna.load_study(study_name=self.study_name, storage=storage, pruner=self.pruner)
            study_id = storage.get_study_id_from_name(self.study_name)
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, self.trial_number)
            self._trial = optuna.trial.Trial(self._study, trial_id)
        return self._trial

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        prune = False
        # Only rank 0 talks to the storage; the decision is broadcast so every DDP rank stops together.
        if trainer.is_global_zero:
            prune = self._report(trainer)
        prune = trainer.strategy.broadcast(prune)
        if prune:
            trainer.should_stop = True

    def _report(self, trainer: pl.Trainer) -> bool:
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            raise ConfigError(
                f"callbacks.optuna_pruning.monitor={self.monitor!r}: not logged in validation "
                f"(logged: {', '.join(sorted(trainer.callback_metrics))})"
            )
        value = float(value.item() if isinstance(value, torch.Tensor) else value)
        if not math.isfinite(value):
            return False
        trial = self._open_trial()
        epoch = trainer.current_epoch
        trial.report(value, step=epoch)
        if not trial.should_prune():
            return False
        log.info("trial %d pruned at epoch %d (%s=%.4g)", self.trial_number, epoch, self.monitor, value)
        try:
            self._study.tell(self.trial_number, state=optuna.trial.TrialState.PRUNED)
        except ValueError:  # already finished (e.g. a requeued run of a trial pruned before)
            pass
        return True
