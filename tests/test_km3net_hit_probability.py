"""The likelihood fit's hit / no-hit term (baseline=track_likelihood_hit_probability, issue 16): the tabulated
probability of a PMT to have a hit, its fast geometry, that the pattern of hit and silent PMTs singles out the true
muon, what it does to the fit, and its one-line error for a detector that is not the events'."""

from __future__ import annotations

import numpy as np
import pytest

from numl.baselines.base import run_baselines
from numl.baselines.km3net import (
    HIT_DISTANCE_EDGES_M,
    LIKELIHOOD_WINDOW_NS,
    DetectorPmts,
    HitPattern,
    HitProbability,
    NetworkStartedHitLikelihoodBaseline,
    NetworkStartedLikelihoodBaseline,
    TrackHitLikelihoodBaseline,
    TrackLikelihoodBaseline,
    pmt_rows,
    pmt_track_geometry,
)
from numl.data.km3net import hit_positions_m
from numl.sim.km3net import EventConfig, generate_orca_like, simulate_events
from numl.sim.km3net.observables import vertex_muon_track
from numl.sim.km3net.physics import angle_between_deg, cherenkov_arrival_time_ns
from numl.sim.km3net.prefit import perpendicular_basis
from numl.utils.errors import ConfigError
from tests.test_km3net_hybrid_fit import SimulatedEvents


@pytest.fixture(scope="module")
def simulated():
    """The hybrid tests' events with more validation events to tabulate from, and the detector the term needs."""
    detector = generate_orca_like(7)
    config = EventConfig(energy_min_gev=50.0, energy_max_gev=300.0, can_margin_m=30.0)
    val, _ = simulate_events(detector, config, 150, seed=1)
    test, _ = simulate_events(detector, config, 40, seed=2)
    events = SimulatedEvents(val, test)
    events.detector = detector
    return events


@pytest.fixture(scope="module")
def table(simulated):
    return HitProbability.from_events(simulated.events("val"), simulated.detector)


def test_fast_pmt_geometry_is_the_direct_one():
    detector = generate_orca_like(3)
    pmts = DetectorPmts(detector)
    rng = np.random.default_rng(5)
    for _ in range(5):
        point = detector.center_m + rng.normal(0.0, 60.0, 3)
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        rho, facing = pmts.track_geometry(point, direction)
        rho_direct, facing_direct = pmt_track_geometry(detector.pmt_pos_m, detector.pmt_dir, point, direction)
        np.testing.assert_allclose(rho, rho_direct, atol=1e-9)
        np.testing.assert_allclose(facing, facing_direct, atol=1e-9)


def test_hit_probability_falls_with_distance_and_rises_with_brightness(table):
    facing_bin = -1  # PMTs that look at the direct light
    near = HIT_DISTANCE_EDGES_M[1:] <= 20.0
    far = (HIT_DISTANCE_EDGES_M[:-1] >= 80.0) & (HIT_DISTANCE_EDGES_M[1:] <= 125.0)
    for brightness in range(len(table.p_hit)):
        p = table.p_hit[brightness, :, facing_bin]
        assert p[near].mean() > 5.0 * p[far].mean()
    # brighter events light more PMTs at every distance the muon's direct light reaches
    within_50m = HIT_DISTANCE_EDGES_M[1:] <= 50.0
    assert np.all(table.p_hit[-1, within_50m, facing_bin] > table.p_hit[0, within_50m, facing_bin])
    # PMTs that look away see less than those that face the light, near the track
    assert np.all(table.p_hit[-1, :4, 0] < table.p_hit[-1, :4, -1])


def test_the_fine_grid_is_the_bilinear_table(table):
    """On the fine grid's own points (and beyond its ends, where both are constant) the fit's look-up is the table."""
    rho = np.array([0.0, 3.0, 12.5, 44.0, 90.0, 599.5, 600.0, 700.0, 1e4])
    facing = np.array([-1.0, 1.0, 0.3, -0.2, 0.6, 0.98, -1.0, 1.0, 0.0])
    for brightness in range(len(table.p_hit)):
        for hit in (np.zeros(len(rho), dtype=bool), np.ones(len(rho), dtype=bool), np.arange(len(rho)) % 2 == 0):
            p = table.probability(rho, facing, brightness)
            exact = np.sum(np.log(np.where(hit, p, 1.0 - p)))
            assert table.log_likelihood(rho, facing, hit, brightness) == pytest.approx(exact, rel=1e-9, abs=1e-9)
    # between grid points: linear in distance (44.25 m: halfway between 44.0 and 44.5), nearest in facing (0.317: 0.32)
    p = table.probability(np.array([44.0, 44.5]), np.array([0.32, 0.32]), 1)
    assert table.log_likelihood(np.array([44.25]), np.array([0.317]), np.array([True]), 1) == pytest.approx(
        np.log(p).mean(), rel=1e-9)


def _tilted(direction: np.ndarray, degrees: float) -> np.ndarray:
    e1, _ = perpendicular_basis(direction)
    angle = np.radians(degrees)
    return np.cos(angle) * direction + np.sin(angle) * e1


