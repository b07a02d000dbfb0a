"""Genuine K-40 coincidences (issue 16): numl's K-40 hits on one DOM, analysed as KM3NeT's intra-DOM calibration
does (time differences of PMT pairs: a peak of genuine pairs over a flat chance level), give back KM3NeT's pair rates
per angle, the chance level of the singles, and the configured rate per PMT; and the official ORCA6 file has them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from numl.sim.km3net import EventConfig, generate_orca_like
from numl.sim.km3net.events import k40_hits, k40_singles_rate_hz
from numl.sim.km3net.observables import K40_PAIR_WINDOW_NS, K40_SIDE_BAND_NS, K40_SIDE_BAND_TO_WINDOW, k40_pair_counts
from numl.sim.km3net.physics import k40_pair_rate_hz
from numl.utils.errors import ConfigError
from tests.test_km3net_data import needs_km3io

ORCA6_FILE = "mcv6.0.gsg_muon_highE-CC_50-500GeV.km3sim.jterbr00008357.jorcarec.aanet.905.root"
LIVETIME_NS = 2e9
ANGLE_EDGES_DEG = (0.0, 40.0, 80.0, 180.0)


@pytest.fixture(scope="module")
def one_dom():
    return generate_orca_like(1, n_doms_per_du=1)


def pair_time_differences(pmt: np.ndarray, t: np.ndarray, max_dt_ns: float) -> tuple[np.ndarray, ...]:
    """(first PMT, second PMT, |dt|) of every hit pair on two PMTs closer than max_dt_ns."""
    order = np.argsort(t)
    pmt, t = pmt[order], t[order]
    firsts, seconds, dts = [], [], []
    for lag in range(1, len(t)):
        dt = t[lag:] - t[:-lag]
        if not np.any(dt < max_dt_ns):
            break
        close = (dt < max_dt_ns) & (pmt[lag:] != pmt[:-lag])
        firsts.append(pmt[:-lag][close])
        seconds.append(pmt[lag:][close])
        dts.append(dt[close])
    return np.concatenate(firsts), np.concatenate(seconds), np.concatenate(dts)


def test_the_dom_sums_km3nets_pair_rates_to_656_hz(one_dom):
    first, second, cos = one_dom.dom_pmt_pairs
    assert len(first) == 31 * 30 // 2
    assert np.all(one_dom.dom_index[first] == one_dom.dom_index[second])
    assert k40_pair_rate_hz(cos).sum() == pytest.approx(656.0, abs=1.0)
    # neighbouring PMTs dominate: nearly half of the rate within 40 deg, almost none facing away
    angle = np.degrees(np.arccos(np.clip(cos, -1, 1)))
    assert k40_pair_rate_hz(cos[angle < 40]).sum() / 656.0 == pytest.approx(0.47, abs=0.02)
    assert k40_pair_rate_hz(cos[angle > 120]).sum() < 10.0


@pytest.mark.parametrize("scale", [0.0, 1.0, 2.5])
def test_coincidence_peak_and_chance_level_match_the_rates(one_dom, scale):
    config = replace(EventConfig(), noise_rate_hz=7000.0, k40_coincidence_scale=scale)
    pmt, t, tot = k40_hits(one_dom, config, np.random.default_rng(5), 0.0, LIVETIME_NS)
    livetime_s = LIVETIME_NS * 1e-9
    # every PMT keeps the configured total rate; ToT of single photo-electrons
    assert len(t) / (31 * livetime_s) == pytest.approx(7000.0, rel=0.01)
    assert np.median(tot) == pytest.approx(config.tot_1pe_ns, abs=0.5)

    first, second, dt = pair_time_differences(pmt, t, K40_SIDE_BAND_NS[1])
    in_window = dt < K40_PAIR_WINDOW_NS
    side = dt > K40_SIDE_BAND_NS[0]
    chance_per_ns = side.sum() / (K40_SIDE_BAND_NS[1] - K40_SIDE_BAND_NS[0])
    # chance pairs: 2 r_i r_j per ns of |dt| summed over pairs (r the singles plus each PMT's genuine share)
    rate = np.full(31, k40_singles_rate_hz(one_dom, config))
    pair_first, pair_second, cos = one_dom.dom_pmt_pairs
    np.add.at(rate, pair_first, scale * k40_pair_rate_hz(cos))
    np.add.at(rate, pair_second, scale * k40_pair_rate_hz(cos))
    expected_chance_per_ns = 2e-9 * (rate[pair_first] * rate[pair_second]).sum() * livetime_s
    assert chance_per_ns == pytest.approx(expected_chance_per_ns, rel=0.05)

    genuine = in_window.sum() - chance_per_ns * K40_PAIR_WINDOW_NS
    expected = scale * 656.0 * livetime_s
    error = np.sqrt(in_window.sum() + chance_per_ns * K40_PAIR_WINDOW_NS)
    assert abs(genuine - expected) < 4 * error
    if scale > 0:
        # per angle between the PMT axes, as KM3NeT's parametrisation shares the rate out
        angle = np.degrees(np.arccos(np.clip(np.einsum("ij,ij->i", one_dom.pmt_dir[first], one_dom.pmt_dir[second]),
                                             -1, 1)))
        pair_angle = np.degrees(np.arccos(np.clip(cos, -1, 1)))
        for lo, hi in zip(ANGLE_EDGES_DEG[:-1], ANGLE_EDGES_DEG[1:], strict=True):
            in_bin = (angle >= lo) & (angle < hi)
            n_near, n_side = (in_window & in_bin).sum(), (side & in_bin).sum()
            measured = n_near - n_side * K40_SIDE_BAND_TO_WINDOW
            predicted = scale * k40_pair_rate_hz(cos[(pair_angle >= lo) & (pair_angle < hi)]).sum() * livetime_s
            assert abs(measured - predicted) < 4 * np.sqrt(n_near + n_side * K40_SIDE_BAND_TO_WINDOW**2)


def test_scale_zero_draws_as_before(one_dom):
    """Without genuine coincidences the K-40 hits are the former model's, draw for draw."""
    config = EventConfig()
    pmt, t, tot = k40_hits(one_dom, config, np.random.default_rng(3), 100.0, 5100.0)
    rng = np.random.default_rng(3)
    n = rng.poisson(one_dom.n_pmts * config.noise_rate_hz * 1e-9 * 5000.0)
    np.testing.assert_array_equal(pmt, rng.integers(0, one_dom.n_pmts, n))
    np.testing.assert_array_equal(t, rng.uniform(100.0, 5100.0, n))
    np.testing.assert_array_equal(tot, np.clip(config.tot_1pe_ns + rng.normal(0, config.tot_spread_ns, n), 1, 255))


