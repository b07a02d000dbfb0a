"""Triggers of KM3NeT events: L1 coincidences within a DOM, and which hits an event's trigger flags.

Two ways to choose the triggered hits (`data.events.trigger`):

- ``l1_causal``: every L1 hit, plus single (L0) hits within a distance and the light-travel time of an L1 hit.
- ``muon_road``: after the 3D-muon trigger of KM3NeT's trigger software (Jpp's JTriggerEfficiency / JTE; its
  criterion is the causality of a straight muon). Directions are scanned over the sphere; for each, the L1
  hits that are pairwise compatible with one muon along it (within a road and the Cherenkov time difference) are
  clustered, the direction whose cluster spans most DOMs wins, and hits compatible with every hit of that cluster
  (L0 or L1) join it. On the official ORCA6 file (experiments/km3net_reconstruction/trigger_check.py) it finds
  79 % of JTE's triggered hits at 91 % precision and, like JTE, spreads them over 3 or more lines in 92 % of the
  events; ``l1_causal`` finds 88 % at 93 % but leaves 29 % of the events on 1-2 lines.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from numl.sim.km3net import physics

if TYPE_CHECKING:
    from numl.sim.km3net.events import EventConfig

TRIGGERS = ("l1_causal", "muon_road")
#: slope of a Cherenkov hit time with the PMT's distance rho from the muon: t = t0 + L / c + rho * this
#: (from physics.cherenkov_arrival_time_ns: 1 / (v_group sin theta_c) - 1 / (c tan theta_c); 3.17 ns/m)
ROAD_NS_PER_M = (1.0 / physics.V_GROUP_M_PER_NS
                 - physics.COS_CHERENKOV / physics.C_LIGHT_M_PER_NS) / physics.SIN_CHERENKOV
#: directions whose compatible-pair count is highest are clustered (the pair count ranks directions cheaply; the
#: clustering decides among these)
ROAD_CANDIDATE_DIRECTIONS = 8
#: directions compared per block (bounds memory at N^2 x this for events with many L1 hits)
DIRECTION_BLOCK = 16


def l1_flags(dom_index: np.ndarray, time_ns: np.ndarray, window_ns: float) -> np.ndarray:
    """A hit is L1 if another hit on the same DOM lies within the window (neighbours in time order suffice)."""
    flags = np.zeros(len(time_ns), dtype=bool)
    if len(time_ns) < 2:
        return flags
    order = np.lexsort((time_ns, dom_index))
    d, t = dom_index[order], time_ns[order]
    close = (d[1:] == d[:-1]) & (np.diff(t) <= window_ns)
    flags[order[1:][close]] = True
    flags[order[:-1][close]] = True
    return flags


def causal_l0_flags(pos_m: np.ndarray, time_ns: np.ndarray, l1: np.ndarray, max_distance_m: float,
                    time_extra_ns: float) -> np.ndarray:
    """Hits that are not L1 but lie within `max_distance_m` of an L1 hit and within the light-travel time between
    them (water's group velocity) plus `time_extra_ns`: the L0 hits a JTE-like trigger adds to an event."""
    flags = np.zeros(len(time_ns), dtype=bool)
    if max_distance_m <= 0 or not l1.any() or l1.all():
        return flags
    candidates = np.flatnonzero(~l1)
    distance = np.linalg.norm(pos_m[candidates, None, :] - pos_m[None, l1, :], axis=-1)  # (L0, L1)
    delay = np.abs(time_ns[candidates, None] - time_ns[None, l1])
    causal = (distance <= max_distance_m) & (delay <= distance / physics.V_GROUP_M_PER_NS + time_extra_ns)
    flags[candidates[causal.any(axis=1)]] = True
    return flags


@lru_cache(maxsize=8)
def scan_directions(n: int) -> np.ndarray:
    """`n` nearly uniform unit vectors (Fibonacci sphere): about sqrt(41253 / n) deg apart (read-only, cached)."""
    i = np.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    phi = np.pi * (1.0 + 5.0**0.5) * i
    r = np.sqrt(1.0 - z * z)
    directions = np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)
    directions.setflags(write=False)
    return directions


