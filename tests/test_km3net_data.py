"""KM3NeT DataModule, real offline files (km3io + km3net-testdata), HDF5 round trip and the classical fit."""

from __future__ import annotations

import importlib.util
import json

import h5py
import numpy as np
import pytest
import torch

from numl.baselines.km3net import MIN_FIT_HITS, HitCountEnergyEstimator, TrackFitBaseline, fit_track, line_fit
from numl.data.km3net import KM3NeTDataModule, LengthBucketBatchSampler, collate_hits, read_offline_file
from numl.sim.km3net import EventConfig, generate_orca_like, read_detx, simulate_events
from numl.sim.km3net.detector import resolve_testdata_path
from numl.sim.km3net.features import HIT_FEATURES
from numl.sim.km3net.physics import angle_between_deg, cherenkov_arrival_time_ns
from numl.utils.errors import ConfigError
from numl.utils.hdf5 import read_metadata

# Only the tests that read real KM3NeT files need the optional km3net extra (km3io, km3net-testdata).
needs_km3io = pytest.mark.skipif(importlib.util.find_spec("km3io") is None or
                                 importlib.util.find_spec("km3net_testdata") is None,
                                 reason="needs the km3net extra: pip install 'numl[km3net]'")
REAL_FILE = "mcv6.0.gsg_muon_highE-CC_50-500GeV.km3sim.jterbr00008357.jorcarec.aanet.905.root"
ORCA6 = "D_ORCA006_t.A02181836.p.A02181837.r.A02182001.detx"
SMALL = {"detector": {"geometry": "generated", "n_du": 7}, "events": {"energy_min_gev": 10.0,
                                                                     "energy_max_gev": 100.0}}


def test_line_fit_recovers_a_straight_muon():
    direction = np.array([0.3, -0.5, 0.81])
    direction /= np.linalg.norm(direction)
    t = np.linspace(0, 300, 40)
    pos = t[:, None] * 0.2998 * direction + np.array([5.0, -3.0, 100.0])
    found, _, _ = line_fit(pos, t)
    assert angle_between_deg(found, direction) < 1e-6


def test_chi2_fit_recovers_an_ideal_track():
    rng = np.random.default_rng(0)
    det = generate_orca_like(7)
    direction = np.array([0.6, 0.2, -0.77])
    direction /= np.linalg.norm(direction)
    point = det.center_m + np.array([12.0, -7.0, 0.0])
    pos = det.pmt_pos_m[rng.choice(det.n_pmts, 60, replace=False)]
    t = cherenkov_arrival_time_ns(pos, point, direction, 100.0) + rng.normal(0, 1.0, 60)
    fit = fit_track(pos, t, np.ones(60, bool), sigma_ns=1.0)
    assert fit.ok and angle_between_deg(fit.direction, direction) < 1.0


def test_too_few_hits_are_flagged_not_fitted():
    fit = fit_track(np.zeros((MIN_FIT_HITS - 1, 3)), np.arange(MIN_FIT_HITS - 1.0), np.ones(MIN_FIT_HITS - 1, bool))
    assert not fit.ok and "at least" in fit.reason and np.all(np.isnan(fit.direction))


def test_energy_estimator_learns_the_hit_count_relation():
    rng = np.random.default_rng(1)
    log10e = rng.uniform(0.5, 2.5, 200)
    n = 10 ** (0.8 * log10e + 0.5) * rng.lognormal(0, 0.05, 200)
    est = HitCountEnergyEstimator().fit(n, n, log10e)
    assert np.std(est.predict(n, n) - log10e) < 0.05