def test_the_hit_pattern_singles_out_the_true_muon(simulated, table):
    detector, pmts = simulated.detector, DetectorPmts(simulated.detector)
    true_wins_tilted, true_wins_shifted, n = 0, 0, 0
    for event in simulated.events("test"):
        point, direction, time0 = vertex_muon_track(event.truth)
        hits = event.hits
        residual = hits["t_ns"] - cherenkov_arrival_time_ns(hit_positions_m(hits), point, direction, time0)
        in_window = (residual >= LIKELIHOOD_WINDOW_NS[0]) & (residual <= LIKELIHOOD_WINDOW_NS[1])
        pattern = HitPattern(table, pmts, pmt_rows(detector, hits, "test"),
                             table.brightness_class(int(hits["triggered"].sum())))
        log_likelihood = pattern.log_likelihood_function(in_window)
        at_muon = log_likelihood(point, direction)
        true_wins_tilted += at_muon > log_likelihood(point, _tilted(direction, 20.0))
        true_wins_shifted += at_muon > log_likelihood(point + 20.0 * perpendicular_basis(direction)[1], direction)
        n += 1
    assert true_wins_tilted / n >= 0.75
    assert true_wins_shifted / n >= 0.75


def test_hits_find_their_pmt_in_any_row_order(simulated):
    """D_ORCA006's PMT table is not sorted by DOM and channel; a shuffled one must give each hit its own PMT."""
    detector, hits = simulated.detector, simulated.events("test")[0].hits
    shuffled = np.random.default_rng(3).permutation(detector.n_pmts)
    fields = {f: getattr(detector, f)[shuffled] for f in ("pmt_pos_m", "pmt_dir", "dom_id", "du_id", "channel_id")}
    rows = pmt_rows(type(detector)(**fields, det_id=detector.det_id, name=detector.name), hits, "test")
    np.testing.assert_array_equal(fields["dom_id"][rows], hits["dom_id"])
    np.testing.assert_array_equal(fields["channel_id"][rows], hits["channel_id"])
    np.testing.assert_allclose(fields["pmt_pos_m"][rows], hit_positions_m(hits), atol=1e-4)


def test_a_hit_on_a_pmt_the_detector_lacks_is_one_line(simulated):
    hits = simulated.events("test")[0].hits.copy()
    hits["dom_id"][0] = 987654321
    with pytest.raises(ConfigError, match=r"^baseline.track_likelihood_hit_probability: a hit on DOM "
                                          r"987654321 channel \d+, which detector .* does not have"):
        pmt_rows(simulated.detector, hits, "baseline.track_likelihood_hit_probability")


@pytest.mark.slow
def test_the_hit_pattern_takes_fits_out_of_wrong_maxima(simulated):
    """On simulated events the time-residual likelihood alone ends beyond 20 deg of the muon on a large share of the
    events (its maximum lies on a wrong track); with the silent PMTs fewer fits end there and the mean falls."""
    truth = np.array([[e.truth[f"muon_dir_{a}"] for a in "xyz"] for e in simulated.events("test")])
    errors = {}
    for name, baseline in {"plain": TrackLikelihoodBaseline(n_starts=3),
                           "hit": TrackHitLikelihoodBaseline(n_starts=3)}.items():
        fits = run_baselines({name: baseline}, simulated)[name].outputs
        assert fits["ok"].all()
        errors[name] = angle_between_deg(fits["direction"], truth)
    assert np.mean(errors["hit"] > 20.0) < np.mean(errors["plain"] > 20.0)
    assert np.mean(errors["hit"]) < np.mean(errors["plain"]) - 3.0
    assert np.median(errors["hit"]) < np.median(errors["plain"]) + 2.0


@pytest.mark.slow
def test_the_network_started_fit_takes_the_term_too(simulated):
    muon = np.array([[e.truth[f"muon_dir_{a}"] for a in "xyz"] for e in simulated.events("test")[:5]])
    hybrid = NetworkStartedHitLikelihoodBaseline(n_starts=1, max_events=5, fallback_containment=0.99)
    result = run_baselines({"hybrid": hybrid}, simulated, {"direction_pred": muon,
                                                           "kappa_calibrated": np.full(5, 50.0)})
    assert result["hybrid"].label == "likelihood fit with hit / no-hit from the network"
    assert len(result["hybrid"].outputs["network_start_won"]) == 5
    # the term is in its likelihood (the same fit without it has another maximum value) ...
    plain = run_baselines({"plain": NetworkStartedLikelihoodBaseline(n_starts=1, max_events=5)}, simulated,
                          {"direction_pred": muon})["plain"].outputs
    assert np.all(np.abs(result["hybrid"].outputs["nll"] - plain["nll"]) > 1.0)
    # ... over the PMTs with a hit in the events fitted (a PMT never hit in them counts as off, not as silent)
    fitted_rows = np.concatenate([pmt_rows(simulated.detector, e.hits, "test") for e in simulated.events("test")[:5]])
    np.testing.assert_array_equal(hybrid.detector_pmts.rows, np.unique(fitted_rows))
    assert len(hybrid.detector_pmts.rows) < simulated.detector.n_pmts
