"""Classical baselines for massive (label 1) vs massless (label 0) neutrino convergence maps.

- ``GaussianLikelihoodRatio``: the exact log likelihood ratio of Gaussian maps with known spectra, computed on
  the independent Fourier modes. By the Neyman-Pearson lemma no classifier beats it on Gaussian maps.
- ``GaussianLikelihoodClassifier``: a Gaussian likelihood ratio of summary statistics (``MapStatistics``: the
  binned power spectra, peak counts, the one-point PDF, Minkowski functionals, or several together) with means
  and covariances estimated from training maps; usable on any maps. ``PowerSpectrumClassifier`` is the one of
  the power spectrum alone.
- ``GaussianLikelihoodGridRegressor``: M_nu from the same likelihood by chi^2 minimisation over the
  interpolated grid of training cosmologies.

Classifiers return scores ``ln p(map | massive) - ln p(map | massless)``; equal priors put the decision at 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from numl.baselines.base import Baseline, BaselineResult
from numl.sim.lensing.maps import ConvergenceMapSimulator, binned_power_spectra
from numl.sim.lensing.spectra import ConvergenceSpectra
from numl.sim.lensing.statistics import (
    interior_pixels,
    minkowski_functionals,
    one_point_pdf,
    peak_counts,
    smooth_maps,
    wraparound_border_pixels,
)
from numl.utils.errors import ConfigError, check_choice, check_positive

# Modes whose beam power is below this carry signal under the float32 round-off of a smoothed map.
_MIN_BEAM_POWER = 1e-6
# A direction of the standardised statistics whose variance is below this fraction of the largest is a
# linear identity among the statistics (round-off above zero), not information: it is dropped.
_DEGENERATE_EIGENVALUE = 1e-9
STATISTICS = ("power_spectrum", "peak_counts", "one_point_pdf", "minkowski_functionals")
COVARIANCES = ("per_class", "pooled")


def _independent_mode_weights(n_pix: int) -> np.ndarray:
    """Weight of each rfft2 mode in the log likelihood: 1 per independent complex mode, 1/2 per self-conjugate
    (real) mode, 0 for the DC mode and for modes that are the complex conjugate of another rfft2 mode."""
    m = n_pix // 2 + 1
    weight = np.ones((n_pix, m))
    self_paired_cols = [0] + ([m - 1] if n_pix % 2 == 0 else [])
    for col in self_paired_cols:
        # Within these columns row ky and row -ky are conjugates: keep rows 1 .. N/2 only.
        weight[n_pix // 2 + 1 :, col] = 0.0
        weight[0, col] = 0.5
        if n_pix % 2 == 0:
            weight[n_pix // 2, col] = 0.5
    weight[0, 0] = 0.0  # DC: zero-mean maps under both hypotheses
    return weight


class GaussianLikelihoodRatio:
    """Exact ln p(map | massive) - ln p(map | massless) for Gaussian maps with known C_ell, N_ell and beam.

    The two hypotheses are given either as spectra plus ``simulator_kwargs`` (those of
    ``ConvergenceMapSimulator``: ``field_deg``, ``n_pix``, ``shape_noise_sigma_e``, ``galaxy_density_arcmin2``,
    ``smoothing_arcmin``), which must match the maps, or as the two simulators that made the maps.
    Per independent mode k with data vector d_k over source planes and covariance Sigma_c,k (signal + noise,
    times the beam squared):
    complex mode: ln p = -d^H Sigma^-1 d - ln det(pi Sigma);  self-conjugate (real) mode: half of that with 2 pi.
    Exact for Gaussian maps; for lognormal simulators it is the Gaussian approximation with the same spectra.
    """

    def __init__(self, massless: ConvergenceSpectra | ConvergenceMapSimulator,
                 massive: ConvergenceSpectra | ConvergenceMapSimulator, **simulator_kwargs) -> None:
        gaussian_kwargs = {**simulator_kwargs, "field": "gaussian"}
        sims = [h if isinstance(h, ConvergenceMapSimulator) else ConvergenceMapSimulator(h, **gaussian_kwargs)
                for h in (massless, massive)]
        for attr in ("field_deg", "n_pix", "noise_sigma_pix", "smoothing_arcmin"):
            if getattr(sims[0], attr) != getattr(sims[1], attr):
                raise ConfigError(f"{attr} differs between the hypotheses: {getattr(sims[0], attr)} vs "
                                  f"{getattr(sims[1], attr)}; both must describe the same maps")
        if sims[0].spectra.source_redshifts != sims[1].spectra.source_redshifts:
            raise ConfigError(f"source_redshifts differ between the hypotheses: {sims[0].spectra.source_redshifts} "
                              f"vs {sims[1].spectra.source_redshifts}")
        self.n_pix = sims[0].n_pix
        self.n_z = sims[0].n_z
        beam_power = sims[0].beam(sims[0].ell_grid) ** 2
        weight = _independent_mode_weights(self.n_pix) * (beam_power > _MIN_BEAM_POWER)
        keep = weight > 0
        # Covariances of the kept modes as [n_modes, n_z, n_z].
        self._cov = [np.moveaxis(sim.fourier_covariance(), (0, 1), (-2, -1))[keep] for sim in sims]
        self._weight = weight[keep]
        self._keep = torch.from_numpy(keep)
        inv0, inv1 = (np.linalg.inv(c) for c in self._cov)
        logdet0, logdet1 = (np.linalg.slogdet(c)[1] for c in self._cov)
        self._inv_diff = torch.from_numpy(inv1 - inv0)  # Sigma_1^-1 - Sigma_0^-1
        self._const = float(-np.sum(self._weight * (logdet1 - logdet0)))
        self._w = torch.from_numpy(self._weight)

    def log_likelihood_ratio(self, maps: torch.Tensor) -> torch.Tensor:
        """Scores [n_maps] (float64) for maps [n_maps, n_z, n_pix, n_pix]; > 0 favours massive neutrinos."""
        if maps.ndim != 4 or tuple(maps.shape[1:]) != (self.n_z, self.n_pix, self.n_pix):
            raise ConfigError(
                f"maps shape {tuple(maps.shape)}: must be [n_maps, {self.n_z}, {self.n_pix}, {self.n_pix}]"
            )
        device = maps.device
        k = torch.fft.rfft2(maps.to(torch.float64))[..., self._keep.to(device)]  # [n, n_z, n_modes]
        kr = torch.view_as_real(k)  # [n, n_z, n_modes, 2]
        # d^H A d for real symmetric A = sum_ij A_ij (Re d_i Re d_j + Im d_i Im d_j).
        quad = torch.einsum("nimc,mij,njmc->nm", kr, self._inv_diff.to(device), kr)
        return -(quad @ self._w.to(device)) + self._const

    def predict(self, maps: torch.Tensor) -> torch.Tensor:
        """1 (massive) where the log likelihood ratio is positive, else 0 (equal priors)."""
        return (self.log_likelihood_ratio(maps) > 0).long()

    def expected_log_likelihood_ratio(self) -> dict[str, float]:
        """Analytic mean and standard deviation of the score under each hypothesis.

        Mean under massive = KL(massive || massless); under massless = -KL(massless || massive). Per complex
        mode KL = tr(S_a^-1 S_b) - n_z - ln det(S_a^-1 S_b); real modes count half. The variance of a complex
        mode's quadratic form d^H A d is tr((A S)^2); of a real mode's, 2 tr((A S)^2) (times its weight 1/4).
        """
        c0, c1 = self._cov
        inv_diff = self._inv_diff.numpy()
        var_weight = np.where(self._weight == 1.0, 1.0, 0.5)
        out = {}
        for name, cov_true, cov_other, sign in (("massive", c1, c0, 1.0), ("massless", c0, c1, -1.0)):
            ratio = np.linalg.solve(cov_other, cov_true)
            kl = np.trace(ratio, axis1=-2, axis2=-1) - self.n_z - np.linalg.slogdet(ratio)[1]
            a_s = inv_diff @ cov_true
            var = np.trace(a_s @ a_s, axis1=-2, axis2=-1)
            out[f"mean_{name}"] = sign * float(np.sum(self._weight * kl))
            out[f"std_{name}"] = float(np.sqrt(np.sum(var_weight * var)))
        return out


def power_spectrum_features(maps: torch.Tensor, field_deg: float, ell_bin_edges: Sequence[float],
                            apodisation_pixels: int = 0) -> np.ndarray:
    """Per-map vector of the binned spectra: log of the auto spectra (closer to Gaussian than the power), and
    each cross spectrum as a correlation coefficient per bin (signed, scaled by the geometric mean of the autos).
    ``apodisation_pixels``: the edge taper of ``binned_power_spectra`` (0: none)."""
    cl = binned_power_spectra(maps, field_deg, ell_bin_edges, apodisation_pixels).cpu().numpy()
    n_z = cl.shape[1]
    auto = np.stack([cl[:, i, i] for i in range(n_z)], axis=1)
    feats = [np.log(auto).reshape(len(cl), -1)]
    for i in range(n_z):
        for j in range(i + 1, n_z):
            feats.append(cl[:, i, j] / np.sqrt(cl[:, i, i] * cl[:, j, j]))
    return np.concatenate(feats, axis=1)


class MapStatistics:
    """The summary-statistic vector of a map: any of STATISTICS, concatenated, per source plane.

    - ``power_spectrum``: binned auto and cross spectra (``power_spectrum_features``) of the unsmoothed maps,
      tapered over ``apodisation_pixels`` from each edge first (0: none);
    - ``peak_counts``: local maxima per bin of height nu = kappa / sigma;
    - ``one_point_pdf``: the histogram of kappa / sigma, as a density;
    - ``minkowski_functionals``: V0, V1, V2 at thresholds nu.

    Peaks, PDF and Minkowski functionals are measured on maps smoothed with a Gaussian of ``smoothing_arcmin``
    (which tames shape noise), in bins of nu spanning each ``*_nu_range`` with ``n_nu_bins`` bins, over the pixels
    at least ``border`` from the edges (``wraparound_border_pixels``: 0 for periodic maps). sigma is one
    number per source plane, the standard deviation of the smoothed fitting maps of all classes (``calibrate``):
    fixed, not per map, so that the amplitude of the fluctuations, most of the neutrino signal, stays in the
    statistics.
    """

    def __init__(self, statistics: Sequence[str], field_deg: float, ell_bin_edges: Sequence[float] | None = None,
                 smoothing_arcmin: float = 0.0, n_nu_bins: int = 8,
                 peak_nu_range: Sequence[float] = (-1.0, 4.0), pdf_nu_range: Sequence[float] = (-2.5, 3.5),
                 minkowski_nu_range: Sequence[float] = (-2.0, 3.0), border: int = 0,
                 apodisation_pixels: int = 0) -> None:
        if not statistics:
            raise ConfigError(f"baseline.statistics=[]: choose at least one of {', '.join(STATISTICS)}")
        for i, name in enumerate(statistics):
            check_choice(f"baseline.statistics[{i}]", name, STATISTICS)
        if "power_spectrum" in statistics and ell_bin_edges is None:
            raise ConfigError("ell_bin_edges: missing; the power_spectrum statistic needs multipole bins")
        check_positive("baseline.n_nu_bins", n_nu_bins, integer=True)
        check_positive("baseline.smoothing_arcmin", smoothing_arcmin, allow_zero=True)
        check_positive("baseline.border_pixels", border, integer=True, allow_zero=True)
        check_positive("baseline.apodisation_pixels", apodisation_pixels, integer=True, allow_zero=True)
        self.border, self.apodisation_pixels = int(border), int(apodisation_pixels)
        self.nu_edges = {}
        for key, arg, nu_range in (("peak_counts", "peak_nu_range", peak_nu_range),
                                   ("one_point_pdf", "pdf_nu_range", pdf_nu_range),
                                   ("minkowski_functionals", "minkowski_nu_range", minkowski_nu_range)):
            if len(nu_range) != 2 or not float(nu_range[0]) < float(nu_range[1]):
                raise ConfigError(f"baseline.{arg}={list(nu_range)}: must be [low, high] with low < high")
            self.nu_edges[key] = np.linspace(float(nu_range[0]), float(nu_range[1]), n_nu_bins + 1)
        self.statistics = tuple(statistics)
        self.field_deg, self.smoothing_arcmin = float(field_deg), float(smoothing_arcmin)
        self.ell_bin_edges = None if ell_bin_edges is None else np.asarray(ell_bin_edges, dtype=np.float64)
        self.sigma: torch.Tensor | None = None  # per plane, of the smoothed fitting maps

    def calibrate(self, maps: torch.Tensor) -> MapStatistics:
        """sigma per source plane from the fitting maps (all classes together)."""
        smoothed = smooth_maps(maps, self.field_deg, self.smoothing_arcmin).to(torch.float64)
        self.sigma = interior_pixels(smoothed, self.border).transpose(0, 1).flatten(1).std(dim=1).cpu()
        return self

    def __call__(self, maps: torch.Tensor) -> np.ndarray:
        """Feature vectors [n_maps, n_features] float64."""
        feats = []
        if "power_spectrum" in self.statistics:
            feats.append(power_spectrum_features(maps, self.field_deg, self.ell_bin_edges, self.apodisation_pixels))
        others = [s for s in self.statistics if s != "power_spectrum"]
        if others:
            if self.sigma is None:
                raise RuntimeError("MapStatistics: calibrate on fitting maps before measuring peaks, PDF or MFs")
            smoothed = smooth_maps(maps, self.field_deg, self.smoothing_arcmin)
            sigma = self.sigma.to(dtype=torch.float64, device=maps.device)[:, None]  # [n_z, 1]
            edges = {k: torch.as_tensor(v, device=maps.device)[None, :] * sigma for k, v in self.nu_edges.items()}
            n = len(maps)
            for name in others:
                if name == "peak_counts":
                    feats.append(peak_counts(smoothed, edges[name], self.border).reshape(n, -1).cpu().numpy())
                elif name == "one_point_pdf":
                    pdf = one_point_pdf(smoothed, edges[name], self.border)
                    feats.append((pdf * sigma).reshape(n, -1).cpu().numpy())
                else:
                    feats.extend(v.reshape(n, -1).cpu().numpy()
                                 for v in minkowski_functionals(smoothed, edges[name], self.border))
        return np.concatenate(feats, axis=1)


def _informative_directions(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(offset, projection [n_features, n_kept]) that standardises the features and keeps the directions with
    variance in the fitting maps. Statistics can be exactly degenerate: PDF bins that hold every pixel sum to
    one over the bin width, V0 is a running sum of the PDF, a peak bin may stay empty; their covariance is
    singular. A Gaussian likelihood is unchanged by an invertible linear map, so when nothing is degenerate the
    result is that of the raw features."""
    offset = feats.mean(axis=0)
    std = feats.std(axis=0)
    varying = std > 1e-12 * max(float(np.abs(feats).max()), 1e-300)
    scale = np.zeros_like(std)
    scale[varying] = 1.0 / std[varying]
    corr = np.cov(feats * scale, rowvar=False).reshape(feats.shape[1], feats.shape[1])
    eigval, eigvec = np.linalg.eigh(corr)
    keep = eigval > _DEGENERATE_EIGENVALUE * eigval.max()
    return offset, scale[:, None] * eigvec[:, keep]


