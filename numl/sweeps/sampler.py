"""A sampler seeded per trial, so that resumed studies and parallel workers never repeat parameters.

A sampler built once with `seed: 12345` draws the same sequence in every process: a resumed sweep
re-proposes the start-up parameters of trials 0, 1, ..., and two workers started on one study propose
the same parameters (found with two workers on one SQLite study: trials 0 = 1 and 2 = 3).

Fix: before each trial the inner sampler is rebuilt with a seed derived from the configured seed and
the trial's number. The study hands out each trial number once, over all workers and resumes, so no two
trials share a seed, while a study run from scratch is still reproducible trial by trial. Seeding by a
worker id instead would need ids handed out to workers, and `seed: null` for later workers would lose
reproducibility. Samplers such as TPE keep no state besides their random generator (they read the
history from the study each time), so rebuilding them per trial changes nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState


def trial_seed(seed: int, trial_number: int) -> int:
    """A 32-bit seed from (configured seed, trial number); SeedSequence mixes neighbours apart."""
    return int(np.random.SeedSequence([int(seed), int(trial_number)]).generate_state(1)[0])


class PerTrialSeedSampler(optuna.samplers.BaseSampler):
    """Delegates to `make(trial_seed(seed, trial.number))`, rebuilt in `before_trial`."""

    def __init__(self, make: Callable[[int], optuna.samplers.BaseSampler], seed: int) -> None:
        self._make, self._seed = make, int(seed)
        self._inner = make(self._seed)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._inner = self._make(trial_seed(self._seed, trial.number))
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()
