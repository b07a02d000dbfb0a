"""KM3NeT simulator physics against PHYSICS.md numbers: Cherenkov timing, light yield, noise rate, geometry."""

from __future__ import annotations

import numpy as np
import pytest

from numl.sim.km3net import EventConfig, build_detector, generate_orca_like, physics, read_detx, simulate_events
from numl.sim.km3net.detector import dom_pmt_directions, resolve_testdata_path
from numl.utils.errors import ConfigError

ORCA6 = "D_ORCA006_t.A02181836.p.A02181837.r.A02182001.detx"


@pytest.fixture(scope="module")
def small_detector():
    return generate_orca_like(7)


def test_cherenkov_angle_and_range_match_physics_md():
    assert np.degrees(physics.THETA_CHERENKOV_RAD) == pytest.approx(42.2, abs=0.05)
    # dE/dx = 0.27 GeV/m + 3.4e-4 E /m: a 10 GeV muon travels ~ 10 / 0.27 = 37 m, minus radiative losses
    assert physics.muon_range_m(10.0, "constant_a") == pytest.approx(np.log1p(3.4e-4 * 10 / 0.27) / 3.4e-4, rel=1e-12)
    assert 36.0 < physics.muon_range_m(10.0, "constant_a") < 37.1


def test_arrival_time_formula_of_a_pmt_on_the_cone():
    # A PMT at perpendicular distance rho, reached by light emitted rho / tan(theta_c) before its foot point:
    # the photon path is rho / sin(theta_c) at the group velocity.
    rho = 20.0
    t = physics.cherenkov_arrival_time_ns(np.array([[rho, 0.0, 50.0]]), np.zeros(3), np.array([0.0, 0.0, 1.0]))
    expected = (50.0 - rho / np.tan(np.radians(42.2))) / 0.299792458 + rho / np.sin(np.radians(42.2)) / 0.2173
    assert t[0] == pytest.approx(expected, abs=0.05)


def test_generated_geometry_is_orca_like(small_detector):
    assert small_detector.n_pmts == 7 * 18 * 31
    dirs = dom_pmt_directions()
    assert len(dirs) == 31 and np.sum(dirs[:, 2] < 0) == 19  # 19 PMTs look down, 12 up
    du_xy = np.unique(small_detector.pmt_pos_m[:, :2].round(0), axis=0)
    assert len(np.unique(small_detector.du_id)) == 7 and len(du_xy) > 7


def test_orca6_detx_is_read_with_its_ids():
    det = read_detx(resolve_testdata_path(ORCA6, "detx", "file"))
    assert det.det_id == 49 and det.n_pmts == 108 * 31 and len(np.unique(det.du_id)) == 6
    np.testing.assert_allclose(np.linalg.norm(det.pmt_dir, axis=1), 1.0, atol=1e-6)


def test_bad_geometry_file_is_a_config_error(tmp_path):
    bad = tmp_path / "broken.detx"
    bad.write_text("this is not a detector\n")
    with pytest.raises(ConfigError, match="broken.detx"):
        read_detx(bad)
    with pytest.raises(ConfigError, match="no such file"):
        read_detx(tmp_path / "missing.detx")
    with pytest.raises(ConfigError, match="data.detector.geometry"):
        build_detector(geometry="sphere")


def test_unknown_event_key_and_bad_range_are_config_errors():
    with pytest.raises(ConfigError, match="data.events.energy_gev"):
        EventConfig.from_dict({"energy_gev": 3})
    with pytest.raises(ConfigError, match="data.events.energy_max_gev"):
        EventConfig.from_dict({"energy_min_gev": 10.0, "energy_max_gev": 5.0})


