"""Observables of KM3NeT events for comparing a simulation with an official file, event by event and hit by hit.

Time residuals are taken against the direct Cherenkov light of the true muon leaving the vertex (truth
``vertex_time_ns`` in the hits' clock: 0 in numl's simulation; in an offline file the interaction's time within
its timeslice, set by numl.data.km3net.read_offline_file). Hits earlier than direct light by more than
``NOISE_RESIDUAL_NS`` cannot be light of the event (scattering only delays), so they measure the K-40 singles rate.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from numl.sim.km3net import physics

#: hits this much earlier than the muon's direct light are noise (the PMT transit-time spread is a few ns)
NOISE_RESIDUAL_NS = -100.0
EVENT_OBSERVABLES = {
    "energy_gev": "neutrino energy (GeV)",
    "n_hits": "hits per event",
    "n_triggered": "triggered hits per event",
    "n_triggered_doms": "DOMs with triggered hits",
    "n_prompt_hits": "hits within [-20, 50] ns of direct muon light",
    "window_ns": "readout window (first to last hit, ns)",
    "vertex_radius_m": "vertex distance from the detector axis (m)",
    "noise_rate_hz": "K-40 singles rate per PMT (Hz)",
}
HIT_OBSERVABLES = {
    "residual_ns": "time residual of all hits (ns)",
    "triggered_residual_ns": "time residual of triggered hits (ns)",
    "tot_ns": "time over threshold of all hits (ns)",
    "triggered_tot_ns": "time over threshold of triggered hits (ns)",
    "hits_per_dom": "hits per DOM with hits",
}


def vertex_muon_track(truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, float] | None:
    """(vertex, muon direction, vertex time) of the muon leaving the interaction; None without a muon."""
    direction = np.array([truth["muon_dir_x"], truth["muon_dir_y"], truth["muon_dir_z"]], dtype=np.float64)
    if not np.all(np.isfinite(direction)) or np.linalg.norm(direction) < 0.5:
        return None
    vertex = np.array([truth["vertex_x"], truth["vertex_y"], truth["vertex_z"]], dtype=np.float64)
    return vertex, direction, float(truth["vertex_time_ns"])


def muon_residuals_ns(hits: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Time residuals of `hits` w.r.t. direct Cherenkov light of the vertex muon; NaN without a muon."""
    track = vertex_muon_track(truth)
    if track is None:
        return np.full(len(hits), np.nan)
    pos = np.stack([hits["pos_x"], hits["pos_y"], hits["pos_z"]], axis=1).astype(np.float64)
    return hits["t_ns"] - physics.cherenkov_arrival_time_ns(pos, *track)


#: direct light: a hit within this of the muon's direct-light time (the PMT transit-time spread and small delays)
DIRECT_RESIDUAL_NS = 20.0
#: muon light only: PMTs whose Cherenkov emission point lies this far past the vertex (away from the shower light)
SHOWER_CLEARANCE_M = 20.0


