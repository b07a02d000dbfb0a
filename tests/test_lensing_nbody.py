"""The particle-mesh N-body simulation and Born ray tracing (numl.sim.lensing.nbody) against CAMB and closed forms."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from numl.sim.lensing import Cosmology
from numl.sim.lensing.nbody import (
    HUBBLE_DISTANCE_MPC_H,
    FourierMesh,
    LensPlanes,
    NBodySuite,
    ParticleMeshSetup,
    ParticleMeshSimulation,
    _PlaneOrientation,
    _trace_rays,
    born_convergence,
    camb_matter_power_z0,
    cic_overdensity,
    light_cone_planes,
    linear_tables,
    multi_plane_convergence,
    plane_lensing_fields,
    plane_lensing_weights,
    simulation_folds,
    simulation_of_maps,
)
from numl.utils.errors import ConfigError

CACHE = os.environ["NUML_CACHE"] + "/camb"
# A 512 Mpc/h box of 32^3 particles: large scales resolved by many particles, seconds to run.
LINEAR_SETUP = ParticleMeshSetup(box_mpc_h=512.0, n_particles=32, n_mesh=64, n_steps=10, z_init=19.0)


def tables_for(m_nu_ev: float, setup: ParticleMeshSetup = LINEAR_SETUP):
    k_max = 1.1 * math.sqrt(3) * math.pi * setup.n_mesh / setup.box_mpc_h
    return linear_tables(Cosmology(m_nu_ev=m_nu_ev), setup.z_init, k_max, cache_dir=CACHE)


def lattice_overdensity_k(positions: torch.Tensor, setup: ParticleMeshSetup) -> torch.Tensor:
    """delta_k = -i k . d_k of the displacements from the lattice: the exact linear density, no painting."""
    n, box = setup.n_particles, setup.box_mpc_h
    lattice = (torch.arange(n, dtype=torch.float64) + 0.5 * n / setup.n_mesh) * (box / n)
    q = torch.stack(torch.meshgrid(lattice, lattice, lattice, indexing="ij"), -1).reshape(-1, 3)
    d = (torch.remainder(positions.double() - q + box / 2, box) - box / 2).reshape(n, n, n, 3)
    grid = FourierMesh(n, box)
    return -sum(1j * k.double() * torch.fft.rfftn(d[..., i]) for i, k in enumerate((grid.kx, grid.ky, grid.kz)))


def linear_growth(m_nu_ev: float, k_band: tuple[float, float]) -> tuple[float, float]:
    """(simulated, CAMB) growth of the cold matter from z_init to 0 in a k band, in the linear regime (initial
    power scaled down by 1e6, so the particles never leave linear theory)."""
    tables = tables_for(m_nu_ev)
    tables = dataclasses.replace(tables, p_cb_init=tables.p_cb_init * 1e-6)
    simulation = ParticleMeshSimulation(tables, LINEAR_SETUP, seed=3)
    x_init, _ = simulation.initial_conditions()
    x_final, _ = simulation.run()
    delta_init = lattice_overdensity_k(x_init, LINEAR_SETUP)
    delta_final = lattice_overdensity_k(x_final, LINEAR_SETUP)
    k = FourierMesh(LINEAR_SETUP.n_particles, LINEAR_SETUP.box_mpc_h).k.double()
    band = (k > k_band[0]) & (k < k_band[1])
    simulated = float((delta_final * delta_init.conj()).real[band].sum() / (delta_init.abs() ** 2)[band].sum())
    k_mid = np.array([np.sqrt(k_band[0] * k_band[1])])
    camb_cb = camb_matter_power_z0(Cosmology(m_nu_ev=m_nu_ev), k_mid, cache_dir=CACHE)["linear_cb"]
    p_init = np.interp(np.log(k_mid), np.log(tables.k), tables.p_cb_init * 1e6)
    return simulated, float(np.sqrt(camb_cb / p_init)[0])


@pytest.mark.parametrize("m_nu_ev", [0.0, 0.1])
def test_linear_growth_matches_camb(m_nu_ev):
    # Large scales, k below a quarter of the particle Nyquist wavenumber (0.196 h/Mpc): FastPM's factors make
    # 10 steps exact for the linear growth, so what is left is the force's accuracy (measured 1.006 and 1.007).
    simulated, camb = linear_growth(m_nu_ev, (0.02, 0.05))
    assert simulated / camb == pytest.approx(1.0, abs=0.01)


def test_neutrinos_slow_the_linear_growth_as_camb():
    # The linear-response neutrinos must suppress the cold-matter growth at fixed A_s as CAMB does (1.12 %
    # between 0.1 and 0.2 h/Mpc; measured 1.08 %). Before the growth factors were integrated for the simulation's
    # own dynamics it was 1.9 %, so the 0.3-point tolerance fails on that bias.
    massless, camb_massless = linear_growth(0.0, (0.1, 0.2))
    massive, camb_massive = linear_growth(0.1, (0.1, 0.2))
    assert massive / massless == pytest.approx(camb_massive / camb_massless, abs=0.003)
    assert massive < massless


def test_cic_paints_the_offset_lattice_uniform_and_conserves_mass():
    n, box = 16, 100.0
    for n_mesh in (n, 2 * n):
        lattice = (torch.arange(n, dtype=torch.float64) + 0.5 * n / n_mesh) * (box / n)
        q = torch.stack(torch.meshgrid(lattice, lattice, lattice, indexing="ij"), -1).reshape(-1, 3)
        assert cic_overdensity(q, n_mesh, box).abs().max() < 1e-10
        moved = torch.remainder(q + torch.randn(q.shape, generator=torch.Generator().manual_seed(0)) * 3, box)
        assert float(cic_overdensity(moved, n_mesh, box).mean()) == pytest.approx(0.0, abs=1e-10)


def test_lensing_weights_integrate_the_born_kernel():
    # sum_i w_i * thickness is the integral of (3/2) Omega_m (H0/c)^2 chi (chi_s - chi) / (chi_s a) up to chi_s.
    tables = tables_for(0.0)
    thickness = 128.0
    chi_s = tables.chi_of_z(1.0)
    n_planes = math.ceil(chi_s / thickness)
    planes = LensPlanes(chi_edges=np.arange(n_planes + 1) * thickness, a_centre=np.ones(n_planes),
                        surface_density=torch.zeros(n_planes, 3, 1, 4, 4), box=thickness)
    weights = plane_lensing_weights(planes, tables, np.array([chi_s]))[:, 0]
    prefactor = 1.5 * tables.omega_m / HUBBLE_DISTANCE_MPC_H**2
    exact, _ = quad(lambda chi: prefactor * chi * (chi_s - chi) / (chi_s * tables.a_of_chi(chi)), 0, chi_s)
    assert float(weights.sum() * thickness) == pytest.approx(exact, rel=1e-4)
    assert weights[-1] > 0 and weights[-1] < weights[n_planes // 2]  # the last plane only partly in front


def test_born_convergence_of_uniform_planes_is_the_weighted_sum():
    # Planes of constant surface density s give kappa = s sum_i w_i on every pixel, whatever the randomisation.
    tables = tables_for(0.0)
    chi_s = tables.chi_of_z(0.5)
    n_planes = math.ceil(chi_s / 128.0)
    planes = LensPlanes(chi_edges=np.arange(n_planes + 1) * 128.0, a_centre=np.ones(n_planes),
                        surface_density=torch.full((n_planes, 3, 2, 8, 8), 2.0), box=256.0)
    maps = born_convergence(planes, tables, [0.5], field_deg=2.0, n_pix=16, n_maps=3, seed=1)
    expected = 2.0 * plane_lensing_weights(planes, tables, np.array([chi_s]))[:, 0].sum()
    assert maps.shape == (3, 1, 16, 16)
    assert torch.allclose(maps, torch.full_like(maps, float(expected)), rtol=1e-5)


def test_multi_plane_jacobian_is_the_derivative_of_the_ray_positions():
    """The distortion matrix carried through the planes' Hessians is the derivative of where the rays land, taken
    by finite differences of rays started a little apart: it holds only if every plane's deflection and Hessian
    are the same potential's, turned into the map's frame alike. Two planes of smooth (long-mode) surface
    density, strong enough that the lens-lens and deflection terms are 10 % of the distortion."""
    box, n, chi_s = 256.0, 256, 2000.0
    generator = torch.Generator().manual_seed(0)
    x = torch.arange(n, dtype=torch.float64) * box / n
    x1, x2 = torch.meshgrid(x, x, indexing="ij")
    modes = [(k1, k2) for k1 in range(-2, 3) for k2 in range(-2, 3) if (k1, k2) != (0, 0)]

    def smooth_plane():
        amplitude = torch.randn(len(modes), generator=generator, dtype=torch.float64)
        phase = 2 * math.pi * torch.rand(len(modes), generator=generator, dtype=torch.float64)
        return sum(a * torch.cos(2 * math.pi * (k1 * x1 + k2 * x2) / box + p)
                   for (k1, k2), a, p in zip(modes, amplitude, phase, strict=True))

    surface_density = 300.0 * torch.stack([torch.stack([smooth_plane() for _ in range(6)]) for _ in range(2)])
    fields = {i: plane_lensing_fields(surface_density[i].float(), box).reshape(6, 5, n * n) for i in range(2)}
    orientations = {i: _PlaneOrientation.draw(generator, 4, 6, box, "cpu") for i in range(2)}
    lenses = [(0, 900.0, 1e-4), (1, 1500.0, 1e-4)]
    theta = (torch.arange(6, dtype=torch.float64) + 0.5) * 0.01
    theta_1, theta_2 = torch.meshgrid(theta, theta, indexing="ij")
    maps = slice(0, 4)

    def trace(d1=0.0, d2=0.0):
        return _trace_rays(lenses, orientations, fields, maps, theta_1 + d1, theta_2 + d2, chi_s, 0.06, box / n)

    _, jacobian = trace()
    step = 3.0 / 900.0  # 3 Mpc/h at the nearer plane: many mesh cells, short against the modes
    finite_difference = torch.stack([(trace(step)[0] - trace(-step)[0]) / (2 * step),
                                     (trace(0.0, step)[0] - trace(0.0, -step)[0]) / (2 * step)], dim=2)
    distortion = jacobian / chi_s - torch.eye(2, dtype=torch.float64)[None, :, :, None, None]
    assert 0.05 < distortion.std() < 0.5
    assert ((jacobian - finite_difference) / chi_s).std() < 0.02 * distortion.std()


def test_multi_plane_is_born_to_first_order_and_for_a_single_plane():
    """Weak planes: multi-plane maps minus Born maps shrink as the square of the density (post-Born terms are
    second order); one lens plane alone gives Born's convergence at any strength (nothing to couple to)."""
    setup = ParticleMeshSetup(box_mpc_h=256.0, n_particles=16, n_mesh=32, n_steps=10, z_init=9.0)
    tables = tables_for(0.0, setup)
    chi_edges = np.arange(9) * setup.plane_thickness_mpc_h
    z_source = 1.0 / float(tables.a_of_chi(np.array([chi_edges[-1]]))[0]) - 1.0  # at a plane edge: whole planes
    planes = light_cone_planes(tables, setup, chi_edges[-1], seed=5)

    def difference(scale: float, plane: int | None = None) -> float:
        density = planes.surface_density * scale
        if plane is not None:
            density = torch.zeros_like(density).index_copy(0, torch.tensor([plane]), density[plane:plane + 1])
        scaled = dataclasses.replace(planes, surface_density=density)
        born = born_convergence(scaled, tables, [z_source], 3.0, 16, 4, seed=2)
        traced = multi_plane_convergence(scaled, tables, [z_source], 3.0, 16, 4, seed=2)
        return float((traced - born).double().std() / born.double().std())

    weak, weaker = difference(0.02), difference(0.01)
    assert 1.7 < weak / weaker < 2.3, (weak, weaker)
    assert difference(1.0) > 0.01  # full strength: post-Born terms are there (2 % measured)
    assert difference(20.0, plane=4) < 1e-5


