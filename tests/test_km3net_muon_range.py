"""The muon's range in sea water against the PDG muon tables and against the stopping muons of an official KM3NeT
simulation file, and the simulator's use of it."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from numl.sim.km3net import EventConfig, generate_orca_like, physics, simulate_events
from numl.sim.km3net.detector import Detector
from numl.sim.km3net.events import expected_track_light, muon_loss_showers
from numl.utils.errors import ConfigError

needs_km3io = pytest.mark.skipif(importlib.util.find_spec("km3io") is None or
                                 importlib.util.find_spec("km3net_testdata") is None,
                                 reason="needs the km3net extra: pip install 'numl[km3net]'")
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
    # the former model's a = 0.27 GeV/m is the ionisation loss of a ~23 GeV muon: 14 % short at 2 GeV kinetic
    constant = float(physics.muon_range_m(2.0 + physics.MUON_MASS_GEV, "constant_a")) * SEA_WATER_G_PER_CM2_PER_M
    assert constant / PDG_WATER_CSDA_RANGE_G_PER_CM2[2.0] < 0.9


def test_bethe_bloch_stopping_power_matches_pdg():
    energy = np.geomspace(0.15, 10.0, 20_000)
    loss = mev_cm2_per_g(physics.muon_ionisation_loss_gev_per_m(energy))
    assert loss.min() == pytest.approx(physics.PDG_WATER_MIN_IONISATION_MEV_CM2_PER_G, rel=0.01)
    # minimum ionisation at beta gamma ~ 3.5 (PDG: 3-4 for every material)
    assert 3.0 < np.sqrt(energy[loss.argmin()] ** 2 - physics.MUON_MASS_GEV**2) / physics.MUON_MASS_GEV < 4.0
    total = mev_cm2_per_g(physics.muon_dedx_gev_per_m(2.0 + physics.MUON_MASS_GEV, "bethe_bloch"))
    assert total == pytest.approx(physics.PDG_WATER_TOTAL_LOSS_AT_2_GEV_MEV_CM2_PER_G, rel=0.01)
    # the relativistic rise: a(E) grows with log E, past the constant a of the former model at ~23 GeV
    assert physics.muon_ionisation_loss_gev_per_m(1.0) < physics.muon_ionisation_loss_gev_per_m(10.0) \
        < physics.MUON_DEDX_A_GEV_PER_M < physics.muon_ionisation_loss_gev_per_m(30.0)


def test_bad_model_and_energies_beyond_the_table_are_errors():
    with pytest.raises(ConfigError, match="data.events.muon_energy_loss='bethe-bloch'"):
        physics.muon_range_m(10.0, "bethe-bloch")
    with pytest.raises(ValueError, match="beyond the bethe_bloch range table"):
        physics.muon_range_m(1e8, "bethe_bloch")
    # MUPAGE's most energetic bundles (5e5 GeV) are inside it
    assert physics.muon_energy_at_gev(5e5, 0.0, "bethe_bloch") == pytest.approx(5e5)


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


@needs_km3io
def test_stopping_muons_of_an_official_orca_file_have_the_bethe_bloch_range():
    """The collaboration's chain propagates each muon; a muon of a few GeV stops within tens of metres, so the
    track length it stores is its range (with straggling)."""
    from km3net_testdata import data_path

    from numl.data.km3net import read_file_muon_lengths

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


def test_the_muon_shines_as_far_as_its_model_lets_it():
    """A line of PMTs 3 m beside a 10 GeV muon: those whose Cherenkov light leaves the track between the two models'
    ranges (36.8 and 40.7 m) see the cone light and the loss showers only with bethe_bloch."""
    height = np.arange(0.0, 60.0, 0.25)
    n = len(height)
    detector = Detector(pmt_pos_m=np.stack([np.full(n, 3.0), np.zeros(n), height], axis=1),
                        pmt_dir=np.tile([-1.0, 0.0, 0.0], (n, 1)), dom_id=np.arange(n), du_id=np.ones(n, dtype=int),
                        channel_id=np.zeros(n, dtype=int))
    vertex, up, energy = np.zeros(3), np.array([0.0, 0.0, 1.0]), 10.0
    emission = height - 3.0 / physics.TAN_CHERENKOV
    ranges = {model: float(physics.muon_range_m(energy, model)) for model in physics.MUON_ENERGY_LOSS_MODELS}
    between = (emission > ranges["constant_a"] + 0.5) & (emission < ranges["bethe_bloch"] - 0.5)
    assert between.sum() >= 10
    for model, lit in (("constant_a", False), ("bethe_bloch", True)):
        config = EventConfig.from_dict({"muon_energy_loss": model, "muon_light": "cone_and_showers"})
        npe, _, _ = expected_track_light(detector, config, vertex, up, energy)
        assert np.all(npe[between] > 0) == lit and np.any(npe[between] > 0) == lit
        along_m, shower_gev, _ = muon_loss_showers(detector, config, vertex, up, energy, np.random.default_rng(1))
        shining = along_m[shower_gev > 0]
        assert shining.max() == pytest.approx(ranges[model], abs=config.muon_light_step_m)


def test_the_study_runs_with_the_right_range_differ_from_their_constant_loss_twins_in_the_loss_alone(compose_train):
    """bethe_bloch is the default of the library's KM3NeT experiments; the study's experiments taken before it keep
    constant_a (so their README tables rebuild), and each bethe_bloch run of the study is its twin with only the
    loss, and the file and run names, changed."""
    from omegaconf import OmegaConf

    assert compose_train(["experiment=km3net_real_files"]).data.events.muon_energy_loss == "bethe_bloch"
    renamed = {"task_name", "data.hdf5_path", "data.events.muon_energy_loss"}
    for former, right_range in (("orca6_real_file_n80k_k40_road", "orca6_real_file_n80k_bethe_bloch"),
                                ("orca6_track_shower", "orca6_track_shower_bethe_bloch")):
        configs = [compose_train([f"experiment=km3net_reconstruction/{name}"]) for name in (former, right_range)]
        assert [c.data.events.muon_energy_loss for c in configs] == ["constant_a", "bethe_bloch"]
        flat = [{k: v for k, v in _flatten(OmegaConf.to_container(c, resolve=False)).items()
                 if not k.startswith("hydra.") and k not in renamed} for c in configs]
        assert flat[0] == flat[1], {k for k in flat[0].keys() | flat[1].keys() if flat[0].get(k) != flat[1].get(k)}


def _flatten(node, prefix: str = "") -> dict:
    """{'a.b': leaf} of a nested dict (empty dicts kept as leaves)."""
    if not isinstance(node, dict) or not node:
        return {prefix: node}
    return {k: v for key, child in node.items()
            for k, v in _flatten(child, f"{prefix}.{key}" if prefix else key).items()}
