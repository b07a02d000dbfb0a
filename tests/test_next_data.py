"""NEXT DataModule: batches, augmentation, HDF5 round trip and the files and events it refuses."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from sklearn.metrics import roc_auc_score

import numl.data.next as next_data
from numl.baselines.next import BlobCutBaseline, track_topology
from numl.data.next import NextDataModule, NextVoxelDataset, window_coordinates
from numl.sim.next import FEATURE_SCALE_KEV
from numl.sim.next.generator import NextSimConfig, simulate_events
from numl.sim.next.tracks import count_tracks
from numl.utils.errors import ConfigError

SMALL = {"n_train": 12, "n_val": 6, "n_test": 20, "batch_size": 4, "seed": 7}


@pytest.fixture(scope="module")
def datamodule():
    dm = NextDataModule(representation="dense", **SMALL)
    dm.setup()
    return dm


def test_batches_hold_sparse_voxels_and_the_same_dense_grid(datamodule):
    batch = next(iter(datamodule.val_dataloader()))
    assert list(batch)[0] == "label"  # BaseTask takes the batch size from the first entry
    coords, features = batch["coords"], batch["features"]
    assert coords.shape[1] == 4 and coords[:, 0].max() == 3
    window = datamodule.sim.window_voxels
    assert coords[:, 1:].min() >= 0 and coords[:, 1:].max() < window
    assert batch["voxels"].shape == (4, 1, window, window, window)
    assert batch["voxels"].sum() == pytest.approx(features.sum().item(), rel=1e-5)
    assert len(batch["segment"]) == len(features)


def test_augmentation_moves_voxels_but_keeps_their_energies(datamodule):
    plain = next(iter(datamodule.val_dataloader()))
    dataset = datamodule.train_dataloader().dataset
    event = dataset.events[0]
    items = [dataset[0] for _ in range(8)]
    assert all(len(it["features"]) == len(items[0]["features"]) for it in items)
    assert all(torch.equal(it["features"], items[0]["features"]) for it in items)
    assert len({tuple(it["coords"].flatten().tolist()) for it in items}) > 1
    assert plain["label"].dtype == torch.long and event.label in (0, 1)
    # the drift axis z is mirrored but never swapped with x or y: its extent is kept
    z_extent = {int(np.ptp(it["coords"][:, 2].numpy())) for it in items}
    assert len(z_extent) == 1


def test_networks_see_voxel_energies_scaled_to_q_bb_or_as_measured(datamodule):
    """data.voxel_energy_scale=q_bb (default): an event's voxel energies sum to Q_bb (topology only: the 214Bi line
    10 keV below Q_bb would otherwise give the event energy away); measured: as simulated."""
    dataset = datamodule.val_dataloader().dataset
    event = dataset.events[0]
    item = dataset[0]
    _, keep = window_coordinates(event, datamodule.sim.window_voxels)
    share = event.voxel_energy_kev[keep].sum() / event.voxel_energy_kev.sum()
    assert item["features"].sum().item() * FEATURE_SCALE_KEV == pytest.approx(datamodule.sim.q_bb_kev * share, rel=1e-5)
    measured = NextVoxelDataset(dataset.events, datamodule.sim, augment=False, seed=0, voxel_energy_scale="measured")
    assert measured[0]["features"].sum().item() * FEATURE_SCALE_KEV == pytest.approx(
        event.voxel_energy_kev[keep].sum(), rel=1e-5)


def test_blob_cut_scores_every_test_event_with_the_task_metric_names(datamodule):
    result = BlobCutBaseline(blob_radius_mm=18.0).fit(datamodule).evaluate(datamodule)
    assert set(result.metrics) == {"auroc", "background_rejection_at_65", "background_rejection_at_72",
                                   "single_track_signal_fraction", "single_track_background_fraction",
                                   "chain_background_rejection_at_65", "chain_background_rejection_at_72"}
    test = datamodule.events("test")
    labels = np.array([e.label for e in test])
    np.testing.assert_array_equal(result.outputs["label"], labels)
    first = test[0]
    topology = track_topology(first.voxel_centres_mm(datamodule.sim.voxel_size_mm), first.voxel_energy_kev,
                              datamodule.sim.voxel_size_mm, 18.0)
    assert result.outputs["score"][0] == pytest.approx(topology.blob2_kev)
    assert result.outputs["blob1_kev"][0] == pytest.approx(topology.blob1_kev)
    assert (result.outputs["blob1_kev"] >= result.outputs["score"]).all()
    assert result.metrics["auroc"] == pytest.approx(roc_auc_score(labels, result.outputs["score"]))
    # 72 % signal efficiency: the cut at the 72nd-percentile signal score, counted by hand
    signal = np.sort(result.outputs["score"][labels == 1])[::-1]
    cut = signal[int(np.ceil(0.72 * len(signal))) - 1]
    background = result.outputs["score"][labels == 0]
    expected = len(background) / max(int((background >= cut).sum()), 1)
    assert result.metrics["background_rejection_at_72"] == pytest.approx(expected)
    # the classical chain: the same count with the multi-track events removed first (they never pass)
    n_tracks = result.outputs["n_tracks"]
    assert n_tracks[0] == topology.n_tracks
    single = n_tracks == 1
    assert result.metrics["single_track_signal_fraction"] == pytest.approx(single[labels == 1].mean())
    kept_signal = np.sort(result.outputs["score"][(labels == 1) & single])[::-1]
    chain_cut = kept_signal[int(np.ceil(0.72 * (labels == 1).sum())) - 1]
    passing = int(((labels == 0) & single & (result.outputs["score"] >= chain_cut)).sum())
    assert result.metrics["chain_background_rejection_at_72"] == pytest.approx((labels == 0).sum() / max(passing, 1))


def test_run_directory_gets_the_blob_energy_figure(datamodule, tmp_path):
    """The blob cut's two blob energies per class are drawn beside the ROC curves (a PNG a user looks at)."""
    from numl.figures.next import draw

    result = BlobCutBaseline(blob_radius_mm=18.0).fit(datamodule).evaluate(datamodule)
    paths = draw(datamodule, {}, {"blob_cut": result}, tmp_path)
    names = {p.name for p in paths}
    assert {"next_events.png", "blob_energies.png"} <= names
    assert (tmp_path / "blob_energies.png").stat().st_size > 10_000


