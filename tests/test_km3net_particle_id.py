"""Classical KM3NeT particle identification: the event-shape features of a track and of a shower, and the
boosted decision trees on them."""

from __future__ import annotations

import numpy as np
import pytest

from numl.baselines.km3net import EVENT_SHAPE_FEATURES, TrackShowerFeatureBaseline, event_shape_features
from numl.data.km3net import hit_positions_m
from numl.sim.km3net.events import HIT_DTYPE
from numl.utils.errors import ConfigError

SPEED_OF_LIGHT_M_PER_NS = 0.299792458


def _hits(pos_m: np.ndarray, time_ns: np.ndarray, dom_id: np.ndarray | None = None) -> np.ndarray:
    hits = np.zeros(len(time_ns), dtype=HIT_DTYPE)
    hits["pos_x"], hits["pos_y"], hits["pos_z"] = pos_m.T
    hits["t_ns"], hits["tot_ns"], hits["triggered"] = time_ns, 25.0, True
    hits["dom_id"] = np.arange(len(time_ns)) if dom_id is None else dom_id
    hits["du_id"] = hits["dom_id"] // 18
    return hits


def _features(hits: np.ndarray) -> dict[str, float]:
    return dict(zip(EVENT_SHAPE_FEATURES, event_shape_features(hits), strict=True))


def test_a_muon_track_is_long_thin_and_its_front_moves_at_c_along_it():
    rng = np.random.default_rng(0)
    along_m = np.linspace(-50.0, 50.0, 40)
    axis = np.array([0.6, 0.0, 0.8])
    pos = along_m[:, None] * axis + rng.normal(0, 1.0, (40, 3))
    features = _features(_hits(pos, along_m / SPEED_OF_LIGHT_M_PER_NS))
    assert features["extent_major_m"] == pytest.approx(np.std(along_m), rel=0.05)
    assert features["extent_minor_m"] < 1.5
    assert features["front_speed_m_per_ns"] == pytest.approx(SPEED_OF_LIGHT_M_PER_NS, rel=0.05)
    assert features["front_speed_along_major"] > 0.99
    assert features["vertical_span_m"] == pytest.approx(np.ptp(pos[:, 2]))
    assert features["log10_triggered_hits"] == pytest.approx(np.log10(40))
    assert features["log10_total_tot_ns"] == pytest.approx(np.log10(40 * 25.0))