@pytest.mark.slow
def test_post_born_terms_leave_the_power_spectrum_and_change_skewness_by_percents():
    """On N-body planes (64^3 particles, z_s = 1, 3.5 deg maps): multi-plane C_ell within 1 % of Born's in every
    bin (Petri, Haiman & May 2017: the Born power spectrum is unbiased), skewness within 5 % and kurtosis within
    10 % (Barthelemy, Codis & Bernardeau 2020: post-Born corrections below a few per cent at low source
    redshift)."""
    from numl.sim.lensing.maps import binned_power_spectra

    setup = ParticleMeshSetup(box_mpc_h=256.0, n_particles=64, n_mesh=128, n_steps=20, z_init=19.0)
    tables = tables_for(0.0, setup)
    planes = light_cone_planes(tables, setup, tables.chi_of_z(1.0), seed=11)
    maps = [ray_trace(planes, tables, [1.0], 3.5, 64, 128, seed=4).double()
            for ray_trace in (born_convergence, multi_plane_convergence)]
    edges = np.geomspace(200, 3000, 8)
    born_cl, traced_cl = (binned_power_spectra(m, 3.5, edges, apodisation_pixels=8)[:, 0, 0].mean(0) for m in maps)
    np.testing.assert_allclose(traced_cl.numpy(), born_cl.numpy(), rtol=0.01)

    def skewness_and_kurtosis(m):
        centred = m - m.mean()
        return np.array([float(centred.pow(3).mean() / m.std() ** 3), float(centred.pow(4).mean() / m.std() ** 4 - 3)])

    born_moments, traced_moments = (skewness_and_kurtosis(m) for m in maps)
    assert born_moments[0] > 0.3  # gravity's skewness is there to be changed
    # measured: skewness -2.7 %, kurtosis -4.9 % (the fourth cumulant's post-Born part is the larger)
    relative_change = np.abs(traced_moments / born_moments - 1)
    assert relative_change[0] < 0.05 and relative_change[1] < 0.10, relative_change
    assert not np.allclose(traced_moments, born_moments, rtol=1e-3)


