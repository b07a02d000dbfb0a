"""Every figure of merit numl reports, implemented once.

Tasks use the torchmetrics classes; baselines and study scripts call the thin functions on arrays, which run
the same tensor code. Statistics that need every event of the epoch (median, FWHM, a working point) keep the
per-event values in torchmetrics states with ``dist_reduce_fx="cat"``, so under DDP they are computed on the
union of all ranks' events, not on one rank's shard.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torchmetrics import CatMetric, MeanMetric, Metric
from torchmetrics.classification import BinaryAUROC
from torchmetrics.functional import mean_squared_error
from torchmetrics.utilities import dim_zero_cat

from numl.sim.petalo import COORDINATES
from numl.utils.errors import check_choice

#: fraction of a normal distribution within one sigma of its mean (68.27 %)
ONE_SIGMA_COVERAGE = math.erf(1 / math.sqrt(2))


def _tensor(values) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.float64)) if not isinstance(values, torch.Tensor) else values


# ----- per-event quantities ------------------------------------------------------------------------------
def angular_error_deg(predicted: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Space angle in degrees between predicted and true directions (B, 3); neither needs to be unit length."""
    cos = (predicted * true).sum(dim=-1) / (predicted.norm(dim=-1) * true.norm(dim=-1)).clamp(min=1e-12)
    return torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0)))


