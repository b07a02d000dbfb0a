"""KM3NeT showers: the EM longitudinal profile against the PDG's numbers, extended showers keeping their light, and
nu_e CC / NC events."""

from __future__ import annotations

import numpy as np
import pytest

from numl.sim.km3net import EventConfig, generate_orca_like, physics, simulate_events
from numl.sim.km3net.events import EVENT_TYPES, shower_light_source
from numl.utils.errors import ConfigError

#: effective atomic number of water, for the PDG's containment length (PDG 2024 eq. 34.37 takes Z)
Z_WATER = 7.42


@pytest.fixture(scope="module")
def small_detector():
    return generate_orca_like(7)


@pytest.mark.parametrize("energy_gev", [10.0, 100.0, 1000.0])
def test_em_profile_has_the_pdg_maximum_and_95_percent_containment(energy_gev):
    """Shower maximum at (ln(E / E_c) - 0.5) X0 and 95 % of the energy within t_max + 0.08 Z + 9.6 X0 (PDG 2024
    eqs. 34.36-34.37; the latter is a fit good to about 10 %), with water's X0 = 36.08 g/cm^2 at sea-water density."""
    x0_m = physics.RADIATION_LENGTH_SEA_WATER_M
    assert x0_m == pytest.approx(0.3476, abs=1e-4)
    step_m = 0.05
    along_m, share = physics.em_shower_profile(energy_gev, step_m)
    assert share.sum() == pytest.approx(1.0)
    t_max = np.log(energy_gev / physics.CRITICAL_ENERGY_WATER_GEV) - 0.5
    assert along_m[np.argmax(share)] == pytest.approx(t_max * x0_m, abs=step_m)
    containment_95_m = along_m[np.searchsorted(np.cumsum(share), 0.95)]
    assert containment_95_m == pytest.approx((t_max + 0.08 * Z_WATER + 9.6) * x0_m, rel=0.12)


def test_extended_shower_keeps_the_light_and_shines_from_downstream(small_detector):
    """Far from the detector, without absorption and with isotropic light (so that only where it comes from
    changes), the profile's points give the point shower's light; the light comes from the profile's mean depth, and
    PMTs the shower heads for see it earlier than from a point at the vertex (the front outruns the light)."""
    config = EventConfig(absorption_length_m=1e9, shower_isotropic_fraction=1.0, shower_profile="longitudinal",
                         shower_profile_step_m=0.25)
    point = EventConfig(absorption_length_m=1e9, shower_isotropic_fraction=1.0)
    centre = small_detector.center_m
    vertex = centre + np.array([400.0, 0.0, 0.0])
    direction = np.array([0.0, 1.0, 0.0])  # across the line to the detector: every PMT at about the same distance
    energy = 100.0
    _, npe, _, _, _ = shower_light_source(small_detector, config, vertex, direction, energy, 1.0)
    _, npe_point, _, _, _ = shower_light_source(small_detector, point, vertex, direction, energy, 1.0)
    assert npe.sum() == pytest.approx(npe_point.sum(), rel=0.002)
    along_m, share = physics.em_shower_profile(energy, 0.25)
    per_point = npe.reshape(len(along_m), small_detector.n_pmts).sum(axis=1)  # one row of PMTs per point
    assert np.sum(along_m * per_point) / per_point.sum() == pytest.approx(np.sum(along_m * share), rel=0.01)

    toward = np.array([-1.0, 0.0, 0.0])  # heading for the detector
    _, npe, time_ns, _, _ = shower_light_source(small_detector, config, vertex, toward, energy, 1.0)
    _, npe_point, time_point, _, _ = shower_light_source(small_detector, point, vertex, toward, energy, 1.0)
    mean_time = np.average(time_ns, weights=npe)
    # the front moves at c, the light at c / n_group: light from a metre downstream arrives (1 / v - 1 / c) earlier
    delay_per_m = 1.0 / physics.C_LIGHT_M_PER_NS - 1.0 / physics.V_GROUP_M_PER_NS
    expected = np.average(time_point, weights=npe_point) + delay_per_m * np.sum(along_m * share)
    assert mean_time == pytest.approx(expected, abs=0.3)


@pytest.mark.parametrize("kind", ["nue_cc", "nc"])
def test_nue_cc_and_nc_events_carry_their_visible_energy(small_detector, kind):
    config = EventConfig(numu_cc_fraction=0.0, shower_interaction=kind, energy_min_gev=20.0, energy_max_gev=200.0,
                         noise_rate_hz=0.0, shower_profile="longitudinal")
    events, _ = simulate_events(small_detector, config, 20, seed=2)
    truth = np.array([e.truth for e in events])
    assert np.all(truth["event_type"] == EVENT_TYPES[kind])
    assert np.all(truth["muon_energy_gev"] == 0.0) and np.all(truth["muon_range_m"] == 0.0)
    y = truth["bjorken_y"]
    assert np.all((y > 0.0) & (y < 1.0))
    if kind == "nue_cc":  # the electron's and the hadrons' energy are both seen
        np.testing.assert_allclose(truth["shower_energy_gev"], truth["energy_gev"])
    else:  # only the hadrons'
        np.testing.assert_allclose(truth["shower_energy_gev"], y * truth["energy_gev"])


def test_nc_events_give_less_light_than_nue_cc_at_the_same_energy(small_detector):
    hits = {}
    for kind in ("nue_cc", "nc"):
        config = EventConfig(numu_cc_fraction=0.0, shower_interaction=kind, energy_min_gev=100.0,
                             energy_max_gev=100.0, noise_rate_hz=0.0, vertex_sampling="can", can_margin_m=0.0)
        events, _ = simulate_events(small_detector, config, 30, seed=4)
        hits[kind] = np.mean([e.truth["n_signal_hits"] for e in events])
    # NC sees y E (mean y about 0.4) at the hadronic light fraction (0.8): a third of nu_e CC's light
    assert hits["nc"] < 0.7 * hits["nue_cc"]


def test_former_shower_events_are_unchanged_by_the_new_options(small_detector):
    """The defaults (shower_interaction=total_energy, shower_profile=point) are the model the committed results were
    made with: these events (three showers, three nu_mu CC) are pinned to the values numl gave before the options
    existed (commit 0146385), with the muon's loss of that time (constant_a)."""
    events, _ = simulate_events(small_detector, EventConfig(numu_cc_fraction=0.5, muon_energy_loss="constant_a"), 6,
                                seed=9)
    assert [int(e.truth["event_type"]) for e in events] == [1, 1, 1, 0, 0, 0]
    assert [len(e.hits) for e in events] == [105, 99, 194, 55, 42, 51]
    assert sum(e.hits["t_ns"].sum() for e in events) == pytest.approx(63715.20603747515, rel=1e-12)


def test_bad_shower_options_are_config_errors():
    with pytest.raises(ConfigError, match=r"data\.events\.shower_interaction"):
        EventConfig.from_dict({"shower_interaction": "nutau_cc"})
    with pytest.raises(ConfigError, match=r"data\.events\.shower_profile"):
        EventConfig.from_dict({"shower_profile": "gaussian"})
    with pytest.raises(ConfigError, match=r"data\.events\.shower_profile_step_m"):
        EventConfig.from_dict({"shower_profile_step_m": 0.0})