@pytest.mark.parametrize(("overrides", "key"), [
    ({"n_mesh": 96, "n_particles": 32}, "data.nbody.n_mesh=96"),
    ({"n_steps": 4}, "data.nbody.n_steps=4"),
    ({"z_init": 2.0}, "data.nbody.z_init=2.0"),
    ({"box_mpc_h": -1.0}, "data.nbody.box_mpc_h=-1.0"),
    ({"n_particles": 4, "n_mesh": 8}, "data.nbody.n_particles=4"),
])
def test_bad_particle_mesh_setups_are_refused_in_one_line(overrides, key):
    with pytest.raises(ConfigError, match=re.escape(key)) as err:
        NBodySuite.from_config(overrides)
    assert "\n" not in str(err.value)


def test_bad_suites_are_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"data\.nbody\.n_stepz: unknown key"):
        NBodySuite.from_config({"n_stepz": 10})
    with pytest.raises(ConfigError, match=r"data\.nbody\.simulations\.test=0"):
        NBodySuite.from_config({"simulations": {"test": 0}})
    suite = NBodySuite.from_config({"box_mpc_h": 100.0, "n_particles": 16, "n_mesh": 32, "z_init": 9.0})
    cosmology = Cosmology()
    # 5 deg at z_s = 1 spans 200 Mpc/h: a 100 Mpc/h box would repeat inside every map.
    with pytest.raises(ConfigError, match=r"data\.nbody\.box_mpc_h=100\.0: smaller than the map's transverse size"):
        suite.check_light_cone([1.0], 5.0, cosmology, CACHE)
    with pytest.raises(ConfigError, match=r"data\.source_redshifts=\[1\.0, 9\.5\]: beyond the simulated light cone"):
        suite.check_light_cone([1.0, 9.5], 0.5, cosmology, CACHE)
    suite.check_light_cone([1.0], 2.0, cosmology, CACHE)  # 80 Mpc/h wide: fits