def test_hdf5_round_trip(datamodule, tmp_path):
    path = datamodule.write_hdf5(tmp_path / "next.h5")
    loaded = NextDataModule(source="hdf5", hdf5_path=str(path), **SMALL)
    loaded.setup()
    for a, b in zip(datamodule.events("test"), loaded.events("test"), strict=True):
        assert a.label == b.label
        np.testing.assert_array_equal(a.voxel_index, b.voxel_index)
        np.testing.assert_array_equal(a.voxel_energy_kev, b.voxel_energy_kev)
        np.testing.assert_array_equal(a.voxel_segment, b.voxel_segment)
    with h5py.File(path) as h5:
        assert set(h5["test/events"]) >= {"label", "energy_kev", "voxel_offset", "track_ends_mm"}


@pytest.fixture(scope="module")
def written(tmp_path_factory, datamodule):
    return datamodule.write_hdf5(tmp_path_factory.mktemp("next") / "next.h5")


def _copy(path, tmp_path, edit):
    target = tmp_path / "edited.h5"
    target.write_bytes(path.read_bytes())
    with h5py.File(target, "r+") as h5:
        edit(h5)
    return target


def _as_written_before(key, sim_changes):
    """An edit making a file's metadata that of a file written before data.sim.<key> existed, with sim_changes."""
    def edit(h5):
        config = json.loads(h5.attrs["numl_config"])
        config["sim"].pop(key, None)
        config["sim"].update(sim_changes)
        h5.attrs["numl_config"] = json.dumps(config)
    return edit


@pytest.mark.parametrize("edit, message", [
    (lambda h5: h5.attrs.__setitem__("numl_simulator", "numl.sim.lensing"), "written by simulator"),
    (lambda h5: h5.attrs.__setitem__("numl_format_version", 99), "format version"),
    (lambda h5: h5["train/voxels/index"].__setitem__(0, [999, 0, 0]), "outside the detector"),
    (lambda h5: h5["val/events/voxel_offset"].__setitem__(1, 0), "empty event"),
])
def test_refuses_bad_files(written, tmp_path, edit, message):
    path = _copy(written, tmp_path, edit)
    with pytest.raises(ConfigError, match=message):
        NextDataModule(source="hdf5", hdf5_path=str(path), **SMALL).setup()


