"""The likelihood fit started from the network's directions (baseline=track_likelihood_network_start, issue 16): the
ring-fit track it starts from, what a good and a useless network start do to the fit, and its one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

from numl.baselines.base import run_baselines
from numl.baselines.km3net import (
    NetworkPriorLikelihoodBaseline,
    NetworkStartedLikelihoodBaseline,
    ResidualPdf,
    TrackLikelihoodBaseline,
)
from numl.sim.km3net import EventConfig, generate_orca_like, simulate_events
from numl.sim.km3net.physics import angle_between_deg, cherenkov_arrival_time_ns, track_geometry
from numl.sim.km3net.prefit import ring_fit_track
from numl.utils.errors import ConfigError
from tests.test_km3net_prefit import ideal_hits


def test_ring_fit_track_puts_ideal_hits_on_the_given_direction():
    direction = np.array([0.5, -0.2, 0.84]) / np.linalg.norm([0.5, -0.2, 0.84])
    point, t0 = np.array([-15.0, 25.0, 80.0]), 300.0
    hits = ideal_hits(direction, point, t0, seed=4)
    pos = np.stack([hits[f"pos_{a}"] for a in "xyz"], axis=1).astype(np.float64)
    track = ring_fit_track(pos, hits["t_ns"], direction)
    np.testing.assert_array_equal(track.direction, direction)
    _, distance_m, _ = track_geometry(track.point_m[None, :], point, direction)
    assert distance_m[0] < 1e-3
    assert np.abs(hits["t_ns"] - cherenkov_arrival_time_ns(pos, track.point_m, direction, track.time_ns)).max() < 1e-3
    # three hits cannot fix a ring: the track goes through their centre at their mean time
    few = ring_fit_track(pos[:3], hits["t_ns"][:3], direction)
    np.testing.assert_allclose(few.point_m, pos[:3].mean(axis=0))
    assert few.time_ns == pytest.approx(hits["t_ns"][:3].mean())


class SimulatedEvents:
    """The part of a KM3NeT DataModule a baseline uses: events per split."""

    def __init__(self, val, test) -> None:
        self.splits = {"val": val, "test": test}

    def events(self, split: str):
        return self.splits[split]


def _muon_directions(events) -> np.ndarray:
    return np.array([[e.truth[f"muon_dir_{a}"] for a in "xyz"] for e in events], dtype=np.float64)


@pytest.fixture(scope="module")
def fitted_events():
    detector = generate_orca_like(7)
    config = EventConfig(energy_min_gev=50.0, energy_max_gev=300.0, can_margin_m=30.0)
    val, _ = simulate_events(detector, config, 60, seed=1)
    test, _ = simulate_events(detector, config, 40, seed=2)
    return SimulatedEvents(val, test)


def _median_error(baseline, events) -> tuple[float, np.ndarray]:
    result = run_baselines({"fit": baseline}, events, {"direction_pred": _muon_directions(events.events("test"))})
    fits = result["fit"].outputs
    errors = angle_between_deg(fits["direction"], _muon_directions(events.events("test")))
    return float(np.median(errors[fits["ok"]])), errors


@pytest.mark.slow
def test_a_network_at_the_muon_brings_the_fit_to_it_and_a_reversed_one_costs_nothing(fitted_events):
    plain = TrackLikelihoodBaseline(n_starts=1)
    plain_median, plain_errors = _median_error(plain, fitted_events)

    # A network that knows the muon: the fit from there is better and has fewer far-off fits, but not none: where
    # the likelihood of a track beside the muon is higher, the simplex leaves the muon for it
    at_muon = NetworkStartedLikelihoodBaseline(n_starts=1)
    muon_median, muon_errors = _median_error(at_muon, fitted_events)
    assert muon_median < 0.9 * plain_median
    assert np.mean(muon_errors > 20.0) < np.mean(plain_errors > 20.0)

    # A network pointing backwards: its starts lose the likelihood to the prefit's, so the fit stays the plain one
    class Reversed(NetworkStartedLikelihoodBaseline):
        def take_network_predictions(self, predictions):
            super().take_network_predictions({"direction_pred": -predictions["direction_pred"]})

    reversed_start = Reversed(n_starts=1)
    reversed_median, reversed_errors = _median_error(reversed_start, fitted_events)
    assert reversed_median < 1.15 * plain_median
    assert np.mean(reversed_errors > 90.0) <= np.mean(plain_errors > 90.0) + 0.05


def test_the_hybrid_needs_a_network_that_predicts_directions():
    hybrid = NetworkStartedLikelihoodBaseline()
    with pytest.raises(ConfigError, match=r"^baseline.track_likelihood_network_start: the network predicts no "
                                          r"direction \(its predictions: \['label_pred'\]\)"):
        hybrid.take_network_predictions({"label_pred": np.zeros(3)})
    with pytest.raises(ConfigError, match=r"^baseline.hybrid starts from the network's predictions"):
        run_baselines({"hybrid": hybrid}, SimulatedEvents([], []))
    with pytest.raises(ConfigError, match=r"^baseline.track_likelihood_network_start: no network predictions"):
        hybrid.test_events(SimulatedEvents([], ["a", "b", "c"]))
    hybrid.take_network_predictions({"direction_pred": np.tile([0.0, 0.0, 2.0], (2, 1))})
    np.testing.assert_allclose(hybrid.network_directions, np.tile([0.0, 0.0, 1.0], (2, 1)))
    # a predict loop limited to its first batches (fast_dev_run): the hybrid fits the events the network predicted
    assert hybrid.test_events(SimulatedEvents([], ["a", "b", "c"])) == ["a", "b"]
    hybrid.take_network_predictions({"direction_pred": np.tile([0.0, 0.0, 1.0], (2, 1)), "event_index": [1, 0]})
    with pytest.raises(RuntimeError, match="not in the test events' order"):
        hybrid.test_events(SimulatedEvents([], ["a", "b", "c"]))


def test_evaluate_adds_baselines_of_the_group(tmp_path):
    from tests.conftest import compose_config

    cfg = compose_config("evaluate", ["ckpt_path=run/checkpoints/last.ckpt",
                                      "baseline=[track_likelihood,track_likelihood_network_start]"], tmp_path)
    assert cfg.baseline.track_likelihood_network_start._target_.endswith("NetworkStartedLikelihoodBaseline")
    assert cfg.baseline.track_likelihood.n_starts == 10
    assert not compose_config("evaluate", ["ckpt_path=run/checkpoints/last.ckpt"], tmp_path).get("baseline")


def test_the_network_prior_enters_the_fit_with_its_kappa():
    from numl.baselines.km3net import PDF_DISTANCE_EDGES_M, PDF_FACING_EDGES, PDF_RESIDUAL_EDGES_NS, likelihood_fit

    direction = np.array([0.3, 0.1, 0.95]) / np.linalg.norm([0.3, 0.1, 0.95])
    hits = ideal_hits(direction, np.array([10.0, -20.0, 90.0]), 0.0, seed=6)
    pos = np.stack([hits[f"pos_{a}"] for a in "xyz"], axis=1).astype(np.float64)
    pmt_dir = np.stack([hits[f"dir_{a}"] for a in "xyz"], axis=1).astype(np.float64)
    flat = ResidualPdf(np.zeros((len(PDF_DISTANCE_EDGES_M) - 1, len(PDF_FACING_EDGES) - 1,
                                 len(PDF_RESIDUAL_EDGES_NS) - 1)))
    hybrid = NetworkPriorLikelihoodBaseline()
    with pytest.raises(ConfigError, match=r"^baseline.track_likelihood_network_prior: the network predicts "
                                          r"no kappa_calibrated"):
        hybrid.take_network_predictions({"direction_pred": direction[None, :]})
    hybrid.take_network_predictions({"direction_pred": direction[None, :], "kappa_calibrated": np.array([50.0])})
    prior = hybrid.direction_log_prior(0)
    assert prior(direction) == pytest.approx(50.0)
    assert prior(-direction) == pytest.approx(-50.0)
    assert NetworkStartedLikelihoodBaseline().direction_log_prior(0) is None
    # a flat likelihood leaves only the prior: the fit from a start 30 deg away walks to the network's direction
    start = np.array([0.8, 0.1, 0.6]) / np.linalg.norm([0.8, 0.1, 0.6])
    assert angle_between_deg(start, direction) > 25.0
    u, *_ = likelihood_fit(pos, pmt_dir, hits["t_ns"], [(start, pos.mean(axis=0), 0.0, 0.0)], flat,
                           direction_log_prior=prior)
    assert angle_between_deg(u, direction) < 1.0


def test_the_network_answers_where_the_fit_leaves_its_cone_or_fails(monkeypatch):
    network = np.tile([0.0, 0.0, 1.0], (4, 1))
    # fits 5 deg and 40 deg from the network (kappa 100: its 99 % cone is 17 deg wide), a failed fit, and a fit 90 deg
    # off a network that knows it is unsure (kappa 1: 73 % of its directions lie within 90 deg)
    fit = np.array([[np.sin(np.radians(5.0)), 0.0, np.cos(np.radians(5.0))],
                    [np.sin(np.radians(40.0)), 0.0, np.cos(np.radians(40.0))], [np.nan] * 3, [1.0, 0.0, 0.0]])
    ok = np.array([True, True, False, True])
    winning_start = np.array([5, 2, -1, 6])  # with n_starts=3 the network's two starts are 5 and 6
    monkeypatch.setattr(TrackLikelihoodBaseline, "fit_events",
                        lambda self, events: {"direction": fit, "ok": ok, "winning_start": winning_start})
    hybrid = NetworkStartedLikelihoodBaseline(fallback_containment=0.99)
    hybrid.take_network_predictions({"direction_pred": network, "kappa_calibrated": np.array([100.0, 100.0, 100.0,
                                                                                              1.0])})
    fits = hybrid.fit_events([None] * 4)
    np.testing.assert_array_equal(fits["network_fallback"], [False, True, True, False])
    np.testing.assert_allclose(fits["direction"], [fit[0], network[1], network[2], fit[3]])
    assert fits["ok"].all()
    np.testing.assert_array_equal(fits["fit_direction"], fit)
    np.testing.assert_array_equal(fits["fit_ok"], ok)
    np.testing.assert_array_equal(fits["network_start_won"], [True, False, False, True])
    assert "network_fallback" not in NetworkStartedLikelihoodBaseline().fit_events([None] * 4)
    with pytest.raises(ConfigError, match=r"^baseline.track_likelihood_network_start.fallback_containment=1.0: a "
                                          r"probability"):
        NetworkStartedLikelihoodBaseline(fallback_containment=1.0)
