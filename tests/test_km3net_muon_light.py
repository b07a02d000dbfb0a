"""The muon's light beyond its Cherenkov cone (data.events.muon_light=cone_and_showers): delta rays and radiative
losses as EM showers along the track, against the energy-loss budget, Fermat's principle and a per-PMT sum."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy.integrate import quad

from numl.sim.km3net import EventConfig, generate_orca_like, physics, simulate_events
from numl.sim.km3net.events import muon_loss_light, muon_loss_showers, pmt_acceptance, shower_angular_pdf
from numl.utils.errors import ConfigError

SHOWERS = EventConfig(muon_light="cone_and_showers")


@pytest.fixture(scope="module")
def detector():
    return generate_orca_like(7)


def test_delta_ray_light_is_jpps_fit():
    # Jpp's fit (MeV cm^2/g, cubic in log10 E) times 1.038 g/cm^3: at 100 GeV x = 2 gives 0.8980 MeV cm^2/g
    assert physics.delta_ray_shower_energy_gev_per_m(100.0) == pytest.approx(0.8980 * 0.1038, rel=1e-3)
    # as light: 31 % (10 GeV) and 44 % (100 GeV) of the bare muon's Cherenkov light, rising with energy
    ratio = physics.delta_ray_shower_energy_gev_per_m(np.array([10.0, 100.0])) * physics.SHOWER_TRACK_LENGTH_M_PER_GEV
    assert ratio == pytest.approx([0.31, 0.44], abs=0.01)
    assert physics.delta_ray_shower_energy_gev_per_m(0.1) == 0.0  # below Jpp's 0.13 GeV
    assert np.all(physics.delta_ray_shower_energy_gev_per_m(np.linspace(0.1, 0.2, 101)) >= 0.0)


def test_loss_showers_carry_the_mean_energy_loss(detector):
    # Mean shower energy over many muons = the integral of delta rays + b E over the muon's range (a reach that
    # takes in the whole range); the stochastic part (dN/dv ~ 1/v above 1 GeV) is a heavy-tailed sum, so 3000
    # muons give about 2 % precision.
    config = replace(SHOWERS, muon_light_reach_m=2000.0)
    energy = 300.0
    muon_range = float(physics.muon_range_m(energy, config.muon_energy_loss))
    rng = np.random.default_rng(5)
    totals = [muon_loss_showers(detector, config, detector.center_m, np.array([0.6, 0.0, 0.8]), energy, rng)[1].sum()
              for _ in range(3000)]

    def loss_gev_per_m(s):
        e = physics.muon_energy_at_gev(energy, s, config.muon_energy_loss)
        return physics.delta_ray_shower_energy_gev_per_m(e) + physics.MUON_DEDX_B_PER_M * e

    expected, _ = quad(loss_gev_per_m, 0.0, muon_range, limit=200)
    assert np.mean(totals) == pytest.approx(expected, rel=0.04)
    # the stochastic losses make the sum fluctuate; the continuous part alone would not
    assert np.std(totals) > 0.1 * expected


def test_loss_shower_light_never_beats_direct_light_and_matches_a_per_pmt_sum(detector):
    rng = np.random.default_rng(2)
    centre = detector.center_m
    direction = np.array([1.0, 0.2, 0.3]) / np.linalg.norm([1.0, 0.2, 0.3])
    vertex = centre - 120.0 * direction + np.array([0.0, 0.0, 10.0])
    along, gev, _ = muon_loss_showers(detector, SHOWERS, vertex, direction, 200.0, rng)
    pmt, (npe,), time_ns, _ = muon_loss_light(detector, SHOWERS, vertex, direction, along, [(gev, False)])
    # Fermat: the Cherenkov time is the earliest arrival from any point of the track (to 0.3 ns: the cone is set by
    # the phase velocity, the travel time by the group velocity)
    direct = physics.cherenkov_arrival_time_ns(detector.pmt_pos_m, vertex, direction, 0.0)
    lateness = time_ns - direct[pmt]
    assert lateness.min() > -0.5
    weight = npe / npe.sum()
    # shower light peaks at the Cherenkov angle, so most of it comes near the direct time; its off-cone part late
    assert 0.05 < np.sum(weight * (lateness > 20.0)) < 0.3
    # the DOM-centred computation against one per PMT with exact paths
    source = vertex + along[:, None] * direction
    photon = detector.pmt_pos_m[None] - source[:, None]
    path = np.linalg.norm(photon, axis=2)
    photon /= path[..., None]
    flux = (gev[:, None] * physics.SHOWER_TRACK_LENGTH_M_PER_GEV * physics.MUON_PHOTONS_PER_M / (2 * np.pi)
            * shower_angular_pdf(photon @ direction, SHOWERS.shower_angular_width, SHOWERS.shower_isotropic_fraction))
    acceptance = pmt_acceptance(-np.einsum("pi,spi->sp", detector.pmt_dir, photon), SHOWERS.pmt_acceptance_min_cos)
    exact = (flux / path**2 * SHOWERS.pmt_area_m2 * SHOWERS.quantum_efficiency * acceptance
             * np.exp(-path / SHOWERS.absorption_length_m))
    exact[path > SHOWERS.muon_light_reach_m] = 0.0
    per_pmt = np.bincount(pmt, npe, minlength=detector.n_pmts)
    assert per_pmt.sum() == pytest.approx(exact.sum(), rel=0.01)
    bright = exact.sum(0) > 0.05
    assert np.median(np.abs(per_pmt[bright] / exact.sum(0)[bright] - 1.0)) < 0.03


def test_cone_and_showers_adds_late_light_near_the_track(detector):
    # Same muons with and without the loss showers: more hits, and a larger share of them late
    base = EventConfig(energy_min_gev=100.0, energy_max_gev=300.0, noise_rate_hz=0.0, hadronic_light_fraction=0.0,
                       scattering_length_m=1e9)
    late_share, hits = {}, {}
    for model in ("cone", "cone_and_showers"):
        events, _ = simulate_events(detector, replace(base, muon_light=model), 40, seed=4)
        residuals = []
        for e in events:
            pos = np.stack([e.hits["pos_x"], e.hits["pos_y"], e.hits["pos_z"]], 1).astype(float)
            muon = np.array([e.truth["muon_dir_x"], e.truth["muon_dir_y"], e.truth["muon_dir_z"]])
            vertex = np.array([e.truth["vertex_x"], e.truth["vertex_y"], e.truth["vertex_z"]])
            residuals.append(e.hits["t_ns"] - physics.cherenkov_arrival_time_ns(pos, vertex, muon, 0.0))
        residuals = np.concatenate(residuals)
        late_share[model], hits[model] = np.mean(residuals > 10.0), len(residuals)
    assert late_share["cone"] < 0.01  # no scattering: the cone's light is on time
    assert late_share["cone_and_showers"] > 0.03
    # delta rays add 40-50 % of the bare muon's light at 100-300 GeV, more than the radiative losses the cone
    # model had put on the cone; merged photons make it fewer hits than photons
    assert hits["cone_and_showers"] > 1.1 * hits["cone"]


def test_scattered_light_comes_late_and_from_every_direction(detector):
    base = EventConfig(energy_min_gev=100.0, energy_max_gev=300.0, noise_rate_hz=0.0, hadronic_light_fraction=0.0,
                       scattering_length_m=1e9, muon_light="cone_and_showers")
    facing_away, late = {}, {}
    for fraction in (0.0, 0.3):
        events, _ = simulate_events(detector, replace(base, scattered_light_fraction=fraction), 40, seed=4)
        residuals, away = [], []
        for e in events:
            pos = np.stack([e.hits["pos_x"], e.hits["pos_y"], e.hits["pos_z"]], 1).astype(float)
            pmt_dir = np.stack([e.hits["dir_x"], e.hits["dir_y"], e.hits["dir_z"]], 1).astype(float)
            muon = np.array([e.truth["muon_dir_x"], e.truth["muon_dir_y"], e.truth["muon_dir_z"]])
            vertex = np.array([e.truth["vertex_x"], e.truth["vertex_y"], e.truth["vertex_z"]])
            residuals.append(e.hits["t_ns"] - physics.cherenkov_arrival_time_ns(pos, vertex, muon, 0.0))
            # PMTs that see the cone's light from behind, outside their acceptance: only shower and scattered light
            _, _, emission_m = physics.track_geometry(pos, vertex, muon)
            photon = pos - (vertex + emission_m[:, None] * muon)
            cos_incidence = -np.einsum("ni,ni->n", pmt_dir, photon) / np.linalg.norm(photon, axis=1)
            away.append(cos_incidence < base.pmt_acceptance_min_cos)
        residuals, away = np.concatenate(residuals), np.concatenate(away)
        late[fraction], facing_away[fraction] = np.mean(residuals > 20.0), np.mean(away)
    assert late[0.3] > late[0.0] + 0.1
    assert facing_away[0.3] > 1.5 * facing_away[0.0]


def test_bad_muon_light_keys_are_config_errors():
    with pytest.raises(ConfigError, match="data.events.scattered_light_fraction"):
        EventConfig.from_dict({"scattered_light_fraction": 0.1})  # the cone model has no sources along the track
    with pytest.raises(ConfigError, match="data.events.muon_light"):
        EventConfig.from_dict({"muon_light": "showers"})
    with pytest.raises(ConfigError, match="data.events.muon_light_step_m"):
        EventConfig.from_dict({"muon_light_step_m": 0.0})