def test_simulated_datamodule_batches_and_baseline():
    # collinear kinematics: the truth is the muon the fit reconstructs, so its 8-event median bounds the fit
    # alone (with DIS the neutrino-muon angle, ~10 deg at 10 GeV, adds to it)
    dm = KM3NeTDataModule(**{**SMALL, "events": {**SMALL["events"], "kinematics": "collinear"}}, n_train=8, n_val=8,
                          n_test=8, batch_size=4, seed=1)
    dm.setup("fit")
    batch = next(iter(dm.test_dataloader()))
    assert batch["hit_features"].shape[0] == 4 and batch["hit_features"].shape[2] == len(HIT_FEATURES)
    assert batch["hit_mask"].sum(1).tolist() == batch["n_hits"].tolist()
    torch.testing.assert_close(batch["direction"].norm(dim=1), torch.ones(4))
    result = TrackFitBaseline(sigma_ns=3.0).fit(dm).evaluate(dm)
    test = dm.events("test")
    truth = np.array([[e.truth["dir_x"], e.truth["dir_y"], e.truth["dir_z"]] for e in test])
    ok = result.outputs["ok"]
    assert result.metrics["fit_failure_fraction"] == pytest.approx(1.0 - ok.mean())
    np.testing.assert_allclose(result.outputs["angular_error_deg"][ok],
                               angle_between_deg(result.outputs["direction"][ok], truth[ok]))
    # simulated muon tracks of 10-1000 GeV: the chi-square fit finds them to a few degrees (12 deg median
    # in the study), never near isotropic (90 deg median)
    assert result.metrics["angular_error_deg_median"] < 30.0


def test_collate_pads_and_masks():
    items = [{"hit_features": torch.ones(n, 12), "n_hits": torch.tensor(n), "log10_energy": torch.tensor(1.0)}
             for n in (3, 5)]
    batch = collate_hits(items)
    assert batch["hit_features"].shape == (2, 5, 12)
    assert batch["hit_mask"].tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert float(batch["hit_features"][0, 3:].abs().sum()) == 0.0


def test_hdf5_round_trip_and_mismatch(tmp_path):
    dm = KM3NeTDataModule(**SMALL, n_train=3, n_val=2, n_test=2, seed=4)
    path = dm.write_hdf5(tmp_path / "km3net.h5")
    reread = KM3NeTDataModule(**SMALL, n_train=3, n_val=2, n_test=2, seed=4, source="hdf5", hdf5_path=str(path))
    reread.setup("fit")
    fresh = KM3NeTDataModule(**SMALL, n_train=3, n_val=2, n_test=2, seed=4)
    fresh.setup("fit")
    for a, b in zip(reread.events("train"), fresh.events("train"), strict=True):
        np.testing.assert_array_equal(a.hits, b.hits)
    wrong = KM3NeTDataModule(**SMALL, n_train=3, n_val=2, n_test=2, seed=5, source="hdf5", hdf5_path=str(path))
    with pytest.raises(ConfigError, match="seed"):
        wrong.setup("fit")


def test_a_larger_file_serves_a_smaller_training_size_with_the_same_events(tmp_path):
    """Training-size studies read one file: n_train below the file's reads its first events, which are the events a
    smaller simulation in the same blocks gives; more than the file holds is refused in one line."""
    large = KM3NeTDataModule(**SMALL, n_train=6, n_val=2, n_test=2, seed=4, events_per_block=2)
    path = large.write_hdf5(tmp_path / "large.h5")
    small = dict(SMALL, n_train=4, n_val=2, n_test=2, seed=4, events_per_block=2)
    reread = KM3NeTDataModule(**small, source="hdf5", hdf5_path=str(path))
    reread.setup("fit")
    fresh = KM3NeTDataModule(**small)
    fresh.setup("fit")
    assert len(reread.events("train")) == 4
    for a, b in zip(reread.events("train"), fresh.events("train"), strict=True):
        np.testing.assert_array_equal(a.hits, b.hits)
    with pytest.raises(ConfigError, match=r"^data\.n_train=8: .*large\.h5 holds only 6 train events$"):
        KM3NeTDataModule(**dict(small, n_train=8), source="hdf5", hdf5_path=str(path)).setup("fit")