def direct_hit_probability(events: list, detector, distance_edges_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per bin of distance from the true muon track: the probability that a PMT has a hit of direct muon light
    (|residual| < DIRECT_RESIDUAL_NS), over every PMT of `detector` whose Cherenkov emission point lies on the muon
    between SHOWER_CLEARANCE_M past the vertex and the muon's range (numl's constant_a model for every sample, as the
    official files' truth has no range), and the number of such PMTs. This is
    the detector's response to muon light, independent of which events trigger: the light yield per PMT."""
    n_bins = len(distance_edges_m) - 1
    hit_pmts, all_pmts = np.zeros(n_bins), np.zeros(n_bins)
    for event in events:
        track = vertex_muon_track(event.truth)
        if track is None:
            continue
        _, rho_m, emission_m = physics.track_geometry(detector.pmt_pos_m, *track[:2])
        range_m = physics.muon_range_m(event.truth["muon_energy_gev"], "constant_a")
        on_muon = (emission_m > SHOWER_CLEARANCE_M) & (emission_m < range_m)
        direct_ns = physics.cherenkov_arrival_time_ns(detector.pmt_pos_m, *track)
        rows = detector.pmt_rows(event.hits["dom_id"], event.hits["channel_id"])
        hit = np.zeros(detector.n_pmts, dtype=bool)
        hit[rows[np.abs(event.hits["t_ns"] - direct_ns[rows]) < DIRECT_RESIDUAL_NS]] = True
        index = np.digitize(rho_m, distance_edges_m) - 1
        used = on_muon & (index >= 0) & (index < n_bins)
        np.add.at(hit_pmts, index[used], hit[used])
        np.add.at(all_pmts, index[used], 1)
    return hit_pmts / np.maximum(all_pmts, 1), all_pmts


#: late light: residuals in this window; the K-40 hits expected there are counted in an equally long window before
#: any light of the event (NOISE_RESIDUAL_NS and earlier)
LATE_WINDOW_NS = (DIRECT_RESIDUAL_NS, 220.0)
LATE_NOISE_WINDOW_NS = (-300.0, NOISE_RESIDUAL_NS)


def muon_light_hits(event) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Per hit of `event`: its PMT's distance from the true muon (m), its time residual (ns) and whether the PMT's
    Cherenkov emission point lies SHOWER_CLEARANCE_M or more past the vertex (muon light, not the vertex
    shower's); None without a muon."""
    track = vertex_muon_track(event.truth)
    if track is None:
        return None
    pos = np.stack([event.hits["pos_x"], event.hits["pos_y"], event.hits["pos_z"]], axis=1).astype(np.float64)
    _, rho_m, emission_m = physics.track_geometry(pos, *track[:2])
    return rho_m, muon_residuals_ns(event.hits, event.truth), emission_m >= SHOWER_CLEARANCE_M


def late_light_share(events: list, distance_edges_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per bin of a hit's PMT distance from the true muon: the share of late light among the hits of muon light,
    late / (late + direct), with late the hits in LATE_WINDOW_NS minus the K-40 hits expected there and direct the
    hits within DIRECT_RESIDUAL_NS; and the number of direct hits. Hits on PMTs whose Cherenkov emission point lies
    SHOWER_CLEARANCE_M or more past the vertex. Scattering sets this share (a ratio at one distance, whatever the
    events' geometry)."""
    n_bins = len(distance_edges_m) - 1
    direct, late, noise = np.zeros(n_bins), np.zeros(n_bins), np.zeros(n_bins)
    for event in events:
        per_hit = muon_light_hits(event)
        if per_hit is None:
            continue
        rho_m, residual, clear = per_hit
        index = np.digitize(rho_m, distance_edges_m) - 1
        used = (index >= 0) & (index < n_bins) & clear
        for total, selected in ((direct, np.abs(residual) < DIRECT_RESIDUAL_NS),
                                (late, (residual >= LATE_WINDOW_NS[0]) & (residual < LATE_WINDOW_NS[1])),
                                (noise, (residual >= LATE_NOISE_WINDOW_NS[0]) & (residual < LATE_NOISE_WINDOW_NS[1]))):
            total += np.bincount(index[used & selected], minlength=n_bins)[:n_bins]
    late_signal = late - noise
    return late_signal / np.maximum(late_signal + direct, 1.0), direct


def second_late_hit_rate(events: list, max_distance_m: float = 10.0) -> tuple[float, int]:
    """Late hits (LATE_WINDOW_NS) on a PMT that also has a direct hit, per direct hit, for PMTs within
    max_distance_m of the true muon (and SHOWER_CLEARANCE_M past the vertex), and the number of direct hits: next
    to the track the first photons are direct, so late light shows as a second hit on the same PMT. K-40 gives
    about rate x late window per direct hit (0.0015 at 7.5 kHz)."""
    second, direct_hits = 0, 0
    for event in events:
        per_hit = muon_light_hits(event)
        if per_hit is None:
            continue
        rho_m, residual, clear = per_hit
        near = (rho_m < max_distance_m) & clear
        pmt = event.hits["dom_id"].astype(np.int64) * 64 + event.hits["channel_id"]
        direct = near & (np.abs(residual) < DIRECT_RESIDUAL_NS)
        late = near & (residual >= LATE_WINDOW_NS[0]) & (residual < LATE_WINDOW_NS[1])
        second += int(np.isin(pmt[late], pmt[direct]).sum())
        direct_hits += int(direct.sum())
    return second / max(direct_hits, 1), direct_hits


#: K-40 coincidences: two noise-like hits on different PMTs of one DOM closer than this; chance pairs are counted
#: in the side band of time differences (uniform there) and scaled to the window's width
K40_PAIR_WINDOW_NS = 10.0
K40_SIDE_BAND_NS = (20.0, 100.0)
#: side-band pairs times this: the chance pairs expected in the window (uniform in the time difference)
K40_SIDE_BAND_TO_WINDOW = K40_PAIR_WINDOW_NS / (K40_SIDE_BAND_NS[1] - K40_SIDE_BAND_NS[0])


def k40_pair_counts(events: list) -> dict[str, np.ndarray | int]:
    """Pairs of noise-like hits (earlier than any light of the event: muon residual below NOISE_RESIDUAL_NS) on
    different PMTs of one DOM: `in_window` closer than K40_PAIR_WINDOW_NS, `side_band` with time differences in
    K40_SIDE_BAND_NS, `noise_hits` (the exposure), and the angles (deg) between the PMT axes of the pairs of both.
    Genuine coincidences are in_window - side_band * K40_SIDE_BAND_TO_WINDOW."""
    in_window = side_band = noise_hits = 0
    angles_in, angles_side = [], []
    for event in events:
        hits = event.hits[muon_residuals_ns(event.hits, event.truth) < NOISE_RESIDUAL_NS]
        noise_hits += len(hits)
        order = np.lexsort((hits["t_ns"], hits["dom_id"]))
        hits = hits[order]
        starts = np.flatnonzero(np.r_[True, hits["dom_id"][1:] != hits["dom_id"][:-1]])
        for lo, hi in zip(starts, np.r_[starts[1:], len(hits)], strict=True):
            if hi - lo < 2:
                continue
            dom = hits[lo:hi]
            first, second = np.triu_indices(len(dom), 1)
            dt = np.abs(dom["t_ns"][second] - dom["t_ns"][first])
            other_pmt = dom["channel_id"][first] != dom["channel_id"][second]
            direction = np.stack([dom["dir_x"], dom["dir_y"], dom["dir_z"]], 1).astype(np.float64)
            cos = np.einsum("ij,ij->i", direction[first], direction[second])
            angle = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
            near = other_pmt & (dt < K40_PAIR_WINDOW_NS)
            side = other_pmt & (dt > K40_SIDE_BAND_NS[0]) & (dt < K40_SIDE_BAND_NS[1])
            in_window += int(near.sum())
            side_band += int(side.sum())
            angles_in.append(angle[near])
            angles_side.append(angle[side])
    return {"in_window": in_window, "side_band": side_band, "noise_hits": noise_hits,
            "angles_in_window_deg": np.concatenate(angles_in) if angles_in else np.zeros(0),
            "angles_side_band_deg": np.concatenate(angles_side) if angles_side else np.zeros(0)}


def event_observables(events: list, pmt_pos_m: np.ndarray, axis_xy_m: np.ndarray) -> dict[str, np.ndarray]:
    """Per-event (EVENT_OBSERVABLES) and pooled per-hit (HIT_OBSERVABLES) arrays of events with `.hits` and
    `.truth`; `pmt_pos_m` is every PMT of the detector (for the noise exposure), `axis_xy_m` the detector axis."""
    per_event = {key: [] for key in EVENT_OBSERVABLES}
    per_hit = {key: [] for key in HIT_OBSERVABLES}
    for event in events:
        hits, truth = event.hits, event.truth
        t, triggered = hits["t_ns"], hits["triggered"]
        residual = muon_residuals_ns(hits, truth)
        track = vertex_muon_track(truth)  # every PMT's direct-light time, for the noise exposure
        direct_ns = physics.cherenkov_arrival_time_ns(pmt_pos_m, *track) if track else np.full(len(pmt_pos_m), np.nan)
        # K-40 rate: noise-like hits over the PMT time each PMT spent in the window before its direct light
        exposure_ns = np.clip(direct_ns + NOISE_RESIDUAL_NS - t.min(), 0.0, None).sum() if len(t) else 0.0
        n_noise = int(np.sum((residual < NOISE_RESIDUAL_NS) & (t > t.min())))  # the first hit opens the exposure
        per_event["energy_gev"].append(float(truth["energy_gev"]))
        per_event["n_hits"].append(len(hits))
        per_event["n_triggered"].append(int(triggered.sum()))
        per_event["n_triggered_doms"].append(len(np.unique(hits["dom_id"][triggered])))
        per_event["n_prompt_hits"].append(int(np.sum((residual > -20.0) & (residual < 50.0))))
        per_event["window_ns"].append(float(t.max() - t.min()) if len(t) else 0.0)
        per_event["vertex_radius_m"].append(float(np.hypot(truth["vertex_x"] - axis_xy_m[0],
                                                           truth["vertex_y"] - axis_xy_m[1])))
        per_event["noise_rate_hz"].append(n_noise / exposure_ns * 1e9 if exposure_ns > 1e4 else np.nan)
        per_hit["residual_ns"].append(residual)
        per_hit["triggered_residual_ns"].append(residual[triggered])
        per_hit["tot_ns"].append(hits["tot_ns"].astype(np.float64))
        per_hit["triggered_tot_ns"].append(hits["tot_ns"][triggered].astype(np.float64))
        per_hit["hits_per_dom"].append(np.unique(hits["dom_id"], return_counts=True)[1].astype(np.float64))
    out = {key: np.asarray(values, dtype=np.float64) for key, values in per_event.items()}
    out.update({key: np.concatenate(values) if values else np.zeros(0) for key, values in per_hit.items()})
    return out


def compare_observables(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> list[dict]:
    """Per observable: 10/50/90 % quantiles of both and the two-sample Kolmogorov-Smirnov statistic and p-value
    (hit observables pool hits of many events, so their p-values are optimistic: compare their statistics)."""
    rows = []
    for key, title in {**EVENT_OBSERVABLES, **HIT_OBSERVABLES}.items():
        a, b = reference[key], candidate[key]
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        if len(a) == 0 or len(b) == 0:
            continue
        ks = stats.ks_2samp(a, b)
        rows.append({"observable": key, "title": title, "per": "event" if key in EVENT_OBSERVABLES else "hit",
                     "reference_quantiles": np.percentile(a, [10, 50, 90]).tolist(),
                     "candidate_quantiles": np.percentile(b, [10, 50, 90]).tolist(),
                     "ks_statistic": float(ks.statistic), "ks_p": float(ks.pvalue),
                     "n_reference": int(len(a)), "n_candidate": int(len(b))})
    return rows