def test_refuses_a_file_with_another_config_or_too_few_events(written):
    with pytest.raises(ConfigError, match="data.sim"):
        NextDataModule(source="hdf5", hdf5_path=str(written), sim={"voxel_size_mm": 5.0}, **SMALL).setup()
    with pytest.raises(ConfigError, match="data.n_test"):
        NextDataModule(source="hdf5", hdf5_path=str(written), **{**SMALL, "n_test": 50}).setup()


def test_files_written_before_the_deconvolution_options_read_with_their_defaults(written, tmp_path):
    """A file whose sim metadata lacks deconvolution_tolerance / _precision (every NEXT file before them) reads as
    made with the defaults; a config asking for float32 is refused; the device is not part of the events."""
    def drop_new_keys(h5):
        config = json.loads(h5.attrs["numl_config"])
        for key in ("deconvolution_tolerance", "deconvolution_precision", "deconvolution_device"):
            config["sim"].pop(key, None)
        h5.attrs["numl_config"] = json.dumps(config)

    older = _copy(written, tmp_path, drop_new_keys)
    loaded = NextDataModule(source="hdf5", hdf5_path=str(older), **SMALL)
    loaded.setup()
    assert len(loaded.events("test")) == SMALL["n_test"]
    with h5py.File(written) as h5:
        assert "deconvolution_device" not in json.loads(h5.attrs["numl_config"])["sim"]

    with pytest.raises(ConfigError, match=r"data.sim=.* in the file but .*\"deconvolution_precision\": \"float32\""):
        NextDataModule(source="hdf5", hdf5_path=str(older), sim={"deconvolution_precision": "float32"},
                       **SMALL).setup()

    # a file that stores the device (those of 2026-12-06) reads whatever device the config names
    def store_device(h5):
        config = json.loads(h5.attrs["numl_config"])
        config["sim"]["deconvolution_device"] = "cuda"
        h5.attrs["numl_config"] = json.dumps(config)

    NextDataModule(source="hdf5", hdf5_path=str(_copy(written, tmp_path, store_device)), **SMALL).setup()


def test_the_data_config_lists_every_simulator_setting():
    """Hydra composes data=next in struct mode: a NextSimConfig field missing from conf/data/next.yaml could only be
    set with '+data.sim.KEY=...', and the README's commands (e.g. data.sim.deconvolution_slices=layer_centre) fail."""
    listed = set(yaml.safe_load((Path(__file__).parents[1] / "conf/data/next.yaml").read_text())["sim"])
    assert listed == set(NextSimConfig().as_dict())


def test_deconvolved_files_written_before_deconvolution_slices_read_as_layer_centre(written, tmp_path):
    """A 10 mm deconvolved file without deconvolution_slices was made reading one slice per voxel layer: it is refused
    for the new default ("all") and read with layer_centre. Files without deconvolution, and 2 mm files (slices as
    wide as the voxels, both ways the same), do not depend on the key and read either way. (The metadata of the
    module's ideal-response file is edited; only the metadata is checked.)"""
    as_older_file = partial(_as_written_before, "deconvolution_slices")

    with h5py.File(written) as h5:
        assert "deconvolution_slices" not in json.loads(h5.attrs["numl_config"])["sim"]  # no deconvolution
    deconvolved = {"detector_response": "sensors", "deconvolution": "richardson_lucy"}
    older = _copy(written, tmp_path, as_older_file(deconvolved))
    with pytest.raises(ConfigError, match=r"data.sim=.*\"deconvolution_slices\": \"layer_centre\".* in the file"):
        NextDataModule(source="hdf5", hdf5_path=str(older), sim=deconvolved, **SMALL).setup()
    NextDataModule(source="hdf5", hdf5_path=str(older), sim={**deconvolved, "deconvolution_slices": "layer_centre"},
                   **SMALL).setup()
    for sim in ({"deconvolution_slices": "layer_centre"}, {}):
        NextDataModule(source="hdf5", hdf5_path=str(written), sim=sim, **SMALL).setup()
    at_2mm = {**deconvolved, "voxel_size_mm": 2.0}
    older_2mm = _copy(written, tmp_path, as_older_file(at_2mm))
    NextDataModule(source="hdf5", hdf5_path=str(older_2mm), sim=at_2mm, **SMALL).setup()