def test_files_written_before_atmospheric_muons_existed_read_with_their_defaults(tmp_path):
    """A file whose event metadata lacks the keys added later (the atmospheric-muon keys, the muon energy-loss model:
    every KM3NeT file before them) reads as made without bundles and with the constant ionisation loss, with the
    truth it was written with; a config that asks for bundles or another loss (the default bethe_bloch) is refused."""
    former = {**SMALL, "events": {**SMALL["events"], "muon_energy_loss": "constant_a"}}  # as those files were made
    path = KM3NeTDataModule(**former, n_train=3, n_val=2, n_test=2, seed=4).write_hdf5(tmp_path / "older.h5")
    with h5py.File(path, "r+") as h5:
        config = json.loads(h5.attrs["numl_config"])
        config["events"] = {k: v for k, v in config["events"].items()
                            if not k.startswith("atmospheric_") and k != "muon_energy_loss"}
        h5.attrs["numl_config"] = json.dumps(config)
    with h5py.File(path, "r") as h5:
        assert "muon_energy_loss" not in read_metadata(h5)["events"]
        assert read_metadata(h5, KM3NeTDataModule.metadata_added_defaults)["events"]["muon_energy_loss"] == "constant_a"
    older = KM3NeTDataModule(**former, n_train=3, n_val=2, n_test=2, seed=4, source="hdf5", hdf5_path=str(path))
    older.setup("fit")
    assert len(older.events("train")) == 3
    with pytest.raises(ConfigError, match=r"data.events=.* in the file but .*atmospheric_muon_fraction\": 0.5"):
        KM3NeTDataModule(**{**former, "events": {**former["events"], "atmospheric_muon_fraction": 0.5}}, n_train=3,
                         n_val=2, n_test=2, seed=4, source="hdf5", hdf5_path=str(path)).setup("fit")
    with pytest.raises(ConfigError, match=r"data.events=.* in the file but .*muon_energy_loss\": \"bethe_bloch"):
        KM3NeTDataModule(**SMALL, n_train=3, n_val=2, n_test=2, seed=4, source="hdf5", hdf5_path=str(path)).setup("fit")


def test_blocks_are_the_events_of_their_own_seeds(tmp_path):
    """Simulated in blocks, each block is the events of its own seed; the file records the block size, and reading
    it with another is refused."""
    one = KM3NeTDataModule(**SMALL, n_train=5, n_val=2, n_test=2, seed=4, events_per_block=2)
    one.setup("fit")
    second_block, _ = simulate_events(one.detector, one.event_config, 2,
                                      np.random.SeedSequence(one.split_seed("train")).spawn(3)[1])
    for a, b in zip(one.events("train")[2:4], second_block, strict=True):
        np.testing.assert_array_equal(a.hits, b.hits)
    path = one.write_hdf5(tmp_path / "blocks.h5")
    with pytest.raises(ConfigError, match="events_per_block"):
        KM3NeTDataModule(**SMALL, n_train=5, n_val=2, n_test=2, seed=4, source="hdf5",
                         hdf5_path=str(path)).setup("fit")
    with pytest.raises(ConfigError, match=r"^data\.simulation_workers=2: needs data\.events_per_block"):
        KM3NeTDataModule(**SMALL, simulation_workers=2)
    with pytest.raises(ConfigError, match="data.events_per_block"):
        KM3NeTDataModule(**SMALL, events_per_block=0)


@pytest.mark.slow
def test_blocks_give_the_same_events_for_any_number_of_workers():
    """A split simulated by two worker processes is the one a single process simulates (slow: spawning workers
    imports numl)."""
    one = KM3NeTDataModule(**SMALL, n_train=5, n_val=2, n_test=2, seed=4, events_per_block=2)
    two = KM3NeTDataModule(**SMALL, n_train=5, n_val=2, n_test=2, seed=4, events_per_block=2, simulation_workers=2)
    one.setup("fit")
    two.setup("fit")
    for a, b in zip(one.events("train"), two.events("train"), strict=True):
        np.testing.assert_array_equal(a.hits, b.hits)