def test_nbody_settings_without_the_nbody_field_are_refused():
    from numl.data.lensing import LensingDataModule

    with pytest.raises(ConfigError, match=r"data\.nbody: set, but data\.field=gaussian"):
        LensingDataModule(field="gaussian", nbody={"n_steps": 20}, cache_dir=CACHE)


@pytest.mark.slow
def test_simulate_nbody_suite_then_train_on_it(tmp_path):
    """numl.simulate writes a (tiny) N-body suite to HDF5, numl.train trains on it; maps are non-Gaussian
    (positive skewness, as gravity makes them) and every split comes from its own simulations."""
    import h5py

    from tests.conftest import run_numl

    path = tmp_path / "nbody.h5"
    sizes = ["data.n_train=48", "data.n_val=16", "data.n_test=16", "data.galaxy_density_arcmin2=null",
             "data.nbody.simulations={train: 1, val: 1, test: 1}", f"paths.cache_dir={tmp_path / 'cache'}"]
    def run(entry, *args):
        done = run_numl(entry, *args, *sizes)
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    first = run("simulate", "experiment=lensing_nbody", f"output={path}", f"hydra.run.dir={tmp_path / 'sim'}")
    assert (first.stdout + first.stderr).count("lens planes in") == 6  # 2 cosmologies x 3 splits
    with h5py.File(path) as h5:
        maps = {split: h5[split]["convergence_map"][:] for split in ("train", "val", "test")}
    train = maps["train"][:, 0]
    skewness = ((train - train.mean()) ** 3).mean() / train.std() ** 3
    assert skewness > 0.2
    assert not np.allclose(maps["val"][:4], maps["test"][:4])
    # A rerun (or a suite resumed after a kill) reuses the cached light cones: no simulation runs again.
    again = tmp_path / "again.h5"
    second = run("simulate", "experiment=lensing_nbody", f"output={again}", f"hydra.run.dir={tmp_path / 'sim2'}")
    assert "lens planes in" not in second.stdout + second.stderr
    with h5py.File(again) as h5:
        assert np.array_equal(h5["test"]["convergence_map"][:], maps["test"])
    run("train", "experiment=lensing_nbody", "data.source=hdf5", f"data.hdf5_path={path}", "trainer.max_epochs=1",
        "data.batch_size=16", f"hydra.run.dir={tmp_path / 'train'}")
    assert (tmp_path / "train" / "test_metrics.json").is_file()