def test_sensor_hit_files_written_before_the_topology_threshold_read_as_null(written, tmp_path):
    """A file of sensor hits without deconvolution and without sipm_topology_threshold_pe kept every hit above
    sipm_threshold_pe: refused for the new default (30 pe), read with null. Ideal-response and deconvolved files do
    not depend on the key and read with the default. (Only the metadata of the module's file is edited and checked.)"""
    as_older_file = partial(_as_written_before, "sipm_topology_threshold_pe")

    hits = {"detector_response": "sensors"}
    older = _copy(written, tmp_path, as_older_file(hits))
    with pytest.raises(ConfigError, match=r"data.sim=.*\"sipm_topology_threshold_pe\": null.* in the file"):
        NextDataModule(source="hdf5", hdf5_path=str(older), sim=hits, **SMALL).setup()
    NextDataModule(source="hdf5", hdf5_path=str(older), sim={**hits, "sipm_topology_threshold_pe": None},
                   **SMALL).setup()
    deconvolved = {**hits, "deconvolution": "richardson_lucy", "deconvolution_slices": "layer_centre"}
    NextDataModule(source="hdf5", hdf5_path=str(_copy(written, tmp_path, as_older_file(deconvolved))), sim=deconvolved,
                   **SMALL).setup()
    NextDataModule(source="hdf5", hdf5_path=str(_copy(written, tmp_path, as_older_file({}))), **SMALL).setup()


