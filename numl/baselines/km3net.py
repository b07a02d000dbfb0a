"""Classical KM3NeT track reconstruction: line-fit pre-fit, then a robust chi-square fit of Cherenkov time
residuals for direction, position and time (scipy.optimize.least_squares), and a hit-count energy estimate;
and classical particle identification: boosted decision trees on event-shape features of the triggered hits.

The line fit (numl.sim.km3net.prefit, shared with the networks' prefit frame) solves r(t) = r0 + v t by least
squares on the triggered hits. The chi-square fit minimises the soft-L1 (robust) sum of
((t_hit - t_cherenkov(track)) / sigma_t)^2, where t_cherenkov is km3pipe's arrival-time formula; the robust
loss keeps late scattered photons and noise hits from pulling the track. It starts from the line fit and a
ring of directions around it, keeps the lowest cost, then refits with every hit inside a residual window.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import least_squares, minimize

from numl.baselines.base import Baseline, BaselineResult
from numl.data.km3net import hit_directions, hit_positions_m, truth_direction
from numl.sim.km3net import physics
from numl.sim.km3net.events import is_track_event
from numl.sim.km3net.observables import vertex_muon_track
from numl.sim.km3net.prefit import (
    RING_SLOWNESS_NS_PER_M,
    chi2_fit,
    line_fit,
    linearised_tracks,
    perpendicular_basis,
    ring_fit_track,
    spherical_angles,
    unit_from_angles,
)
from numl.tasks.losses import vmf_angle_cdf
from numl.utils.errors import ConfigError, check_positive
from numl.utils.progress import track as with_progress

log = logging.getLogger(__name__)

#: five free parameters (two angles, two position offsets, time) need at least six hits
MIN_FIT_HITS = 6


@dataclass(frozen=True)
class TrackFit:
    direction: np.ndarray  # (3,) unit vector; NaN when the fit failed
    position_m: np.ndarray  # (3,) a point on the track
    time_ns: float  # time the muon passes position_m
    n_hits_used: int  # hits inside the final residual window
    cost: float
    ok: bool
    reason: str = ""


def failed_fit(reason: str, n_hits: int = 0) -> TrackFit:
    nan3 = np.full(3, np.nan)
    return TrackFit(nan3, nan3, float("nan"), n_hits, float("nan"), False, reason)


def fibonacci_sphere(n: int) -> np.ndarray:
    """n nearly uniform unit vectors (golden-angle spiral)."""
    i = np.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    phi = np.pi * (1.0 + 5**0.5) * i
    s = np.sqrt(1.0 - z**2)
    return np.stack([s * np.cos(phi), s * np.sin(phi), z], axis=1)


def direction_scan(pos_m: np.ndarray, time_ns: np.ndarray, directions: np.ndarray, sigma_ns: float) -> np.ndarray:
    """Robust cost of the best track for each trial direction, from the linearised ring fit (cheap, vectorised:
    numl.sim.km3net.prefit.linearised_tracks)."""
    fit = linearised_tracks(pos_m, time_ns, directions)
    residual = (fit.tau - fit.t0 - RING_SLOWNESS_NS_PER_M * np.hypot(fit.q1 - fit.p1, fit.q2 - fit.p2)) / sigma_ns
    return np.sum(2.0 * (np.sqrt(1.0 + residual**2) - 1.0), axis=1)  # soft-L1, as in the full fit


def prefit_candidates(pos_m: np.ndarray, time_ns: np.ndarray, triggered: np.ndarray, sigma_ns: float = 3.0,
                      n_scan_directions: int = 1000, n_starts: int = 3
                      ) -> tuple[list[tuple[np.ndarray, np.ndarray, float, float]], float] | str:
    """Chi-square fits on the triggered hits from the line fit and the `n_starts` best of a linearised scan of
    `n_scan_directions` directions: a list of (direction, point, time, cost) with times relative to the returned
    reference time; or the reason there is nothing to fit."""
    n_trig = int(triggered.sum())
    if n_trig < MIN_FIT_HITS:
        return f"{n_trig} triggered hits, the fit needs at least {MIN_FIT_HITS}"
    p_trig, t_trig = pos_m[triggered], time_ns[triggered]
    if np.ptp(t_trig) <= 0 or np.linalg.norm(np.ptp(p_trig, axis=0)) <= 0:
        return "triggered hits at one place or one time: no direction to fit"
    t_ref = float(t_trig.mean())  # fit in times relative to the event so residuals keep their precision
    prefit_dir, cog, t_cog = line_fit(p_trig, t_trig - t_ref)
    grid = fibonacci_sphere(n_scan_directions)
    scan_cost = direction_scan(p_trig, t_trig - t_ref, grid, sigma_ns)
    starts = [prefit_dir, *grid[np.argsort(scan_cost)[:n_starts]]]
    return [chi2_fit(p_trig, t_trig - t_ref, start, cog, t_cog, sigma_ns) for start in starts], t_ref


def fit_track(pos_m: np.ndarray, time_ns: np.ndarray, triggered: np.ndarray, sigma_ns: float = 3.0,
              n_scan_directions: int = 1000, n_starts: int = 3,
              residual_window_ns: tuple[float, float] = (-10.0, 50.0)) -> TrackFit:
    """Pre-fit: line fit plus a linearised scan of `n_scan_directions` directions over the sky on the triggered
    hits; chi-square fits from the line fit and the `n_starts` best scan directions; then a refit with every
    hit inside the residual window. Events with fewer than MIN_FIT_HITS triggered hits are flagged, not fitted."""
    pos_m = np.asarray(pos_m, dtype=np.float64)
    time_ns = np.asarray(time_ns, dtype=np.float64)
    triggered = np.asarray(triggered, dtype=bool)
    prefit = prefit_candidates(pos_m, time_ns, triggered, sigma_ns, n_scan_directions, n_starts)
    if isinstance(prefit, str):
        return failed_fit(prefit, int(triggered.sum()))
    return refit_best_candidate(pos_m, time_ns, *prefit, sigma_ns, residual_window_ns)


def refit_best_candidate(pos_m: np.ndarray, time_ns: np.ndarray,
                         candidates: list[tuple[np.ndarray, np.ndarray, float, float]], t_ref: float,
                         sigma_ns: float = 3.0, residual_window_ns: tuple[float, float] = (-10.0, 50.0)) -> TrackFit:
    """The lowest-cost prefit candidate refitted with every hit inside its residual window (times relative to
    `t_ref`, as prefit_candidates returns them)."""
    best = min(candidates, key=lambda fit: fit[3])
    u, point, t0, _ = best
    residual = time_ns - t_ref - physics.cherenkov_arrival_time_ns(pos_m, point, u, t0)
    window = (residual >= residual_window_ns[0]) & (residual <= residual_window_ns[1])
    if window.sum() >= MIN_FIT_HITS:
        u, point, t0, cost = chi2_fit(pos_m[window], time_ns[window] - t_ref, u, point, t0, sigma_ns)
    else:
        cost = best[3]
    return TrackFit(u, point, t0 + t_ref, int(window.sum()), cost, True)


# ----- likelihood fit with time-residual PDFs tabulated from simulation (as JPP's JMuon does) ----------------------
#: PDF bins: the PMT's distance to the track (m; near: prompt light, far: mostly scattered and noise), the cosine
#: between the PMT axis and the direct photon's arrival (1: facing it), and the time residual (ns)
PDF_DISTANCE_EDGES_M = np.array([0.0, 5.0, 10.0, 20.0, 35.0, 55.0, 80.0, 120.0, 200.0, np.inf])
PDF_FACING_EDGES = np.array([-1.0, 0.0, 0.5, 1.0])
PDF_RESIDUAL_EDGES_NS = np.arange(-100.0, 601.0, 2.0)


def pmt_track_geometry(pos_m: np.ndarray, pmt_dir: np.ndarray, point_m: np.ndarray, direction: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Distance to the track and facing cosine (PMT axis against the direct Cherenkov photon) of each PMT."""
    _, rho_m, emission_m = physics.track_geometry(pos_m, point_m, direction)
    photon = pos_m - (point_m + emission_m[:, None] * direction)
    photon /= np.maximum(np.linalg.norm(photon, axis=1), 1e-9)[:, None]
    return rho_m, -np.einsum("ij,ij->i", pmt_dir, photon)


