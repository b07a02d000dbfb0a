"""experiments/lensing_nbody/simulation_cv.py: regression figures and intervals that resample whole simulations."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "lensing_nbody" / "simulation_cv.py"
spec = importlib.util.spec_from_file_location("lensing_nbody_simulation_cv", SCRIPT)
simulation_cv = importlib.util.module_from_spec(spec)
spec.loader.exec_module(simulation_cv)


def test_regression_figures_of_a_perfect_and_a_constant_estimate():
    truth = np.repeat([0.0, 0.06, 0.1, 0.15, 0.2], 10)
    perfect = simulation_cv.regression_figures(truth, truth - 0.01, truth + 0.01, truth)
    assert perfect == pytest.approx({"RMSE": 0.0, "correlation": 1.0, "slope": 1.0, "coverage": 1.0})
    noisy = truth + np.random.default_rng(0).normal(0.0, 0.01, len(truth))
    shrunk = simulation_cv.regression_figures(0.5 * noisy + 0.05, noisy - 0.3, noisy - 0.2, truth)
    assert abs(shrunk["slope"] - 0.5) < 0.05 and shrunk["coverage"] == 0.0 and shrunk["correlation"] > 0.9


def test_resampling_simulations_keeps_their_maps_together_and_widens_the_interval():
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(12), 100)
    # maps of one simulation share its modes: a common offset per simulation, then independent map noise
    values = np.repeat(rng.normal(0.0, 1.0, 12), 100) + rng.normal(0.0, 1.0, len(groups))
    widths = {}
    for by_simulation in (True, False):
        samples = list(simulation_cv.resampled(groups, np.random.default_rng(2), by_simulation))
        assert len(samples) == simulation_cv.RESAMPLES and all(len(s) == len(groups) for s in samples[:5])
        if by_simulation:  # every drawn simulation comes with all its maps
            assert all(np.all(np.bincount(groups[s], minlength=12) % 100 == 0) for s in samples[:20])
        means = [values[s].mean() for s in samples]
        widths[by_simulation] = np.percentile(means, 84) - np.percentile(means, 16)
    # the per-simulation offsets dominate the mean's spread: about sqrt(100 + 1) times wider than map-level
    assert widths[True] > 5 * widths[False]