@pytest.mark.slow
def test_simulations_side_by_side_give_the_same_maps(tmp_path, monkeypatch):
    """data.nbody.workers: light cones simulated in worker processes are those simulated one after the other,
    handed over through the disk cache (or in memory without one), and a cached one is not simulated again."""
    import numl.sim.lensing.nbody as nbody

    config = {"box_mpc_h": 128.0, "n_particles": 16, "n_mesh": 32, "n_steps": 10, "z_init": 9.0,
              "simulations": {"train": 2}}
    cosmology = Cosmology()
    seeds = [(cosmology, s) for s in NBodySuite.from_config(config).simulation_seeds("train", 3, class_index=0)]

    def maps(suite, cache_dir):
        return suite.convergence_maps(cosmology, "train", 6, [0.5], 1.0, 16, seed=3, class_index=0,
                                      cache_dir=cache_dir)

    one_by_one = maps(NBodySuite.from_config(config), None)
    side_by_side = NBodySuite.from_config(config | {"workers": 2})
    side_by_side.simulate_light_cones(seeds, [0.5], None)
    assert len(side_by_side._simulated) == 2  # handed over in memory without a cache
    torch.testing.assert_close(maps(side_by_side, None), one_by_one, rtol=1e-5, atol=1e-7)
    assert not side_by_side._simulated  # each used once, then dropped
    side_by_side.simulate_light_cones(seeds, [0.5], tmp_path)
    light_cones = sorted((tmp_path / "nbody").glob("light_cone_*.npz"))
    assert len(light_cones) == 2 and not side_by_side._simulated

    def no_pool(*args, **kwargs):
        raise AssertionError("a cached light cone was simulated again")

    monkeypatch.setattr(nbody, "spawned_pool", no_pool)
    side_by_side.simulate_light_cones(seeds, [0.5], tmp_path)
    torch.testing.assert_close(maps(side_by_side, tmp_path), one_by_one, rtol=1e-5, atol=1e-7)
    # the maps came from the workers' files: a light cone under another key would have been simulated and written
    assert sorted((tmp_path / "nbody").glob("light_cone_*.npz")) == light_cones


