"""KM3NeT prefit frame (data.prefit, issue 16): the rotation into the prefit track's frame, the frame features, the
linearised track fit, the task turning the network's direction back, and the line fit on the official ORCA6 file."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from numl.data.km3net import RESIDUAL_SCALE_NS, KM3NeTDataModule, prefit_frame_features, read_offline_file
from numl.sim.km3net import HIT_DTYPE, generate_orca_like
from numl.sim.km3net.detector import resolve_testdata_path
from numl.sim.km3net.features import HIT_FEATURES, PREFIT_FRAME_FEATURES
from numl.sim.km3net.physics import angle_between_deg, cherenkov_arrival_time_ns, track_geometry
from numl.sim.km3net.prefit import (
    MAX_TRACK_OFFSET_M,
    PrefitTrack,
    line_fit_chi2_track,
    line_fit_track,
    linearised_tracks,
    rotation_to_track_frame,
)
from numl.utils.errors import ConfigError

REAL_FILE = "mcv6.0.gsg_muon_highE-CC_50-500GeV.km3sim.jterbr00008357.jorcarec.aanet.905.root"
SMALL = {"detector": {"geometry": "generated", "n_du": 7}, "events": {"energy_min_gev": 10.0,
                                                                     "energy_max_gev": 100.0}}


def random_directions(n: int, seed: int) -> np.ndarray:
    """n random directions, the poles, the horizon and two near straight down (on either side of NEAR_DOWNWARD)."""
    d = np.random.default_rng(seed).normal(size=(n, 3))
    special = [[0, 0, 1.0], [0, 0, -1.0], [0, 1.4e-5, -1.0], [0, 2e-3, -1.0], [1.0, 0, 0]]
    return np.concatenate([d / np.linalg.norm(d, axis=1, keepdims=True), special])


@pytest.mark.parametrize("direction", random_directions(20, seed=0))
def test_frame_rotation_is_proper_and_maps_the_track_to_z(direction):
    direction = direction / np.linalg.norm(direction)
    rotation = rotation_to_track_frame(direction)
    # within 0.1 deg of -z Rodrigues' formula keeps ~1e-10 (float64 rounding / (1 + cos)): far below float32 input
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-9)
    assert np.linalg.det(rotation) == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(rotation @ direction, [0.0, 0.0, 1.0], atol=1e-9)


def ideal_hits(direction: np.ndarray, point_m: np.ndarray, time_ns: float, n: int = 60, jitter_ns: float = 0.0,
               seed: int = 0) -> np.ndarray:
    """Hits on random PMTs of a small ORCA-like detector at the direct Cherenkov times of the track."""
    rng = np.random.default_rng(seed)
    det = generate_orca_like(7)
    rows = rng.choice(det.n_pmts, n, replace=False)
    hits = np.zeros(n, dtype=HIT_DTYPE)
    for axis, name in enumerate("xyz"):
        hits[f"pos_{name}"] = det.pmt_pos_m[rows, axis]
        hits[f"dir_{name}"] = det.pmt_dir[rows, axis]
    hits["t_ns"] = cherenkov_arrival_time_ns(det.pmt_pos_m[rows], point_m, direction, time_ns) + rng.normal(
        0, jitter_ns, n)
    hits["triggered"] = True
    hits["tot_ns"] = 25.0
    return hits


def test_frame_features_are_the_rotated_hits_with_unchanged_residuals():
    direction = np.array([0.4, -0.7, 0.3]) / np.linalg.norm([0.4, -0.7, 0.3])
    point, t0 = np.array([30.0, 40.0, 90.0]), 1000.0
    hits = ideal_hits(direction, point, t0)
    # time residuals w.r.t. a track 20 deg off, so they are not all zero
    other = np.array([0.6, -0.6, 0.5]) / np.linalg.norm([0.6, -0.6, 0.5])
    track = PrefitTrack(other, point + 5.0, t0 + 7.0)
    rotation = rotation_to_track_frame(other)
    features = prefit_frame_features(hits, track, rotation, position_scale_m=100.0)
    assert features.shape == (len(hits), len(PREFIT_FRAME_FEATURES))
    pos = np.stack([hits[f"pos_{a}"] for a in "xyz"], axis=1).astype(np.float64)
    residual_ns = hits["t_ns"] - cherenkov_arrival_time_ns(pos, track.point_m, other, track.time_ns)
    assert np.ptp(residual_ns) > 20.0
    # the same residuals from the rotated hits and the rotated track (along +z): a rotation keeps every distance,
    # so the Cherenkov geometry and the residuals are the same in the track's frame
    centre = pos.mean(axis=0)  # every hit is triggered: the frame's origin is their centre
    local = features[:, 0:3].astype(np.float64) * 100.0
    np.testing.assert_allclose(local, (pos - centre) @ rotation.T, atol=1e-3)
    rotated_residual = hits["t_ns"] - cherenkov_arrival_time_ns(local, rotation @ (track.point_m - centre),
                                                                np.array([0, 0, 1.0]), track.time_ns)
    np.testing.assert_allclose(rotated_residual, residual_ns, atol=1e-3)
    np.testing.assert_allclose(np.sinh(features[:, 6]) * RESIDUAL_SCALE_NS, residual_ns, rtol=1e-4, atol=1e-3)
    _, rho_m, _ = track_geometry(pos, track.point_m, other)
    np.testing.assert_allclose(features[:, 7] * 100.0, rho_m, rtol=1e-5, atol=1e-4)
    pmt_dir = np.stack([hits[f"dir_{a}"] for a in "xyz"], axis=1)
    np.testing.assert_allclose(features[:, 3:6], pmt_dir @ rotation.T, atol=1e-6)


def test_linearised_fit_recovers_the_track_of_ideal_hits():
    # Exact direct-light times: for the true direction the ring fit's point and time put every residual at 0
    direction = np.array([-0.3, 0.5, -0.81]) / np.linalg.norm([-0.3, 0.5, -0.81])
    point, t0 = np.array([20.0, 10.0, 100.0]), 500.0
    hits = ideal_hits(direction, point, t0, seed=3)
    pos = np.stack([hits[f"pos_{a}"] for a in "xyz"], axis=1).astype(np.float64)
    fit = linearised_tracks(pos, hits["t_ns"], direction[None, :])
    found_point = pos.mean(axis=0) + fit.p1[0, 0] * fit.e1[0] + fit.p2[0, 0] * fit.e2[0]
    residual = hits["t_ns"] - cherenkov_arrival_time_ns(pos, found_point, direction,
                                                        hits["t_ns"].mean() + fit.t0[0, 0])
    assert np.abs(residual).max() < 1e-3
    _, distance_m, _ = track_geometry(found_point[None, :], point, direction)
    assert distance_m[0] < 1e-3


def test_line_fit_track_of_a_jittered_track_is_near_it_and_degenerate_events_get_a_frame():
    direction = np.array([0.2, 0.3, -0.93]) / np.linalg.norm([0.2, 0.3, -0.93])
    hits = ideal_hits(direction, np.array([20.0, 10.0, 100.0]), 500.0, n=80, jitter_ns=2.0, seed=5)
    pos = np.stack([hits[f"pos_{a}"] for a in "xyz"], axis=1).astype(np.float64)
    track = line_fit_track(pos, hits["t_ns"], hits["triggered"])
    # the line fit follows the light front, not the muon: tens of degrees off, but on the right hemisphere
    assert angle_between_deg(track.direction, direction) < 60.0
    one = line_fit_track(pos[:1], hits["t_ns"][:1], hits["triggered"][:1])
    np.testing.assert_allclose(one.direction, [0.0, 0.0, 1.0])
    np.testing.assert_allclose(one.point_m, pos[0])


def test_chi2_prefit_refines_the_line_fit_and_a_runaway_point_is_not_kept():
    direction = np.array([0.2, 0.3, -0.93]) / np.linalg.norm([0.2, 0.3, -0.93])
    hits = ideal_hits(direction, np.array([20.0, 10.0, 100.0]), 500.0, n=80, jitter_ns=1.0, seed=5)
    pos = np.stack([hits[f"pos_{a}"] for a in "xyz"], axis=1).astype(np.float64)
    line = line_fit_track(pos, hits["t_ns"], hits["triggered"])
    refined = line_fit_chi2_track(pos, hits["t_ns"], hits["triggered"])
    assert angle_between_deg(refined.direction, direction) < min(2.0, angle_between_deg(line.direction, direction))
    # hits of a track 300 m from them cannot be seen (MAX_TRACK_OFFSET_M): such a fitted point is replaced by
    # the hits' centre at their mean time
    far = ideal_hits(direction, np.array([20.0, 10.0, 100.0]) + 300.0 * np.cross(direction, [1.0, 0, 0]), 500.0,
                     n=30, seed=6)
    far_pos = np.stack([far[f"pos_{a}"] for a in "xyz"], axis=1).astype(np.float64)
    track = line_fit_track(far_pos, far["t_ns"], far["triggered"])
    offset = track.point_m - far_pos.mean(axis=0)
    assert np.linalg.norm(offset - (offset @ track.direction) * track.direction) <= MAX_TRACK_OFFSET_M


def test_datamodule_adds_frame_features_and_the_task_turns_the_direction_back(compose_train):
    dm = KM3NeTDataModule(**SMALL, n_train=4, n_val=4, n_test=4, batch_size=4, seed=2, prefit="line_fit")
    dm.setup("fit")
    batch = next(iter(dm.test_dataloader()))
    assert batch["hit_features"].shape[2] == len(HIT_FEATURES) + len(PREFIT_FRAME_FEATURES)
    rotation, prefit = batch["prefit_rotation"], batch["prefit_direction"]
    torch.testing.assert_close(torch.einsum("bij,bj->bi", rotation, prefit), torch.tensor([[0, 0, 1.0]] * 4),
                               atol=1e-5, rtol=0)
    # the model's input width follows data.prefit through the config
    cfg = compose_train(["experiment=km3net_reconstruction/orca6_prefit"])
    assert cfg.model.n_features == len(HIT_FEATURES) + len(PREFIT_FRAME_FEATURES)
    assert compose_train(["experiment=km3net_transformer"]).model.n_features == len(HIT_FEATURES)
    from numl.models.hit_transformer import HitTransformer
    from numl.tasks.km3net import KM3NeTRecoTask

    task = KM3NeTRecoTask(HitTransformer(n_features=batch["hit_features"].shape[2]), prefit="line_fit")
    # the correction starts at zero: the untrained network predicts each event's prefit direction
    torch.testing.assert_close(task(batch)["direction"], prefit, atol=1e-5, rtol=0)
    with torch.no_grad():
        task.head.out.weight.normal_(0.0, 0.1)
    correction = task.head(task.model(batch["hit_features"], batch["hit_mask"]))["direction_raw"]
    assert float(correction.detach().abs().max()) > 0.01
    # in the prefit frame the direction is +z plus the head's correction, turned back by R^T
    local = torch.nn.functional.normalize(correction + torch.tensor([0.0, 0.0, 1.0]), dim=-1)
    torch.testing.assert_close(torch.einsum("bij,bj->bi", rotation, task(batch)["direction"]), local, atol=1e-5,
                               rtol=0)
    without_frame = {k: v for k, v in batch.items() if k != "prefit_rotation"}
    with pytest.raises(ConfigError, match=r"^task\.prefit='line_fit': the batches carry no prefit frame"):
        task(without_frame)


def test_unknown_prefit_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^data\.prefit='chi2': must be one of none, line_fit, line_fit_chi2$"):
        KM3NeTDataModule(**SMALL, prefit="chi2")


@pytest.mark.skipif(importlib.util.find_spec("km3io") is None or importlib.util.find_spec("km3net_testdata") is None,
                    reason="needs the km3net extra: pip install 'numl[km3net]'")
def test_line_fit_on_the_official_orca6_file():
    # 30.7 deg median on the file's 140 events (experiments/km3net_reconstruction/prefit.py): a rough but
    # far-from-isotropic (90 deg) seed; JMuon on the same events reaches 6.1 deg
    events = read_offline_file(resolve_testdata_path(REAL_FILE, "offline", "file"))
    errors = []
    for e in events:
        pos = np.stack([e.hits[f"pos_{a}"] for a in "xyz"], axis=1).astype(np.float64)
        track = line_fit_track(pos, e.hits["t_ns"], e.hits["triggered"])
        errors.append(angle_between_deg(track.direction, [e.truth[f"dir_{a}"] for a in "xyz"]))
    assert len(errors) == 140
    assert 25.0 < np.median(errors) < 36.0
