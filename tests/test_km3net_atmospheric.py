"""Atmospheric muon bundles (numl.sim.km3net.atmospheric) against KM3NeT's own MUPAGE files in km3net-testdata, and
as events of the KM3NeT simulation."""

from __future__ import annotations

import numpy as np
import pytest
from km3net_testdata import data_path
from scipy import integrate
from scipy.stats import ks_2samp

from numl.sim.km3net import build_detector
from numl.sim.km3net.atmospheric import (
    BundleGenerator,
    energy_spectrum,
    read_mupage_bundles,
    sample_energy_tev,
    sample_summary,
    single_muon_spectrum_parameters,
)
from numl.sim.km3net.events import EVENT_TYPES, EventConfig, simulate_events
from numl.utils.errors import ConfigError

# The two files' MUPAGE runs (their headers): ARCA site, seabed 3450 m below the surface at z = 0, can radius
# 1018.4 m from z = 0 to 957 m, zenith 0-85 deg; bundles above 10 TeV (25,000 in a livetime of 6,660 s) and above
# 50 TeV (10,000 in 106,000 s); the bundle thresholds are the files' smallest bundle energies (10,005.6 and
# 50,007.7 GeV). Their muons are those that reach the can, at the can, as numl's.
MUPAGE_FILES = {
    "10TeV": ("hdf5/atmospheric_muons_sample.h5", 1e4, 25_000 / 6_660.0),
    "50TeV": ("hdf5/mupage_ARCA.h5", 5e4, 10_000 / 106_000.0),
}


def compare_with_file(name: str, n_bundles: int) -> tuple[float, float, dict[str, float]]:
    path, threshold, file_rate = MUPAGE_FILES[name]
    generator = BundleGenerator((0.0, 0.0), 1018.4, 0.0, 957.0, seabed_depth_m=3450.0, seabed_z_m=0.0,
                                bundle_energy_min_gev=threshold)
    sample = generator.sample(np.random.default_rng(1), n_bundles)
    ours, theirs = sample_summary(sample), read_mupage_bundles(data_path(path))
    p_values = {key: ks_2samp(ours[key], theirs[key]).pvalue for key in ours}
    return sample.rate_hz / file_rate, sample.rate_uncertainty_hz / sample.rate_hz, p_values


def test_bundles_above_10_tev_match_km3nets_mupage_file_in_rate_and_distributions():
    # 500 events of the file; numl's rate of such bundles within 10 % of the file's (measured: +1.8 %, 2.2 % error)
    rate_ratio, relative_error, p_values = compare_with_file("10TeV", 2000)
    assert relative_error < 0.03
    assert abs(rate_ratio - 1.0) < 0.10
    assert min(p_values.values()) > 0.01, p_values


@pytest.mark.slow
def test_bundles_above_50_tev_match_the_second_mupage_file_in_distributions():
    # 150 events. The rate comes out 26 % above this file's (0.119 against 0.094 Hz, 2.3 % error) while the 10 TeV
    # file agrees: not understood (another MUPAGE version or setting is a guess); the bound holds numl to it.
    rate_ratio, _, p_values = compare_with_file("50TeV", 500)
    assert 0.9 < rate_ratio < 1.4
    assert min(p_values.values()) > 0.01, p_values


def test_energy_spectrum_is_normalised_and_sampled_by_its_cdf():
    gamma, epsilon, beta_x = single_muon_spectrum_parameters(2.5, np.radians(30.0))
    total, _ = integrate.quad(lambda e: energy_spectrum(e, gamma, epsilon, beta_x), 0.0, np.inf, limit=200)
    assert total == pytest.approx(1.0, rel=1e-6)
    rng = np.random.default_rng(0)
    draws = sample_energy_tev(rng, np.full(20_000, gamma), epsilon, beta_x, np.array([0.001, 500.0]))
    below_1_tev = integrate.quad(lambda e: energy_spectrum(e, gamma, epsilon, beta_x), 0.001, 1.0)[0]
    in_range = integrate.quad(lambda e: energy_spectrum(e, gamma, epsilon, beta_x), 0.001, 500.0)[0]
    assert np.mean(draws < 1.0) == pytest.approx(below_1_tev / in_range, abs=0.01)
    assert draws.min() >= 0.001 and draws.max() <= 500.0


def test_bundles_are_drawn_only_where_the_parametrisation_holds():
    with pytest.raises(ConfigError, match="data.events.atmospheric_seabed_depth_m=800: the can spans"):
        BundleGenerator((0.0, 0.0), 100.0, 0.0, 200.0, seabed_depth_m=800.0, seabed_z_m=0.0)


@pytest.fixture(scope="module")
def orca6():
    return build_detector("detx", "D_ORCA006_t.A02181836.p.A02181837.r.A02182001.detx")


def test_atmospheric_muon_events_are_down_going_bundles_with_hits(orca6):
    config = EventConfig.from_dict({"atmospheric_muon_fraction": 1.0, "can_margin_m": 20.0, "seabed_z_m": 0.0,
                                    "muon_light": "cone_and_showers", "scattered_light_fraction": 0.1})
    events, n_generated = simulate_events(orca6, config, 30, seed=3)
    truth = np.stack([e.truth for e in events])
    assert np.all(truth["event_type"] == EVENT_TYPES["atmospheric_muon"])
    assert np.all(truth["dir_z"] < -0.08)  # zenith below 85 deg: going down
    assert np.all(truth["n_muons"] >= 1) and np.all(truth["energy_gev"] >= 10.0)
    assert np.all(truth["n_signal_hits"] > 0) and n_generated >= len(events)
    # a mixture holds both kinds, and neutrino events carry their muon count
    mixed, _ = simulate_events(orca6, EventConfig.from_dict({"atmospheric_muon_fraction": 0.5}), 40, seed=4)
    types = np.array([int(e.truth["event_type"]) for e in mixed])
    assert 0 < np.sum(types == EVENT_TYPES["atmospheric_muon"]) < len(types)
    assert all(int(e.truth["n_muons"]) == 1 for e in mixed if e.truth["event_type"] == EVENT_TYPES["numu_cc"])


@pytest.mark.parametrize("key, value, message", [
    ("atmospheric_muon_fraction", 1.5, "data.events.atmospheric_muon_fraction=1.5"),
    ("atmospheric_bundle_energy_min_gev", 0.0, "data.events.atmospheric_bundle_energy_min_gev=0"),
    ("atmospheric_multiplicity_max", 0, "data.events.atmospheric_multiplicity_max=0"),
])
def test_bad_atmospheric_keys_are_one_line_errors(key, value, message):
    with pytest.raises(ConfigError, match=message) as error:
        EventConfig.from_dict({key: value})
    assert "\n" not in str(error.value)
