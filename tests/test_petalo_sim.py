"""PETALO simulator physics against external numbers: attenuation, photoelectric fraction, Klein-Nishina, light."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from numl.sim.petalo import PetaloConfig, simulate_events
from numl.sim.petalo.light import expected_photoelectrons, simulate_light
from numl.sim.petalo.transport import PHOTOELECTRIC, transport
from numl.sim.petalo.xenon import (
    BARN_TO_CM2_PER_G,
    ELECTRON_MASS_KEV,
    attenuation_length_mm,
    cross_sections,
    klein_nishina_cm2_per_electron,
    photoelectric_fraction,
    sample_compton_energy_fraction,
)
from numl.utils.errors import ConfigError

CONFIG = PetaloConfig()


def radial_gammas(config: PetaloConfig, n: int, rng: np.random.Generator):
    """Gammas entering the inner face at z = 0 along the radius (normal incidence)."""
    phi = rng.uniform(0, 2 * np.pi, n)
    direction = np.stack([np.cos(phi), np.sin(phi), np.zeros(n)], axis=1)
    return config.inner_radius_mm * direction, direction


def test_attenuation_length_matches_physics_reference():
    # PHYSICS.md: 511 keV in LXe (rho = 2.95 g/cm^3) attenuates over "about 3-4 cm".
    length = attenuation_length_mm(511.0, 2.95, include_coherent=True)
    assert 30.0 < length < 40.0
    # NIST XCOM / Hubbell-Seltzer mu/rho of xenon at 500 keV is 9.70e-2 cm^2/g (with coherent).
    assert cross_sections(500.0).total == pytest.approx(0.0970, rel=0.01)


def test_incoherent_cross_section_agrees_with_klein_nishina():
    # Above ~300 keV binding barely matters: XCOM incoherent ~ Z x free-electron Klein-Nishina.
    for energy in (300.0, 511.0, 1000.0):
        kn_per_atom_b = 54 * klein_nishina_cm2_per_electron(energy) / 1e-24
        xcom_b = cross_sections(energy).incoherent / BARN_TO_CM2_PER_G
        assert xcom_b == pytest.approx(kn_per_atom_b, rel=0.03)


def test_interaction_depth_follows_attenuation_length():
    thick = PetaloConfig(lxe_depth_mm=2000.0, axial_length_mm=4000.0)  # nothing escapes
    rng = np.random.default_rng(1)
    entry, direction = radial_gammas(thick, 20000, rng)
    deps = transport(thick, entry, direction, rng)
    first = deps.step == 0
    depth = np.linalg.norm(deps.position_mm[first, :2], axis=1) - thick.inner_radius_mm
    expected = attenuation_length_mm(511.0, thick.lxe_density_g_cm3)
    assert depth.mean() == pytest.approx(expected, rel=0.03)
    assert stats.kstest(depth, stats.expon(scale=expected).cdf).pvalue > 1e-3


def test_photoelectric_fraction_matches_table():
    thick = PetaloConfig(lxe_depth_mm=2000.0, axial_length_mm=4000.0)
    rng = np.random.default_rng(2)
    n = 20000
    entry, direction = radial_gammas(thick, n, rng)
    deps = transport(thick, entry, direction, rng)
    first = deps.step == 0
    measured = np.mean(deps.process[first] == PHOTOELECTRIC)
    expected = photoelectric_fraction(511.0)
    assert 0.18 < expected < 0.25  # XCOM: photoelectric is about a fifth of 511 keV interactions in xenon
    assert abs(measured - expected) < 4 * np.sqrt(expected * (1 - expected) / n)
    # In a thick detector every gamma is eventually absorbed: energy is conserved.
    total = np.bincount(deps.event, weights=deps.energy_kev, minlength=n)
    assert np.mean(np.isclose(total, 511.0)) > 0.99


def test_compton_sampling_matches_klein_nishina_mean_energy_transfer():
    energy = 511.0
    k = energy / ELECTRON_MASS_KEV

    def dsigma(cos_t):  # Klein-Nishina, up to constants
        ratio = 1 / (1 + k * (1 - cos_t))
        return ratio**2 * (ratio + 1 / ratio - (1 - cos_t**2))

    norm = integrate.quad(dsigma, -1, 1)[0]
    mean_eps = integrate.quad(lambda c: dsigma(c) / (1 + k * (1 - c)), -1, 1)[0] / norm
    eps = sample_compton_energy_fraction(np.full(200000, energy), np.random.default_rng(3))
    assert eps.min() >= 1 / (1 + 2 * k) - 1e-9 and eps.max() <= 1
    assert eps.mean() == pytest.approx(mean_eps, abs=0.003)


def test_charge_sum_scales_with_deposited_energy():
    position = torch.tensor([[175.0, 0.0, 3.0]])
    energies = torch.tensor([100.0, 250.0, 511.0])
    mean = expected_photoelectrons(CONFIG, position.repeat(3, 1), energies).sum(dim=(1, 2, 3))
    torch.testing.assert_close(mean / energies, (mean / energies)[:1].expand(3), rtol=1e-5, atol=0)
    # Poisson-sampled charges through the full light simulation: charge sum / energy is constant.
    generator = torch.Generator().manual_seed(0)
    n_rep = 200
    sums = []
    for energy in energies:
        charge, _ = simulate_light(
            CONFIG,
            torch.arange(n_rep),
            position.repeat(n_rep, 1),
            torch.zeros(n_rep),
            torch.full((n_rep,), float(energy)),
            n_rep,
            generator,
        )
        sums.append(charge.sum(dim=(1, 2, 3)).mean() / energy)
    per_kev = torch.stack(sums)
    assert torch.allclose(per_kev, per_kev.mean(), rtol=0.02)
    # And on simulated events: charge per keV does not depend on the deposited energy (position-averaged).
    events = simulate_events(CONFIG, 400, seed=4)
    low, high = events["energy_kev"] < 300, events["energy_kev"] > 510
    ratio = events["total_charge_pe"] / events["energy_kev"]
    assert ratio[low].mean() == pytest.approx(ratio[high].mean(), rel=0.15)


def test_light_yield_is_physical():
    # Expected photoelectrons: 30 ph/keV * 511 keV * PDE 0.3 * (fraction of 4 pi covered by SiPMs) ~ 10^3.
    events = simulate_events(CONFIG, 100, seed=5, full_absorption_only=True)
    mean_pe = events["total_charge_pe"].mean()
    assert 0.2 * 4599 < mean_pe < 4599  # 4599 = 30 * 511 * 0.3: an upper bound (full coverage)
    hit = events["sipm_charge"][:, :2] > 0
    assert (events["sipm_time"][:, :2][hit] >= 0).all()


def test_simulator_is_a_pure_function_of_seed():
    a = simulate_events(CONFIG, 20, seed=7)
    b = simulate_events(CONFIG, 20, seed=7)
    c = simulate_events(CONFIG, 20, seed=8)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["sipm_charge"], c["sipm_charge"])
    # Shapes: [events, faces, rows, window columns]; the first interaction lies in the LXe.
    assert a["sipm_charge"].shape == (20, 2, CONFIG.n_rows, CONFIG.window_columns)
    r = a["position_mm"][:, 0]
    assert ((r >= CONFIG.inner_radius_mm) & (r <= CONFIG.outer_radius_mm)).all()


def test_bad_detector_config_names_the_key():
    with pytest.raises(ConfigError, match="data.detector.lxe_depth_mm"):
        PetaloConfig.from_kwargs(prefix="data.detector", lxe_depth_mm=-1.0)
    with pytest.raises(ConfigError, match="data.detector.inner_radius"):
        PetaloConfig.from_kwargs(prefix="data.detector", inner_radius=150.0)
    with pytest.raises(ConfigError, match="window_columns"):
        PetaloConfig.from_kwargs(prefix="data.detector", window_columns=1000)
