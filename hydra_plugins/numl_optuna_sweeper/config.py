"""Structured config of the sweeper, registered as `hydra/sweeper=numl_optuna`.

No `from __future__ import annotations`: Hydra loads plugin modules outside sys.modules, where dataclasses
cannot resolve string annotations, and OmegaConf reads the real types.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, Optional  # noqa: UP035  (OmegaConf needs typing forms)

from hydra.core.config_store import ConfigStore


@dataclass
class NumlOptunaSweeperConf:
    _target_: str = "hydra_plugins.numl_optuna_sweeper.sweeper.NumlOptunaSweeper"
    # A sweep started again with the same study name and storage continues the same study.
    study_name: str = "numl"
    # null: sqlite:///<hydra.sweep.dir>/optuna.db; or any database URL; or a path ending in .journal.
    storage: Optional[str] = None  # noqa: UP045
    direction: str = "maximize"
    # Trials the study should hold finished (complete or pruned), counted over all workers and resumes.
    n_trials: int = 20
    # Trials launched at once by this worker (the launcher runs them in parallel, e.g. as SLURM jobs).
    n_jobs: int = 1
    # The sweep stops once more than max_failure_rate * n_trials trials have failed.
    max_failure_rate: float = 0.25
    sampler: Any = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": None})
    # null disables pruning.
    pruner: Any = field(
        default_factory=lambda: {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 3, "n_warmup_steps": 1}
    )
    # Metric reported each epoch for pruning; null: the experiment's optimized_metric.
    pruning_monitor: Optional[str] = None  # noqa: UP045
    # With a seed, each trial's sampler is seeded from (seed, trial number): workers and resumes never
    # repeat parameters, a study from scratch is reproducible (numl.sweeps.sampler).
    # The sweeper sends a heartbeat for its running trials every heartbeat_interval_s (0: none). A trial
    # without one for 3 x heartbeat_interval_s, or whose sweeper process on this host is gone, is failed
    # and re-run with the same parameters (numl.sweeps.recovery).
    heartbeat_interval_s: int = 60
    # Search space, Hydra sweep grammar: see conf/hparams_search/lensing_optuna.yaml.
    params: Dict[str, str] = field(default_factory=dict)  # noqa: UP006


ConfigStore.instance().store(group="hydra/sweeper", name="numl_optuna", node=NumlOptunaSweeperConf, provider="numl")
