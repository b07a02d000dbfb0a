"""nu_mu CC DIS kinematics (numl.sim.km3net.kinematics) against published numbers and the official ORCA6 file's
GENIE truth (issue 16); the simulation's truth and the former collinear model."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from scipy import stats

from numl.sim.km3net import EventConfig, generate_orca_like, kinematics, simulate_events
from numl.sim.km3net.physics import angle_between_deg
from numl.utils.errors import ConfigError

needs_km3io = pytest.mark.skipif(importlib.util.find_spec("km3io") is None or
                                 importlib.util.find_spec("km3net_testdata") is None,
                                 reason="needs the km3net extra: pip install 'numl[km3net]'")
REAL_FILE = "mcv6.0.gsg_muon_highE-CC_50-500GeV.km3sim.jterbr00008357.jorcarec.aanet.905.root"
# Gandhi, Quigg, Reno, Sarcevic, Phys. Rev. D 58 (1998) 093009 (CTEQ4-DIS): nu_mu CC <y> and sigma / E (1e-38 cm^2/GeV)
GANDHI = {10.0: (0.483, 0.777), 100.0: (0.477, 0.697), 1000.0: (0.472, 0.625), 10000.0: (0.426, 0.454)}


@pytest.fixture(scope="module")
def small_detector():
    return generate_orca_like(7)


@pytest.fixture(scope="module")
def file_kinematics():
    from numl.data.km3net import read_file_kinematics
    from numl.sim.km3net.detector import resolve_testdata_path

    return read_file_kinematics(resolve_testdata_path(REAL_FILE, "offline", "file"))


def test_pdfs_have_the_quark_number_sum_rules():
    x = np.exp(np.linspace(np.log(1e-5), np.log(1 - 1e-9), 40001))
    f = kinematics.grv94_lo(x, np.full_like(x, 10.0))
    # int u_v dx = 2 and int d_v dx = 1; the densities are x f(x), and x f d(ln x) = f dx
    assert np.trapezoid(f["uv"], np.log(x)) == pytest.approx(2.0, abs=0.03)
    assert np.trapezoid(f["dv"], np.log(x)) == pytest.approx(1.0, abs=0.03)


@pytest.mark.parametrize("energy", sorted(GANDHI))
def test_mean_y_and_cross_section_match_gandhi_et_al(energy):
    mean_y, sigma_over_e = GANDHI[energy]
    assert kinematics.mean_y(energy) == pytest.approx(mean_y, abs=0.012)
    assert kinematics.sigma_cc_cm2(energy) / energy / 1e-38 == pytest.approx(sigma_over_e, rel=0.04)


def test_cross_section_matches_the_pdg_average():
    # PDG world average of sigma_CC(nu_mu N) / E over 30-200 GeV: (0.677 +- 0.014) 1e-38 cm^2/GeV; a leading-order
    # model is good to several per cent
    numl = np.mean([kinematics.sigma_cc_cm2(e) / e / 1e-38 for e in np.geomspace(30.0, 200.0, 9)])
    assert numl == pytest.approx(0.677, rel=0.06)


def test_sampled_y_follows_the_cross_section():
    rng = np.random.default_rng(0)
    y = np.array([kinematics.sample_xy(rng, 100.0)[1] for _ in range(3000)])
    assert abs(y.mean() - kinematics.mean_y(100.0)) < 4 * y.std() / np.sqrt(len(y))
    # d sigma / dy ~ q + qbar (1 - y)^2: falls from y = 0 to y = 1 by the antiquark share
    counts = np.histogram(y, bins=[0.0, 0.2, 0.8, 1.0])[0]
    assert counts[0] > counts[2]


def test_muon_angle_is_the_exact_kinematics():
    rng = np.random.default_rng(1)
    energy, nu = 20.0, np.array([0.0, 0.6, -0.8])
    for _ in range(50):
        it = kinematics.sample_interaction(rng, energy, nu)
        p_mu = np.sqrt(it.muon_energy_gev**2 - kinematics.MUON_MASS_GEV**2)
        q = energy * nu - p_mu * it.muon_direction  # four-momentum transfer (energy y E, this momentum)
        q2 = (q @ q) - (energy - it.muon_energy_gev) ** 2
        assert q2 == pytest.approx(it.q2_gev2, rel=1e-6, abs=1e-9)
        np.testing.assert_allclose(it.hadron_direction, q / np.linalg.norm(q), atol=1e-12)
        assert it.hadron_energy_gev == pytest.approx(it.y * energy)
    # the angle shrinks with energy, roughly as 1 / sqrt(E)
    medians = [np.median(kinematics.sample_at_energies(rng, np.array([e]), 400)["angle_deg"]) for e in (5.0, 50.0)]
    assert 2.0 < medians[0] / medians[1] < 5.0


@needs_km3io
def test_exact_kinematics_reproduce_the_file_angles(file_kinematics):
    # the file's own neutrino energy, Bjorken x and y through numl's kinematics give its muons' angles (GENIE's
    # bound nucleons move, so event by event they differ by a few per cent)
    f = file_kinematics
    angle = np.degrees(np.arccos(kinematics.muon_cos_theta(f["energy_gev"], f["bjorken_x"], f["bjorken_y"])))
    ratio = f["angle_deg"] / angle
    assert len(ratio) == 140 and np.median(ratio) == pytest.approx(1.0, abs=0.02)
    assert np.median(np.abs(ratio - 1.0)) < 0.1


@needs_km3io
def test_kinematics_match_the_official_file(file_kinematics):
    # events with the vertex inside the can (98 of 140): those outside were selected by their muon reaching the
    # detector, which favours small y. numl is sampled at each event's neutrino energy.
    f = file_kinematics
    keep = f["vertex_in_can"] == 1
    assert keep.sum() == 98
    ours = kinematics.sample_at_energies(np.random.default_rng(2), f["energy_gev"][keep], 20)
    for key in ("angle_deg", "muon_fraction", "bjorken_y"):
        assert stats.ks_2samp(f[key][keep], ours[key]).pvalue > 0.01, key
    # the file's median angle (3.0 deg in the can, 2.1 deg over all 140 events) is not the collinear model's 0
    assert np.median(ours["angle_deg"]) == pytest.approx(np.median(f["angle_deg"][keep]), rel=0.3)


def test_dis_events_target_the_neutrino_and_keep_the_muon(small_detector):
    config = EventConfig(energy_min_gev=5.0, energy_max_gev=50.0, noise_rate_hz=0.0)
    events, _ = simulate_events(small_detector, config, 20, seed=4)
    truth = np.stack([e.truth for e in events])
    nu = np.stack([truth[f"dir_{a}"] for a in "xyz"], axis=1)
    mu = np.stack([truth[f"muon_dir_{a}"] for a in "xyz"], axis=1)
    np.testing.assert_allclose(np.linalg.norm(mu, axis=1), 1.0, atol=1e-9)
    angle = angle_between_deg(nu, mu)
    assert np.all(angle > 0.0) and 1.0 < np.median(angle) < 40.0
    np.testing.assert_allclose(truth["muon_energy_gev"], (1 - truth["bjorken_y"]) * truth["energy_gev"])
    np.testing.assert_allclose(truth["shower_energy_gev"], truth["bjorken_y"] * truth["energy_gev"])
    assert np.all((truth["bjorken_x"] > 0) & (truth["bjorken_x"] < 1))


def test_collinear_kinematics_reproduce_the_former_events(small_detector):
    # numl before issue 16 (y uniform, muon and shower along the neutrino), same seed: these hits and energies
    config = EventConfig(numu_cc_fraction=0.7, kinematics="collinear", vertex_sampling="can",
                         trigger_l0_max_distance_m=0.0)
    events, n_generated = simulate_events(small_detector, config, 6, seed=11)
    assert n_generated == 7 and [len(e.hits) for e in events] == [55, 525, 820, 375, 60, 140]
    assert sum(e.hits["t_ns"].sum() for e in events) == pytest.approx(339792.24568508076, rel=1e-12)
    assert sum(e.hits["tot_ns"].astype(float).sum() for e in events) == pytest.approx(62077.291575431824, rel=1e-9)
    assert events[0].truth["muon_energy_gev"] == pytest.approx(26.020106, abs=1e-6)
    t = events[0].truth
    assert [t["muon_dir_x"], t["muon_dir_y"], t["muon_dir_z"]] == [t["dir_x"], t["dir_y"], t["dir_z"]]


def test_bad_kinematics_are_config_errors():
    with pytest.raises(ConfigError, match=r"^data.events.kinematics='genie': must be one of dis, collinear$"):
        EventConfig.from_dict({"kinematics": "genie"})
    with pytest.raises(ConfigError, match="data.events.energy_min_gev=0.5"):
        EventConfig.from_dict({"energy_min_gev": 0.5})
    EventConfig.from_dict({"energy_min_gev": 0.5, "kinematics": "collinear"})