def test_noise_free_track_hit_times_follow_the_cherenkov_formula(small_detector):
    # Track light only, no scattering, no noise: residuals are the PMT transit-time spread (sigma 1.5 ns),
    # shifted slightly early because a hit takes the first of its photo-electrons.
    config = EventConfig(energy_min_gev=20.0, energy_max_gev=100.0, noise_rate_hz=0.0, hadronic_light_fraction=0.0,
                         scattering_length_m=1e9)
    events, _ = simulate_events(small_detector, config, 30, seed=3)
    residuals = []
    for e in events:
        pos = np.stack([e.hits["pos_x"], e.hits["pos_y"], e.hits["pos_z"]], 1).astype(float)
        direction = np.array([e.truth["muon_dir_x"], e.truth["muon_dir_y"], e.truth["muon_dir_z"]])  # the track
        vertex = np.array([e.truth["vertex_x"], e.truth["vertex_y"], e.truth["vertex_z"]])
        residuals.append(e.hits["t_ns"] - physics.cherenkov_arrival_time_ns(pos, vertex, direction, 0.0))
    residuals = np.concatenate(residuals)
    assert len(residuals) > 300
    assert abs(np.median(residuals)) < 0.6
    assert np.mean(np.abs(residuals) < 3 * config.time_spread_ns) > 0.97


def test_hit_count_grows_with_energy(small_detector):
    counts = []
    for energy in (5.0, 50.0, 500.0):
        config = EventConfig(energy_min_gev=energy, energy_max_gev=energy, noise_rate_hz=0.0)
        events, _ = simulate_events(small_detector, config, 40, seed=1)
        counts.append(np.mean([e.truth["n_signal_hits"] for e in events]))
    assert counts[0] < counts[1] < counts[2]
    assert counts[2] > 3 * counts[0]


def test_noise_rate_matches_the_configured_rate(small_detector):
    rate_hz = 8000.0
    config = EventConfig(energy_min_gev=10.0, energy_max_gev=30.0, noise_rate_hz=rate_hz)
    events, _ = simulate_events(small_detector, config, 60, seed=5)
    n_noise = sum(int((e.hits["is_signal"] == 0).sum()) for e in events)
    exposure_s = sum((e.hits["t_ns"].max() - e.hits["t_ns"].min()) * 1e-9 for e in events) * small_detector.n_pmts
    # Readout windows end on hits, so the span slightly underestimates the window: allow 10 %.
    assert n_noise / exposure_s == pytest.approx(rate_hz, rel=0.1)


def test_same_seed_same_events(small_detector):
    config = EventConfig()
    a, _ = simulate_events(small_detector, config, 5, seed=11)
    b, _ = simulate_events(small_detector, config, 5, seed=11)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.hits, y.hits)
        assert x.truth == y.truth


def test_trigger_flags_are_local_coincidences(small_detector):
    events, n_generated = simulate_events(small_detector, EventConfig(trigger_l0_max_distance_m=0.0), 20, seed=2)
    assert n_generated >= 20
    for e in events:
        trig = e.hits[e.hits["triggered"]]
        assert len(np.unique(trig["dom_id"])) >= 3
        # L1 only: every triggered hit has a partner on its DOM within 10 ns
        for hit in trig[:5]:
            same = trig[(trig["dom_id"] == hit["dom_id"])]
            assert np.sum(np.abs(same["t_ns"] - hit["t_ns"]) <= 10.0) >= 2


def test_triggered_l0_hits_are_causally_tied_to_an_l1_hit(small_detector):
    config = EventConfig(trigger_l0_max_distance_m=10.0, trigger_l0_time_extra_ns=20.0)
    events, _ = simulate_events(small_detector, config, 20, seed=2)
    n_l0 = 0
    for e in events:
        h = e.hits
        pos = np.stack([h["pos_x"], h["pos_y"], h["pos_z"]], 1).astype(float)
        order = np.lexsort((h["t_ns"], h["dom_id"]))
        partner = np.zeros(len(h), bool)  # L1: another hit on the same DOM within 10 ns
        close = (h["dom_id"][order][1:] == h["dom_id"][order][:-1]) & (np.diff(h["t_ns"][order]) <= 10.0)
        partner[order[1:][close]] = partner[order[:-1][close]] = True
        l1 = partner
        assert np.all(h["triggered"][l1])
        for i in np.flatnonzero(h["triggered"] & ~l1):
            n_l0 += 1
            d = np.linalg.norm(pos[l1] - pos[i], axis=1)
            dt = np.abs(h["t_ns"][l1] - h["t_ns"][i])
            assert np.any((d <= 10.0) & (dt <= d / physics.V_GROUP_M_PER_NS + 20.0))
    assert n_l0 > 0
