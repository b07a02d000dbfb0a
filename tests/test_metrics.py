"""numl.metrics against independent numpy / scipy computations, and the tasks' metrics and calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torchmetrics import MeanSquaredError

from numl.metrics import (
    ONE_SIGMA_COVERAGE,
    BackgroundRejectedFraction,
    BackgroundRejectionFactor,
    EventStatistic,
    OneSigmaCoverage,
    angular_error_deg,
    background_rejection_factor,
    fwhm,
    gaussian_nll,
    one_sigma_coverage,
    rms,
    signal_efficiency_threshold,
)

RNG = np.random.default_rng(12)


def _in_batches(metric, *arrays, size=37):
    """Feed a metric in uneven batches, as a validation loop does."""
    for start in range(0, len(arrays[0]), size):
        metric.update(*(torch.as_tensor(a[start:start + size]) for a in arrays))
    return metric.compute()


def test_angular_error_matches_arccos_of_normalised_dot_product():
    a, b = RNG.normal(size=(500, 3)), RNG.normal(size=(500, 3))
    expected = np.degrees(np.arccos(np.clip(np.einsum("ij,ij->i", a, b) / np.linalg.norm(a, axis=1)
                                            / np.linalg.norm(b, axis=1), -1, 1)))
    got = angular_error_deg(torch.tensor(a), torch.tensor(3.0 * b)).numpy()  # lengths do not matter
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-7)
    assert float(angular_error_deg(torch.tensor([[0.0, 0, 1]]), torch.tensor([[0.0, 0, -1]]))) == pytest.approx(180)


@pytest.mark.parametrize("statistic, reference", [("median", np.median), ("std", np.std)])
def test_event_statistics_over_all_batches(statistic, reference):
    values = RNG.gamma(2.0, 3.0, size=1001).astype(np.float32)  # skewed: median != mean
    values[[5, 50]] = [np.nan, np.inf]  # flagged events are left out
    got = float(_in_batches(EventStatistic(statistic), values))
    assert got == pytest.approx(reference(values[np.isfinite(values)]), rel=1e-5)
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert math.isnan(float(EventStatistic(statistic).compute()))


def test_fwhm_of_gaussian_and_cauchy_residuals():
    sigma, gamma = 2.0, 1.5
    gaussian = RNG.normal(0.3, sigma, 40000)
    assert fwhm(gaussian) == pytest.approx(2 * math.sqrt(2 * math.log(2)) * sigma, rel=0.03)
    # Cauchy: the FWHM (2 gamma) is finite although the RMS is not; the tails must not widen it
    assert fwhm(stats.cauchy.rvs(scale=gamma, size=40000, random_state=1)) == pytest.approx(2 * gamma, rel=0.05)
    assert math.isnan(fwhm(gaussian[:9]))
    # the metric over batches is the same number
    assert float(_in_batches(EventStatistic("fwhm"), gaussian.astype(np.float32))) == pytest.approx(
        fwhm(gaussian.astype(np.float32)), rel=1e-5)


def test_rms_is_torchmetrics_rmse():
    residual = RNG.normal(1.0, 2.0, 999)
    assert rms(residual) == pytest.approx(np.sqrt(np.mean(residual**2)), rel=1e-12)
    predicted, true = RNG.normal(size=(300, 2)), RNG.normal(size=(300, 2))
    got = float(_in_batches(MeanSquaredError(squared=False), predicted, true))
    assert got == pytest.approx(np.sqrt(np.mean((predicted - true) ** 2)), rel=1e-6)
    assert math.isnan(rms([]))


def test_gaussian_nll_is_minus_scipy_log_pdf():
    mean, sigma, target = RNG.normal(size=400), RNG.uniform(0.1, 5, 400), RNG.normal(size=400)
    got = gaussian_nll(torch.tensor(mean), torch.log(torch.tensor(sigma)), torch.tensor(target)).numpy()
    np.testing.assert_allclose(got, -stats.norm.logpdf(target, mean, sigma), rtol=1e-10)


def test_one_sigma_coverage_of_calibrated_and_miscalibrated_errors():
    n = 50000
    sigma = RNG.uniform(0.5, 3.0, n)
    residual = RNG.normal(size=n) * sigma
    assert ONE_SIGMA_COVERAGE == pytest.approx(stats.norm.cdf(1) - stats.norm.cdf(-1), rel=1e-12)
    predicted = residual.copy()
    predicted[:100] = np.nan  # a flagged event is not covered
    expected = np.mean(np.abs(predicted) <= sigma)
    assert float(one_sigma_coverage(predicted, sigma, np.zeros(n))) == pytest.approx(expected, abs=1e-12)
    assert float(_in_batches(OneSigmaCoverage(), predicted, sigma, np.zeros(n))) == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(ONE_SIGMA_COVERAGE, abs=0.01)
    # twice over-confident: P(|z| <= 1/2)
    assert float(one_sigma_coverage(residual, sigma / 2, np.zeros(n))) == pytest.approx(
        2 * stats.norm.cdf(0.5) - 1, abs=0.01)
    per_column = one_sigma_coverage(np.stack([residual, residual], 1), np.stack([sigma, 2 * sigma], 1), 0.0)
    assert per_column.shape == (2,) and per_column[1] > per_column[0]


def _rejection_by_counting(scores, labels, efficiency):
    """Scan every cut from the highest signal score down; take the first that keeps >= efficiency of the signal."""
    signal, background = scores[labels == 1], scores[labels == 0]
    for cut in np.sort(signal)[::-1]:
        if np.mean(signal >= cut) >= efficiency:
            return np.sum(background >= cut), len(background)
    raise AssertionError


@pytest.mark.parametrize("efficiency", [0.5, 0.65, 0.72, 0.9])
def test_background_rejection_at_signal_efficiency(efficiency):
    labels = (RNG.uniform(size=20000) < 0.4).astype(np.float64)
    scores = RNG.normal(size=20000) + 1.5 * labels
    accepted, total = _rejection_by_counting(scores, labels, efficiency)
    factor = float(_in_batches(BackgroundRejectionFactor(efficiency), scores, labels, size=1000))
    assert factor == pytest.approx(total / accepted, rel=1e-6)
    assert background_rejection_factor(scores, labels, efficiency) == pytest.approx(total / accepted, rel=1e-6)
    fraction = float(_in_batches(BackgroundRejectedFraction(efficiency), scores, labels, size=1000))
    assert fraction == pytest.approx(1 - accepted / total, rel=1e-6)
    # Gaussian expectation: background N(0, 1), signal N(1.5, 1); the cut at the signal's (1 - eff) quantile
    cut = 1.5 + stats.norm.ppf(1 - efficiency)
    assert 1 - fraction == pytest.approx(stats.norm.sf(cut), abs=0.02)


def test_working_point_edge_cases():
    metric = BackgroundRejectionFactor(0.5)
    # signal scores 0.6..0.9: the 50 % cut keeps 0.9 and 0.8; one background event of four passes it
    metric.update(torch.tensor([0.6, 0.7, 0.8, 0.9]), torch.ones(4))
    metric.update(torch.tensor([0.1, 0.2, 0.3, 0.8]), torch.zeros(4))
    assert metric.compute().item() == pytest.approx(4.0)
    assert float(signal_efficiency_threshold(torch.tensor([0.6, 0.7, 0.8, 0.9]), 0.5)) == pytest.approx(0.8)
    # none passes: the number of background events (a lower bound); one class only: NaN
    assert background_rejection_factor([5.0, 6.0, 1.0, 2.0], [1, 1, 0, 0], 0.9) == 2.0
    assert math.isnan(background_rejection_factor([5.0, 6.0], [1, 1], 0.9))
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert math.isnan(float(BackgroundRejectedFraction(0.9).compute()))