def gaussian_nll(mean: torch.Tensor, log_sigma: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-event negative log likelihood of `target` under N(mean, sigma^2), sigma given as its log."""
    return 0.5 * ((target - mean) * torch.exp(-log_sigma)) ** 2 + log_sigma + 0.5 * math.log(2.0 * math.pi)


def within_one_sigma(predicted: torch.Tensor, sigma: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """True where |predicted - target| <= sigma; False for a NaN prediction (a flagged event is not covered)."""
    return (predicted - target).abs() <= sigma


# ----- statistics of a distribution -----------------------------------------------------------------------
def fwhm(residuals) -> float:
    """Full width at half maximum of a residual distribution, from a histogram with interpolated edges.

    Bins are a tenth of the robust (interquartile) sigma wide, smoothed over three bins, so that the estimate
    is stable for a few thousand events and insensitive to the long tails of multi-site events. NaN below
    10 finite values. numpy, not torch: np.histogram is the reference binning and this runs once per epoch.
    """
    x = np.asarray(residuals.detach().cpu() if isinstance(residuals, torch.Tensor) else residuals, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size < 10:
        return float("nan")
    q25, q50, q75 = np.percentile(x, [25, 50, 75])
    sigma = max((q75 - q25) / 1.349, 1e-6)
    edges = np.arange(q50 - 8 * sigma, q50 + 8 * sigma + sigma / 10, sigma / 10)
    counts, _ = np.histogram(x, bins=edges)
    counts = np.convolve(counts, np.ones(3) / 3, mode="same")
    centres = 0.5 * (edges[1:] + edges[:-1])
    peak = int(np.argmax(counts))
    half = counts[peak] / 2
    left = peak
    while left > 0 and counts[left] > half:
        left -= 1
    right = peak
    while right < len(counts) - 1 and counts[right] > half:
        right += 1

    def crossing(i_out: int, i_in: int) -> float:
        c_out, c_in = counts[i_out], counts[i_in]
        frac = 0.0 if c_in == c_out else (half - c_out) / (c_in - c_out)
        return centres[i_out] + frac * (centres[i_in] - centres[i_out])

    return float(crossing(right, right - 1) - crossing(left, left + 1))


def rms(residuals) -> float:
    """Root mean square of residuals (NaN for none): torchmetrics' RMSE against zero, the tasks' code."""
    x = _tensor(residuals).flatten()
    return float(mean_squared_error(x, torch.zeros_like(x), squared=False)) if x.numel() else float("nan")


_STATISTICS = {
    # torch.quantile interpolates between the two middle values like np.median; Tensor.median does not
    "median": lambda v: torch.quantile(v, 0.5),
    # the spread of the residuals themselves (population std), e.g. sigma(log10 E)
    "std": lambda v: v.std(correction=0),
    "fwhm": lambda v: torch.tensor(fwhm(v), dtype=v.dtype, device=v.device),
}


class EventStatistic(CatMetric):
    """One statistic ("median", "std" or "fwhm") of a per-event quantity over every event of the epoch.

    Values are flattened; non-finite ones (flagged events) are left out. NaN when there is no value.
    """

    def __init__(self, statistic: str, **kwargs) -> None:
        check_choice("statistic", statistic, tuple(_STATISTICS))
        super().__init__(nan_strategy="disable", **kwargs)
        self.statistic = statistic

    def update(self, value: torch.Tensor) -> None:  # type: ignore[override]
        value = value.detach().flatten()
        super().update(value[torch.isfinite(value)])

    def compute(self) -> torch.Tensor:
        values = super().compute()
        if isinstance(values, list) or values.numel() == 0:
            return torch.tensor(float("nan"), device=self.device)
        return _STATISTICS[self.statistic](values.double()).float()


class BinaryAUROCOrNaN(BinaryAUROC):
    """torchmetrics' exact BinaryAUROC, but NaN (not 0) when the epoch's targets hold one class only: a test set of
    nu_mu CC events alone has no track AUROC."""

    def compute(self) -> torch.Tensor:
        target = dim_zero_cat(self.target)
        if target.numel() == 0 or torch.unique(target).numel() < 2:
            return torch.tensor(float("nan"), device=self.device)
        return super().compute()


# ----- calibration of predicted errors --------------------------------------------------------------------
class OneSigmaCoverage(MeanMetric):
    """Fraction of events whose truth lies within one predicted sigma: ONE_SIGMA_COVERAGE if sigma is calibrated."""

    def update(self, predicted, sigma, target) -> None:  # type: ignore[override]
        super().update(within_one_sigma(predicted, sigma, target).float())


def one_sigma_coverage(predicted, sigma, target) -> np.ndarray:
    """OneSigmaCoverage on arrays: the fraction per column ([N] -> scalar, [N, K] -> K values)."""
    inside = within_one_sigma(_tensor(predicted), _tensor(sigma), _tensor(target))
    return inside.double().mean(dim=0).numpy()


# ----- working points of a selection ----------------------------------------------------------------------
#: signal efficiencies at which NEXT-White quotes background rejection (CNN at 65 %, classical cut at 72 %)
NEXT_WORKING_POINTS = (0.65, 0.72)


def auroc_standard_error(auroc: float, n_positive: int, n_negative: int) -> float:
    """Standard error of an AUROC measured on n_positive and n_negative events (Hanley & McNeil 1982)."""
    q1, q2 = auroc / (2 - auroc), 2 * auroc**2 / (1 + auroc)
    variance = (auroc * (1 - auroc) + (n_positive - 1) * (q1 - auroc**2)
                + (n_negative - 1) * (q2 - auroc**2)) / (n_positive * n_negative)
    return math.sqrt(max(variance, 0.0))


def signal_efficiency_threshold(signal_scores: torch.Tensor, efficiency: float) -> torch.Tensor:
    """The tightest cut (accept score >= cut) that keeps at least `efficiency` of the signal events: the
    k-th highest signal score, k = ceil(efficiency * N)."""
    ranked = torch.sort(signal_scores.flatten(), descending=True).values
    k = max(math.ceil(efficiency * len(ranked) - 1e-9), 1)
    return ranked[k - 1]


def background_acceptance(scores: torch.Tensor, labels: torch.Tensor, signal_efficiency: float
                          ) -> tuple[torch.Tensor, int]:
    """Number of background events (label 0) accepted at the cut keeping `signal_efficiency` of the signal
    (label 1; higher score = more signal-like), and the number of background events."""
    signal = labels > 0.5
    threshold = signal_efficiency_threshold(scores[signal], signal_efficiency)
    background = scores[~signal]
    return (background >= threshold).sum(), len(background)


class _WorkingPointMetric(Metric):
    """Scores and labels of every event of the epoch (cat states: all ranks' events under DDP)."""

    full_state_update = False

    def __init__(self, signal_efficiency: float) -> None:
        super().__init__()
        self.signal_efficiency = float(signal_efficiency)
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")

    def update(self, scores: torch.Tensor, labels: torch.Tensor) -> None:  # type: ignore[override]
        self.scores.append(scores.detach().double().flatten())
        self.labels.append(labels.detach().double().flatten())

    def _acceptance(self) -> tuple[torch.Tensor, int] | None:
        """(background accepted, background total), or None without both signal and background events."""
        if isinstance(self.scores, list) and not self.scores:
            return None
        scores, labels = dim_zero_cat(self.scores), dim_zero_cat(self.labels)
        n_signal = int((labels > 0.5).sum())
        if n_signal == 0 or n_signal == len(labels):
            return None
        return background_acceptance(scores, labels, self.signal_efficiency)


class BackgroundRejectionFactor(_WorkingPointMetric):
    """1 / background efficiency at the cut keeping `signal_efficiency` of the signal (NEXT's figure of merit).
    When no background event passes it is the number of background events (a lower bound)."""

    def compute(self) -> torch.Tensor:
        acceptance = self._acceptance()
        if acceptance is None:
            return torch.tensor(float("nan"), device=self.device)
        accepted, total = acceptance
        return (total / accepted.clamp(min=1).double()).float()


class BackgroundRejectedFraction(_WorkingPointMetric):
    """1 - background efficiency at the cut keeping `signal_efficiency` of the signal: the fraction of
    background events the selection removes (the PETALO tagger's multi-site events discarded)."""

    def compute(self) -> torch.Tensor:
        acceptance = self._acceptance()
        if acceptance is None:
            return torch.tensor(float("nan"), device=self.device)
        accepted, total = acceptance
        return (1.0 - accepted.double() / total).float()


def background_rejection_factor(scores, labels, signal_efficiency: float) -> float:
    """BackgroundRejectionFactor on the arrays of one set of events (label 1 = signal)."""
    metric = BackgroundRejectionFactor(signal_efficiency)
    metric.update(_tensor(scores), _tensor(np.asarray(labels, dtype=np.float64)))
    return float(metric.compute())


# ----- PETALO positions with a predicted error, on prediction arrays (task predictions, saved runs) ----------
#: events with a predicted z error below these values [mm] are kept in the cut curve (12 mm: the seed's)
Z_SIGMA_CUTS_MM = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0)


def sigma_cut_curve(
    predictions: dict[str, Any], cuts_mm=Z_SIGMA_CUTS_MM, coordinate: int = 2
) -> list[dict[str, float]]:
    """Efficiency and resolution of the events whose predicted sigma (default of z) is below each cut."""
    pred = np.asarray(predictions["position_mm_pred"], dtype=np.float64)
    true = np.asarray(predictions["position_mm"], dtype=np.float64)
    sigma = np.asarray(predictions["sigma_mm"], dtype=np.float64)[:, coordinate]
    rows = []
    for cut in cuts_mm:
        keep = sigma < cut
        res = pred[keep, coordinate] - true[keep, coordinate]
        rows.append(
            {
                "cut_mm": float(cut),
                "efficiency": float(keep.mean()),
                "fwhm_mm": fwhm(res),
                "rms_mm": rms(res),
            }
        )
    return rows


def position_coverage(predictions: dict[str, Any], sigma_key: str = "sigma_mm") -> dict[str, float]:
    """Fraction of events with |predicted - true| <= predicted sigma, per coordinate (68.3 % if calibrated)."""
    cover = one_sigma_coverage(predictions["position_mm_pred"], predictions[sigma_key], predictions["position_mm"])
    return {name: float(cover[i]) for i, name in enumerate(COORDINATES)}


def gaussian_nll_mm(predictions: dict[str, Any], sigma_key: str = "sigma_mm") -> dict[str, float]:
    """Mean Gaussian negative log likelihood per coordinate of the truth under (prediction, sigma), in mm units."""
    pred, true, sigma = (torch.as_tensor(np.asarray(predictions[key], dtype=np.float64))
                         for key in ("position_mm_pred", "position_mm", sigma_key))
    ok = torch.isfinite(pred).all(dim=1) & torch.isfinite(sigma).all(dim=1)
    nll = gaussian_nll(pred[ok], torch.log(sigma[ok]), true[ok]).mean(dim=0)
    return {name: float(nll[i]) for i, name in enumerate(COORDINATES)}
