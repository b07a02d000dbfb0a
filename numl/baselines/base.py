"""The interface of every classical baseline, and how a run executes the ones its config chooses.

A baseline is fitted on a DataModule's training / validation events, then scores the test events, the same
events the network is tested on, in the same order. It returns metrics (logged as
``baseline/<name>/<metric>``, beside the network's ``test/<metric>``) and per-event outputs that the figures
draw next to the network's predictions. The runner (numl.pipeline) calls them; DataModules never do.

Chosen in config: ``baseline=likelihood_ratio``, ``baseline=[power_spectrum,likelihood_ratio]``,
``baseline=none``; each config file of the group adds one entry ``<name>: {_target_: ...}``.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from numl.utils.errors import ConfigError

log = logging.getLogger("numl.baselines")


@dataclass
class BaselineResult:
    """What a baseline found on the test events."""

    label: str  # its name in figure legends and tables
    metrics: dict[str, float]
    outputs: dict[str, np.ndarray] = field(default_factory=dict)  # one row per test event, in the test order


class Baseline(ABC):
    """Fit on training / validation events, then score the test events."""

    #: name in figure legends
    label: str = "baseline"
    #: a hybrid that starts from the network's predictions on the test events; run_baselines hands them over
    #: (take_network_predictions) before it is fitted
    uses_network_predictions: bool = False

    def take_network_predictions(self, predictions: dict[str, np.ndarray]) -> None:
        """The network's predictions on the test events, in their order (only for uses_network_predictions)."""
        raise NotImplementedError(f"{type(self).__name__} does not use the network's predictions")

    def fit(self, datamodule: Any) -> Baseline:
        """Learn whatever the method needs from the training or validation events (default: nothing)."""
        return self

    @abstractmethod
    def evaluate(self, datamodule: Any) -> BaselineResult:
        """Metrics and per-event outputs on `datamodule.events("test")`."""


def run_baselines(baselines: dict[str, Baseline], datamodule: Any,
                  network_predictions: dict[str, np.ndarray] | None = None) -> dict[str, BaselineResult]:
    """Fit and evaluate each baseline, in the config's order; hybrids get the network's test predictions first."""
    results = {}
    for name, baseline in baselines.items():
        start = time.perf_counter()
        if baseline.uses_network_predictions:
            if network_predictions is None:
                raise ConfigError(f"baseline.{name} starts from the network's predictions: run it in numl.train or "
                                  "numl.evaluate with a trained network")
            baseline.take_network_predictions(network_predictions)
        results[name] = baseline.fit(datamodule).evaluate(datamodule)
        log.info("baseline %s: %.1f s", name, time.perf_counter() - start)
    return results


def baseline_metrics(results: dict[str, BaselineResult]) -> dict[str, float]:
    """``baseline/<name>/<metric>`` for every metric of every baseline."""
    return {f"baseline/{name}/{key}": float(value) for name, result in results.items()
            for key, value in result.metrics.items()}