@pytest.mark.parametrize("kwargs, key", [
    ({"representation": "image"}, "data.representation"),
    ({"voxel_energy_scale": "raw"}, "data.voxel_energy_scale"),
    ({"batch_size": 0}, "data.batch_size"),
    ({"source": "hdf5"}, "data.hdf5_path"),
    ({"sim": {"voxel_size_mm": 3.0}}, "data.sim.voxel_size_mm"),
])
def test_bad_datamodule_config(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        NextDataModule(**{**SMALL, **kwargs})


def test_blocks_are_the_events_of_their_own_seeds(tmp_path):
    """data.events_per_block: block k is the events of the k-th child seed of the split's; a file made in blocks is
    refused by a config without them (other events), and workers need blocks."""
    small = SMALL | {"n_train": 5, "n_val": 2, "n_test": 2}
    one = NextDataModule(events_per_block=2, **small)
    one.setup()
    second_block = simulate_events(one.sim, 2, np.random.SeedSequence(one.split_seed("train")).spawn(3)[1])
    for a, b in zip(one.events("train")[2:4], second_block, strict=True):
        np.testing.assert_array_equal(a.voxel_index, b.voxel_index)
    path = one.write_hdf5(tmp_path / "blocks.h5")
    with pytest.raises(ConfigError, match="events_per_block"):
        NextDataModule(source="hdf5", hdf5_path=str(path), **small).setup()
    with pytest.raises(ConfigError, match=r"^data\.simulation_workers=2: needs data\.events_per_block"):
        NextDataModule(simulation_workers=2, **small)


def test_a_crashed_simulate_resumes_from_its_kept_blocks(tmp_path, monkeypatch):
    """numl.simulate's write: a crash in the third training block keeps the first two beside the file; the same
    write again simulates the rest and gives the file of a write never interrupted, and removes the kept blocks."""
    small = SMALL | {"n_train": 5, "n_val": 2, "n_test": 2}
    calls, crash = [], [True]

    def crashing(cfg, n, seed, progress=False):
        calls.append(n)
        if len(calls) == 3 and crash[0]:
            raise RuntimeError("node lost")
        return simulate_events(cfg, n, seed, progress=progress)

    monkeypatch.setattr(next_data, "simulate_events", crashing)
    path = tmp_path / "events.h5"
    with pytest.raises(RuntimeError, match="node lost"):
        NextDataModule(events_per_block=2, **small).write_hdf5(path)
    assert not path.exists()
    assert len(list((tmp_path / "events.h5.blocks" / "train").glob("*.pkl"))) == 2
    calls.clear()
    crash[0] = False
    NextDataModule(events_per_block=2, **small).write_hdf5(path)
    assert calls == [1, 2, 2]  # the last training block, then validation and test
    assert not (tmp_path / "events.h5.blocks").exists()
    monkeypatch.setattr(next_data, "simulate_events", simulate_events)
    never_crashed = NextDataModule(events_per_block=2, **small).write_hdf5(tmp_path / "whole.h5")
    read = [NextDataModule(source="hdf5", hdf5_path=str(p), events_per_block=2, **small) for p in (path, never_crashed)]
    for dm in read:
        dm.setup()
    for a, b in zip(read[0].events("train"), read[1].events("train"), strict=True):
        np.testing.assert_array_equal(a.voxel_energy_kev, b.voxel_energy_kev)


@pytest.mark.slow
def test_blocks_give_the_same_events_for_any_number_of_workers():
    """Two worker processes simulate the blocks one process simulates (slow: spawning workers imports numl)."""
    small = SMALL | {"n_train": 5, "n_val": 2, "n_test": 2}
    one = NextDataModule(events_per_block=2, **small)
    two = NextDataModule(events_per_block=2, simulation_workers=2, **small)
    one.setup()
    two.setup()
    for a, b in zip(one.events("train"), two.events("train"), strict=True):
        np.testing.assert_array_equal(a.voxel_energy_kev, b.voxel_energy_kev)


def test_files_written_before_an_option_existed_match_its_null_default(written, tmp_path):
    """A file without events_per_block in its metadata (all those simulated before blocks existed) reads with the
    default null; a config that asks for blocks is refused."""
    def drop_blocks(h5):
        config = json.loads(h5.attrs["numl_config"])
        del config["events_per_block"]
        h5.attrs["numl_config"] = json.dumps(config)

    older = _copy(written, tmp_path, drop_blocks)
    NextDataModule(source="hdf5", hdf5_path=str(older), **SMALL).setup()
    with pytest.raises(ConfigError, match=r"metadata has no 'events_per_block'"):
        NextDataModule(source="hdf5", hdf5_path=str(older), events_per_block=4, **SMALL).setup()


def test_blob_cut_cannot_regroup_into_voxels_smaller_than_the_data(datamodule):
    with pytest.raises(ConfigError, match=r"baseline.blob_cut.voxel_size_mm=5 is below the data's voxels"):
        BlobCutBaseline(voxel_size_mm=5.0).fit(datamodule).evaluate(datamodule)


def test_single_track_selection_keeps_exactly_the_one_track_events_of_every_split(datamodule, tmp_path):
    """data.selection=single_track: the events of the unselected module whose voxels form one group, in their order,
    in every split (network and blob cut then see what NEXT's classical selection keeps); files keep every event."""
    selected = NextDataModule(representation="dense", selection="single_track", **SMALL)
    selected.setup()
    size = datamodule.sim.voxel_size_mm
    for split in ("train", "val", "test"):
        expected = [e for e in datamodule.events(split) if count_tracks(e.voxel_centres_mm(size), size) == 1]
        got = selected.events(split)
        assert 0 < len(got) < len(datamodule.events(split))  # seed 7: 9 of 12, 4 of 6, 14 of 20 kept
        assert [e.energy_kev for e in got] == [e.energy_kev for e in expected]
    result = BlobCutBaseline().fit(selected).evaluate(selected)
    assert result.metrics["single_track_signal_fraction"] == result.metrics["single_track_background_fraction"] == 1.0
    path = selected.write_hdf5(tmp_path / "next.h5")
    with h5py.File(path) as h5:
        assert len(h5["test"]["events"]["label"]) == SMALL["n_test"]
    with pytest.raises(ConfigError, match="data.selection"):
        NextDataModule(selection="one_track", **SMALL)