class GaussianLikelihoodClassifier:
    """Gaussian likelihood ratio of a summary-statistic vector, ln N(f; mu_1, C_1) - ln N(f; mu_0, C_0), with
    each class's mean and covariance estimated from labelled fitting maps (1 = massive, 0 = massless) and
    the inverse covariance debiased by the Hartlap et al. (2007) factor (n - p - 2) / (n - 1).

    Args:
        statistic: maps [n, n_z, N, N] -> features [n, p]; a ``calibrate(maps)`` method, if it has one, is
            called on the fitting maps first.
        covariance: "per_class" (each class its own covariance: a quadratic discriminant, which also uses a
            change of scatter) or "pooled" (one covariance for both, as cosmological analyses with a fixed
            covariance: a linear discriminant; with many features and shape noise the per-class covariances
            differ mostly by estimation noise, and pooled wins, e.g. all statistics on noisy 64 px lognormal
            maps 0.735 against 0.669).
    """

    def __init__(self, statistic: Callable[[torch.Tensor], np.ndarray], covariance: str = "per_class") -> None:
        check_choice("baseline.covariance", covariance, COVARIANCES)
        self.statistic, self.covariance = statistic, covariance
        self._classes: list[tuple[np.ndarray, np.ndarray, float]] | None = None

    def _fit_features(self, maps: torch.Tensor) -> np.ndarray:
        if hasattr(self.statistic, "calibrate"):
            self.statistic.calibrate(maps)
        raw = self.statistic(maps)
        self._offset, self._projection = _informative_directions(raw)
        return self.features(maps, raw)

    def features(self, maps: torch.Tensor, raw: np.ndarray | None = None) -> np.ndarray:
        """The kept, standardised directions of the statistic vector of each map."""
        raw = self.statistic(maps) if raw is None else raw
        return (raw - self._offset) @ self._projection

    def fit(self, maps: torch.Tensor, labels: torch.Tensor) -> GaussianLikelihoodClassifier:
        feats = self._fit_features(maps)
        labels = np.asarray(torch.as_tensor(labels).cpu())
        n_features = feats.shape[1]
        members = [feats[labels == c] for c in (0, 1)]
        for c, x in enumerate(members):
            if len(x) < n_features + 3:
                raise ConfigError(
                    f"{type(self).__name__}.fit: {len(x)} maps of class {c}; need at least {n_features + 3} "
                    f"for a {n_features}-dimensional covariance"
                )
        if self.covariance == "pooled":
            residuals = np.concatenate([x - x.mean(axis=0) for x in members])
            dof = len(residuals) - 2
            precision = (dof - n_features - 1) / dof * np.linalg.inv(residuals.T @ residuals / dof)  # Hartlap
            precisions = [precision, precision]
        else:
            precisions = [(len(x) - n_features - 2) / (len(x) - 1)  # Hartlap
                          * np.linalg.inv(np.cov(x, rowvar=False).reshape(n_features, n_features)) for x in members]
        classes = [(x.mean(axis=0), precision, float(np.linalg.slogdet(precision)[1]))
                   for x, precision in zip(members, precisions, strict=True)]
        self._classes = classes
        return self

    def log_likelihood_ratio(self, maps: torch.Tensor) -> torch.Tensor:
        """Scores [n_maps] (float64); > 0 favours massive neutrinos."""
        if self._classes is None:
            raise RuntimeError(f"{type(self).__name__}.log_likelihood_ratio called before fit")
        feats = self.features(maps)
        log_p = []
        for mean, precision, logdet_precision in self._classes:
            d = feats - mean
            log_p.append(-0.5 * np.einsum("ni,ij,nj->n", d, precision, d) + 0.5 * logdet_precision)
        return torch.from_numpy(log_p[1] - log_p[0])

    def predict(self, maps: torch.Tensor) -> torch.Tensor:
        return (self.log_likelihood_ratio(maps) > 0).long()


