"""Physics validation of the weak-lensing simulator: CAMB spectra and Gaussian/lognormal convergence maps."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from numl.sim.lensing import (
    ConvergenceMapSimulator,
    ConvergenceSpectra,
    Cosmology,
    convergence_power_spectra,
    measure_power_spectrum,
    required_ell_max,
)
from numl.utils.errors import ConfigError

ELL_MAX = 6600  # covers the corner mode of the reference 5 deg, 128 px map (ell 6517)


@pytest.fixture(scope="session")
def camb_cache(tmp_path_factory):
    # One directory per test session, shared by the lensing test files, so each CAMB run happens once.
    return tmp_path_factory.getbasetemp() / "camb_cache"


def toy_spectra(n_z: int = 2, ell_max: int = 8000, correlation: float = 0.8) -> ConvergenceSpectra:
    """Power-law spectra with a fixed correlation between planes: fast, no CAMB."""
    ell = np.arange(ell_max + 1, dtype=np.float64)
    amp = np.array([1.0, 2.0, 3.0][:n_z])
    base = 1e-9 * (np.maximum(ell, 10.0) / 1000.0) ** -1.2
    corr = np.full((n_z, n_z), correlation) + (1 - correlation) * np.eye(n_z)
    cl = corr[:, :, None] * np.sqrt(amp[:, None] * amp[None, :])[:, :, None] * base
    return ConvergenceSpectra(ell=ell, cl=cl, source_redshifts=tuple([1.0, 1.5, 2.0][:n_z]))


def _binned_z_scores(maps: torch.Tensor, sim: ConvergenceMapSimulator, edges: np.ndarray) -> np.ndarray:
    """(measured - expected) / standard error per bin and plane pair, the error from the scatter over maps."""
    from numl.sim.lensing import binned_power_spectra

    per_map = binned_power_spectra(maps, sim.field_deg, edges).numpy()
    _, expected = sim.expected_binned_power(edges)
    stderr = per_map.std(axis=0, ddof=1) / math.sqrt(len(per_map))
    return (per_map.mean(axis=0) - expected) / stderr


@pytest.mark.parametrize("n_pix", [64, 63])
def test_measured_power_matches_input_including_cross_spectra(n_pix):
    spectra = toy_spectra(n_z=2)
    sim = ConvergenceMapSimulator(spectra, field_deg=3.0, n_pix=n_pix, galaxy_density_arcmin2=30.0,
                                  smoothing_arcmin=1.0)
    maps = sim.sample(1500, seed=3)
    edges = np.geomspace(130, 2900, 10)
    z = _binned_z_scores(maps, sim, edges)
    n_stats = z.shape[-1] * 3  # two autos and one cross per bin
    chi2 = float(np.sum(z[0, 0] ** 2) + np.sum(z[1, 1] ** 2) + np.sum(z[0, 1] ** 2))
    print(f"n_pix={n_pix}: chi2={chi2:.1f} for {n_stats} bins, max |z|={np.abs(z).max():.2f}")
    assert np.abs(z).max() < 4.0
    # chi2 with n_stats degrees of freedom: mean n, std sqrt(2 n); bins of the 3 spectra are correlated.
    assert chi2 < n_stats + 5 * math.sqrt(2 * n_stats)
    # The estimator's expectation tracks the input spectrum (+ noise, x beam^2) to the per cent.
    centers, measured = measure_power_spectrum(maps, sim.field_deg, edges)
    beam2 = sim.beam(centers) ** 2
    model = np.interp(centers, spectra.ell, spectra.cl[0, 1]) * beam2
    np.testing.assert_allclose(measured[0, 1], model, rtol=0.08)


def test_self_conjugate_modes_carry_full_power():
    # powerbox PR #189: the real (self-conjugate) Nyquist modes got half their power. Check them alone.
    spectra = toy_spectra(n_z=1)
    n = 32
    sim = ConvergenceMapSimulator(spectra, field_deg=2.0, n_pix=n, galaxy_density_arcmin2=None)
    maps = sim.sample(20000, seed=5)
    k = torch.fft.rfft2(maps.double())[:, 0]
    expected = sim.fourier_covariance()[0, 0]
    for ky, kx in [(n // 2, 0), (0, n // 2), (n // 2, n // 2)]:
        assert k[:, ky, kx].imag.abs().max() < 1e-6 * k[:, ky, kx].real.abs().max()
        power = (k[:, ky, kx].real ** 2).numpy()
        z = (power.mean() - expected[ky, kx]) / (power.std() / math.sqrt(len(power)))
        assert abs(z) < 4.0, (ky, kx, z)
    # A generic complex mode splits its power equally between real and imaginary parts.
    mode = k[:, 3, 5]
    ratio = (mode.real**2).mean() / (mode.imag**2).mean()
    assert abs(ratio.item() - 1.0) < 0.05


def test_apodisation_window_profile_and_bad_input():
    from numl.sim.lensing.maps import apodisation_window

    window = apodisation_window(16, 4)
    profile = window[8]
    np.testing.assert_allclose(profile[4:12], 1.0)
    np.testing.assert_allclose(profile[:4], np.sin(0.5 * np.pi * (np.arange(4) + 0.5) / 4) ** 2)
    np.testing.assert_allclose(window, window[::-1, ::-1])  # the same taper at opposite edges
    np.testing.assert_allclose(apodisation_window(16, 0), 1.0)
    for bad in (-1, 9, 2.5):
        with pytest.raises(ConfigError, match="apodisation_pixels"):
            apodisation_window(16, bad)


def test_apodisation_removes_the_edge_leak_of_cut_out_maps():
    # Maps cut from larger periodic maps are not periodic, as ray-traced ones: the FFT sees the jump between
    # opposite edges and leaks power into high multipoles, the more the steeper the spectrum (ell^-2 here, like
    # noise-free convergence at ell > 1000). The taper must remove it: the periodic estimator on the cut-outs is
    # 6-8 % high there, the tapered one within 2 % of what periodic maps of the cut-out's size expect.
    spectra = toy_spectra(n_z=1, ell_max=20000)
    spectra.cl[0, 0] = 1e-9 * (np.maximum(spectra.ell, 10.0) / 1000.0) ** -2.0
    large = ConvergenceMapSimulator(spectra, field_deg=14.0, n_pix=256, galaxy_density_arcmin2=None,
                                    smoothing_arcmin=0.0).sample(64, seed=1)
    cut_outs = torch.cat([large[..., i:i + 64, j:j + 64] for i in range(0, 256, 64) for j in range(0, 256, 64)])
    periodic = ConvergenceMapSimulator(spectra, field_deg=3.5, n_pix=64, galaxy_density_arcmin2=None,
                                       smoothing_arcmin=0.0)
    edges = np.geomspace(150, 4000, 9)
    centers, expected = periodic.expected_binned_power(edges)
    high = centers > 1200
    leaky = measure_power_spectrum(cut_outs, 3.5, edges)[1][0, 0] / expected[0, 0]
    tapered = measure_power_spectrum(cut_outs, 3.5, edges, apodisation_pixels=8)[1][0, 0] / expected[0, 0]
    print(f"C_ell / expected at ell {np.round(centers[high])}: periodic estimator {np.round(leaky[high], 3)}, "
          f"8-pixel taper {np.round(tapered[high], 3)}")
    assert np.all(leaky[high] > 1.04)
    np.testing.assert_allclose(tapered[high], 1.0, atol=0.02)


def test_lognormal_one_point_statistics():
    spectra = toy_spectra(n_z=1)
    sim = ConvergenceMapSimulator(spectra, field_deg=3.0, n_pix=64, field="lognormal",
                                  galaxy_density_arcmin2=None)
    maps = sim.sample(3000, seed=7).double()
    variance = maps.var().item()
    target = sim.target_pixel_variance()[0]
    mean_err = maps.mean(dim=(1, 2, 3)).std().item() / math.sqrt(len(maps))
    skewness = (((maps - maps.mean()) ** 3).mean() / variance**1.5).item()
    print(f"lognormal: variance {variance:.3e} vs target {target:.3e}, mean {maps.mean().item():.2e}, "
          f"skewness {skewness:.2f}")
    assert variance == pytest.approx(target, rel=0.03)
    assert abs(maps.mean().item()) < 5 * mean_err + 1e-6 * math.sqrt(target)
    assert skewness > 0.3  # lambda(z_s=1) = 0.029 against sigma_kappa = 0.025: strongly skewed
    # Its power spectrum follows the target too: the lognormal transform preserves the two-point function.
    edges = np.geomspace(130, 2900, 8)
    _, measured = measure_power_spectrum(maps, sim.field_deg, edges)
    _, expected = sim.expected_binned_power(edges)
    np.testing.assert_allclose(measured[0, 0], expected[0, 0], rtol=0.05)


def test_gaussian_maps_have_no_skewness():
    sim = ConvergenceMapSimulator(toy_spectra(n_z=1), field_deg=3.0, n_pix=64, galaxy_density_arcmin2=None)
    maps = sim.sample(1000, seed=9).double()
    skewness = (((maps - maps.mean()) ** 3).mean() / maps.var() ** 1.5).item()
    assert abs(skewness) < 0.05


@pytest.mark.parametrize("field", ["gaussian", "lognormal"])
def test_same_seed_same_maps_different_seed_different_maps(field):
    sim = ConvergenceMapSimulator(toy_spectra(n_z=2), field_deg=3.0, n_pix=32, field=field, smoothing_arcmin=2.0)
    a, b, c = sim.sample(4, seed=1), sim.sample(4, seed=1), sim.sample(4, seed=2)
    assert a.shape == (4, 2, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_tomographic_planes_share_the_total_galaxy_density():
    # 30 galaxies / arcmin^2 in total over 3 tomographic bins: 10 per bin, so sqrt(3) more noise per plane.
    single = ConvergenceMapSimulator(toy_spectra(n_z=1), field_deg=5.0, n_pix=64, galaxy_density_arcmin2=30.0)
    three = ConvergenceMapSimulator(toy_spectra(n_z=3), field_deg=5.0, n_pix=64, galaxy_density_arcmin2=30.0)
    assert three.galaxy_density_per_plane_arcmin2 == pytest.approx(10.0)
    assert three.noise_sigma_pix == pytest.approx(math.sqrt(3) * single.noise_sigma_pix)
    assert np.allclose(three.noise_power, 3 * single.noise_power[0])


def test_noise_properties():
    sim = ConvergenceMapSimulator(toy_spectra(n_z=1), field_deg=5.0, n_pix=128)
    assert sim.pixel_area_arcmin2 == pytest.approx((5 * 60 / 128) ** 2)
    assert sim.noise_sigma_pix == pytest.approx(0.26 / math.sqrt(30 * sim.pixel_area_arcmin2))
    n_gal_sr = 30 * (180 * 60 / math.pi) ** 2
    assert sim.noise_power[0] == pytest.approx(0.26**2 / n_gal_sr)
    # White noise: N_ell times the pixel count per steradian is the per-pixel variance.
    pixel_sr = math.radians(5.0 / 128) ** 2
    assert sim.noise_power[0] / pixel_sr == pytest.approx(sim.noise_sigma_pix**2)


def test_bad_input_raises_config_error():
    with pytest.raises(ConfigError, match=r"data\.cosmology\.m_nu_ev=-0\.1"):
        Cosmology(m_nu_ev=-0.1, key_prefix="data.cosmology")
    with pytest.raises(ConfigError, match="source_redshifts"):
        convergence_power_spectra(Cosmology(), [1.0, 0.0], ell_max=100, cache_dir=None)
    with pytest.raises(ConfigError, match="source_redshifts"):
        convergence_power_spectra(Cosmology(), [], ell_max=100, cache_dir=None)
    with pytest.raises(ConfigError, match="route"):
        convergence_power_spectra(Cosmology(), [1.0], ell_max=100, cache_dir=None, route="exact")
    with pytest.raises(ConfigError, match=r"ell up to 6517.*ell_max=3000"):
        ConvergenceMapSimulator(toy_spectra(ell_max=3000), field_deg=5.0, n_pix=128)
    with pytest.raises(ConfigError, match="field"):
        ConvergenceMapSimulator(toy_spectra(), field_deg=3.0, n_pix=32, field="uniform")
    with pytest.raises(ConfigError, match="lognormal_shift"):
        ConvergenceMapSimulator(toy_spectra(n_z=2), field_deg=3.0, n_pix=32, field="lognormal", lognormal_shift=[0.1])


def test_camb_failure_names_the_cosmology(monkeypatch):
    import camb

    def fail(params):
        raise camb.CAMBError("Error in Fortran called from calc_transfer")

    monkeypatch.setattr(camb, "get_results", fail)
    with pytest.raises(ConfigError, match=r"CAMB failed for M_nu=0\.1 eV, Omega_m=0\.3111.*calc_transfer"):
        convergence_power_spectra(Cosmology(m_nu_ev=0.1), [1.0], ell_max=200, cache_dir=None)


def test_required_ell_max_is_the_corner_mode():
    # 5 deg / 128 px: Nyquist ell = pi / pixel = 4608, corner sqrt(2) times that.
    assert required_ell_max(5.0, 128) == math.ceil(math.sqrt(2) * math.pi / math.radians(5.0 / 128))


# ---- CAMB (a few seconds per run, cached on disk for the session) -------------------------------------------


def test_camb_routes_agree_at_zs_1(camb_cache):
    window = convergence_power_spectra(Cosmology(), [1.0], ELL_MAX, camb_cache, route="source_window")
    limber = convergence_power_spectra(Cosmology(), [1.0], ELL_MAX, camb_cache, route="limber")
    ell = slice(100, 5001)
    ratio = limber.cl[0, 0, ell] / window.cl[0, 0, ell]
    print(f"Limber/source-window C_ell^kappa over 100 <= ell <= 5000: {ratio.min():.4f} .. {ratio.max():.4f}")
    # Measured 0.9995 .. 1.0039 with CAMB 2.0.5; PHYSICS.md expects agreement to a few per cent.
    assert np.abs(ratio - 1).max() < 0.01
    # Sanity anchor: C_ell^kappa(ell=1000, z_s=1) is a few 1e-10 in Planck-like cosmologies.
    assert 2e-10 < window.cl[0, 0, 1000] < 8e-10


def test_massive_neutrinos_suppress_lensing_power(camb_cache):
    massless = convergence_power_spectra(Cosmology(), [1.0], ELL_MAX, camb_cache)
    massive = convergence_power_spectra(Cosmology(m_nu_ev=0.1), [1.0], ELL_MAX, camb_cache)
    suppression = 1 - massive.cl[0, 0, 1000] / massless.cl[0, 0, 1000]
    print(f"M_nu=0.1 eV suppresses C_ell^kappa(ell=1000, z_s=1) by {100 * suppression:.2f} %")
    assert 0.05 <= suppression <= 0.07  # PHYSICS.md: about 5-7 % at fixed A_s and Omega_m


def test_spectra_are_cached_on_disk(camb_cache):
    first = convergence_power_spectra(Cosmology(), [1.0], ELL_MAX, camb_cache)
    start = time.perf_counter()
    again = convergence_power_spectra(Cosmology(), [1.0], ELL_MAX, camb_cache)
    assert time.perf_counter() - start < 0.5
    np.testing.assert_array_equal(first.cl, again.cl)
    assert first.ell[0] == 0 and first.ell[-1] == ELL_MAX
    assert len(list(camb_cache.glob("cl_kappa_*.npz"))) >= 1


@pytest.mark.slow
def test_tomographic_camb_spectra_and_sigma8_normalisation(camb_cache):
    spectra = convergence_power_spectra(Cosmology(sigma8=0.8), [0.5, 1.0], 3000, camb_cache)
    cl = spectra.cl[:, :, 1000]
    assert cl[1, 1] > cl[0, 1] > cl[0, 0] > 0  # deeper sources: more lensing; cross in between
    np.testing.assert_allclose(spectra.cl[0, 1], spectra.cl[1, 0])
    higher = convergence_power_spectra(Cosmology(sigma8=0.9), [0.5, 1.0], 3000, camb_cache)
    # Linear scales scale as sigma8^2; non-linear ones faster.
    assert higher.cl[0, 0, 100] / spectra.cl[0, 0, 100] == pytest.approx((0.9 / 0.8) ** 2, rel=0.05)
    assert higher.cl[0, 0, 2000] / spectra.cl[0, 0, 2000] > (0.9 / 0.8) ** 2
