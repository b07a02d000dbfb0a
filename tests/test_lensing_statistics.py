"""Peak counts, one-point PDF and Minkowski functionals against the closed forms for Gaussian random fields, and
the summary-statistic baselines built on them (classification and M_nu by chi^2 over the grid)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from numl.baselines.lensing import GaussianLikelihoodClassifier, GaussianLikelihoodGridRegressor, MapStatistics
from numl.sim.lensing import ConvergenceMapSimulator, ConvergenceSpectra
from numl.sim.lensing.statistics import (
    gaussian_minkowski_functionals,
    gaussian_peak_density,
    local_maxima,
    map_derivatives,
    minkowski_functionals,
    one_point_pdf,
    peak_counts,
    smooth_maps,
    spectral_moments,
    wraparound_border_pixels,
)
from numl.utils.errors import ConfigError


def _smooth_gaussian_field(n_maps: int, n_pix: int, smoothing_pix: float, seed: int) -> torch.Tensor:
    """White noise smoothed by a Gaussian of `smoothing_pix` pixels: many independent patches per map, so the
    averages over a few maps are close to the ensemble values."""
    white = torch.randn(n_maps, 1, n_pix, n_pix, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    field_deg = 1.0  # any: smooth_maps takes arcmin
    smoothing_arcmin = smoothing_pix * 60.0 * field_deg / n_pix
    return smooth_maps(white, field_deg, smoothing_arcmin)


@pytest.fixture(scope="module")
def gaussian_field():
    return _smooth_gaussian_field(n_maps=8, n_pix=256, smoothing_pix=3.0, seed=1)


def test_a_cut_out_map_inside_its_border_has_the_statistics_of_the_sky_it_was_cut_from(gaussian_field):
    """Ray-traced maps are cut out of a larger sky, so the periodic grid joins edges that are not neighbours. Inside
    the border the cut-out's smoothed pixels, peaks, PDF and Minkowski functionals are those of the larger map
    at the same pixels; over the whole cut-out (border 0) they are not."""
    sky_deg, n_sky, n_cut, offset, smoothing_arcmin = 4.0, 256, 64, 40, 3.0
    sky = gaussian_field[:2]
    cut = sky[..., offset:offset + n_cut, offset:offset + n_cut]
    field_deg = sky_deg * n_cut / n_sky
    border = wraparound_border_pixels(False, field_deg, n_cut, smoothing_arcmin)
    assert border == math.ceil(3 * smoothing_arcmin / (60 * sky_deg / n_sky)) + 1 == 11
    assert wraparound_border_pixels(True, field_deg, n_cut, smoothing_arcmin) == 0
    smoothed_sky = smooth_maps(sky, sky_deg, smoothing_arcmin)
    smoothed_cut = smooth_maps(cut, field_deg, smoothing_arcmin)
    same_pixels = smoothed_sky[..., offset:offset + n_cut, offset:offset + n_cut]
    inner = slice(border, n_cut - border)
    scale = smoothed_sky.std().item()
    # 3 sigma of the kernel: the wrapped-in edge weighs < 1 % inside the border, far more at the edge itself
    assert (smoothed_cut - same_pixels)[..., inner, inner].abs().max().item() < 0.01 * scale
    assert (smoothed_cut - same_pixels)[..., :, :2].abs().max().item() > 0.2 * scale
    sigma = same_pixels.std().item()
    edges = np.linspace(-2, 3, 6) * sigma
    for statistic in (peak_counts, one_point_pdf):
        on_sky = statistic(same_pixels, edges, border)
        np.testing.assert_allclose(statistic(smoothed_cut, edges, border), on_sky, atol=1e-9)
    for from_cut, from_sky in zip(minkowski_functionals(smoothed_cut, edges, border),
                                  minkowski_functionals(same_pixels, edges, border), strict=True):
        np.testing.assert_allclose(from_cut, from_sky, rtol=0.05, atol=1e-6)
    # without the border the wrapped edges change the counts
    assert not torch.equal(peak_counts(smoothed_cut, edges), peak_counts(same_pixels, edges))
    with pytest.raises(ConfigError, match=r"^statistics border=32 pixels: must be >= 0 and leave pixels"):
        peak_counts(smoothed_cut, edges, border=32)


def test_minkowski_functionals_of_gaussian_field_match_tomita(gaussian_field):
    maps = gaussian_field
    sigma0 = maps.std().item()
    kx, ky, *_ = map_derivatives(maps)
    # The finite-difference gradient of a Gaussian field is Gaussian and independent of the field at the same
    # pixel, so V1 with its variance is the exact expectation of the estimator.
    sigma1 = math.sqrt((kx**2 + ky**2).mean().item())
    nu_edges = np.linspace(-3, 3, 25)
    v0, v1, v2 = (v.mean(dim=(0, 1)).numpy() for v in minkowski_functionals(maps, nu_edges * sigma0))
    nu = 0.5 * (nu_edges[1:] + nu_edges[:-1])
    e0, e1, e2 = gaussian_minkowski_functionals(nu, sigma0, sigma1)
    np.testing.assert_allclose(v0, e0, atol=0.01)
    np.testing.assert_allclose(v1, e1, atol=0.04 * e1.max())
    # V2 also holds the finite-difference Hessian: a few per cent off the continuous-field amplitude.
    np.testing.assert_allclose(v2, e2, atol=0.1 * e2.max())
    assert v2[nu < -0.5].max() < 0 < v2[nu > 0.5].min()  # holes below the mean, islands above


def test_peak_density_of_gaussian_field_matches_bond_efstathiou(gaussian_field):
    _, sigma1, sigma2 = spectral_moments(gaussian_field)
    measured = local_maxima(gaussian_field).double().mean().item()  # peaks per pixel
    expected = gaussian_peak_density(sigma1[0], sigma2[0])
    assert measured == pytest.approx(expected, rel=0.08)
    # Binned counts add up to every maximum when the bins cover all heights.
    sigma0 = gaussian_field.std().item()
    counts = peak_counts(gaussian_field, torch.tensor([-10.0, 0.0, 2.0, 10.0]) * sigma0)
    assert torch.equal(counts.sum(-1), local_maxima(gaussian_field).sum((-2, -1)).double())
    # Peaks of a Gaussian field sit mostly above the mean.
    assert (counts[..., 1:].sum() > 4 * counts[..., 0].sum()).item()


def test_one_point_pdf_of_gaussian_field_is_normal(gaussian_field):
    sigma0 = gaussian_field.std().item()
    nu_edges = np.linspace(-3, 3, 13)
    density = one_point_pdf(gaussian_field, nu_edges * sigma0).mean(dim=(0, 1)).numpy() * sigma0
    expected = np.diff(norm.cdf(nu_edges)) / np.diff(nu_edges)
    np.testing.assert_allclose(density, expected, atol=0.01)


def test_lognormal_maps_have_positively_skewed_pdf():
    ell = np.arange(8001, dtype=np.float64)
    spectra = ConvergenceSpectra(ell=ell, cl=1e-9 * (np.maximum(ell, 10.0) / 1000.0)[None, None] ** -1.2,
                                 source_redshifts=(1.0,))
    maps = {field: ConvergenceMapSimulator(spectra, field_deg=3.0, n_pix=64, field=field,
                                           galaxy_density_arcmin2=None).sample(200, seed=3).double()
            for field in ("gaussian", "lognormal")}
    sigma = maps["gaussian"].std().item()
    edges = torch.linspace(-6, 6, 97, dtype=torch.float64) * sigma
    centres = 0.5 * (edges[1:] + edges[:-1])
    for field, expected_sign in (("gaussian", 0), ("lognormal", 1)):
        density = one_point_pdf(maps[field], edges).mean(dim=(0, 1)) * torch.diff(edges)
        mean = (density * centres).sum()
        skewness = ((density * (centres - mean) ** 3).sum() / ((density * (centres - mean) ** 2).sum()) ** 1.5).item()
        if expected_sign:
            assert skewness > 0.3
            assert centres[density.argmax()].item() < 0  # the mode below the mean: many voids, few clusters
        else:
            assert abs(skewness) < 0.1


def test_statistics_refuse_bad_values():
    with pytest.raises(ConfigError, match=r"baseline.statistics\[1\]='bispectrum'"):
        MapStatistics(["power_spectrum", "bispectrum"], 5.0, [100.0, 200.0])
    with pytest.raises(ConfigError, match=r"baseline.peak_nu_range=\[3.0, 1.0\]"):
        MapStatistics(["peak_counts"], 5.0, peak_nu_range=(3.0, 1.0))
    with pytest.raises(ConfigError, match="maps shape"):
        peak_counts(torch.zeros(4, 16, 16), [0.0, 1.0])


def _toy_lognormal_pair(suppression: float = 0.1):
    ell = np.arange(8001, dtype=np.float64)
    cl = 1e-9 * (np.maximum(ell, 10.0) / 1000.0) ** -1.2
    return [ConvergenceSpectra(ell=ell, cl=(cl * s)[None, None], source_redshifts=(1.0,)) for s in (1, 1 - suppression)]


def test_combined_statistics_at_least_as_good_as_their_parts_on_lognormal_maps():
    sims = [ConvergenceMapSimulator(s, field_deg=3.0, n_pix=32, field="lognormal", galaxy_density_arcmin2=None)
            for s in _toy_lognormal_pair()]
    n_fit, n_test = 600, 500
    fit = torch.cat([sims[0].sample(n_fit, seed=1), sims[1].sample(n_fit, seed=2)])
    labels = torch.cat([torch.zeros(n_fit), torch.ones(n_fit)])
    test = [sims[0].sample(n_test, seed=3), sims[1].sample(n_test, seed=4)]
    accuracy = {}
    for name in ("power_spectrum", "one_point_pdf", "power_spectrum+one_point_pdf"):
        statistic = MapStatistics(name.split("+"), 3.0, np.geomspace(250, 3800, 7), n_nu_bins=6)
        classifier = GaussianLikelihoodClassifier(statistic).fit(fit, labels)
        scores = [classifier.log_likelihood_ratio(m) for m in test]
        accuracy[name] = 0.5 * ((scores[1] > 0).double().mean() + (scores[0] <= 0).double().mean()).item()
    print(f"\nlognormal 32 px, 10 % suppression: {accuracy}")
    # Same test maps: the paired difference of two classifiers has a standard error below sqrt(0.25 / n_test).
    assert accuracy["power_spectrum+one_point_pdf"] >= max(accuracy["power_spectrum"],
                                                           accuracy["one_point_pdf"]) - 2 * math.sqrt(0.25 / n_test)
    assert accuracy["power_spectrum"] > 0.6


def test_grid_regressor_recovers_m_nu_between_grid_points_with_68_percent_intervals():
    # A toy whose statistic is the log variance of 64 white pixels with amplitude 1 + 2 M_nu: the mean of the
    # statistic is smooth in M_nu, its scatter known (var of a log sample variance ~ 2 / 63).
    def maps_at(m_nu: torch.Tensor, seed: int) -> torch.Tensor:
        white = torch.randn(len(m_nu), 1, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        return white * (1 + 2 * m_nu)[:, None, None, None]

    def log_variance(maps: torch.Tensor) -> np.ndarray:
        return maps.flatten(1).var(dim=1).log()[:, None].numpy()

    grid = [0.0, 0.1, 0.2, 0.3]
    labels = torch.arange(4000) % len(grid)
    regressor = GaussianLikelihoodGridRegressor(log_variance).fit(
        maps_at(torch.tensor(grid)[labels], seed=1), labels, grid)
    truth = torch.full((2000,), 0.15)  # half-way between two cosmologies of the grid
    best, low, high = regressor.estimate(maps_at(truth, seed=2))
    sigma_expected = math.sqrt(2 / 63) * (1 + 2 * 0.15) / 4  # d(log var)/dM = 4 / (1 + 2 M)
    coverage = np.mean((low <= 0.15) & (0.15 <= high))
    print(f"\ngrid regressor: mean {best.mean():.4f}, rms {best.std():.4f} (expected {sigma_expected:.4f}), "
          f"coverage {coverage:.3f}")
    assert abs(best.mean() - 0.15) < 0.01
    assert best.std() == pytest.approx(sigma_expected, rel=0.15)
    assert 0.64 < coverage < 0.72  # 0.683 within 4 binomial standard errors; grid-point ends gave 0.651
