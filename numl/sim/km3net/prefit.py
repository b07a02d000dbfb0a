"""Cheap prefit tracks of a KM3NeT event and the rotation into a track's frame (``data.prefit``); the chi-square fit
of numl.baselines.km3net starts from the same functions.

The line fit solves r(t) = r0 + v t by least squares on the triggered hits: v = (<r t> - <r><t>) /
(<t^2> - <t>^2) (PHYSICS.md). For a given direction the track's point and time follow from the linearised
Cherenkov-ring fit (`linearised_tracks`, also the chi-square fit's sky scan): hits projected on the plane
perpendicular to the direction see a ring of light expanding from the track, which squared is linear in the
track's time and point. Both together cost about 0.4 ms per event (experiments/km3net_reconstruction/prefit.py), so
they run on every training event; one robust chi-square fit from there (`line_fit_chi2_track`) 14-21 ms.

`rotation_to_track_frame` rotates detector coordinates so that the prefit direction becomes +z; a network can then
see every event's hits from its own track's point of view and predict the correction to the prefit direction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.optimize import least_squares

from numl.sim.km3net import physics

#: the ring's slowness: tau = t - (x.u)/c grows by this many ns per metre of distance from the track
#: (1 / (v_g sin theta_c) - 1 / (c tan theta_c), from km3pipe's arrival-time formula)
RING_SLOWNESS_NS_PER_M = 1.0 / (physics.V_GROUP_M_PER_NS * physics.SIN_CHERENKOV) - 1.0 / (
    physics.C_LIGHT_M_PER_NS * physics.TAN_CHERENKOV)
#: the linearised fit has four unknowns (time, two point offsets, a constant)
MIN_LINEARISED_HITS = 4
#: a fitted track point farther than this from the hits' centre (perpendicular to the track) is a fit that ran
#: away: muon light is rarely seen beyond ~100 m (absorption length 60 m in numl's simulation, ORCA's DUs ~20 m
#: apart); the prefit then keeps the track through the hits' centre at their mean time
MAX_TRACK_OFFSET_M = 100.0
#: the chi-square fit has five (two angles, two point offsets, time)
MIN_CHI2_HITS = 6
#: the chi-square fit's time resolution: numl.baselines.km3net's default (PMT transit-time spread and the
#: simulation's 1.5 ns time_spread_ns, widened for scattered light)
CHI2_SIGMA_NS = 3.0


def line_fit(pos_m: np.ndarray, time_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Direction, centre of gravity and mean time of the hits from r(t) = r0 + v t."""
    t_mean = time_ns.mean()
    r_mean = pos_m.mean(axis=0)
    var_t = np.mean((time_ns - t_mean) ** 2)
    v = ((pos_m - r_mean) * (time_ns - t_mean)[:, None]).mean(axis=0) / max(var_t, 1e-12)
    norm = np.linalg.norm(v)
    direction = v / norm if norm > 0 else np.array([0.0, 0.0, 1.0])
    return direction, r_mean, float(t_mean)


def spherical_angles(direction: np.ndarray) -> tuple[float, float]:
    return float(np.arccos(np.clip(direction[2], -1, 1))), float(np.arctan2(direction[1], direction[0]))


def unit_from_angles(theta: float, phi: float) -> np.ndarray:
    return np.array([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)])


