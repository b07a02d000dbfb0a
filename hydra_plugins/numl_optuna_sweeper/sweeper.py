"""The sweeper: ask Optuna for trials, launch them through Hydra's launcher, tell Optuna the results."""

from __future__ import annotations

import logging
import math
import sys
import warnings
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from .config import NumlOptunaSweeperConf  # noqa: F401  (registers hydra/sweeper=numl_optuna)

log = logging.getLogger(__name__)


class NumlOptunaSweeper(Sweeper):
    def __init__(
        self,
        study_name: str,
        storage: str | None,
        direction: str,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        sampler: Any,
        pruner: Any,
        pruning_monitor: str | None,
        heartbeat_interval_s: int,
        params: dict[str, str] | None,
    ) -> None:
        self.study_name = study_name
        self.storage = storage
        self.direction = direction
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.max_failure_rate = max_failure_rate
        self.sampler = sampler
        self.pruner = pruner
        self.pruning_monitor = pruning_monitor
        self.heartbeat_interval_s = heartbeat_interval_s
        self.params = dict(params or {})

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )
        self.sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        # The trials rebuild the pruner from its config (objects do not travel to SLURM jobs as overrides).
        pruner = config.hydra.sweeper.get("pruner")
        self.pruner_conf = OmegaConf.to_container(pruner, resolve=True) if pruner is not None else None
        sampler = config.hydra.sweeper.get("sampler")
        self.sampler_conf = OmegaConf.to_container(sampler, resolve=True) if sampler is not None else None

    def _study_sampler(self):
        """The configured sampler; with a seed, re-seeded per trial number (see numl.sweeps.sampler)."""
        from hydra.utils import instantiate

        from numl.sweeps.sampler import PerTrialSeedSampler

        conf = self.sampler_conf
        if not isinstance(conf, dict) or "_target_" not in conf or conf.get("seed") is None:
            return self.sampler
        return PerTrialSeedSampler(lambda seed: instantiate({**conf, "seed": seed}), conf["seed"])

    # ------------------------------------------------------------------ checks before any trial
    def _check_config(self, arguments: list[str]) -> tuple[dict, list[str], str | None]:
        from numl.sweeps.search_space import check_keys_exist, split_arguments
        from numl.utils.errors import ConfigError

        distributions, fixed = check_settings(
            n_trials=self.n_trials, n_jobs=self.n_jobs, max_failure_rate=self.max_failure_rate,
            direction=self.direction, heartbeat_interval_s=self.heartbeat_interval_s, params=self.params,
        )
        cli_distributions, cli_fixed = split_arguments(arguments)
        distributions.update(cli_distributions)
        fixed_overrides = [f"{k}={v}" for k, v in fixed.items()] + cli_fixed
        job_config = self.hydra_context.config_loader.load_sweep_config(self.config, fixed_overrides)
        check_keys_exist(list(distributions) + list(fixed), job_config)
        monitor = None
        if self.pruner_conf is not None:
            monitor = self.pruning_monitor or job_config.get("optimized_metric")
            if not monitor:
                raise ConfigError("hydra.sweeper.pruning_monitor: unset and the experiment sets no optimized_metric")
        self._check_slurm_job_fits()
        return distributions, fixed_overrides, monitor

    def _check_slurm_job_fits(self) -> None:
        """A SLURM job that could never start would leave the sweep waiting for ever: refuse it now."""
        from numl.sweeps.slurm import check_slurm_job_fits

        launcher = self.config.hydra.launcher
        if str(launcher.get("_target_", "")).endswith("SlurmLauncher"):
            # Only the resource keys: the rest (job name, folder) may interpolate what is set per job.
            resources = {k: launcher.get(k) for k in launcher if k not in ("name", "submitit_folder", "setup")}
            check_slurm_job_fits(OmegaConf.to_container(OmegaConf.create(resources), resolve=True))

    # ------------------------------------------------------------------ the study
    def _open_study(self):
        import optuna

        from numl.sweeps.storage import open_storage

        self.storage_spec = self.storage or f"sqlite:///{self.sweep_dir / 'optuna.db'}"
        if self.storage_spec.endswith(".journal"):
            self.storage_spec = str(Path(self.storage_spec).resolve())
        # Database storages get Optuna's heartbeats and RetryHeartbeatStaleTrialCallback (open_storage);
        # the journal gets numl's own (numl.sweeps.recovery).
        storage = open_storage(self.storage_spec, heartbeat_interval_s=self.heartbeat_interval_s)
        study = optuna.create_study(
            study_name=self.study_name,
            storage=storage,
            sampler=self._study_sampler(),
            pruner=self.pruner,
            direction=self.direction,
            load_if_exists=True,
        )
        return study, storage

    def sweep(self, arguments: list[str]) -> Any:
        from numl.utils.errors import ConfigError

        try:
            return self._sweep(arguments)
        except ConfigError as err:
            # The README's promise: one line naming the key, exit code 2 (Hydra would print a traceback).
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            print(f"numl: error: {message}", file=sys.stderr, flush=True)
            sys.exit(2)

    def _recover(self, study, storage) -> None:
        from numl.sweeps.recovery import recover_dead_trials

        recovered = recover_dead_trials(study, storage, grace_period_s=3 * self.heartbeat_interval_s)
        if recovered:
            log.warning(
                "sweep: %s: left RUNNING by a dead sweeper, failed and queued again with the same "
                "parameters", ", ".join(recovered),
            )

    def _ask(self, study, storage, study_id: int, distributions: dict) -> tuple[Any, int]:
        from numl.sweeps.recovery import OWNER_ATTR, this_process

        with warnings.catch_warnings():
            # Optuna warns that heartbeats are meant for Study.optimize; the sweeper sends them itself.
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
            trial = study.ask(fixed_distributions=distributions)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        # Who runs the trial: a sweeper resumed on this host fails it at once if this process is gone.
        storage.set_trial_system_attr(trial_id, OWNER_ATTR, this_process())
        return trial, trial_id

    def _sweep(self, arguments: list[str]) -> Any:
        from optuna.trial import TrialState

        from numl.sweeps.plots import save_study_report, summarize_study
        from numl.sweeps.recovery import Heartbeat
        from numl.utils.errors import ConfigError

        distributions, fixed, monitor = self._check_config(arguments)
        study, storage = self._open_study()
        study_id = storage.get_study_id_from_name(self.study_name)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info("sweep: study %r in %s, %d trials wanted", self.study_name, self.storage_spec, self.n_trials)

        max_failures = math.floor(self.max_failure_rate * self.n_trials)
        n_failed = 0
        while True:
            # Before every batch: another worker may have died since the last one.
            self._recover(study, storage)
            states = [t.state for t in study.get_trials(deepcopy=False)]
            finished = states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED)
            # RUNNING trials now belong to live sweepers (this one's are finished): in flight elsewhere.
            remaining = self.n_trials - finished - states.count(TrialState.RUNNING)
            if remaining <= 0:
                break
            asked = [self._ask(study, storage, study_id, distributions) for _ in range(min(self.n_jobs, remaining))]
            trials = [t for t, _ in asked]
            trial_ids = [i for _, i in asked]
            overrides = [
                self._trial_overrides(t, storage.get_trial(i), fixed, monitor)
                for t, i in zip(trials, trial_ids, strict=True)
            ]
            with Heartbeat(storage, trial_ids, self.heartbeat_interval_s):
                try:
                    returns = self.launcher.launch(overrides, initial_job_idx=trials[0].number)
                except Exception as err:  # a launcher error (e.g. a SLURM job killed hard) fails the batch
                    log.error("sweep: launching trials %s failed: %s", [t.number for t in trials], err)
                    returns = [err] * len(trials)
            for trial, trial_id, ret in zip(trials, trial_ids, returns, strict=True):
                n_failed += self._tell(study, storage.get_trial(trial_id), trial, ret)
            log.info("sweep: %d/%d trials finished, %d failed", finished + len(trials), self.n_trials, n_failed)
            if n_failed > max_failures:
                raise ConfigError(
                    f"hydra.sweeper.max_failure_rate={self.max_failure_rate}: {n_failed} of {self.n_trials} "
                    f"trials failed, sweep stopped (see the trial directories in {self.sweep_dir})"
                )

        summary = summarize_study(study)
        save_study_report(study, self.sweep_dir)
        if "best_value" in summary:
            log.info("sweep: best value %.6g (trial %d)", summary["best_value"], summary["best_trial"])
            log.info("sweep: best parameters %s", summary["best_params"])
        log.info("sweep: results and plots in %s", self.sweep_dir)
        print(OmegaConf.to_yaml(OmegaConf.create(summary)), flush=True)
        return summary

    def _trial_overrides(self, trial, frozen, fixed: list[str], monitor: str | None) -> list[str]:
        from numl.sweeps.search_space import trial_overrides

        # The original trial's number (attribute written by RetryHeartbeatStaleTrialCallback).
        retried = frozen.system_attrs.get("failed_trial")
        directory_number = trial.number if retried is None else retried
        overrides = list(fixed) + trial_overrides(trial.params)
        # One fixed directory per trial (its retries included): a requeued or retried trial resumes there.
        overrides.append(f"hydra.sweep.subdir=trial_{directory_number:04d}")
        if monitor is not None:
            cb = "++callbacks.optuna_pruning"
            overrides += [
                f"{cb}._target_=numl.sweeps.pruning.OptunaPruningCallback",
                f"{cb}.storage='{self.storage_spec}'",
                f"{cb}.study_name='{self.study_name}'",
                f"{cb}.trial_number={trial.number}",
                f"{cb}.monitor='{monitor}'",
            ]
            overrides += [f"{cb}.pruner.{k}={_override_value(v)}" for k, v in _flatten(self.pruner_conf).items()]
        return overrides

    @staticmethod
    def _tell(study, frozen, trial, ret) -> int:
        """Record one trial's outcome; returns 1 if it failed."""
        from optuna.trial import TrialState

        if frozen.state.is_finished():
            return 0  # pruned by its own callback
        value = None
        if not isinstance(ret, Exception) and ret.status == JobStatus.COMPLETED:
            value = ret.return_value
        if value is None or not math.isfinite(float(value)):
            reason = ret if isinstance(ret, Exception) else getattr(ret, "_return_value", value)
            log.warning("sweep: trial %d failed: %s", trial.number, reason)
            study.tell(trial, state=TrialState.FAIL)
            return 1
        study.tell(trial, float(value))
        return 0


def check_settings(
    *, n_trials: Any, n_jobs: Any, max_failure_rate: Any, direction: Any, heartbeat_interval_s: Any,
    params: dict[str, str],
) -> tuple[dict, dict[str, str]]:
    """Check `hydra.sweeper.*` values that need no composed job config; (distributions, fixed) of `params`.

    Raises a one-line ConfigError naming the key. The sweeper calls it before opening the storage.
    """
    from numl.sweeps.search_space import parse_search_space
    from numl.utils.errors import check_choice, check_positive, check_range

    check_positive("hydra.sweeper.n_trials", n_trials, integer=True)
    check_positive("hydra.sweeper.n_jobs", n_jobs, integer=True)
    check_range("hydra.sweeper.max_failure_rate", max_failure_rate, 0.0, 1.0)
    check_choice("hydra.sweeper.direction", direction, ["minimize", "maximize"])
    check_positive("hydra.sweeper.heartbeat_interval_s", heartbeat_interval_s, integer=True, allow_zero=True)
    return parse_search_space(params)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _override_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f"'{value}'"
    return str(value)