def hit_track_geometry(pos_m: np.ndarray, pmt_dir: np.ndarray, time_ns: np.ndarray, point_m: np.ndarray,
                       direction: np.ndarray, time0_ns: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Time residual, distance to the track and facing cosine of each hit for the track (point, direction, time)."""
    rho_m, facing = pmt_track_geometry(pos_m, pmt_dir, point_m, direction)
    residual = time_ns - physics.cherenkov_arrival_time_ns(pos_m, point_m, direction, time0_ns)
    return residual, rho_m, facing


class ResidualPdf:
    """Probability density of a hit's time residual w.r.t. a muon track, per bin of distance and facing cosine,
    tabulated from simulated events with their true muon (every hit: direct, scattered, shower light and noise),
    as JPP tabulates its PDFs from simulation. Residuals outside the table take its edge values."""

    def __init__(self, log_density: np.ndarray) -> None:
        self.log_density = log_density  # (distance bins, facing bins, residual bins), log(1/ns)

    @classmethod
    def from_events(cls, events) -> ResidualPdf:
        shape = (len(PDF_DISTANCE_EDGES_M) - 1, len(PDF_FACING_EDGES) - 1, len(PDF_RESIDUAL_EDGES_NS) - 1)
        counts = np.zeros(shape)
        for event in events:
            hits, track = event.hits, vertex_muon_track(event.truth)
            if track is None or len(hits) == 0:
                continue
            residual, rho, facing = hit_track_geometry(hit_positions_m(hits), hit_directions(hits), hits["t_ns"],
                                                       *track)
            counts += np.histogramdd((rho, facing, residual), bins=(PDF_DISTANCE_EDGES_M, PDF_FACING_EDGES,
                                                                   PDF_RESIDUAL_EDGES_NS))[0]
        if counts.sum() == 0:
            raise ConfigError("baseline.track_likelihood: no validation event with a muon to tabulate the PDF from")
        # A half count per cell and a 3-bin smoothing keep sparse cells finite and the likelihood smooth.
        counts = counts + 0.5
        counts[..., 1:-1] = 0.25 * counts[..., :-2] + 0.5 * counts[..., 1:-1] + 0.25 * counts[..., 2:]
        density = counts / (counts.sum(axis=-1, keepdims=True) * np.diff(PDF_RESIDUAL_EDGES_NS))
        return cls(np.log(density))

    def log_pdf(self, residual_ns: np.ndarray, rho_m: np.ndarray, facing: np.ndarray) -> np.ndarray:
        d = np.clip(np.searchsorted(PDF_DISTANCE_EDGES_M, rho_m, side="right") - 1, 0, self.log_density.shape[0] - 1)
        c = np.clip(np.searchsorted(PDF_FACING_EDGES, facing, side="right") - 1, 0, self.log_density.shape[1] - 1)
        centres = 0.5 * (PDF_RESIDUAL_EDGES_NS[:-1] + PDF_RESIDUAL_EDGES_NS[1:])
        x = np.clip((residual_ns - centres[0]) / (centres[1] - centres[0]), 0.0, len(centres) - 1.0)
        i = np.minimum(x.astype(int), len(centres) - 2)
        frac = x - i
        table = self.log_density[d, c]
        rows = np.arange(len(x))
        return (1.0 - frac) * table[rows, i] + frac * table[rows, i + 1]


#: the hits the likelihood fit sees: time residual within this window (ns) of its first track
LIKELIHOOD_WINDOW_NS = (-100.0, 600.0)
#: hit-probability bins: the PMT's distance to the track (m) and facing cosine, finer than the residual PDF's (the
#: probability is interpolated between bin centres, so that the likelihood moves almost smoothly with the track)
HIT_DISTANCE_EDGES_M = np.array([0.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 65.0, 80.0, 100.0, 125.0, 150.0,
                                 200.0, 300.0, np.inf])
HIT_FACING_EDGES = np.array([-1.0, -0.5, 0.0, 0.25, 0.5, 0.75, 1.0])
#: events are split into brightness classes at these quantiles of their triggered-hit count
HIT_BRIGHTNESS_QUANTILES = (1.0 / 3.0, 2.0 / 3.0)


def _bin_centres(edges: np.ndarray) -> np.ndarray:
    """Bin centres; an open last bin [a, inf) is placed at 2a."""
    upper = np.where(np.isfinite(edges[1:]), edges[1:], 3.0 * edges[:-1])
    return 0.5 * (edges[:-1] + upper)


def _bilinear(table: np.ndarray, x_centres: np.ndarray, y_centres: np.ndarray, x: np.ndarray, y: np.ndarray
              ) -> np.ndarray:
    """`table` (len(x_centres), len(y_centres)) interpolated at (x, y), constant beyond the outer centres."""
    ix = np.clip(np.searchsorted(x_centres, x) - 1, 0, len(x_centres) - 2)
    iy = np.clip(np.searchsorted(y_centres, y) - 1, 0, len(y_centres) - 2)
    fx = np.clip((x - x_centres[ix]) / (x_centres[ix + 1] - x_centres[ix]), 0.0, 1.0)
    fy = np.clip((y - y_centres[iy]) / (y_centres[iy + 1] - y_centres[iy]), 0.0, 1.0)
    return ((1.0 - fx) * (1.0 - fy) * table[ix, iy] + fx * (1.0 - fy) * table[ix + 1, iy]
            + (1.0 - fx) * fy * table[ix, iy + 1] + fx * fy * table[ix + 1, iy + 1])


def pmt_rows(detector, hits: np.ndarray, config_key: str) -> np.ndarray:
    """Each hit's row in the detector's PMT table (by DOM and channel); a hit on a PMT the detector lacks is a
    one-line error (a detector that is not the events')."""
    keys = detector.dom_id.astype(np.int64) * 64 + detector.channel_id
    order = np.argsort(keys)
    hit_keys = hits["dom_id"].astype(np.int64) * 64 + hits["channel_id"]
    index = np.clip(np.searchsorted(keys[order], hit_keys), 0, len(keys) - 1)
    found = keys[order][index] == hit_keys
    if not found.all():
        missing = hits[~found][0]
        raise ConfigError(f"{config_key}: a hit on DOM {int(missing['dom_id'])} channel "
                          f"{int(missing['channel_id'])}, which detector {detector.name!r} does not have; the events "
                          "and data.detector must be the same detector")
    return order[index]


class HitProbability:
    """Probability that a PMT records at least one hit within the likelihood's time window, per bin of its distance
    to the muon track, its facing cosine and the event's brightness (its triggered-hit count, in three classes),
    tabulated from simulated events with their true muons (K-40 noise included, as far as the events' readout holds it).
    Its log-likelihood over every PMT of the detector, hit and silent, is the hit / no-hit term that time residuals
    alone lack: a track that explains the times of a faint event's few hits must also not pass close to PMTs
    facing it that saw nothing (JPP's JMuonStart and JMuonEnergy weigh PMTs with and without hits the same way).
    The track is taken as infinite, as for the residual PDF, so PMTs behind the vertex or beyond the muon's range
    are averaged into the table, not modelled."""

    #: the fit evaluates the table on a fine grid (linear in distance, nearest in facing) precomputed from the
    #: bilinear interpolation between bin centres: the likelihood is evaluated for every PMT at every simplex step
    FINE_DISTANCE_STEP_M = 0.5
    FINE_FACING_STEP = 0.02

    def __init__(self, p_hit: np.ndarray, brightness_edges: np.ndarray) -> None:
        self.p_hit = p_hit  # (brightness classes, distance bins, facing bins)
        self.brightness_edges = brightness_edges  # triggered-hit counts between the classes
        self.distance_centres = _bin_centres(HIT_DISTANCE_EDGES_M)
        self.facing_centres = _bin_centres(HIT_FACING_EDGES)
        rho = np.arange(0.0, self.distance_centres[-1] + self.FINE_DISTANCE_STEP_M, self.FINE_DISTANCE_STEP_M)
        facing = np.linspace(-1.0, 1.0, int(round(2.0 / self.FINE_FACING_STEP)) + 1)
        rho_grid, facing_grid = np.meshgrid(rho, facing, indexing="ij")
        fine = np.stack([self.probability(rho_grid.ravel(), facing_grid.ravel(), b).reshape(rho_grid.shape)
                         for b in range(len(p_hit))])
        self._fine_log_silent = np.log1p(-fine)
        self._fine_log_hit_ratio = np.log(fine) - self._fine_log_silent

    @classmethod
    def from_events(cls, events, detector, config_key: str = "baseline.track_likelihood") -> HitProbability:
        tracked = [e for e in events if vertex_muon_track(e.truth) is not None]
        if not tracked:
            raise ConfigError(f"{config_key}: no validation event with a muon to tabulate the hit probability "
                              "from")
        n_triggered = np.array([int(e.hits["triggered"].sum()) for e in tracked])
        brightness_edges = np.quantile(n_triggered, HIT_BRIGHTNESS_QUANTILES)
        shape = (len(brightness_edges) + 1, len(HIT_DISTANCE_EDGES_M) - 1, len(HIT_FACING_EDGES) - 1)
        hit_counts, pmt_counts = np.zeros(shape), np.zeros(shape)
        pmts = DetectorPmts(detector)
        for event, n in zip(tracked, n_triggered, strict=True):
            point, direction, time0 = vertex_muon_track(event.truth)
            hits = event.hits
            residual = hits["t_ns"] - physics.cherenkov_arrival_time_ns(hit_positions_m(hits), point, direction,
                                                                        time0)
            in_window = (residual >= LIKELIHOOD_WINDOW_NS[0]) & (residual <= LIKELIHOOD_WINDOW_NS[1])
            hit = np.zeros(detector.n_pmts, dtype=bool)
            hit[pmt_rows(detector, hits[in_window], config_key)] = True
            rho, facing = pmts.track_geometry(point, direction)
            b = int(np.searchsorted(brightness_edges, n, side="right"))
            bins = (HIT_DISTANCE_EDGES_M, HIT_FACING_EDGES)
            pmt_counts[b] += np.histogram2d(rho, facing, bins=bins)[0]
            hit_counts[b] += np.histogram2d(rho[hit], facing[hit], bins=bins)[0]
        # half a hit in one count per cell keeps rare cells strictly between 0 and 1; a distance no PMT of the
        # tabulated events had takes the nearest shorter seen distance's value (light only falls off with distance;
        # with none seen nearer, the prior 0.5 stays)
        p_hit = (hit_counts + 0.5) / (pmt_counts + 1.0)
        seen = pmt_counts > 0
        nearest_seen = np.maximum.accumulate(np.where(seen, np.arange(shape[1])[None, :, None], 0), axis=1)
        return cls(np.take_along_axis(p_hit, nearest_seen, axis=1), brightness_edges)

    def brightness_class(self, n_triggered: int) -> int:
        return int(np.searchsorted(self.brightness_edges, n_triggered, side="right"))

    def probability(self, rho_m: np.ndarray, facing: np.ndarray, brightness_class: int) -> np.ndarray:
        """The tabulated probability, interpolated bilinearly between bin centres."""
        return _bilinear(self.p_hit[brightness_class], self.distance_centres, self.facing_centres, rho_m, facing)

    def log_likelihood(self, rho_m: np.ndarray, facing: np.ndarray, hit: np.ndarray, brightness_class: int) -> float:
        """Log-probability of the pattern `hit` (one flag per PMT) for PMTs at these distances and facings: the
        silent log-probability of every PMT plus, for the hit ones, log p - log(1 - p)."""
        x = np.minimum(rho_m / self.FINE_DISTANCE_STEP_M, self._fine_log_silent.shape[1] - 1.001)
        i = x.astype(np.int64)
        frac = x - i
        j = np.rint((np.clip(facing, -1.0, 1.0) + 1.0) / self.FINE_FACING_STEP).astype(np.int64)
        silent, ratio = self._fine_log_silent[brightness_class], self._fine_log_hit_ratio[brightness_class]
        total = np.sum((1.0 - frac) * silent[i, j] + frac * silent[i + 1, j])
        total += np.sum((1.0 - frac[hit]) * ratio[i[hit], j[hit]] + frac[hit] * ratio[i[hit] + 1, j[hit]])
        return float(total)


class DetectorPmts:
    """A detector's PMTs (all, or the rows given) with the products that do not depend on the track precomputed,
    for the distance and facing cosine of every PMT at every step of a fit (pmt_track_geometry's numbers, from four
    matrix-vector products)."""

    def __init__(self, detector, rows: np.ndarray | None = None) -> None:
        self.rows = np.arange(detector.n_pmts) if rows is None else np.asarray(rows, dtype=np.int64)
        self.pos_m = np.asarray(detector.pmt_pos_m, dtype=np.float64)[self.rows]
        self.dir = np.asarray(detector.pmt_dir, dtype=np.float64)[self.rows]
        self.pos_squared = np.einsum("ij,ij->i", self.pos_m, self.pos_m)
        self.dir_dot_pos = np.einsum("ij,ij->i", self.dir, self.pos_m)
        #: each detector row's index among these PMTs (-1: left out)
        self.index_of_row = np.full(detector.n_pmts, -1, dtype=np.int64)
        self.index_of_row[self.rows] = np.arange(len(self.rows))

    def track_geometry(self, point_m: np.ndarray, direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distance to the track and facing cosine of each PMT. The direct photon runs from the emission point
        to the PMT over rho / sin(theta_c)."""
        along = self.pos_m @ direction - point_m @ direction
        v_squared = self.pos_squared - 2.0 * (self.pos_m @ point_m) + point_m @ point_m
        rho = np.sqrt(np.clip(v_squared - along**2, 0.0, None))
        emission = along - rho / physics.TAN_CHERENKOV
        dir_dot_v = self.dir_dot_pos - self.dir @ point_m
        facing = -(dir_dot_v - emission * (self.dir @ direction)) * physics.SIN_CHERENKOV / np.maximum(rho, 1e-9)
        return rho, np.clip(facing, -1.0, 1.0)


class HitPattern:
    """One event's PMTs for the hit / no-hit term: the PMTs that take part (each hit's PMT among them), each hit's
    detector row, the event's brightness class and the tabulated probability. The fit counts a PMT as hit when one
    of the hits it uses (those in the window of its first track, fixed during the fit) is on it; the table counted
    the hits in the window of the true muon: the same window, around the fit's start instead of the truth."""

    def __init__(self, table: HitProbability, pmts: DetectorPmts, hit_rows: np.ndarray, brightness_class: int
                 ) -> None:
        self.table, self.pmts, self.hit_rows, self.brightness_class = table, pmts, hit_rows, brightness_class

    def log_likelihood_function(self, use: np.ndarray) -> Callable[[np.ndarray, np.ndarray], float]:
        """The term as a function of the track (point, direction), the PMTs of the hits `use` counting as hit."""
        hit = np.zeros(len(self.pmts.pos_m), dtype=bool)
        hit[self.pmts.index_of_row[self.hit_rows[use]]] = True

        def log_likelihood(point_m: np.ndarray, direction: np.ndarray) -> float:
            return self.table.log_likelihood(*self.pmts.track_geometry(point_m, direction), hit,
                                             self.brightness_class)

        return log_likelihood


def likelihood_fit(pos_m: np.ndarray, pmt_dir: np.ndarray, time_ns: np.ndarray,
                   candidates: list[tuple[np.ndarray, np.ndarray, float, float]], pdf: ResidualPdf,
                   window_ns: tuple[float, float] = LIKELIHOOD_WINDOW_NS,
                   direction_log_prior: Callable[[np.ndarray], float] | None = None,
                   hit_pattern: HitPattern | None = None
                   ) -> tuple[np.ndarray, np.ndarray, float, float, int, int]:
    """Maximum-likelihood track from every prefit candidate (Nelder-Mead in two angles, two position offsets and
    time, like JMuon's simplex stage) on the hits within `window_ns` of the lowest-cost candidate (every hit, not
    only triggered ones; where several candidates share the lowest cost, the hits within the window of any of
    them); returns direction, point, time, negative log-likelihood, the hits used and the index of the candidate the
    best fit started from. `direction_log_prior(u)`, if given, is added to the log-likelihood (the fit then
    maximises the posterior; the returned value is its negative); `hit_pattern`, if given, adds the hit / no-hit
    log-likelihood of every PMT of the detector (the PMTs of the hits used count as hit)."""
    lowest = min(fit[3] for fit in candidates)
    use = np.zeros(len(time_ns), dtype=bool)
    for u0, point0, t00, cost in candidates:
        if cost == lowest:
            residual = time_ns - physics.cherenkov_arrival_time_ns(pos_m, point0, u0, t00)
            use |= (residual >= window_ns[0]) & (residual <= window_ns[1])
    pattern_log_likelihood = hit_pattern.log_likelihood_function(use) if hit_pattern is not None else None
    pos_m, pmt_dir, time_ns = pos_m[use], pmt_dir[use], time_ns[use]
    best = None
    for start, (u0, point0, t00, _) in enumerate(candidates):
        e1, e2 = perpendicular_basis(u0)
        theta0, phi0 = spherical_angles(u0)

        def nll(p, point0=point0, t00=t00, e1=e1, e2=e2):
            u = unit_from_angles(p[0], p[1])
            point = point0 + p[2] * e1 + p[3] * e2
            geometry = hit_track_geometry(pos_m, pmt_dir, time_ns, point, u, t00 + p[4])
            log_prior = direction_log_prior(u) if direction_log_prior is not None else 0.0
            log_pattern = pattern_log_likelihood(point, u) if pattern_log_likelihood is not None else 0.0
            return -float(np.sum(pdf.log_pdf(*geometry))) - log_prior - log_pattern

        x = np.array([theta0, phi0, 0.0, 0.0, 0.0])
        for _restart in range(2):  # a simplex restarted where it stopped escapes its own collapse
            simplex = x + np.vstack([np.zeros(5), np.diag([0.05, 0.05, 3.0, 3.0, 10.0])])
            result = minimize(nll, x, method="Nelder-Mead",
                              options={"initial_simplex": simplex, "xatol": 1e-4, "fatol": 1e-3, "maxfev": 2000})
            x = result.x
        if best is None or result.fun < best[0]:
            best = (result.fun, result.x, point0, t00, e1, e2, start)
    fun, x, point0, t00, e1, e2, start = best
    return (unit_from_angles(x[0], x[1]), point0 + x[2] * e1 + x[3] * e2, t00 + x[4], float(fun), int(use.sum()),
            start)


class HitCountEnergyEstimator:
    """log10 E from log10 of the number of hits the track fit used (and the triggered-hit count), as a
    quadratic polynomial least-squares fitted on calibration events (the validation split)."""

    def __init__(self) -> None:
        self.coefficients: np.ndarray | None = None

    @staticmethod
    def _design(n_fit_hits: np.ndarray, n_triggered: np.ndarray) -> np.ndarray:
        a = np.log10(np.maximum(n_fit_hits, 1))
        b = np.log10(np.maximum(n_triggered, 1))
        return np.stack([np.ones_like(a), a, b, a**2, b**2, a * b], axis=1)

    def fit(self, n_fit_hits: np.ndarray, n_triggered: np.ndarray, log10_energy: np.ndarray) -> HitCountEnergyEstimator:
        self.coefficients, *_ = np.linalg.lstsq(self._design(n_fit_hits, n_triggered), log10_energy, rcond=None)
        return self

    def predict(self, n_fit_hits: np.ndarray, n_triggered: np.ndarray) -> np.ndarray:
        if self.coefficients is None:
            raise RuntimeError("HitCountEnergyEstimator.fit must be called before predict")
        return self._design(n_fit_hits, n_triggered) @ self.coefficients


# ----- the baselines a run executes (numl.baselines.base) -------------------------------------------------------
def _true_direction_and_energy(events) -> tuple[np.ndarray, np.ndarray]:
    return (np.stack([truth_direction(e.truth) for e in events]),
            np.array([float(e.truth["log10_energy"]) for e in events]))


class TrackFitBaseline(Baseline):
    """Line fit + robust chi-square time-residual fit of the muon track on exactly the test events, and a
    hit-count energy estimate calibrated on the validation events. Fits flagged for too few hits count in
    `fit_failure_fraction` and are left out of the resolutions.

    Args:
        sigma_ns: time-residual scale of the chi-square fit.
        max_events: fit at most this many test (and validation) events: the fit takes ~0.1 s per event.
    """

    label = "chi-square fit"
    config_key = "baseline.track_fit"

    def __init__(self, sigma_ns: float = 3.0, max_events: int | None = None) -> None:
        check_positive(f"{self.config_key}.sigma_ns", sigma_ns)
        if max_events is not None:
            check_positive(f"{self.config_key}.max_events", max_events, integer=True)
        self.sigma_ns, self.max_events = float(sigma_ns), max_events
        self.energy_estimator: HitCountEnergyEstimator | None = None

    def chi2_fits(self, events) -> dict[str, np.ndarray]:
        fits = [fit_track(hit_positions_m(e.hits), e.hits["t_ns"], e.hits["triggered"], self.sigma_ns)
                for e in with_progress(events, f"{self.config_key}: chi-square fits")]
        return {"direction": np.stack([f.direction for f in fits]), "ok": np.array([f.ok for f in fits]),
                "n_fit_hits": np.array([f.n_hits_used for f in fits]),
                "n_triggered": np.array([int(e.hits["triggered"].sum()) for e in events])}

    def fit_events(self, events) -> dict[str, np.ndarray]:
        """Direction, success, hits used and triggered hits of this baseline's fit of each event."""
        return self.chi2_fits(events)

    def fit(self, datamodule) -> TrackFitBaseline:
        calibration = datamodule.events("val")[: self.max_events]
        fits = self.chi2_fits(calibration)  # the energy estimate is the chi-square fit's in every subclass
        _, log10e = _true_direction_and_energy(calibration)
        use = fits["ok"]
        self.energy_estimator = HitCountEnergyEstimator().fit(fits["n_fit_hits"][use], fits["n_triggered"][use],
                                                              log10e[use])
        return self

    def test_events(self, datamodule) -> list:
        """The test events this baseline scores: the first max_events."""
        return datamodule.events("test")[: self.max_events]

    def evaluate(self, datamodule) -> BaselineResult:
        test = self.test_events(datamodule)
        fits = self.fit_events(test)
        true_direction, true_log10e = _true_direction_and_energy(test)
        fits["angular_error_deg"] = np.where(fits["ok"], physics.angle_between_deg(fits["direction"], true_direction),
                                             np.nan)
        fits["log10_energy"] = self.energy_estimator.predict(fits["n_fit_hits"], fits["n_triggered"])
        ok = fits["ok"]
        metrics = {"fit_failure_fraction": float(1.0 - ok.mean())}
        if ok.any():
            err = fits["angular_error_deg"][ok]
            metrics |= {"angular_error_deg_median": float(np.median(err)),
                        "angular_error_deg_mean": float(np.mean(err)),
                        "sigma_log10_energy": float(np.std(fits["log10_energy"][ok] - true_log10e[ok]))}
        return BaselineResult(self.label, metrics, fits)


class TrackLikelihoodBaseline(TrackFitBaseline):
    """The chi-square fit's candidates refined by a maximum-likelihood fit of every hit's time residual (PDFs per
    distance and PMT facing tabulated from the validation events with their true muons), like JMuon's chain of
    prefit, simplex and likelihood; the energy is the chi-square fit's hit-count estimate. Per event it keeps the
    start the best fit came from (`winning_start`: 0 the line fit, 1 to n_starts the scan directions, n_starts + 1 the
    chi-square fit, beyond that the starts of extra_candidates; -1 where the event was not fitted).

    Args:
        sigma_ns: time-residual scale of the chi-square prefit.
        max_events: fit at most this many test (and validation) events.
        n_starts: prefit directions from the linearised scan (besides the line fit and the chi-square fit).
    """

    label = "likelihood fit"
    config_key = "baseline.track_likelihood"
    #: scan directions of the chi-square fit itself (fit_track's default): the first of the likelihood's starts
    CHI2_SCAN_STARTS = 3
    #: also the hit / no-hit log-likelihood of every PMT of the detector (HitProbability, tabulated from the
    #: validation events on data.detector; TrackHitLikelihoodBaseline)
    uses_hit_probability = False

    def __init__(self, sigma_ns: float = 3.0, max_events: int | None = None, n_starts: int = 3) -> None:
        check_positive(f"{self.config_key}.n_starts", n_starts, integer=True)
        super().__init__(sigma_ns, max_events)
        self.n_starts = int(n_starts)
        self.pdf: ResidualPdf | None = None
        self.hit_probability: HitProbability | None = None
        self.detector = None
        self.detector_pmts: DetectorPmts | None = None

    def fit(self, datamodule) -> TrackLikelihoodBaseline:
        super().fit(datamodule)  # the energy estimate, from chi-square fits of the validation events
        self.pdf = ResidualPdf.from_events(datamodule.events("val"))
        if self.uses_hit_probability:
            self.detector = datamodule.detector
            self.hit_probability = HitProbability.from_events(datamodule.events("val"), self.detector,
                                                              self.config_key)
        return self

    def hit_patterns(self, events) -> list[HitPattern | None]:
        """Each event's hit / no-hit term, where this fit uses one. PMTs without a single hit in all the events
        fitted are taken as off (a real file's dead or masked PMTs: 215 of ORCA6's 3,348 in the 140 file events,
        where a live PMT has 5 K-40 and light hits on average), not as silent."""
        if self.hit_probability is None or not events:
            return [None] * len(events)
        rows = [pmt_rows(self.detector, e.hits, self.config_key) for e in events]
        self.detector_pmts = DetectorPmts(self.detector, np.unique(np.concatenate(rows)))
        return [HitPattern(self.hit_probability, self.detector_pmts, event_rows,
                           self.hit_probability.brightness_class(int(e.hits["triggered"].sum())))
                for e, event_rows in zip(events, rows, strict=True)]

    def fit_events(self, events) -> dict[str, np.ndarray]:
        out = {"direction": [], "ok": [], "n_fit_hits": [], "n_likelihood_hits": [], "nll": [], "winning_start": []}
        hit_patterns = self.hit_patterns(events)
        for index, event in enumerate(with_progress(events, f"{self.config_key}: likelihood fits")):
            hits = event.hits
            pos, time_ns = hit_positions_m(hits), hits["t_ns"].astype(np.float64)
            pmt_dir = hit_directions(hits)
            triggered = hits["triggered"].astype(bool)
            prefit = prefit_candidates(pos, time_ns, triggered, self.sigma_ns,
                                       n_starts=max(self.n_starts, self.CHI2_SCAN_STARTS))
            if isinstance(prefit, str):
                out["direction"].append(np.full(3, np.nan))
                out["ok"].append(False)
                out["n_fit_hits"].append(int(triggered.sum()))
                out["n_likelihood_hits"].append(0)
                out["nll"].append(np.nan)
                out["winning_start"].append(-1)
                continue
            candidates, t_ref = prefit
            # the chi-square fit is the refit of its own starts (line fit + its scan directions), as fit_track does
            chi2 = refit_best_candidate(pos, time_ns, candidates[:1 + self.CHI2_SCAN_STARTS], t_ref, self.sigma_ns)
            candidates = candidates[:self.n_prefit_starts - 1]
            candidates.append((chi2.direction, chi2.position_m, chi2.time_ns - t_ref, -np.inf))  # the refit first
            candidates += self.extra_candidates(index, pos[triggered], time_ns[triggered] - t_ref)
            u, _, _, nll, n_used, start = likelihood_fit(pos, pmt_dir, time_ns - t_ref, candidates, self.pdf,
                                                         direction_log_prior=self.direction_log_prior(index),
                                                         hit_pattern=hit_patterns[index])
            out["direction"].append(u)
            out["ok"].append(True)
            out["n_fit_hits"].append(chi2.n_hits_used)
            out["n_likelihood_hits"].append(n_used)
            out["nll"].append(nll)
            out["winning_start"].append(start)
        fits = {k: np.array(v) for k, v in out.items()}
        fits["direction"] = np.stack(out["direction"]) if out["direction"] else np.zeros((0, 3))
        fits["n_triggered"] = np.array([int(e.hits["triggered"].sum()) for e in events])
        return fits

    @property
    def n_prefit_starts(self) -> int:
        """The likelihood's starts before extra_candidates: the line fit, n_starts scan directions, the chi-square
        fit."""
        return self.n_starts + 2

    def extra_candidates(self, index: int, pos_m: np.ndarray, time_ns: np.ndarray
                         ) -> list[tuple[np.ndarray, np.ndarray, float, float]]:
        """Starts of the likelihood fit besides the prefit's for test event `index` (triggered hits, times relative
        to the prefit's reference; cost -inf: its hits join the chi-square refit's in the fit). Default: none."""
        return []

    def direction_log_prior(self, index: int) -> Callable[[np.ndarray], float] | None:
        """A log-prior on the direction of test event `index` added to the likelihood. Default: none (flat)."""
        return None


def network_fallback(fit_direction: np.ndarray, fit_ok: np.ndarray, network_direction: np.ndarray,
                     network_kappa: np.ndarray, containment: float) -> np.ndarray:
    """Per event, whether the network's direction is the answer: the fit failed, or ended outside the network's
    `containment` cone (its von Mises-Fisher distribution with the calibrated kappa)."""
    fit_direction = np.where(fit_ok[:, None], fit_direction, network_direction)
    separation = np.radians(physics.angle_between_deg(fit_direction, network_direction))
    cdf = vmf_angle_cdf(torch.from_numpy(separation), torch.from_numpy(np.asarray(network_kappa, dtype=np.float64)))
    return (cdf.numpy() > containment) | ~fit_ok


class NetworkStartedLikelihoodBaseline(TrackLikelihoodBaseline):
    """The likelihood fit with the network's direction as two more starts (a hybrid: fast estimates seeding a
    maximum-likelihood fit): the network's direction with the point and time the linearised ring fit gives for it,
    and the chi-square fit from there. The likelihood sees the hits near the chi-square fit's track or the network's,
    and the best likelihood over every start wins, so the network helps only where its track explains the hits
    better than the prefit's; whether it does says whether the network finds the right basin where the prefit
    does not, and the fit adds the precision of the time residuals that the network lacks.

    Where the fit ends outside the network's `fallback_containment` cone (the network's vMF with its calibrated
    kappa, the task's `kappa_calibrated`: a 99 % cone holds 99 % of the directions the network believes possible) or
    fails, the network's direction is the answer: the fit's precision where it agrees with the network, the network's
    robustness where a track beside it explains the hits better (`fit_direction` and `network_fallback` keep both).

    Args: as TrackLikelihoodBaseline, and
        fallback_containment: the cone's containment probability (0-1); null: always the fit.
    """

    label = "likelihood fit from the network"
    config_key = "baseline.track_likelihood_network_start"
    uses_network_predictions = True

    #: multiply the likelihood by the network's vMF density (NetworkPriorLikelihoodBaseline)
    network_prior = False

    def __init__(self, sigma_ns: float = 3.0, max_events: int | None = None, n_starts: int = 3,
                 fallback_containment: float | None = None) -> None:
        super().__init__(sigma_ns, max_events, n_starts)
        if fallback_containment is not None and not 0.0 < fallback_containment < 1.0:
            raise ConfigError(f"{self.config_key}.fallback_containment={fallback_containment!r}: a probability "
                              "between 0 and 1 (exclusive), or null for no fallback")
        self.fallback_containment = fallback_containment
        self.network_directions: np.ndarray | None = None
        self.network_kappa: np.ndarray | None = None
        self.network_event_index: np.ndarray | None = None  # each prediction's position among the test events

    def take_network_predictions(self, predictions: dict[str, np.ndarray]) -> None:
        if "direction_pred" not in predictions:
            raise ConfigError(f"{self.config_key}: the network predicts no direction (its predictions: "
                              f"{sorted(predictions)}); it needs a KM3NeT reconstruction task")
        directions = np.asarray(predictions["direction_pred"], dtype=np.float64)
        self.network_directions = directions / np.linalg.norm(directions, axis=1, keepdims=True)
        self.network_event_index = (np.asarray(predictions["event_index"]) if "event_index" in predictions
                                    else None)
        if self.network_prior or self.fallback_containment is not None:
            if "kappa_calibrated" not in predictions:
                raise ConfigError(f"{self.config_key}: the network predicts no kappa_calibrated for its prior or "
                                  f"fallback (its predictions: {sorted(predictions)})")
            self.network_kappa = np.asarray(predictions["kappa_calibrated"], dtype=np.float64)

    def test_events(self, datamodule) -> list:
        """The first max_events test events, and only those the network predicted (a predict loop limited by
        fast_dev_run or limit_predict_batches predicts the first batches only)."""
        test = super().test_events(datamodule)
        if self.network_directions is None:
            raise ConfigError(f"{self.config_key}: no network predictions; it runs after a network is tested")
        if len(self.network_directions) < len(test):
            log.warning("%s: the network predicted %d of %d test events; the hybrid fits those", self.config_key,
                        len(self.network_directions), len(test))
        test = test[: len(self.network_directions)]
        if self.network_event_index is not None and not np.array_equal(self.network_event_index[: len(test)],
                                                                        np.arange(len(test))):
            raise RuntimeError(f"{self.config_key}: the network's predictions are not in the test events' order "
                               "(their event_index); a predict loop must not shuffle")
        return test

    def evaluate(self, datamodule) -> BaselineResult:
        result = super().evaluate(datamodule)
        outputs = result.outputs
        # the fit's own failures (the network answers them when it falls back, so `ok` no longer shows them)
        result.metrics["fit_failure_fraction"] = float(1.0 - np.mean(outputs["fit_ok"]))
        result.metrics["network_start_fraction"] = float(np.mean(outputs["network_start_won"]))
        if "network_fallback" in outputs:
            result.metrics["network_fallback_fraction"] = float(np.mean(outputs["network_fallback"]))
        return result

    def fit_events(self, events) -> dict[str, np.ndarray]:
        fits = super().fit_events(events)
        fits["network_start_won"] = fits["winning_start"] >= self.n_prefit_starts
        fits["fit_ok"] = fits["ok"]
        if self.fallback_containment is None:
            return fits
        network = self.network_directions[: len(events)]
        fits["network_fallback"] = network_fallback(fits["direction"], fits["ok"], network,
                                                    self.network_kappa[: len(events)], self.fallback_containment)
        fits["fit_direction"] = fits["direction"]
        fits["direction"] = np.where(fits["network_fallback"][:, None], network, fits["direction"])
        fits["ok"] = np.ones(len(events), dtype=bool)  # the network answers where the fit failed
        return fits

    def extra_candidates(self, index: int, pos_m: np.ndarray, time_ns: np.ndarray
                         ) -> list[tuple[np.ndarray, np.ndarray, float, float]]:
        network = ring_fit_track(pos_m, time_ns, self.network_directions[index])
        refined = chi2_fit(pos_m, time_ns, network.direction, network.point_m, network.time_ns, self.sigma_ns)
        return [(network.direction, network.point_m, network.time_ns, -np.inf), refined]

    def direction_log_prior(self, index: int) -> Callable[[np.ndarray], float] | None:
        if not self.network_prior:
            return None
        mean, kappa = self.network_directions[index], float(self.network_kappa[index])
        return lambda u: kappa * float(u @ mean)  # vMF log-density up to a constant


class NetworkPriorLikelihoodBaseline(NetworkStartedLikelihoodBaseline):
    """The network-started likelihood fit with the network's direction also as a prior: its von Mises-Fisher density
    with the network's calibrated kappa (the task's `kappa_calibrated`, whose 68 % cone holds 68 % of the validation
    events) multiplies the likelihood, so the fit maximises the posterior and a track far outside the network's
    cone needs that much more likelihood to win.

    Args: as NetworkStartedLikelihoodBaseline.
    """

    label = "likelihood fit with the network's prior"
    config_key = "baseline.track_likelihood_network_prior"
    network_prior = True


class TrackHitLikelihoodBaseline(TrackLikelihoodBaseline):
    """The likelihood fit with the hit / no-hit term: besides the time residuals of its hits, the probability of
    every PMT of the detector to have a hit or none for the track (HitProbability).

    Args: as TrackLikelihoodBaseline.
    """

    label = "likelihood fit with hit / no-hit"
    config_key = "baseline.track_likelihood_hit_probability"
    uses_hit_probability = True


class NetworkStartedHitLikelihoodBaseline(NetworkStartedLikelihoodBaseline):
    """The likelihood fit from the network's starts (NetworkStartedLikelihoodBaseline) with the hit / no-hit term.

    Args: as NetworkStartedLikelihoodBaseline.
    """

    label = "likelihood fit with hit / no-hit from the network"
    config_key = "baseline.track_likelihood_hit_probability_network_start"
    uses_hit_probability = True


class OfficialReconstructionBaseline(Baseline):
    """The reconstruction stored in real KM3NeT files (km3io's best JMuon track) against their MC truth: what the
    collaboration's own fit reaches on the same events. Needs data.real_test_files."""

    label = "official JMuon"

    def evaluate(self, datamodule) -> BaselineResult:
        test = datamodule.events("test")
        if not test or test[0].official_direction is None:
            raise ConfigError("baseline=official_reconstruction: the test events have no stored reconstruction; "
                              "set data.real_test_files to KM3NeT offline files")
        true_direction, true_log10e = _true_direction_and_energy(test)
        error = physics.angle_between_deg(np.stack([e.official_direction for e in test]), true_direction)
        log10e = np.log10(np.array([e.official_energy_gev for e in test]))
        good = np.isfinite(error)
        metrics = {"fit_fraction": float(good.mean())}
        if good.any():
            metrics |= {"angular_error_deg_median": float(np.median(error[good])),
                        "angular_error_deg_mean": float(np.mean(error[good]))}
        return BaselineResult(self.label, metrics, {"angular_error_deg": error, "log10_energy": log10e, "ok": good})


#: the event-shape features of TrackShowerFeatureBaseline, in the order of `event_shape_features`
EVENT_SHAPE_FEATURES = (
    "log10_triggered_hits", "triggered_doms", "triggered_lines", "log10_time_span_ns", "time_rms_ns",
    "extent_major_m", "extent_middle_m", "extent_minor_m", "vertical_span_m", "front_speed_m_per_ns",
    "front_speed_along_major", "log10_total_tot_ns", "mean_tot_ns",
)


def event_shape_features(hits: np.ndarray) -> np.ndarray:
    """What a muon track and a shower differ in, from the triggered hits alone (no fit): how many hits, DOMs and
    lines; how long the light lasts; the spread of the hits along their principal axes (a track is long and thin,
    a shower of ORCA energies a few metres across, so its hits spread as the light does, in a sphere); the speed of
    the light front from the line fit r(t) = r0 + v t (a muon's hits move along it at about c, 0.3 m/ns) and how
    much of it lies along the major axis; the charge (time over threshold). All hits when fewer than three are
    triggered."""
    use = hits["triggered"] if int(hits["triggered"].sum()) >= 3 else np.ones(len(hits), dtype=bool)
    hits = hits[use]
    pos_m, time_ns = hit_positions_m(hits), hits["t_ns"].astype(np.float64)
    centred = pos_m - pos_m.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred / len(hits))  # ascending
    extent = np.sqrt(np.clip(eigenvalues[::-1], 0.0, None))
    t_centred = time_ns - time_ns.mean()
    velocity = (centred * t_centred[:, None]).mean(axis=0) / max(float(np.mean(t_centred**2)), 1e-12)
    speed = float(np.linalg.norm(velocity))
    along_major = abs(float(velocity @ eigenvectors[:, -1])) / speed if speed > 0 else 0.0
    tot = hits["tot_ns"].astype(np.float64)
    return np.array([
        np.log10(len(hits)), len(np.unique(hits["dom_id"])), len(np.unique(hits["du_id"])),
        np.log10(max(float(np.ptp(time_ns)), 1.0)), float(np.std(time_ns)), *extent,
        float(np.ptp(pos_m[:, 2])), speed, along_major, np.log10(max(float(tot.sum()), 1.0)), float(tot.mean()),
    ])


def shower_point_fit(pos_m: np.ndarray, time_ns: np.ndarray, sigma_ns: float = 3.0) -> tuple[np.ndarray, float, float]:
    """The shower hypothesis: a point source of light at a vertex (physics.shower_arrival_time_ns), fitted to the
    hits' times by the same robust (soft-L1) least squares as the track fit; starts at the hits' centre, at the
    time that puts the earliest hit on time. Returns vertex, time, cost."""
    start = pos_m.mean(axis=0)
    t_start = float(np.min(time_ns - np.linalg.norm(pos_m - start, axis=1) / physics.V_GROUP_M_PER_NS))

    def residuals(p):
        return (time_ns - physics.shower_arrival_time_ns(pos_m, p[:3], p[3])) / sigma_ns

    result = least_squares(residuals, np.append(start, t_start), loss="soft_l1", f_scale=1.0,
                           x_scale=np.array([5.0, 5.0, 5.0, 20.0]), max_nfev=200)
    return result.x[:3], float(result.x[3]), float(result.cost)


#: the features `fit_features` adds to the event-shape ones (NaN when an event has too few triggered hits to fit)
FIT_FEATURES = ("track_cost_per_hit", "track_window_fraction", "shower_cost_per_hit", "track_minus_shower_cost")


def fit_features(hits: np.ndarray, sigma_ns: float = 3.0) -> np.ndarray:
    """The track / shower likelihood comparison of classical particle identification, with numl's fits on the
    triggered hits: the robust cost per hit of the best chi-square track candidate (prefit_candidates) and of the
    point-shower fit, both fitted to and scored on the same hits, and their difference (negative: the hits look
    more like a track); and the share of all hits inside the refitted track's residual window (fit_track's
    refit), which counts the late light a track gathers."""
    pos_m, time_ns, triggered = hit_positions_m(hits), hits["t_ns"].astype(np.float64), hits["triggered"]
    prefit = prefit_candidates(pos_m, time_ns, triggered, sigma_ns)
    if isinstance(prefit, str):  # too few triggered hits to fit
        return np.full(len(FIT_FEATURES), np.nan)
    candidates, t_ref = prefit
    n_triggered = int(triggered.sum())
    track_cost = min(fit[3] for fit in candidates)
    refit = refit_best_candidate(pos_m, time_ns, candidates, t_ref, sigma_ns)
    _, _, shower_cost = shower_point_fit(pos_m[triggered], time_ns[triggered] - t_ref, sigma_ns)
    return np.array([track_cost / n_triggered, refit.n_hits_used / len(hits), shower_cost / n_triggered,
                     (track_cost - shower_cost) / n_triggered])


class TrackShowerFeatureBaseline(Baseline):
    """Classical particle identification: gradient-boosted decision trees (scikit-learn's
    HistGradientBoostingClassifier, a kept implementation) on `event_shape_features`, trained on the training
    events to tell nu_mu CC (tracks) from the rest, as the task's track head is. KM3NeT/ORCA's classical
    classifier is a random forest on features of its track and shower fits: with `fit_features` the BDT also
    takes numl's track and point-shower fits (`fit_features`, about 0.1 s per event); without, it costs
    milliseconds per event.

    Args:
        max_train_events: train on at most this many training events (the first ones).
        max_iterations: boosting iterations (early stopping, scored on a tenth of the training events held out,
            ends it sooner).
        fit_features: add the track / shower fit features (FIT_FEATURES).
    """

    def __init__(self, max_train_events: int | None = None, max_iterations: int = 300,
                 fit_features: bool = False) -> None:
        if max_train_events is not None:
            check_positive("baseline.track_shower_features.max_train_events", max_train_events, integer=True)
        check_positive("baseline.track_shower_features.max_iterations", max_iterations, integer=True)
        self.max_train_events, self.max_iterations = max_train_events, max_iterations
        self.fit_features = bool(fit_features)
        self.label = "event-shape + fit BDT" if self.fit_features else "event-shape BDT"
        self.classifier = None

    def _features_and_labels(self, events) -> tuple[np.ndarray, np.ndarray]:
        features = np.stack([event_shape_features(e.hits) for e in events])
        if self.fit_features:
            fits = [fit_features(e.hits) for e in with_progress(events, "track / shower fits")]
            features = np.hstack([features, np.stack(fits)])
        return features, np.array([bool(is_track_event(int(e.truth["event_type"]))) for e in events])

    def fit(self, datamodule) -> TrackShowerFeatureBaseline:
        from sklearn.ensemble import HistGradientBoostingClassifier

        features, is_track = self._features_and_labels(datamodule.events("train")[: self.max_train_events])
        if is_track.all() or not is_track.any():
            raise ConfigError("baseline=track_shower_features: the training events hold one class only; it needs "
                              "nu_mu CC and other events (data.events.numu_cc_fraction between 0 and 1)")
        self.classifier = HistGradientBoostingClassifier(max_iter=self.max_iterations, early_stopping=True,
                                                         random_state=0).fit(features, is_track)
        return self

    def evaluate(self, datamodule) -> BaselineResult:
        from sklearn.metrics import roc_auc_score

        features, is_track = self._features_and_labels(datamodule.events("test"))
        probability = self.classifier.predict_proba(features)[:, 1]
        metrics = {"track_accuracy": float(np.mean((probability > 0.5) == is_track))}
        if 0 < is_track.sum() < len(is_track):
            metrics["track_auroc"] = float(roc_auc_score(is_track, probability))
        return BaselineResult(self.label, metrics, {"track_probability": probability})
