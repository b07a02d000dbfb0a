"""experiments/next_topology/report.py: the paired bootstrap of the network / blob-cut rejection ratio."""

import importlib.util
from pathlib import Path

import numpy as np

from numl.metrics import background_rejection_factor

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "next_topology" / "report.py"
spec = importlib.util.spec_from_file_location("next_topology_report", SCRIPT)
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)


def test_the_same_scores_give_a_ratio_of_one_in_every_resample():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 1000)
    score = labels + rng.normal(0.0, 1.0, 1000)
    assert report.bootstrap_cut_ratio(score, score, labels, 0.72, n_resamples=200) == (1.0, 1.0)


def test_the_paired_interval_holds_the_ratio_and_is_narrower_than_independent_poisson_errors():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 2000)
    cut = labels + rng.normal(0.0, 1.0, 2000)
    network = cut + 0.8 * labels + rng.normal(0.0, 0.3, 2000)  # the cut's information and more
    ratio = (background_rejection_factor(network, labels, 0.72)
             / background_rejection_factor(cut, labels, 0.72))
    low, high = report.bootstrap_cut_ratio(network, cut, labels, 0.72, n_resamples=500)
    assert low < ratio < high and ratio > 1.5
    # Poisson errors of the two rejections taken as independent
    n_background = int((labels == 0).sum())
    passing = [n_background / background_rejection_factor(s, labels, 0.72) for s in (network, cut)]
    independent = ratio * np.sqrt(sum(1.0 / k for k in passing))
    assert (high - low) / 2 < independent
