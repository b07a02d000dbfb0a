"""Classical baselines for massive (label 1) vs massless (label 0) neutrino convergence maps.

- ``GaussianLikelihoodRatio``: the exact log likelihood ratio of Gaussian maps with known spectra, computed on
  the independent Fourier modes. By the Neyman-Pearson lemma no classifier beats it on Gaussian maps.
- ``PowerSpectrumClassifier``: a Gaussian likelihood ratio of the binned power spectra with means and
  covariances estimated from training maps; usable on lognormal maps too.

Both return scores ``ln p(map | massive) - ln p(map | massless)``; equal priors put the decision at 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from numl.baselines.base import Baseline, BaselineResult
from numl.metrics import one_sigma_coverage
from numl.sim.lensing.maps import ConvergenceMapSimulator, binned_power_spectra
from numl.sim.lensing.spectra import ConvergenceSpectra
from numl.utils.errors import ConfigError

# Modes whose beam power is below this carry signal under the float32 round-off of a smoothed map.
_MIN_BEAM_POWER = 1e-6


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


class PowerSpectrumClassifier:
    """Gaussian likelihood ratio of the binned auto and cross power spectra (the classical summary statistic).

    ``fit`` estimates each class's mean vector and covariance of the binned spectra from labelled maps
    (label 1 = massive, 0 = massless). The spectra enter as log power, which is closer to Gaussian.
    """

    def __init__(self, field_deg: float, ell_bin_edges: Sequence[float]) -> None:
        self.field_deg = float(field_deg)
        self.ell_bin_edges = np.asarray(ell_bin_edges, dtype=np.float64)
        self._classes: list[tuple[np.ndarray, np.ndarray, float]] | None = None

    def features(self, maps: torch.Tensor) -> np.ndarray:
        """Per-map feature vector: log of the binned auto spectra, cross spectra as signed values scaled
        by the geometric mean of the autos (a correlation coefficient per bin)."""
        cl = binned_power_spectra(maps, self.field_deg, self.ell_bin_edges).cpu().numpy()
        n_z = cl.shape[1]
        auto = np.stack([cl[:, i, i] for i in range(n_z)], axis=1)
        feats = [np.log(auto).reshape(len(cl), -1)]
        for i in range(n_z):
            for j in range(i + 1, n_z):
                feats.append(cl[:, i, j] / np.sqrt(cl[:, i, i] * cl[:, j, j]))
        return np.concatenate(feats, axis=1)

    def fit(self, maps: torch.Tensor, labels: torch.Tensor) -> PowerSpectrumClassifier:
        feats = self.features(maps)
        labels = np.asarray(torch.as_tensor(labels).cpu())
        classes = []
        for c in (0, 1):
            x = feats[labels == c]
            if len(x) < feats.shape[1] + 3:
                raise ConfigError(
                    f"PowerSpectrumClassifier.fit: {len(x)} maps of class {c}; need at least {feats.shape[1] + 3} "
                    f"for a {feats.shape[1]}-dimensional covariance"
                )
            cov = np.cov(x, rowvar=False).reshape(feats.shape[1], feats.shape[1])
            # Hartlap et al. 2007 factor: unbiased inverse of a covariance estimated from len(x) samples.
            hartlap = (len(x) - feats.shape[1] - 2) / (len(x) - 1)
            precision = hartlap * np.linalg.inv(cov)
            classes.append((x.mean(axis=0), precision, float(np.linalg.slogdet(precision)[1])))
        self._classes = classes
        return self

    def log_likelihood_ratio(self, maps: torch.Tensor) -> torch.Tensor:
        """Scores [n_maps] (float64): ln N(f; mu_1, C_1) - ln N(f; mu_0, C_0) of the spectra features f."""
        if self._classes is None:
            raise RuntimeError("PowerSpectrumClassifier.log_likelihood_ratio called before fit")
        feats = self.features(maps)
        log_p = []
        for mean, precision, logdet_precision in self._classes:
            d = feats - mean
            log_p.append(-0.5 * np.einsum("ni,ij,nj->n", d, precision, d) + 0.5 * logdet_precision)
        return torch.from_numpy(log_p[1] - log_p[0])

    def predict(self, maps: torch.Tensor) -> torch.Tensor:
        return (self.log_likelihood_ratio(maps) > 0).long()


class PowerSpectrumGridRegressor(PowerSpectrumClassifier):
    """M_nu from the binned spectra: a Gaussian likelihood per cosmology of the training grid
    (class means, one pooled covariance), then the posterior mean and standard deviation over the
    grid with a flat prior. The classical counterpart of the CNN's M_nu regression."""

    def fit(self, maps: torch.Tensor, labels: torch.Tensor, values: Sequence[float] = ()) -> PowerSpectrumGridRegressor:
        feats = self.features(maps)
        labels = np.asarray(torch.as_tensor(labels).cpu())
        self.values = np.asarray(values, dtype=np.float64)
        if len(feats) < feats.shape[1] + len(self.values) + 3:
            raise ConfigError(f"PowerSpectrumGridRegressor.fit: {len(feats)} maps for a {feats.shape[1]}-dimensional "
                              f"covariance and {len(self.values)} cosmologies; simulate more")
        self.means = np.stack([feats[labels == k].mean(axis=0) for k in range(len(self.values))])
        residuals = feats - self.means[labels]
        dof = len(feats) - len(self.values)
        cov = residuals.T @ residuals / dof
        self.precision = (dof - feats.shape[1] - 1) / dof * np.linalg.inv(cov)  # Hartlap correction
        return self

    def posterior(self, maps: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation of the grid value for each map."""
        d = self.features(maps)[:, None, :] - self.means[None]
        log_like = -0.5 * np.einsum("nki,ij,nkj->nk", d, self.precision, d)
        weights = np.exp(log_like - log_like.max(axis=1, keepdims=True))
        weights /= weights.sum(axis=1, keepdims=True)
        mean = weights @ self.values
        sigma = np.sqrt(np.maximum(weights @ self.values**2 - mean**2, 0.0))
        return mean, sigma


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
        if datamodule.target != "classification" or datamodule.field != "gaussian":
            raise ConfigError(f"baseline=likelihood_ratio: needs data.target=classification and data.field=gaussian "
                              f"(got {datamodule.target} and {datamodule.field}); choose baseline=power_spectrum")
        datamodule.build_simulators()
        optimal = GaussianLikelihoodRatio(datamodule.spectra[0], datamodule.spectra[1],
                                          **datamodule.observation_kwargs())
        test = datamodule.events("test")
        return _classification_result(self.label, optimal.log_likelihood_ratio(test.maps), test.labels)


class PowerSpectrumBaseline(Baseline):
    """The binned power spectrum's Gaussian likelihood, means and covariances learned from training maps:
    a classifier (massive vs massless), or for M_nu regression the posterior over the grid of M_nu values.

    Args:
        n_fit_per_class: at least this many fitting maps per cosmology, so that the covariance is well
            conditioned even in debug runs; a run with fewer training maps (or on-the-fly training maps)
            gets simulated fitting maps from their own seeds.
        max_bins: multipole bins, at most (fewer when there are few fitting maps).
    """

    label = "power-spectrum classifier"

    def __init__(self, n_fit_per_class: int = 256, max_bins: int = 20) -> None:
        self.n_fit_per_class, self.max_bins = int(n_fit_per_class), int(max_bins)
        self.model: PowerSpectrumClassifier | None = None

    def fitting_maps(self, datamodule):
        return datamodule.fitting_maps(max(datamodule.split_sizes["train"],
                                           self.n_fit_per_class * len(datamodule.m_nu_values)))

    def fit(self, datamodule) -> PowerSpectrumBaseline:
        datamodule.build_simulators()
        fit = self.fitting_maps(datamodule)
        n_classes = len(datamodule.m_nu_values)
        n_bins = int(min(self.max_bins, max(2, min(int((fit.labels == k).sum()) for k in range(n_classes)) // 4)))
        edges = datamodule.ell_bin_edges(n_bins)
        if datamodule.target == "regression":
            self.model = PowerSpectrumGridRegressor(datamodule.field_deg, edges).fit(fit.maps, fit.labels,
                                                                                     datamodule.m_nu_values)
        else:
            self.model = PowerSpectrumClassifier(datamodule.field_deg, edges).fit(fit.maps, fit.labels)
        return self

    def evaluate(self, datamodule) -> BaselineResult:
        test = datamodule.events("test")
        if isinstance(self.model, PowerSpectrumGridRegressor):
            mean, sigma = self.model.posterior(test.maps)
            truth = test.m_nu.numpy()
            metrics = {"rmse": float(np.sqrt(np.mean((mean - truth) ** 2))),
                       "coverage_1sigma": float(one_sigma_coverage(mean, sigma, truth))}
            return BaselineResult("power-spectrum posterior", metrics,
                                  {"m_nu_mean": mean, "m_nu_sigma": sigma, "m_nu_true": truth})
        return _classification_result(self.label, self.model.log_likelihood_ratio(test.maps), test.labels)