def test_a_shower_spreads_as_a_sphere_and_has_no_front_speed():
    # light from one point reaching PMTs all around it: the time grows with distance, not along an axis
    rng = np.random.default_rng(1)
    pos = rng.normal(0, 10.0, (400, 3))
    time_ns = np.linalg.norm(pos, axis=1) / 0.22
    features = _features(_hits(pos, time_ns, dom_id=np.arange(400) // 4))
    assert features["extent_minor_m"] / features["extent_major_m"] > 0.8
    assert features["front_speed_m_per_ns"] < 0.12  # sampling noise only (0.06 here); a track's is 0.3
    assert features["triggered_doms"] == 100 and features["triggered_lines"] == 6


def test_untriggered_hits_count_only_when_fewer_than_three_are_triggered():
    pos = np.array([[0.0, 0, 0], [0, 0, 10], [0, 0, 20], [0, 0, 500]])
    hits = _hits(pos, np.array([0.0, 33, 66, 2000]))
    hits["triggered"] = [True, True, True, False]
    assert _features(hits)["vertical_span_m"] == 20.0
    hits["triggered"] = [True, True, False, False]
    assert _features(hits)["vertical_span_m"] == 500.0


def test_the_baseline_refuses_bad_sizes_and_a_single_class():
    with pytest.raises(ConfigError, match="max_train_events=0"):
        TrackShowerFeatureBaseline(max_train_events=0)

    class OneClass:
        def events(self, split):
            from numl.sim.km3net.events import TRUTH_DTYPE, Event

            truth = np.zeros((), dtype=TRUTH_DTYPE)
            hits = _hits(np.zeros((3, 3)) + np.arange(3)[:, None], np.arange(3.0))
            return [Event(hits, truth) for _ in range(5)]

    with pytest.raises(ConfigError, match="one class only"):
        TrackShowerFeatureBaseline().fit(OneClass())


@pytest.mark.slow
def test_track_shower_experiment_reports_network_and_bdt_on_the_same_events(compose_train, tmp_path):
    # The study's experiment, small and simulated on the fly: the track head's and the BDT's AUROC in the test
    # metrics, and the figure and table of both per energy bin.
    import csv

    from numl.train import train

    cfg = compose_train(["experiment=km3net_reconstruction/orca6_track_shower", "data.source=simulate",
                         "data.n_train=96", "data.n_val=32", "data.n_test=64", "data.events_per_block=null",
                         "data.simulation_workers=1", "trainer.max_epochs=1", "trainer.accelerator=cpu"])
    metrics = train(cfg)
    for key in ("test/track_auroc", "test/track_accuracy", "baseline/track_shower_features/track_auroc"):
        assert 0.0 <= metrics[key] <= 1.0, key
    rows = list(csv.DictReader((tmp_path / "figures" / "km3net_track_identification.csv").open()))
    assert {r["method"] for r in rows} == {"network", "event-shape BDT"}
    overall = [r for r in rows if r["method"] == "event-shape BDT"][-1]
    assert int(overall["nu_mu_cc_events"]) + int(overall["other_events"]) == 64
    assert float(overall["auroc"]) == pytest.approx(metrics["baseline/track_shower_features/track_auroc"], abs=1e-3)
    # the task's epoch AUROC and the table's over the same test events
    network = [r for r in rows if r["method"] == "network"][-1]
    assert float(network["auroc"]) == pytest.approx(metrics["test/track_auroc"], abs=1e-3)
    assert (tmp_path / "figures" / "km3net_track_identification.png").is_file()


def _detector_grid_hits(arrival_time) -> np.ndarray:
    """Hits on a 4 x 4 x 8 grid of PMTs (20 m apart horizontally, 9 m vertically, as ORCA's lines and DOMs)
    at the times `arrival_time(positions)` plus 1 ns jitter."""
    rng = np.random.default_rng(5)
    x, y, z = np.meshgrid(np.arange(4) * 20.0, np.arange(4) * 20.0, np.arange(8) * 9.0, indexing="ij")
    pos = np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1) - np.array([30.0, 30.0, 31.5])
    return _hits(pos, arrival_time(pos) + rng.normal(0.0, 1.0, len(pos)))


def test_the_fits_tell_a_point_shower_from_a_muon_track():
    from numl.baselines.km3net import FIT_FEATURES, fit_features, shower_point_fit
    from numl.sim.km3net import physics

    vertex = np.array([3.0, -4.0, 5.0])
    shower = _detector_grid_hits(lambda pos: physics.shower_arrival_time_ns(pos, vertex, 100.0))
    fitted_vertex, _, cost = shower_point_fit(hit_positions_m(shower), shower["t_ns"])
    assert np.linalg.norm(fitted_vertex - vertex) < 1.0
    assert cost / len(shower) < 0.1  # 1 ns jitter against a 3 ns scale
    direction = np.array([0.6, 0.0, 0.8])
    muon = _detector_grid_hits(lambda pos: physics.cherenkov_arrival_time_ns(pos, vertex, direction, 100.0))
    shower_features = dict(zip(FIT_FEATURES, fit_features(shower), strict=True))
    muon_features = dict(zip(FIT_FEATURES, fit_features(muon), strict=True))
    assert shower_features["track_minus_shower_cost"] > 0.5 > -0.5 > muon_features["track_minus_shower_cost"]
    assert muon_features["track_cost_per_hit"] < 0.1 and muon_features["track_window_fraction"] == 1.0


def test_fit_features_are_nan_when_too_few_hits_are_triggered():
    from numl.baselines.km3net import FIT_FEATURES, fit_features

    hits = _hits(np.arange(15.0).reshape(5, 3), np.arange(5.0))
    assert np.isnan(fit_features(hits)).all() and len(fit_features(hits)) == len(FIT_FEATURES)


class _SyntheticPid:
    """A DataModule's `events(split)` of clean tracks (Cherenkov times from a line through the grid, random
    direction) and point showers (random vertex), alternating: the BDT must separate them."""

    def __init__(self) -> None:
        from numl.sim.km3net import physics
        from numl.sim.km3net.events import TRUTH_DTYPE, Event

        rng = np.random.default_rng(11)
        self.split = {}
        for split, n in (("train", 60), ("test", 40)):
            events = []
            for i in range(n):
                point = rng.uniform(-20, 20, 3)
                truth = np.zeros((), dtype=TRUTH_DTYPE)
                if i % 2 == 0:
                    direction = rng.normal(size=3)
                    direction /= np.linalg.norm(direction)
                    hits = _detector_grid_hits(
                        lambda pos, p=point, d=direction: physics.cherenkov_arrival_time_ns(pos, p, d, 100.0))
                else:
                    truth["event_type"] = 2
                    hits = _detector_grid_hits(lambda pos, p=point: physics.shower_arrival_time_ns(pos, p, 100.0))
                events.append(Event(hits, truth))
            self.split[split] = events

    def events(self, split):
        return self.split[split]


@pytest.mark.parametrize("with_fits", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_the_bdt_separates_tracks_from_showers(with_fits):
    datamodule = _SyntheticPid()
    baseline = TrackShowerFeatureBaseline(fit_features=with_fits).fit(datamodule)
    result = baseline.evaluate(datamodule)
    assert result.metrics["track_auroc"] > 0.9
    assert result.label == ("event-shape + fit BDT" if with_fits else "event-shape BDT")
    assert len(result.outputs["track_probability"]) == 40