def test_bad_datamodule_keys_are_config_errors():
    with pytest.raises(ConfigError, match="data.hit_selection"):
        KM3NeTDataModule(**SMALL, hit_selection="some")
    with pytest.raises(ConfigError, match="data.detector.n_strings"):
        KM3NeTDataModule(detector={"n_strings": 3})


@needs_km3io
def test_real_offline_file_reads_hits_truth_and_official_reco():
    events = read_offline_file(resolve_testdata_path(REAL_FILE, "offline", "file"), max_events=20)
    assert len(events) == 20
    for e in events:
        assert len(e.hits) > 0 and e.hits["triggered"].sum() > 0
        assert np.all(np.diff(e.hits["t_ns"]) >= 0)
        np.testing.assert_allclose(np.linalg.norm(
            np.stack([e.hits["dir_x"], e.hits["dir_y"], e.hits["dir_z"]], 1), axis=1), 1.0, atol=1e-3)
        assert e.truth["event_type"] == 0 and 1.6 < e.truth["log10_energy"] < 2.8  # 50-500 GeV nu_mu CC
    official = np.stack([e.official_direction for e in events])
    truth = np.stack([[e.truth["dir_x"], e.truth["dir_y"], e.truth["dir_z"]] for e in events])
    # the official reconstruction of this high-energy sample is good to a few degrees for most events
    assert np.nanmedian(angle_between_deg(official, truth)) < 15.0
    # the file's hits are on ORCA6 DOMs (det_id 49); its calibrated positions differ from this detx by ~2 m
    # (another position calibration), far less than the 9 m DOM spacing
    det = read_detx(resolve_testdata_path(ORCA6, "detx", "file"))
    assert set(events[0].hits["dom_id"].tolist()) <= set(det.dom_id.tolist())
    pos = np.stack([events[0].hits[f"pos_{a}"] for a in "xyz"], 1)
    nearest = np.min(np.linalg.norm(pos[:, None] - det.pmt_pos_m[None], axis=2), axis=1)
    assert np.median(nearest) < 4.0


@needs_km3io
def test_chi2_fit_on_the_real_file_is_close_to_the_official_one():
    events = read_offline_file(resolve_testdata_path(REAL_FILE, "offline", "file"), max_events=12)
    ours, official = [], []
    for e in events:
        pos = np.stack([e.hits[f"pos_{a}"] for a in "xyz"], 1).astype(float)
        fit = fit_track(pos, e.hits["t_ns"], e.hits["triggered"])
        truth = np.array([e.truth["dir_x"], e.truth["dir_y"], e.truth["dir_z"]])
        if fit.ok:
            ours.append(angle_between_deg(fit.direction, truth))
            official.append(angle_between_deg(e.official_direction, truth))
    assert len(ours) >= 10
    assert np.median(ours) < 3 * np.nanmedian(official) + 2.0


@needs_km3io
def test_uncalibrated_hits_need_the_right_detector():
    # km3net_offline.root (det_id 44) stores uncalibrated hits: another detector's file or PMTs must be refused
    uncalibrated = resolve_testdata_path("km3net_offline.root", "offline", "file")
    with pytest.raises(ConfigError, match="det_id"):
        read_offline_file(uncalibrated, read_detx(resolve_testdata_path(ORCA6, "detx", "file")), max_events=2)
    with pytest.raises(ConfigError, match="does not have"):
        read_offline_file(uncalibrated, generate_orca_like(7), max_events=2)
    with pytest.raises(ConfigError, match="uncalibrated"):
        read_offline_file(uncalibrated, None, max_events=2)
    own_detector = read_detx(resolve_testdata_path("km3net_offline.detx", "detx", "file"))
    calibrated = read_offline_file(uncalibrated, own_detector, max_events=2)
    assert np.any(calibrated[0].hits["pos_z"] != 0)


@needs_km3io
def test_not_a_root_file_is_a_config_error(tmp_path):
    bad = tmp_path / "events.root"
    bad.write_bytes(b"not root")
    with pytest.raises(ConfigError, match="not a readable KM3NeT offline file"):
        read_offline_file(bad)