def road_compatible(pos_a: np.ndarray, time_a: np.ndarray, pos_b: np.ndarray, time_b: np.ndarray,
                    directions: np.ndarray, road_width_m: float, time_extra_ns: float) -> np.ndarray:
    """(D, A, B): whether hits a and b can both be direct light of one muon along each direction: transverse
    separation within the road, and |dt - dL / c| <= rho-slope x transverse separation + extra (the two PMTs'
    distances from the muon differ by at most their transverse separation)."""
    along_a, along_b = pos_a @ directions.T, pos_b @ directions.T  # (A, D), (B, D)
    d_along = along_b[None, :, :] - along_a[:, None, :]  # (A, B, D)
    separation2 = np.sum((pos_b[None, :, :] - pos_a[:, None, :]) ** 2, axis=-1)[..., None]
    transverse = np.sqrt(np.clip(separation2 - d_along**2, 0.0, None))
    dt = (time_b[None, :] - time_a[:, None])[..., None]
    ok = (transverse <= road_width_m) & (
        np.abs(dt - d_along / physics.C_LIGHT_M_PER_NS) <= ROAD_NS_PER_M * transverse + time_extra_ns)
    return np.moveaxis(ok, -1, 0)


def clusterize(compatible: np.ndarray) -> np.ndarray:
    """Indices of a set of mutually compatible hits: drop the hit with the most incompatibilities until none is
    left (the greedy clustering JTE uses; an exact largest clique is NP-hard)."""
    incompatible = ~compatible
    alive = np.ones(len(compatible), dtype=bool)
    n_bad = incompatible.sum(axis=1)
    while True:
        n_bad_alive = np.where(alive, n_bad, -1)
        worst = int(np.argmax(n_bad_alive))
        if n_bad_alive[worst] <= 0:
            return np.flatnonzero(alive)
        alive[worst] = False
        n_bad -= incompatible[:, worst]


def muon_road_flags(pos_m: np.ndarray, time_ns: np.ndarray, dom_index: np.ndarray, l1: np.ndarray,
                    directions: np.ndarray, road_width_m: float, time_extra_ns: float, l0_road_width_m: float,
                    l0_time_extra_ns: float) -> tuple[np.ndarray, int]:
    """(triggered flags, DOMs in the L1 cluster) of the best direction; see the module docstring."""
    flags = np.zeros(len(time_ns), dtype=bool)
    l1_index = np.flatnonzero(l1)
    if len(l1_index) < 2:
        return flags, 0
    pos, t = pos_m[l1_index], time_ns[l1_index]
    pair_counts = np.concatenate([
        road_compatible(pos, t, pos, t, directions[start:start + DIRECTION_BLOCK], road_width_m,
                        time_extra_ns).sum(axis=(1, 2))
        for start in range(0, len(directions), DIRECTION_BLOCK)])
    candidates = np.argsort(-pair_counts, kind="stable")[:ROAD_CANDIDATE_DIRECTIONS]
    compatible = road_compatible(pos, t, pos, t, directions[candidates], road_width_m, time_extra_ns)
    best, best_key, best_direction = None, (-1, -1), None
    for k, direction in enumerate(directions[candidates]):
        cluster = clusterize(compatible[k])
        key = (len(np.unique(dom_index[l1_index[cluster]])), len(cluster))
        if key > best_key:
            best, best_key, best_direction = cluster, key, direction
    members = l1_index[best]
    flags[members] = True
    others = np.flatnonzero(~flags)
    if len(others):
        joins = road_compatible(pos_m[others], time_ns[others], pos_m[members], time_ns[members],
                                best_direction[None], l0_road_width_m, l0_time_extra_ns)[0].all(axis=1)
        flags[others[joins]] = True
    return flags, best_key[0]


def trigger_flags(pos_m: np.ndarray, time_ns: np.ndarray, dom_index: np.ndarray,
                  config: EventConfig) -> np.ndarray | None:
    """Triggered flags of an event's hits (PMT positions, times, DOM of each hit) under `config.trigger`; None when
    the event does not trigger (L1 hits, or for muon_road the L1 cluster, on fewer than trigger_min_l1_doms DOMs)."""
    l1 = l1_flags(dom_index, time_ns, config.l1_window_ns)
    if len(np.unique(dom_index[l1])) < config.trigger_min_l1_doms:
        return None
    if config.trigger == "muon_road":
        flags, n_doms = muon_road_flags(pos_m, time_ns, dom_index, l1, scan_directions(config.trigger_road_directions),
                                        config.trigger_road_width_m, config.trigger_road_time_extra_ns,
                                        config.trigger_road_l0_width_m, config.trigger_road_l0_time_extra_ns)
        return flags if n_doms >= config.trigger_min_l1_doms else None
    return l1 | causal_l0_flags(pos_m, time_ns, l1, config.trigger_l0_max_distance_m, config.trigger_l0_time_extra_ns)