def test_ray_tracing_is_stored_with_the_maps_and_older_files_are_born(tmp_path):
    """data.nbody.ray_tracing is in the file's metadata: a multi-plane config refuses a Born file, and a file
    written before the option existed (no ray_tracing key) reads as Born. A bad value is one line."""
    import h5py

    from numl.data.lensing import LensingDataModule

    nbody = {"box_mpc_h": 128.0, "n_particles": 16, "n_mesh": 32, "n_steps": 10, "z_init": 9.0,
             "simulations": {"train": 1, "val": 1, "test": 1}}
    common = {"field": "nbody", "field_deg": 2.0, "n_pix": 16, "n_train": 4, "n_val": 2, "n_test": 2,
              "galaxy_density_arcmin2": None, "cache_dir": CACHE}
    written = LensingDataModule(**common, nbody=nbody)
    written.setup("fit")
    path = written.write_hdf5(tmp_path / "born.h5")
    with pytest.raises(ConfigError, match=r'data\.nbody=.*"ray_tracing": "born".* but .*"ray_tracing": "multi_plane"'):
        LensingDataModule(**common, nbody=nbody | {"ray_tracing": "multi_plane"}, source="hdf5",
                          hdf5_path=str(path)).setup("fit")
    with h5py.File(path, "r+") as h5:
        config = json.loads(h5.attrs["numl_config"])
        del config["nbody"]["ray_tracing"]
        h5.attrs["numl_config"] = json.dumps(config)
    LensingDataModule(**common, nbody=nbody, source="hdf5", hdf5_path=str(path)).setup("fit")
    with pytest.raises(ConfigError, match=r"^data\.nbody\.ray_tracing='exact': must be one of born, multi_plane$"):
        NBodySuite.from_config({"ray_tracing": "exact"})


TAG_MODULUS = 1_000_003  # a light cone's seed modulo this tags its maps (float32 holds it exactly)
MASSIVE_TAG = 2_000_000  # added for the massive cosmology: a map that lost its label shows


@pytest.fixture
def tagged_maps(monkeypatch):
    """No simulation: every map is filled with the (reduced) seed of the light cone it would be traced through,
    plus MASSIVE_TAG for massive neutrinos."""
    import numl.sim.lensing.nbody as nbody

    def tag_maps(planes, tables, source_redshifts, field_deg, n_pix, n_maps, seed):
        return torch.full((n_maps, len(source_redshifts), n_pix, n_pix), float(planes))

    monkeypatch.setattr(nbody.NBodySuite, "simulate_light_cones", lambda *args, **kwargs: None)
    monkeypatch.setattr(nbody.NBodySuite, "light_cone", lambda self, cosmology, seed, *args:
                        seed % TAG_MODULUS + MASSIVE_TAG * (cosmology.m_nu_ev > 0))
    monkeypatch.setitem(nbody.RAY_TRACING, "born", tag_maps)


TAGGED_SUITE = {"field": "nbody", "field_deg": 2.0, "n_pix": 16, "n_train": 16, "n_val": 6, "n_test": 4,
                "galaxy_density_arcmin2": None, "cache_dir": CACHE,
                "nbody": {"box_mpc_h": 128.0, "n_particles": 16, "n_mesh": 32, "n_steps": 10, "z_init": 9.0,
                          "simulations": {"train": 3, "val": 2, "test": 1}}}


def simulation_numbers_of_tags(data) -> dict[float, int]:
    """Tag -> the simulation's number over the suite's train, val and test simulations (matched phases: one number
    per initial phases, the same in both cosmologies)."""
    numbers, offset = {}, 0
    for split in ("train", "val", "test"):
        for k in (0, 1):
            for i, seed in enumerate(data.nbody_suite.simulation_seeds(split, data.split_seed(split, "nbody"), k)):
                numbers[float(seed % TAG_MODULUS + MASSIVE_TAG * k)] = offset + i
        offset += data.nbody_suite.simulations[split]
    return numbers


def test_each_map_is_traced_to_the_simulation_its_index_names(tagged_maps):
    """simulation_of_maps recovers from a stored split's labels which simulation made each map (what errors over
    simulations need)."""
    from numl.data.lensing import LensingDataModule

    data = LensingDataModule(**TAGGED_SUITE)
    numbers = simulation_numbers_of_tags(data)
    for split in data.nbody_suite.simulations:
        maps = data.nbody_maps(split, data.split_sizes[split])
        labels = maps.labels.numpy()
        simulation = simulation_of_maps(labels, data.nbody_suite.simulations, split)
        assert [numbers[t] for t in maps.maps[:, 0, 0, 0].tolist()] == simulation.tolist()
        if split == "train":  # 8 maps per class from the suite's first 3 simulations
            assert all(np.bincount(simulation[labels == k]).tolist() == [3, 3, 2] for k in (0, 1))


