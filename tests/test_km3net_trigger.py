"""KM3NeT triggers (numl.sim.km3net.trigger): the muon-road trigger on a known muon, and on the official ORCA6 file
against the file's own triggered hits (issue 16)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from numl.sim.km3net import EventConfig, generate_orca_like, physics, simulate_events
from numl.sim.km3net.trigger import clusterize, road_compatible, scan_directions, trigger_flags
from numl.utils.errors import ConfigError

ORCA6_FILE = "mcv6.0.gsg_muon_highE-CC_50-500GeV.km3sim.jterbr00008357.jorcarec.aanet.905.root"
ORCA6_DETX = "D_ORCA006_t.A02181836.p.A02181837.r.A02182001.detx"
ROAD = EventConfig(trigger="muon_road")


def hit_arrays(hits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pos = np.stack([hits["pos_x"], hits["pos_y"], hits["pos_z"]], axis=1).astype(np.float64)
    return pos, hits["t_ns"].astype(np.float64), hits["dom_id"]


def test_scan_directions_cover_the_sphere():
    directions = scan_directions(200)
    assert np.allclose(np.linalg.norm(directions, axis=1), 1.0)
    # any direction is within ~10 deg of a scanned one (spacing ~14 deg)
    probe = np.random.default_rng(0).normal(size=(2000, 3))
    probe /= np.linalg.norm(probe, axis=1, keepdims=True)
    assert np.degrees(np.arccos(np.max(probe @ directions.T, axis=1))).max() < 11.0


def test_clusterize_keeps_a_mutually_compatible_set():
    rng = np.random.default_rng(1)
    compatible = np.ones((30, 30), dtype=bool)
    outliers = [3, 11, 17, 25]
    for i in outliers:  # each outlier is incompatible with most others
        bad = rng.random(30) < 0.7
        compatible[i, bad] = compatible[bad, i] = False
        compatible[i, i] = True
    cluster = clusterize(compatible)
    assert compatible[np.ix_(cluster, cluster)].all()
    assert set(range(30)) - set(outliers) <= set(cluster)


def test_muon_road_triggers_the_direct_light_of_a_muon_and_rejects_noise():
    # Direct Cherenkov hits of a straight muon through an ORCA-like detector (two hits per DOM: L1) and K-40-like
    # single hits spread over the same microseconds: the road keeps the muon's hits and almost no noise.
    detector = generate_orca_like(7)
    rng = np.random.default_rng(3)
    direction = np.array([0.3, -0.5, 0.81])
    direction /= np.linalg.norm(direction)
    centre = detector.pmt_pos_m.mean(axis=0)
    _, rho, _ = physics.track_geometry(detector.pmt_pos_m, centre, direction)
    lit = np.flatnonzero(rho < 25.0)
    lit = lit[rng.random(len(lit)) < 0.15]
    t_muon = physics.cherenkov_arrival_time_ns(detector.pmt_pos_m[lit], centre, direction)
    noise = rng.integers(0, detector.n_pmts, 300)
    pmt = np.concatenate([lit, noise])
    t = np.concatenate([t_muon + rng.normal(0, 1.5, len(lit)),
                        rng.uniform(t_muon.min() - 1000, t_muon.max() + 1000, len(noise))])
    flags = trigger_flags(detector.pmt_pos_m[pmt], t, detector.dom_index[pmt], ROAD)
    assert flags is not None
    is_muon = np.arange(len(pmt)) < len(lit)
    assert flags[is_muon].mean() > 0.9
    assert flags[~is_muon].sum() <= 0.05 * len(noise)


def test_road_compatibility_is_symmetric_and_causal():
    pos = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 30.0], [0.0, 200.0, 0.0]])
    up = np.array([[0.0, 0.0, 1.0]])
    t = np.array([0.0, 30.0 / physics.C_LIGHT_M_PER_NS, 0.0])
    ok = road_compatible(pos, t, pos, t, up, 120.0, 20.0)[0]
    assert (ok == ok.T).all()
    assert ok[0, 1]  # along the muon at the speed of light
    assert not ok[0, 2]  # 200 m apart across the road
    t_late = t.copy()
    t_late[1] += 100.0
    assert not road_compatible(pos, t_late, pos, t_late, up, 120.0, 20.0)[0][0, 1]


def test_trigger_is_a_checked_key():
    with pytest.raises(ConfigError, match="data.events.trigger"):
        EventConfig.from_dict({"trigger": "3d_muon"})
    with pytest.raises(ConfigError, match="data.events.trigger_road_width_m"):
        EventConfig.from_dict({"trigger": "muon_road", "trigger_road_width_m": 0})


def test_simulated_events_under_the_muon_road_have_triggered_hits_on_three_doms():
    detector = generate_orca_like(7)
    events, _ = simulate_events(detector, replace(ROAD, energy_min_gev=20.0), 10, seed=2)
    for event in events:
        triggered = event.hits[event.hits["triggered"].astype(bool)]
        assert len(np.unique(triggered["dom_id"])) >= 3


def test_muon_road_finds_the_official_files_triggered_hits():
    # The ORCA6 file's hits carry JTE's trigger flags; its trigger parameters are not public. The road values in
    # EventConfig were fitted to reproduce them (measured: 79 % of the file's triggered hits found, 91 % of the
    # hits found are the file's, 8 % of the events on 1-2 lines as JTE's 6 %; numl's l1_causal rule finds 88 % at
    # 93 % but puts 29 % of the events on 1-2 lines: experiments/km3net_reconstruction/trigger_check.py).
    pytest.importorskip("km3io")
    from numl.data.km3net import read_offline_file
    from numl.sim.km3net.detector import resolve_testdata_path

    events = read_offline_file(resolve_testdata_path(ORCA6_FILE, "offline", "f"))
    found = official = agree = 0
    for event in events:
        flags = trigger_flags(*hit_arrays(event.hits), ROAD)
        file_flags = event.hits["triggered"].astype(bool)
        flags = np.zeros(len(file_flags), bool) if flags is None else flags
        found += flags.sum()
        official += file_flags.sum()
        agree += (flags & file_flags).sum()
    assert agree / official > 0.75
    assert agree / found > 0.85