def perpendicular_basis(direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    helper = np.array([1.0, 0.0, 0.0]) if abs(direction[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(direction, helper)
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(direction, e1)


def chi2_fit(pos_m: np.ndarray, time_ns: np.ndarray, start_dir: np.ndarray, start_point_m: np.ndarray,
             start_time_ns: float, sigma_ns: float) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Robust least-squares fit of the Cherenkov time residuals; returns direction, point, time, cost.

    The point moves in the plane through `start_point_m` perpendicular to `start_dir` (a track point is only
    defined up to a shift along the track, which the time absorbs)."""
    e1, e2 = perpendicular_basis(start_dir)
    theta0, phi0 = spherical_angles(start_dir)

    def unpack(p):
        return unit_from_angles(p[0], p[1]), start_point_m + p[2] * e1 + p[3] * e2, start_time_ns + p[4]

    def residuals(p):
        u, point, t0 = unpack(p)
        return (time_ns - physics.cherenkov_arrival_time_ns(pos_m, point, u, t0)) / sigma_ns

    # Scales: radians, metres, nanoseconds -> comparable steps for the trust-region solver.
    result = least_squares(residuals, np.array([theta0, phi0, 0.0, 0.0, 0.0]), loss="soft_l1", f_scale=1.0,
                           x_scale=np.array([0.1, 0.1, 5.0, 5.0, 20.0]), max_nfev=200)
    u, point, t0 = unpack(result.x)
    return u, point, t0, float(result.cost)


class LinearisedTracks(NamedTuple):
    """For D trial directions and N hits: the hits' tau = t - (x.u)/c and coordinates (q1, q2) in the plane
    perpendicular to each direction (all (D, N), about the hits' centre and mean time), the plane's axes e1, e2
    (D, 3) and the fitted track time t0 and point (p1, p2) in that plane (D, 1 each)."""
    tau: np.ndarray
    q1: np.ndarray
    q2: np.ndarray
    e1: np.ndarray
    e2: np.ndarray
    t0: np.ndarray
    p1: np.ndarray
    p2: np.ndarray


def linearised_tracks(pos_m: np.ndarray, time_ns: np.ndarray, directions: np.ndarray) -> LinearisedTracks:
    """The best track for each trial direction from the linearised ring fit (vectorised over directions).

    tau = t0 + k |q - p| squared gives tau^2 - k^2 |q|^2 = 2 t0 tau - 2 k^2 q.p + (k^2 |p|^2 - t0^2), linear in
    (t0, p, const). Positions and times are taken about the hits' centre and mean time."""
    k = RING_SLOWNESS_NS_PER_M
    e1 = np.cross(directions, np.where(np.abs(directions[:, :1]) < 0.9, [[1.0, 0, 0]], [[0, 1.0, 0]]))
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    e2 = np.cross(directions, e1)
    centred = pos_m - pos_m.mean(axis=0)
    tau = (time_ns - time_ns.mean())[None, :] - (directions @ centred.T) / physics.C_LIGHT_M_PER_NS  # (D, N)
    q1, q2 = e1 @ centred.T, e2 @ centred.T  # (D, N)
    design = np.stack([2 * tau, -2 * k**2 * q1, -2 * k**2 * q2, np.ones_like(tau)], axis=-1)  # (D, N, 4)
    target = tau**2 - k**2 * (q1**2 + q2**2)
    normal = np.einsum("dni,dnj->dij", design, design) + 1e-9 * np.eye(4)
    solution = np.linalg.solve(normal, np.einsum("dni,dn->di", design, target)[..., None])[..., 0]
    return LinearisedTracks(tau, q1, q2, e1, e2, solution[:, 0:1], solution[:, 1:2], solution[:, 2:3])


@dataclass(frozen=True)
class PrefitTrack:
    direction: np.ndarray  # (3,) unit vector
    point_m: np.ndarray  # (3,) a point on the track
    time_ns: float  # when the muon passes point_m


def line_fit_track(pos_m: np.ndarray, time_ns: np.ndarray, triggered: np.ndarray) -> PrefitTrack:
    """The line fit's direction on the triggered hits (all hits when fewer than two are triggered), with the point
    and time of the linearised ring fit for that direction (the hits' centre and mean time where that point lies
    beyond MAX_TRACK_OFFSET_M). Degenerate events (one hit, or all at one time) get
    +z through the hits' centre, so every event has a frame."""
    pos_m = np.asarray(pos_m, dtype=np.float64)
    time_ns = np.asarray(time_ns, dtype=np.float64)
    use = triggered if int(np.sum(triggered)) >= 2 else np.ones(len(time_ns), dtype=bool)
    p, t = pos_m[use], time_ns[use]
    if len(t) < 2 or np.ptp(t) <= 0:
        return PrefitTrack(np.array([0.0, 0.0, 1.0]), p.mean(axis=0) if len(p) else np.zeros(3),
                           float(t.mean()) if len(t) else 0.0)
    return ring_fit_track(p, t, line_fit(p, t)[0])


def ring_fit_track(pos_m: np.ndarray, time_ns: np.ndarray, direction: np.ndarray) -> PrefitTrack:
    """The track along `direction` whose point and time the linearised ring fit gives on these hits (the hits'
    centre and mean time with fewer than MIN_LINEARISED_HITS hits or a point beyond MAX_TRACK_OFFSET_M)."""
    centre, t_mean = pos_m.mean(axis=0), float(time_ns.mean())
    if len(time_ns) < MIN_LINEARISED_HITS:
        return PrefitTrack(direction, centre, t_mean)
    fit = linearised_tracks(pos_m, time_ns, direction[None, :])
    if np.hypot(fit.p1[0, 0], fit.p2[0, 0]) > MAX_TRACK_OFFSET_M:
        return PrefitTrack(direction, centre, t_mean)
    point = centre + fit.p1[0, 0] * fit.e1[0] + fit.p2[0, 0] * fit.e2[0]
    # tau is taken about the mean time and the centre, and the point lies in the plane through the centre
    # perpendicular to the direction, so the muon passes it at t_mean + t0
    return PrefitTrack(direction, point, t_mean + float(fit.t0[0, 0]))


def line_fit_chi2_track(pos_m: np.ndarray, time_ns: np.ndarray, triggered: np.ndarray) -> PrefitTrack:
    """The line-fit track refined by one robust chi-square fit of the triggered hits' Cherenkov time residuals (the
    first of numl's chi-square fit candidates, without its sky scan and refit: 14-21 ms per event); the line
    fit's track where fewer than MIN_CHI2_HITS hits are triggered or the fit ran away (MAX_TRACK_OFFSET_M)."""
    track = line_fit_track(pos_m, time_ns, triggered)
    if int(np.sum(triggered)) < MIN_CHI2_HITS:
        return track
    p, t = np.asarray(pos_m, dtype=np.float64)[triggered], np.asarray(time_ns, dtype=np.float64)[triggered]
    t_ref = float(t.mean())  # fit in times relative to the event so residuals keep their precision
    direction, point, time0, _ = chi2_fit(p, t - t_ref, track.direction, track.point_m, track.time_ns - t_ref,
                                          CHI2_SIGMA_NS)
    offset = point - p.mean(axis=0)
    if np.linalg.norm(offset - (offset @ direction) * direction) > MAX_TRACK_OFFSET_M:
        return track
    return PrefitTrack(direction, point, time0 + t_ref)


#: data.prefit: the prefit that defines each event's frame
PREFITS = {"line_fit": line_fit_track, "line_fit_chi2": line_fit_chi2_track}


#: below this 1 + cos(angle to +z) (within 0.08 deg of -z) Rodrigues' 1 / (1 + cos) would lose precision
NEAR_DOWNWARD = 1e-6


def rotation_to_track_frame(direction: np.ndarray) -> np.ndarray:
    """The proper rotation R (3, 3) with R @ direction = +z: the smallest such rotation (Rodrigues' formula); a
    direction within 0.08 deg of -z is first turned by pi about x."""
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    if 1.0 + d[2] < NEAR_DOWNWARD:
        half_turn = np.diag([1.0, -1.0, -1.0])
        return rotation_to_track_frame(half_turn @ d) @ half_turn
    axis = np.cross(d, [0.0, 0.0, 1.0])
    cross = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return np.eye(3) + cross + cross @ cross / (1.0 + d[2])
