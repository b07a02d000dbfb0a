"""The muon's range in sea water against the PDG muon tables and against the stopping muons of an official KM3NeT
simulation file."""

from __future__ import annotations

import numpy as np
import pytest
from km3net_testdata import data_path

from numl.data.km3net import read_file_muon_lengths
from numl.sim.km3net import EventConfig, generate_orca_like, physics, simulate_events
from numl.utils.errors import ConfigError

#: g/cm^2 of sea water per metre
SEA_WATER_G_PER_CM2_PER_M = 100.0 * physics.DENSITY_SEA_WATER_G_PER_CM3
PDG_WATER_CSDA_RANGE_G_PER_CM2 = physics.PDG_WATER_CSDA_RANGE_G_PER_CM2
#: an ORCA (det_id 49) production sample, muons propagated by the collaboration's simulation chain
ORCA_NEUTRINO_SAMPLE = ("offline/KM3NeT_00000049_00011291.mc.gsg_neutrinos.km3sim_sirene_merged.jterbr."
                        "jppmuon_jppshower_static.offline.v9.2.sample.root")


def mev_cm2_per_g(gev_per_m):
    return np.asarray(gev_per_m) * 10.0 / physics.DENSITY_SEA_WATER_G_PER_CM3


@pytest.mark.parametrize("kinetic_gev", sorted(PDG_WATER_CSDA_RANGE_G_PER_CM2))
def test_bethe_bloch_range_matches_the_pdg_water_table(kinetic_gev):
    energy = kinetic_gev + physics.MUON_MASS_GEV
    pdg = PDG_WATER_CSDA_RANGE_G_PER_CM2[kinetic_gev]
    bethe = float(physics.muon_range_m(energy, "bethe_bloch")) * SEA_WATER_G_PER_CM2_PER_M
    assert bethe == pytest.approx(pdg, rel=0.005)


def test_constant_a_is_short_near_minimum_ionisation():
    # the former model's a = 0.27 GeV/m is the loss of a ~100 GeV muon: 14 % short at 2 GeV kinetic
    constant = float(physics.muon_range_m(2.0 + physics.MUON_MASS_GEV)) * SEA_WATER_G_PER_CM2_PER_M
    assert constant / PDG_WATER_CSDA_RANGE_G_PER_CM2[2.0] < 0.9


def test_bethe_bloch_stopping_power_matches_pdg():
    energy = np.geomspace(0.15, 10.0, 20_000)
    loss = mev_cm2_per_g(physics.muon_ionisation_loss_gev_per_m(energy))
    assert loss.min() == pytest.approx(physics.PDG_WATER_MIN_IONISATION_MEV_CM2_PER_G, rel=0.01)
    # minimum ionisation at beta gamma ~ 3.5 (PDG: 3-4 for every material)
    assert 3.0 < np.sqrt(energy[loss.argmin()] ** 2 - physics.MUON_MASS_GEV**2) / physics.MUON_MASS_GEV < 4.0
    total = mev_cm2_per_g(physics.muon_dedx_gev_per_m(2.0 + physics.MUON_MASS_GEV, "bethe_bloch"))
    assert total == pytest.approx(physics.PDG_WATER_TOTAL_LOSS_AT_2_GEV_MEV_CM2_PER_G, rel=0.01)
    # the relativistic rise: a(E) grows with log E, past the constant a of the former model above ~30 GeV
    assert physics.muon_ionisation_loss_gev_per_m(1.0) < physics.muon_ionisation_loss_gev_per_m(10.0) \
        < physics.MUON_DEDX_A_GEV_PER_M < physics.muon_ionisation_loss_gev_per_m(100.0)


@pytest.mark.parametrize("model", physics.MUON_ENERGY_LOSS_MODELS)
def test_energy_along_the_track_uses_up_the_range(model):
    energy = 20.0
    total = float(physics.muon_range_m(energy, model))
    distance = np.linspace(0.0, 1.2 * total, 61)
    left = physics.muon_energy_at_gev(energy, distance, model)
    assert left[0] == pytest.approx(energy, rel=1e-6)
    assert np.all(np.diff(left) <= 0.0) and np.all(left[distance > total] == 0.0)
    moving = (distance < 0.98 * total) & (distance > 0)
    # the energy left has the range left
    np.testing.assert_allclose(physics.muon_range_m(left[moving], model), total - distance[moving], rtol=2e-3,
                               atol=0.05)
    # and the energy lost over a short step is dE/dx times the step
    step = 0.5
    lost = energy - float(physics.muon_energy_at_gev(energy, step, model))
    assert lost == pytest.approx(float(physics.muon_dedx_gev_per_m(energy, model)) * step, rel=0.01)


def test_stopping_muons_of_an_official_orca_file_have_the_bethe_bloch_range():
    """The collaboration's chain propagates each muon; a muon of a few GeV stops within tens of metres, so the
    track length it stores is its range (with straggling)."""
    muons = read_file_muon_lengths(data_path(ORCA_NEUTRINO_SAMPLE))
    stopping = muons["energy_gev"] < 10.0
    energy, length = muons["energy_gev"][stopping], muons["length_m"][stopping]
    assert stopping.sum() >= 5
    ratio = {model: np.median(length / physics.muon_range_m(energy, model))
             for model in physics.MUON_ENERGY_LOSS_MODELS}
    assert ratio["bethe_bloch"] == pytest.approx(1.0, abs=0.04)
    assert ratio["constant_a"] > 1.1  # the former model's ranges are short


def test_simulated_muons_carry_the_chosen_range():
    detector = generate_orca_like(7)
    for model in physics.MUON_ENERGY_LOSS_MODELS:
        config = EventConfig.from_dict({"muon_energy_loss": model, "energy_min_gev": 3.0, "energy_max_gev": 20.0})
        events, _ = simulate_events(detector, config, 5, seed=3)
        truth = np.array([event.truth for event in events])
        np.testing.assert_allclose(truth["muon_range_m"], physics.muon_range_m(truth["muon_energy_gev"], model))
    with pytest.raises(ConfigError, match="data.events.muon_energy_loss"):
        EventConfig.from_dict({"muon_energy_loss": "tables"})
