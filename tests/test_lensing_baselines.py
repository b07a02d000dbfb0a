"""The Bayes-optimal likelihood ratio and the power-spectrum classifier for massive vs massless neutrinos."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from numl.baselines.lensing import (
    GaussianLikelihoodRatio,
    MapStatistics,
    PowerSpectrumClassifier,
    SummaryStatisticBaseline,
    _independent_mode_weights,
    power_spectrum_features,
)
from numl.sim.lensing import ConvergenceMapSimulator, ConvergenceSpectra, Cosmology, convergence_power_spectra
from numl.utils.errors import ConfigError

ELL_MAX = 6600
REFERENCE = dict(field_deg=5.0, n_pix=128, shape_noise_sigma_e=0.26)  # + n_gal 30 / arcmin^2, z_s = 1


@pytest.fixture(scope="session")
def camb_cache(tmp_path_factory):
    # Same directory as tests/test_lensing_sim.py uses, so CAMB runs once per session.
    return tmp_path_factory.getbasetemp() / "camb_cache"


@pytest.fixture(scope="module")
def reference_spectra(camb_cache):
    return [convergence_power_spectra(Cosmology(m_nu_ev=m), [1.0], ELL_MAX, camb_cache) for m in (0.0, 0.1)]


def _toy_pair(n_z: int, ell_max: int = 8000, suppression: float = 0.05):
    ell = np.arange(ell_max + 1, dtype=np.float64)
    base = 1e-9 * (np.maximum(ell, 10.0) / 1000.0) ** -1.2
    amp = np.array([1.0, 2.5, 4.0][:n_z])
    corr = 0.7 + 0.3 * np.eye(n_z)
    cl = corr[:, :, None] * np.sqrt(amp[:, None] * amp[None, :])[:, :, None] * base
    zs = tuple([1.0, 1.5, 2.0][:n_z])
    # Scale-dependent suppression, like massive neutrinos: more at high ell.
    damp = 1 - suppression * ell / (ell + 500.0)
    return (ConvergenceSpectra(ell=ell, cl=cl, source_redshifts=zs),
            ConvergenceSpectra(ell=ell, cl=cl * damp, source_redshifts=zs))


def _accuracy(score_massless: torch.Tensor, score_massive: torch.Tensor) -> float:
    return 0.5 * ((score_massive > 0).double().mean() + (score_massless <= 0).double().mean()).item()


@pytest.mark.parametrize("n_pix", [16, 17])
def test_independent_modes_count_every_real_degree_of_freedom_once(n_pix):
    # N^2 real pixels minus the DC mode: each complex mode carries 2 degrees of freedom, a real one 1.
    assert 2 * _independent_mode_weights(n_pix).sum() == n_pix**2 - 1


@pytest.mark.parametrize("noise", [30.0, None], ids=["noisy", "noise-free"])
def test_likelihood_ratio_at_reference_setup_is_unbiased(reference_spectra, noise):
    kwargs = dict(REFERENCE, galaxy_density_arcmin2=noise)
    lr = GaussianLikelihoodRatio(*reference_spectra, **kwargs)
    sims = [ConvergenceMapSimulator(s, **kwargs) for s in reference_spectra]
    n = 1000
    scores = [lr.log_likelihood_ratio(sim.sample(n, seed=100 + k)) for k, sim in enumerate(sims)]
    expected = lr.expected_log_likelihood_ratio()
    accuracy = _accuracy(*scores)
    # Scores are sums over thousands of modes, close to normal: the predicted accuracy from the moments.
    predicted = 0.5 * (norm.cdf(expected["mean_massive"] / expected["std_massive"])
                       + norm.cdf(-expected["mean_massless"] / expected["std_massless"]))
    print(f"\nLR at 5x5 deg, 128 px, z_s=1, sigma_e=0.26, n_gal={noise}: accuracy {accuracy:.4f} on {2 * n} unseen "
          f"maps (predicted {predicted:.4f}); KL = {expected['mean_massive']:.3f}, {expected['mean_massless']:.3f}")
    assert expected["mean_massive"] > 0 > expected["mean_massless"]
    for score, name in zip(scores, ("massless", "massive"), strict=True):
        assert score.mean().item() == pytest.approx(expected[f"mean_{name}"], abs=4 * expected[f"std_{name}"] / n**0.5)
        assert score.std().item() == pytest.approx(expected[f"std_{name}"], rel=0.1)
    # Binomial error of 2n maps, plus 0.005 for the normal approximation of the score.
    assert accuracy == pytest.approx(predicted, abs=4 * math.sqrt(predicted * (1 - predicted) / (2 * n)) + 0.005)
    assert torch.equal(lr.predict(torch.zeros(1, 1, 128, 128)), (lr.log_likelihood_ratio(torch.zeros(1, 1, 128, 128))
                                                                   > 0).long())


def test_likelihood_ratio_is_at_least_as_good_as_power_spectrum_classifier(reference_spectra):
    kwargs = dict(REFERENCE, galaxy_density_arcmin2=30.0)
    sims = [ConvergenceMapSimulator(s, **kwargs) for s in reference_spectra]
    n_fit, n_test = 1000, 1000
    fit_maps = torch.cat([sims[0].sample(n_fit, seed=1), sims[1].sample(n_fit, seed=2)])
    fit_labels = torch.cat([torch.zeros(n_fit), torch.ones(n_fit)])
    test = [sims[0].sample(n_test, seed=3), sims[1].sample(n_test, seed=4)]
    lr = GaussianLikelihoodRatio(*sims)  # built from the simulators, as the DataModule does
    power_spectrum = PowerSpectrumClassifier(5.0, np.geomspace(100, 4600, 13)).fit(fit_maps, fit_labels)
    acc_lr = _accuracy(*(lr.log_likelihood_ratio(m) for m in test))
    acc_ps = _accuracy(*(power_spectrum.log_likelihood_ratio(m) for m in test))
    print(f"\nGaussian maps, reference setup: LR accuracy {acc_lr:.4f}, power-spectrum classifier {acc_ps:.4f}")
    # Same test maps for both: the paired difference has a standard error below sqrt(2 * 0.25 / (2 n)).
    assert acc_lr >= acc_ps - 2 * math.sqrt(0.25 / n_test)
    assert acc_ps > 0.7  # the binned spectra carry most of the information on Gaussian maps


def test_tomographic_likelihood_ratio_matches_kl_and_beam_cancels():
    massless, massive = _toy_pair(n_z=2)
    kwargs = dict(field_deg=3.0, n_pix=48, galaxy_density_arcmin2=30.0)
    lr = GaussianLikelihoodRatio(massless, massive, **kwargs)
    lr_smoothed = GaussianLikelihoodRatio(massless, massive, **kwargs, smoothing_arcmin=1.0)
    n = 1500
    for k, spectra in enumerate((massless, massive)):
        sim = ConvergenceMapSimulator(spectra, **kwargs)
        maps = sim.sample(n, seed=20 + k)
        scores = lr.log_likelihood_ratio(maps)
        name = ("massless", "massive")[k]
        expected = lr.expected_log_likelihood_ratio()
        assert scores.mean().item() == pytest.approx(expected[f"mean_{name}"], abs=4 * expected[f"std_{name}"] / n**0.5)
        # Smoothing multiplies every mode by the beam; with the beam in the covariance the score is unchanged.
        smoothed = ConvergenceMapSimulator(spectra, **kwargs, smoothing_arcmin=1.0).sample(n, seed=20 + k)
        np.testing.assert_allclose(lr_smoothed.log_likelihood_ratio(smoothed).numpy(), scores.numpy(),
                                   rtol=1e-3, atol=1e-3 * expected[f"std_{name}"])


def test_tomography_adds_information():
    massless, massive = _toy_pair(n_z=2)
    kwargs = dict(field_deg=3.0, n_pix=48, galaxy_density_arcmin2=30.0)
    kl_tomo = GaussianLikelihoodRatio(massless, massive, **kwargs).expected_log_likelihood_ratio()["mean_massive"]
    single = [ConvergenceSpectra(ell=s.ell, cl=s.cl[1:, 1:], source_redshifts=s.source_redshifts[1:])
              for s in (massless, massive)]
    # The two planes share the 30 galaxies / arcmin^2: the single plane keeps its own 15.
    kl_single = GaussianLikelihoodRatio(*single, **(kwargs | {"galaxy_density_arcmin2": 15.0})
                                        ).expected_log_likelihood_ratio()["mean_massive"]
    assert kl_tomo > kl_single > 0


def test_power_spectrum_classifier_on_lognormal_maps():
    massless, massive = _toy_pair(n_z=1, suppression=0.15)
    kwargs = dict(field_deg=3.0, n_pix=48, field="lognormal", galaxy_density_arcmin2=None)
    sims = [ConvergenceMapSimulator(s, **kwargs) for s in (massless, massive)]
    fit = torch.cat([sims[0].sample(500, seed=1), sims[1].sample(500, seed=2)])
    labels = torch.cat([torch.zeros(500), torch.ones(500)])
    classifier = PowerSpectrumClassifier(3.0, np.geomspace(150, 5000, 9)).fit(fit, labels)
    test = [sims[0].sample(500, seed=3), sims[1].sample(500, seed=4)]
    accuracy = _accuracy(*(classifier.log_likelihood_ratio(m) for m in test))
    assert accuracy > 0.6
    assert torch.equal(classifier.predict(test[1]), (classifier.log_likelihood_ratio(test[1]) > 0).long())


def test_power_spectrum_statistic_tapers_the_maps_when_asked():
    massless, _ = _toy_pair(n_z=1)
    maps = ConvergenceMapSimulator(massless, field_deg=3.0, n_pix=32).sample(4, seed=0)
    edges = np.geomspace(150, 4000, 6)
    tapered = MapStatistics(["power_spectrum"], 3.0, edges, apodisation_pixels=4)(maps)
    np.testing.assert_allclose(tapered, power_spectrum_features(maps, 3.0, edges, apodisation_pixels=4))
    assert not np.allclose(tapered, MapStatistics(["power_spectrum"], 3.0, edges)(maps))


def test_bad_baseline_input():
    massless, massive = _toy_pair(n_z=1)
    with pytest.raises(ConfigError, match="maps shape"):
        GaussianLikelihoodRatio(massless, massive, field_deg=3.0, n_pix=32).log_likelihood_ratio(torch.zeros(2, 32, 32))
    sims = [ConvergenceMapSimulator(s, field_deg=3.0, n_pix=n) for s, n in ((massless, 32), (massive, 48))]
    with pytest.raises(ConfigError, match="n_pix differs"):
        GaussianLikelihoodRatio(*sims)
    with pytest.raises(ConfigError, match="need at least"):
        PowerSpectrumClassifier(3.0, np.geomspace(150, 4000, 9)).fit(sims[0].sample(6, seed=0), torch.arange(6) % 2)
    with pytest.raises(ConfigError, match="baseline.apodisation_pixels=-1"):
        SummaryStatisticBaseline(apodisation_pixels=-1)
