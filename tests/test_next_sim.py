"""NEXT toy Monte Carlo: physics against external numbers (PHYSICS.md, NIST ESTAR, PDG), energy
conservation, labels, seeding, and configuration errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ks_2samp

from numl.baselines.next import track_topology
from numl.sim.next import physics
from numl.sim.next.generator import BLOB, NextSimConfig, simulate_events
from numl.utils.errors import ConfigError

Q_BB_MEV = 2.45783


#: the former background, one electron of Q_bb at a vertex (the gamma backgrounds: tests/test_next_photons.py)
ELECTRON_BACKGROUND = {"background": "electron"}


@pytest.fixture(scope="module")
def events():
    return simulate_events(NextSimConfig(**ELECTRON_BACKGROUND), 600, seed=11)


def test_xenon_density_at_15_bar_is_about_0_088():
    # PHYSICS.md: rho ~ 0.088 g/cm^3 at 15 bar, 293 K; the ideal gas would give 0.081
    assert physics.xenon_density_g_cm3(15.0, 293.0) == pytest.approx(0.088, rel=0.01)


def test_bethe_formula_reproduces_estar_water_at_low_energy():
    # NIST ESTAR, liquid water collision stopping power: 22.56 MeV cm^2/g at 10 keV, 4.115 at 100 keV
    # (the density effect is negligible there, so the same code path as for xenon gas applies)
    water = physics.collision_stopping_power(np.array([0.01, 0.1]), z_over_a=10 / 18.015, mean_excitation_mev=75e-6)
    assert water == pytest.approx([22.56, 4.115], rel=5e-3)


def test_shipped_estar_table_matches_its_generator():
    table = physics.load_estar_table()
    assert table == pytest.approx(physics.estar_table(table[:, 0]), rel=1e-5)
    assert np.all(np.diff(table[:, 0]) > 0)


def test_xenon_stopping_power_near_minimum_ionisation():
    # PDG: minimum ionisation in xenon 1.255 MeV cm^2/g for heavy particles; for electrons the Bethe
    # F- term lowers it by 5-10 % (ESTAR water: 1.86 vs PDG 1.99)
    minimum = physics.collision_stopping_power(np.linspace(0.3, 5, 500)).min()
    assert 1.255 * 0.88 < minimum < 1.255 * 0.96


def test_photon_attenuation_table_follows_klein_nishina_where_compton_dominates():
    for energy_mev in (1.0, 2.0):
        table = np.exp(np.interp(np.log(energy_mev), *np.log(physics.PHOTON_ATTENUATION_XENON.T)))
        compton = physics.klein_nishina_mass_attenuation(energy_mev)
        assert compton < table < 1.25 * compton


def test_path_length_is_the_csda_range_and_reconstructed_length_about_15_cm():
    """The stepped path equals the stopping-power integral; the track length NEXT reconstructs over
    10 mm voxels (end to end along the voxel graph) is the ~15 cm quoted for Q_bb at 15 bar."""
    # without straggling and delta rays (which take energy off the primary's path into their own tracks)
    cfg = NextSimConfig(transverse_diffusion_mm_per_sqrt_cm=0, longitudinal_diffusion_mm_per_sqrt_cm=0,
                        energy_resolution_fwhm=0, photon_cut_kev=1e4, energy_roi_kev=None,
                        straggling=False, delta_cut_kev=None, **ELECTRON_BACKGROUND)
    background = simulate_events(cfg, 150, seed=3, labels=np.zeros(150, int))
    path_mm = np.mean([e.path_length_mm for e in background])
    assert path_mm == pytest.approx(physics.csda_range_mm(Q_BB_MEV, cfg.density_g_cm3), rel=0.01)
    reconstructed = [track_topology(e.voxel_centres_mm(10), e.voxel_energy_kev, 10, 18).track_length_mm
                     for e in background]
    assert np.mean(reconstructed) == pytest.approx(150, rel=0.15)


def test_energy_is_conserved_before_smearing(events):
    for event in events:
        assert event.deposited_kev + event.escaped_kev == pytest.approx(2457.83, rel=1e-9)


def test_signal_and_background_share_the_energy_distribution(events):
    energy = np.array([e.energy_kev for e in events])
    label = np.array([e.label for e in events])
    assert 0.4 < label.mean() < 0.6
    assert ks_2samp(energy[label == 1], energy[label == 0]).pvalue > 0.01
    # the resolution: 1 % FWHM at Q_bb
    sigma = np.std(energy[np.abs(energy - 2457.83) < 60])
    assert sigma == pytest.approx(0.01 / 2.3548 * 2457.83, rel=0.35)


def test_blob_labels_carry_the_last_400_kev_of_each_electron(events):
    blob_kev = {lab: np.mean([e.voxel_energy_kev[e.voxel_segment == BLOB].sum() for e in events if e.label == lab])
                for lab in (0, 1)}
    # voxels take the majority label, so the per-voxel sums scatter around 400 keV per blob
    assert blob_kev[0] == pytest.approx(400, rel=0.3)
    assert blob_kev[1] == pytest.approx(800, rel=0.3)


def test_same_seed_same_events_other_seed_other_events():
    cfg = NextSimConfig(events_per_batch=64)
    a, b, c = (simulate_events(cfg, 6, seed=s) for s in (4, 4, 5))
    assert all(np.array_equal(x.voxel_energy_kev, y.voxel_energy_kev) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0].voxel_index, c[0].voxel_index)


@pytest.mark.parametrize("values, key", [
    ({"voxel_size_mm": 7.0}, "voxel_size_mm"),
    ({"voxel_size_mm": 0.0}, "voxel_size_mm"),
    ({"detector_size_mm": [440.0, 440.0]}, "detector_size_mm"),
    ({"fiducial_margin_mm": 300.0}, "fiducial_margin_mm"),
    ({"energy_roi_kev": [2500.0, 2400.0]}, "energy_roi_kev"),
    ({"pressure": 15.0}, "pressure"),
    ({"transport": "geant4"}, "transport"),
    ({"delta_cut_kev": 0.0}, "delta_cut_kev"),
    ({"straggling": "yes"}, "straggling"),
    ({"scattering_scale_x0": 0.0}, "scattering_scale_x0"),
])
def test_bad_simulator_config_names_the_key(values, key):
    with pytest.raises(ConfigError, match=f"data.sim.{key}"):
        NextSimConfig.from_dict(values)