def test_a_scale_beyond_the_singles_rate_is_one_line(one_dom):
    config = replace(EventConfig(), noise_rate_hz=20.0, k40_coincidence_scale=1.0)
    with pytest.raises(ConfigError, match=r"^data\.events\.k40_coincidence_scale=1\.0: .*noise_rate_hz=20\.0"):
        k40_singles_rate_hz(one_dom, config)
    with pytest.raises(ConfigError, match="data.events.k40_coincidence_scale"):
        EventConfig.from_dict({"k40_coincidence_scale": -1.0})


@needs_km3io
def test_the_official_file_has_genuine_coincidences():
    """Pairs of noise hits on one DOM closer than 10 ns in the ORCA6 file: far above their chance level (the
    former model, singles only, would give the chance level), most between neighbouring PMTs."""
    from numl.data.km3net import read_offline_file
    from numl.sim.km3net.detector import resolve_testdata_path

    counts = k40_pair_counts(read_offline_file(resolve_testdata_path(ORCA6_FILE, "offline", "test")))
    chance = counts["side_band"] * K40_SIDE_BAND_TO_WINDOW
    # Poisson probability of as many pairs from chance alone, with the chance level raised by half (its side band
    # holds ~70 pairs): 32 pairs against 8.6 expected in the file
    assert stats.poisson.sf(counts["in_window"] - 1, 1.5 * chance) < 1e-4
    assert np.mean(counts["angles_in_window_deg"] < 40) > 2 * np.mean(counts["angles_side_band_deg"] < 40)
