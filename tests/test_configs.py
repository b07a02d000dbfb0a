"""Every experiment composes, and runs end to end with fast_dev_run on CPU."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from numl.train import train
from tests.conftest import EXPERIMENTS


def test_there_are_experiments():
    assert "lensing_cnn" in EXPERIMENTS


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_instantiates(experiment, compose_train):
    cfg = compose_train([f"+experiment={experiment}"])
    assert cfg.data._target_ and cfg.model._target_ and cfg.task._target_
    assert cfg.optimized_metric, f"{experiment} must set optimized_metric for sweeps"
    instantiate(cfg.model)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_fast_dev_run(experiment, compose_train, tmp_path):
    cfg = compose_train([f"+experiment={experiment}", "debug=fast_dev_run"])
    metrics = train(cfg)
    assert any(k.startswith("test/") for k in metrics), metrics
    assert (tmp_path / "test_metrics.json").is_file()