class PowerSpectrumClassifier(GaussianLikelihoodClassifier):
    """The Gaussian likelihood ratio of the binned auto and cross power spectra (the classical statistic)."""

    def __init__(self, field_deg: float, ell_bin_edges: Sequence[float]) -> None:
        super().__init__(MapStatistics(["power_spectrum"], field_deg, ell_bin_edges))


class GaussianLikelihoodGridRegressor(GaussianLikelihoodClassifier):
    """M_nu by chi^2 minimisation: the statistic's mean at each M_nu of the training grid, linearly
    interpolated in between, one covariance pooled over the grid (Hartlap-corrected); per map the best-fitting
    M_nu on a fine grid within the training range and its 68 % interval, where chi^2 is within 1 of its
    minimum."""

    #: points of the fine M_nu grid per interval of the training grid
    fine_per_interval = 20

    def fit(self, maps: torch.Tensor, labels: torch.Tensor,
            values: Sequence[float] = ()) -> GaussianLikelihoodGridRegressor:
        feats = self._fit_features(maps)
        labels = np.asarray(torch.as_tensor(labels).cpu())
        self.values = np.asarray(values, dtype=np.float64)
        n_values, n_features = len(self.values), feats.shape[1]
        if len(feats) < n_features + n_values + 3 or any((labels == k).sum() < 2 for k in range(n_values)):
            raise ConfigError(f"{type(self).__name__}.fit: {len(feats)} maps for a {n_features}-dimensional "
                              f"covariance and {n_values} cosmologies; simulate more")
        means = np.stack([feats[labels == k].mean(axis=0) for k in range(n_values)])
        residuals = feats - means[labels]
        dof = len(feats) - n_values
        cov = residuals.T @ residuals / dof
        self.precision = (dof - n_features - 1) / dof * np.linalg.inv(cov)  # Hartlap correction
        self.fine_values = np.concatenate(
            [np.linspace(a, b, self.fine_per_interval, endpoint=False) for a, b in zip(self.values[:-1],
                                                                                       self.values[1:], strict=True)]
            + [self.values[-1:]])
        self.fine_means = np.stack([np.interp(self.fine_values, self.values, means[:, i])
                                    for i in range(n_features)], axis=1)
        return self

    def chi2(self, maps: torch.Tensor) -> np.ndarray:
        """chi^2 [n_maps, n_fine] of each map against the interpolated mean at each fine-grid M_nu."""
        f = self.features(maps)
        pf = f @ self.precision
        return (np.einsum("ni,ni->n", pf, f)[:, None] - 2 * pf @ self.fine_means.T
                + np.einsum("ki,ij,kj->k", self.fine_means, self.precision, self.fine_means)[None, :])

    def estimate(self, maps: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Best-fitting M_nu and the low and high ends of its Delta chi^2 <= 1 interval, per map.

        The ends are where chi^2 crosses its minimum + 1, linearly interpolated between fine-grid points (the
        fine-grid points themselves would shrink every interval by half a step on average), or the grid's ends.
        """
        excess = self.chi2(maps)
        excess -= excess.min(axis=1, keepdims=True) + 1.0  # < 0 inside the interval
        rows = np.arange(len(excess))
        best = self.fine_values[excess.argmin(axis=1)]
        inside = excess <= 0
        first, last = inside.argmax(axis=1), inside.shape[1] - 1 - inside[:, ::-1].argmax(axis=1)

        def crossing(inner: np.ndarray, outer: np.ndarray) -> np.ndarray:
            e_in, e_out = excess[rows, inner], excess[rows, outer]
            t = e_in / (e_in - e_out)  # from the inner point (excess <= 0) to the outer one (excess > 0)
            return self.fine_values[inner] + t * (self.fine_values[outer] - self.fine_values[inner])

        n = len(self.fine_values)
        with np.errstate(divide="ignore", invalid="ignore"):  # the rows at a grid end take the end instead
            low = np.where(first > 0, crossing(first, np.maximum(first - 1, 0)), self.fine_values[0])
            high = np.where(last < n - 1, crossing(last, np.minimum(last + 1, n - 1)), self.fine_values[-1])
        return best, low, high


# ----- the baselines a run executes (numl.baselines.base) -------------------------------------------------------
def _classification_result(label: str, score: torch.Tensor, labels: torch.Tensor) -> BaselineResult:
    """Accuracy at the equal-prior decision (score > 0) and AUROC, with the per-map scores for the ROC figure."""
    score, labels = score.detach().cpu().numpy(), labels.numpy()
    metrics = {"acc": float(((score > 0).astype(int) == labels).mean()), "auroc": float(roc_auc_score(labels, score))}
    return BaselineResult(label, metrics, {"score": score, "label": labels})


class LikelihoodRatioBaseline(Baseline):
    """The exact Gaussian likelihood ratio with the spectra the maps were made from: Bayes-optimal on Gaussian
    maps, so the ceiling any classifier of those maps can reach. Refused on lognormal maps, where it is not the
    likelihood, and for M_nu regression."""

    label = "likelihood ratio (optimal)"

    def evaluate(self, datamodule) -> BaselineResult:
        if datamodule.source == "fits":
            raise ConfigError("baseline=likelihood_ratio: needs the spectra the maps were simulated from, which FITS "
                              "maps (data.source=fits) do not have; choose baseline=power_spectrum")
        if datamodule.target != "classification" or datamodule.field != "gaussian":
            raise ConfigError(f"baseline=likelihood_ratio: needs data.target=classification and data.field=gaussian "
                              f"(got {datamodule.target} and {datamodule.field}); choose baseline=power_spectrum")
        datamodule.build_simulators()
        optimal = GaussianLikelihoodRatio(datamodule.spectra[0], datamodule.spectra[1],
                                          **datamodule.observation_kwargs())
        test = datamodule.events("test")
        return _classification_result(self.label, optimal.log_likelihood_ratio(test.maps), test.labels)


class SummaryStatisticBaseline(Baseline):
    """Gaussian likelihoods of summary statistics of the maps (power spectrum, peak counts, one-point PDF,
    Minkowski functionals, or several together; ``MapStatistics``), means and covariances learned from fitting
    maps: a classifier (massive vs massless), or for M_nu regression chi^2 minimisation over the interpolated
    M_nu grid. The same maps as the network is tested on.

    Args:
        statistics: which of STATISTICS, concatenated into one vector (its joint covariance is what makes a
            combination worth more than its parts).
        label: the name in figure legends and tables.
        n_fit_per_class: at least this many fitting maps per cosmology, so that the covariance is well
            conditioned even in debug runs; a run with fewer training maps (or on-the-fly training maps)
            gets simulated fitting maps from their own seeds. FITS maps are fitted on the training maps.
        max_bins: multipole bins of the power spectrum, at most (fewer when there are few fitting maps).
        covariance: classification only, see ``GaussianLikelihoodClassifier``.
        smoothing_arcmin, n_nu_bins, peak_nu_range, pdf_nu_range, minkowski_nu_range: see ``MapStatistics``.
        border_pixels: pixels from each edge left out of peaks, PDF and Minkowski functionals; null: from the maps
            (0 on periodic maps, the smoothing's reach + 1 on ray-traced and FITS maps,
            ``wraparound_border_pixels``).
        apodisation_pixels: cosine taper of the maps over this many pixels from each edge before the power
            spectrum (``numl.sim.lensing.maps.apodisation_window``); 0: none. Maps that are not periodic leak
            the jump between opposite edges into every multipole; for classification the leak is the same in
            fitting and test maps, and a taper costs the tapered area (experiments/lensing_nbody/README.md).
    """

    def __init__(self, statistics: Sequence[str] = ("power_spectrum",), label: str = "power-spectrum classifier",
                 n_fit_per_class: int = 256, max_bins: int = 20, covariance: str = "per_class",
                 smoothing_arcmin: float = 5.0, n_nu_bins: int = 8,
                 peak_nu_range: Sequence[float] = (-1.0, 4.0), pdf_nu_range: Sequence[float] = (-2.5, 3.5),
                 minkowski_nu_range: Sequence[float] = (-2.0, 3.0), border_pixels: int | None = None,
                 apodisation_pixels: int = 0) -> None:
        check_positive("baseline.n_fit_per_class", n_fit_per_class, integer=True)
        check_positive("baseline.max_bins", max_bins, integer=True)
        self.statistics, self.label = list(statistics), str(label)
        self.n_fit_per_class, self.max_bins = int(n_fit_per_class), int(max_bins)
        check_choice("baseline.covariance", covariance, COVARIANCES)
        self.covariance = covariance
        self.statistic_kwargs = dict(smoothing_arcmin=smoothing_arcmin, n_nu_bins=n_nu_bins,
                                     peak_nu_range=peak_nu_range, pdf_nu_range=pdf_nu_range,
                                     minkowski_nu_range=minkowski_nu_range, apodisation_pixels=apodisation_pixels)
        MapStatistics(self.statistics, 1.0, [1.0, 2.0], **self.statistic_kwargs,
                      border=border_pixels or 0)  # refuse bad values now
        self.border_pixels = border_pixels
        self.model: GaussianLikelihoodClassifier | None = None

    def fitting_maps(self, datamodule):
        return datamodule.fitting_maps(max(datamodule.split_sizes["train"],
                                           self.n_fit_per_class * len(datamodule.m_nu_values)))

    def fit(self, datamodule) -> SummaryStatisticBaseline:
        fit = self.fitting_maps(datamodule)
        n_classes = len(datamodule.m_nu_values)
        n_bins = int(min(self.max_bins, max(2, min(int((fit.labels == k).sum()) for k in range(n_classes)) // 4)))
        border = self.border_pixels
        if border is None:
            border = wraparound_border_pixels(datamodule.periodic_maps, datamodule.field_deg, datamodule.n_pix,
                                              self.statistic_kwargs["smoothing_arcmin"])
        statistic = MapStatistics(self.statistics, datamodule.field_deg, datamodule.ell_bin_edges(n_bins),
                                  **self.statistic_kwargs, border=border)
        if datamodule.target == "regression":
            self.model = GaussianLikelihoodGridRegressor(statistic).fit(fit.maps, fit.labels, datamodule.m_nu_values)
        else:
            self.model = GaussianLikelihoodClassifier(statistic, self.covariance).fit(fit.maps, fit.labels)
        return self

    def evaluate(self, datamodule) -> BaselineResult:
        test = datamodule.events("test")
        if isinstance(self.model, GaussianLikelihoodGridRegressor):
            best, low, high = self.model.estimate(test.maps)
            # The grid value itself (float64): the maps' float32 M_nu lies just outside an interval ending on it.
            truth = np.asarray(datamodule.m_nu_values)[test.labels.numpy()]
            metrics = {"rmse": float(np.sqrt(np.mean((best - truth) ** 2))),
                       "coverage_1sigma": float(np.mean((low <= truth) & (truth <= high)))}
            return BaselineResult(self.label, metrics, {"m_nu_mean": best, "m_nu_sigma": 0.5 * (high - low),
                                                        "m_nu_low": low, "m_nu_high": high, "m_nu_true": truth})
        return _classification_result(self.label, self.model.log_likelihood_ratio(test.maps), test.labels)
