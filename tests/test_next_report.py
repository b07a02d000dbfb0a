"""experiments/next_topology/report.py: the paired bootstrap of the network / blob-cut rejection ratio, and the
classical chain (single-track events, then the cut) as a reference."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from numl.metrics import background_rejection_factor

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "next_topology" / "report.py"
spec = importlib.util.spec_from_file_location("next_topology_report", SCRIPT)
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)


def test_the_same_scores_give_a_ratio_of_one_in_every_resample():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 1000)
    score = labels + rng.normal(0.0, 1.0, 1000)
    same = report.scored(score, labels)
    assert report.bootstrap_ratio(same, same, len(labels), 0.72, n_resamples=200) == (1.0, 1.0)


def test_the_paired_interval_holds_the_ratio():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 2000)
    cut = labels + rng.normal(0.0, 1.0, 2000)
    network = cut + 0.8 * labels + rng.normal(0.0, 0.3, 2000)  # the cut's information and more
    ratio = (background_rejection_factor(network, labels, 0.72)
             / background_rejection_factor(cut, labels, 0.72))
    low, high = report.bootstrap_ratio(report.scored(network, labels), report.scored(cut, labels), len(labels), 0.72,
                                       n_resamples=500)
    assert low < ratio < high and ratio > 1.5 and high - low < 0.5 * ratio


def test_an_evaluation_directory_keeps_the_training_size_and_takes_its_test_events(tmp_path):
    training_run = tmp_path / "train"
    (training_run / ".hydra").mkdir(parents=True)
    (training_run / "checkpoints").mkdir()
    OmegaConf.save(OmegaConf.create({"model": {"_target_": "numl.models.sparse_cnn3d.SparseCNN3D"},
                                     "data": {"n_train": 32000, "n_val": 500, "n_test": 2000, "seed": 2026},
                                     "trainer": {"max_epochs": 12}}), training_run / ".hydra" / "config.yaml")
    evaluation = tmp_path / "evaluate"
    (evaluation / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"task_name": "evaluate", "data": {"n_train": 1, "n_test": 4000, "seed": 2028}}),
                   evaluation / ".hydra" / "config.yaml")
    checkpoint = training_run / "checkpoints" / "best-epoch011.ckpt"
    (evaluation / "test_metrics.json").write_text(json.dumps({"checkpoint": str(checkpoint), "metrics": {}}))
    training, tested = report.run_configs(evaluation)
    assert training.data.n_train == 32000 and training.trainer.max_epochs == 12
    assert tested.data.n_test == 4000 and tested.data.seed == 2028 and tested.model == training.model
    assert report.run_configs(training_run) == (training, training)


def test_the_chain_reference_counts_multi_track_background_as_rejected():
    """A network that only sees what the single-track selection sees has no lead over the chain: its ratio to the
    chain is 1 in every resample, while against the cut alone it looks better."""
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 2000)
    n_tracks = np.where(rng.random(2000) < np.where(labels == 1, 0.9, 0.35), 1, 2)
    cut = labels + rng.normal(0.0, 1.0, 2000)
    network = np.where(n_tracks == 1, cut, -10.0)  # the chain as a network's score
    chain = report.chained(cut, n_tracks, labels)
    # (approx: numl.metrics returns float32 rejections, the chain float64)
    assert report.bootstrap_ratio(report.scored(network, labels), chain, len(labels), 0.72,
                                  n_resamples=200) == pytest.approx((1.0, 1.0))
    low, _ = report.bootstrap_ratio(report.scored(network, labels), report.scored(cut, labels), len(labels), 0.72,
                                    n_resamples=200)
    assert low > 1.5


def test_an_unreachable_chain_gives_no_ratio_and_no_interval():
    """Fewer single-track signal events than 72 % of the signal: the chain has no working point there, its rows say
    so, and the bootstrap quotes no interval built from the few resamples where it happens to be reachable."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 1000)
    n_tracks = np.where(rng.random(1000) < 0.71, 1, 2)
    cut = labels + rng.normal(0.0, 1.0, 1000)
    chain = report.chain_row(cut, n_tracks, labels)
    assert np.isnan(chain["rejection_at_72"]) and report.format_rejection(chain, 72) == "not reachable"
    assert report.format_ratio(chain, "chain_ratio", 72) == "-"
    low, high = report.bootstrap_ratio(report.scored(cut, labels), report.chained(cut, n_tracks, labels), len(labels),
                                       0.72, n_resamples=200)
    assert np.isnan(low) and np.isnan(high)
    assert report.without_nan({"a": [float("nan"), 1.0]}) == {"a": [None, 1.0]}