def test_simulation_folds_deal_whole_simulations_to_the_splits(tagged_maps, tmp_path):
    """data.simulation_fold: every fold holds every map once, whole simulations per split, each simulation
    tested in exactly one fold; fold 0 is the file's own splits; map_simulations names each map's simulation.
    Bad folds are one line."""
    import h5py

    from numl.data.lensing import LensingDataModule

    written = LensingDataModule(**TAGGED_SUITE)
    numbers = simulation_numbers_of_tags(written)
    path = written.write_hdf5(tmp_path / "suite.h5")
    stored = LensingDataModule(**TAGGED_SUITE, source="hdf5", hdf5_path=str(path))
    first_maps = LensingDataModule(**(TAGGED_SUITE | {"n_train": 11}), source="hdf5", hdf5_path=str(path))
    assert first_maps.map_simulations("train").tolist() == [
        numbers[t] for t in first_maps.events("train").maps[:, 0, 0, 0].tolist()]
    tested = []
    for fold in range(6):  # 6 simulations, 1 tested per fold
        data = LensingDataModule(**TAGGED_SUITE, source="hdf5", hdf5_path=str(path), simulation_fold=fold)
        data.setup("fit")
        sizes = 0
        for split in ("train", "val", "test"):
            events = data.events(split)
            truth = [numbers[t] for t in events.maps[:, 0, 0, 0].tolist()]
            assert data.map_simulations(split).tolist() == truth
            assert sorted(set(truth)) == sorted(simulation_folds(written.nbody_suite.simulations, fold)[split])
            assert set(events.labels.tolist()) == {0, 1}
            assert ((events.maps[:, 0, 0, 0] >= MASSIVE_TAG).long() == events.labels).all()
            sizes += len(events)
            if fold == 0:
                torch.testing.assert_close(events.maps, stored.events(split).maps)
                assert data.map_simulations(split).tolist() == stored.map_simulations(split).tolist()
        assert sizes == 16 + 6 + 4
        tested += set(data.map_simulations("test").tolist())
    assert sorted(tested) == list(range(6))
    with pytest.raises(ConfigError, match=r"^data\.simulation_fold=6: must be an integer in 0 \.\. 5 \(the suite's 6 "):
        LensingDataModule(**TAGGED_SUITE, source="hdf5", hdf5_path=str(path), simulation_fold=6)
    with pytest.raises(ConfigError, match=r"^data\.simulation_fold=0: deals the simulations .* not field=nbody, "
                                          r"source=simulate$"):
        LensingDataModule(**TAGGED_SUITE, simulation_fold=0)
    with pytest.raises(ConfigError, match=r"^data\.simulation_fold=True: must be an integer"):
        LensingDataModule(**TAGGED_SUITE, source="hdf5", hdf5_path=str(path), simulation_fold=True)
    uneven = TAGGED_SUITE | {"nbody": TAGGED_SUITE["nbody"] | {"simulations": {"train": 3, "val": 2, "test": 2}}}
    with pytest.raises(ConfigError, match=r"^data\.simulation_fold=0: the suite's 7 simulations do not divide into "
                                          r"folds of 2 test simulations .* some would never be tested$"):
        LensingDataModule(**uneven, source="hdf5", hdf5_path=str(path), simulation_fold=0)
    with h5py.File(path, "r+") as h5:  # as numl.generate writes them: maps of no simulation
        h5.attrs["numl_generator"] = "{}"
    generated = LensingDataModule(**TAGGED_SUITE, source="hdf5", hdf5_path=str(path))
    with pytest.raises(ConfigError, match=r"^map_simulations: .* holds maps written by numl\.generate"):
        generated.map_simulations("test")
    with pytest.raises(ConfigError, match=r"^data\.simulation_fold=1: .* holds maps written by numl\.generate"):
        LensingDataModule(**TAGGED_SUITE, source="hdf5", hdf5_path=str(path), simulation_fold=1).setup("fit")


def test_bad_worker_counts_are_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"data\.nbody\.workers=0"):
        NBodySuite.from_config({"workers": 0})
    with pytest.raises(ConfigError, match=r"data\.nbody\.workers=2: side-by-side processes are for CPU cores"):
        NBodySuite.from_config({"workers": 2, "device": "cuda"})