def test_simulation_is_independent_of_the_event_count():
    det = generate_orca_like(7)
    a, _ = simulate_events(det, EventConfig(), 2, seed=9)
    b, _ = simulate_events(det, EventConfig(), 4, seed=9)
    np.testing.assert_array_equal(a[1].hits, b[1].hits)


def test_length_buckets_cover_every_event_once_and_cut_padding():
    from numl.data.km3net import LengthBucketBatchSampler

    hit_counts = np.random.default_rng(3).integers(5, 400, 1000)
    sampler = LengthBucketBatchSampler(hit_counts, batch_size=32, pool_batches=10)
    torch.manual_seed(0)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    padded = sum(len(b) * hit_counts[b].max() for b in batches)
    random_batches = np.array_split(np.random.default_rng(4).permutation(1000), len(batches))
    assert padded < 0.6 * sum(len(b) * hit_counts[b].max() for b in random_batches)
    torch.manual_seed(0)
    assert list(sampler) == batches  # reseeded like EpochSeed does: the same epoch again
    assert list(sampler) != batches


def test_training_loader_buckets_by_hit_count():
    dm = KM3NeTDataModule(**SMALL, n_train=64, n_val=8, n_test=8, batch_size=8, hit_selection="triggered")
    dm.setup("fit")
    counts = dm.hit_counts("train")
    batches = list(dm.train_dataloader())
    assert sum(len(b["n_hits"]) for b in batches) == 64
    assert all(torch.equal(b["n_hits"], torch.as_tensor(counts)[b["event_index"]]) for b in batches)
    plain = KM3NeTDataModule(**SMALL, n_train=8, n_val=8, n_test=8, batch_size=8, bucket_by_hit_count=False)
    plain.setup("fit")
    assert isinstance(dm.train_dataloader().batch_sampler, LengthBucketBatchSampler)
    assert not isinstance(plain.train_dataloader().batch_sampler, LengthBucketBatchSampler)


@needs_km3io
def test_unknown_file_name_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"data.real_test_files='nope.root': neither a file nor in km3net-testdata"):
        KM3NeTDataModule(**SMALL, real_test_files=["nope.root"])
    with pytest.raises(ConfigError, match=r"data.detector.detx_path='nope.detx'"):
        KM3NeTDataModule(detector={"geometry": "detx", "detx_path": "nope.detx"})


@needs_km3io
def test_test_file_needs_mc_truth_and_the_simulated_energies():
    # km3net_offline.root (with its own detx, so the geometry checks pass) holds data-like events: no MC tracks.
    with pytest.raises(ConfigError, match=r"^data\.real_test_files: 'km3net_offline\.root' has no MC truth"):
        KM3NeTDataModule(detector={"geometry": "detx", "detx_path": "km3net_offline.detx"},
                         real_test_files=["km3net_offline.root"])
    # The ORCA6 file's neutrinos are 50-500 GeV: 16 % lie above numl's default 3-300 GeV simulation.
    with pytest.raises(ConfigError, match=r"^data\.events\.energy_min_gev=3, data\.events\.energy_max_gev=300: "
                                          r"16\.4 % of the neutrinos of data\.real_test_files 'mcv6\.0"):
        KM3NeTDataModule(real_test_files=[REAL_FILE])
    KM3NeTDataModule(real_test_files=[REAL_FILE], events={"energy_min_gev": 50.0, "energy_max_gev": 500.0})
    # The 50-5000 GeV file against a 50-500 GeV simulation: 10.4 % of its events lie beyond, just over the bound.
    with pytest.raises(ConfigError, match=r"lie outside the simulated energies"):
        KM3NeTDataModule(real_test_files=["mcv5.11r2.gsg_muonCChigherE-CC_50-5000GeV.km3_AAv1.jterbr00004695."
                                          "jchain.aanet.498.root"],
                         events={"energy_min_gev": 50.0, "energy_max_gev": 500.0})
