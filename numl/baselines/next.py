"""Classical NEXT topology cut: find the two ends of the main track, sum the energy around each end
("blobs") and cut on the smaller blob (NEXT-White, Kekic et al. JHEP01(2021)189; IC's paolina)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.sparse.csgraph import connected_components, dijkstra
from sklearn.metrics import roc_auc_score

from numl.baselines.base import Baseline, BaselineResult
from numl.metrics import NEXT_WORKING_POINTS as WORKING_POINTS
from numl.metrics import background_rejection_factor
from numl.sim.next.tracks import voxel_graph
from numl.utils.errors import ConfigError, check_positive

#: graphs larger than this use a double Dijkstra sweep instead of all pairs to find the track ends
MAX_ALL_PAIRS_VOXELS = 1500


@dataclass
class Topology:
    blob1_kev: float  # the more energetic blob
    blob2_kev: float
    track_length_mm: float  # shortest-path length between the two ends over the voxel graph
    ends_mm: np.ndarray  # (2, 3)
    n_tracks: int  # connected pieces of the event (NEXT's classical selection keeps single-track events)


def farthest_pair(graph) -> tuple[int, int, float]:
    """The two nodes of a connected graph farthest apart along it, and their distance (mm)."""
    n = graph.shape[0]
    if n == 1:
        return 0, 0, 0.0
    if n <= MAX_ALL_PAIRS_VOXELS:
        dist = dijkstra(graph, directed=False)
        a, b = np.unravel_index(np.argmax(dist), dist.shape)
        return int(a), int(b), float(dist[a, b])
    a = int(np.argmax(dijkstra(graph, directed=False, indices=0)))
    from_a = dijkstra(graph, directed=False, indices=a)
    b = int(np.argmax(from_a))
    return a, b, float(from_a[b])


def regroup_voxels(voxel_mm: np.ndarray, voxel_kev: np.ndarray, voxel_size_mm: float,
                   size_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """The voxels (centres, cubes of `voxel_size_mm`) summed into cubic voxels of `size_mm` on the detector's grid
    (centres, keV): NEXT's topology (IC's Paolina) finds tracks on 5 mm voxels of the deconvolved hits, whose
    1-2 mm cells leave gaps where the ionisation thins. A cell that straddles a boundary shares its energy by the
    overlapping volume, so every voxel collects the same volume of cells (2 mm cells into 5 mm voxels would
    otherwise give 2 or 3 cells per axis, 8 to 27 per voxel, by position alone)."""
    low = voxel_mm - voxel_size_mm / 2
    first = np.floor(low / size_mm).astype(np.int64)
    # along each axis a cell reaches at most one voxel further when it is not larger than the voxels
    share_first = np.clip(((first + 1) * size_mm - low) / voxel_size_mm, 0.0, 1.0)
    cells, weights = [], []
    for step in np.ndindex(2, 2, 2):
        step = np.array(step)
        weight = np.prod(np.where(step == 0, share_first, 1 - share_first), axis=1)
        used = weight > 1e-12
        cells.append(first[used] + step)
        weights.append(voxel_kev[used] * weight[used])
    cell = np.concatenate(cells)
    unique, inverse = np.unique(cell, axis=0, return_inverse=True)
    return (unique + 0.5) * size_mm, np.bincount(inverse.ravel(), weights=np.concatenate(weights))


def drop_end_voxels(voxel_mm: np.ndarray, voxel_kev: np.ndarray, voxel_size_mm: float, threshold_kev: float,
                    min_track_voxels: int) -> tuple[np.ndarray, np.ndarray]:
    """Paolina's end-point cleaning: as long as a track (a connected piece of at least `min_track_voxels` voxels)
    ends in a voxel below `threshold_kev`, that voxel is removed and its energy given to its closest neighbours
    (shared by their energy), so that a faint spur does not become the track end the blob is measured at.
    The event's energy is kept."""
    mm, kev = voxel_mm, np.asarray(voxel_kev, dtype=float).copy()
    while True:
        graph = voxel_graph(mm, voxel_size_mm)
        n_pieces, piece = connected_components(graph, directed=False)
        keep = np.ones(len(kev), dtype=bool)
        for p in range(n_pieces):
            nodes = np.flatnonzero(piece == p)
            if len(nodes) < min_track_voxels:
                continue
            a, b, _ = farthest_pair(graph[nodes][:, nodes])
            for end in {int(nodes[a]), int(nodes[b])}:
                if kev[end] >= threshold_kev:
                    continue
                row = graph.getrow(end)
                alive = keep[row.indices]
                neighbours, distance = row.indices[alive], row.data[alive]
                if len(neighbours) == 0:
                    continue
                closest = neighbours[np.isclose(distance, distance.min())]
                total = kev[closest].sum()
                kev[closest] += kev[end] * (kev[closest] / total if total > 0 else 1 / len(closest))
                keep[end] = False
        if keep.all():
            return mm, kev
        mm, kev = mm[keep], kev[keep]


def track_topology(voxel_mm: np.ndarray, voxel_kev: np.ndarray, voxel_size_mm: float,
                   blob_radius_mm: float) -> Topology:
    """Ends of the main track (the connected component with most energy) as the pair of voxels
    farthest apart along the voxel graph (26-neighbour edges, Euclidean weights), and the energy of
    the main-track voxels within `blob_radius_mm` of each end."""
    if len(voxel_kev) == 0:
        raise ValueError("empty event: no voxels above threshold")
    graph = voxel_graph(voxel_mm, voxel_size_mm)
    n_tracks, component = connected_components(graph, directed=False)
    nodes = np.flatnonzero(component == np.argmax(np.bincount(component, weights=voxel_kev)))
    a, b, length = farthest_pair(graph[nodes][:, nodes])
    ends = voxel_mm[nodes[[a, b]]]
    track_mm, track_kev = voxel_mm[nodes], voxel_kev[nodes]
    blobs = [float(track_kev[np.linalg.norm(track_mm - end, axis=1) < blob_radius_mm].sum()) for end in ends]
    return Topology(blob1_kev=max(blobs), blob2_kev=min(blobs), track_length_mm=length, ends_mm=ends,
                    n_tracks=int(n_tracks))


@dataclass(frozen=True)
class TopologyReconstruction:
    """How the cut builds tracks from an event's voxels (NEXT's Paolina: `voxel_size_mm` 5, `end_voxel_threshold_kev`
    10, `min_track_voxels` 3 on deconvolved hits, IC's isaura.conf). The defaults use the voxels as simulated."""

    blob_radius_mm: float = 18.0
    voxel_size_mm: float | None = None  # regroup into voxels of this size first; None: as simulated
    end_voxel_threshold_kev: float = 0.0  # drop track-end voxels below this energy; 0: none dropped
    min_track_voxels: int = 3  # tracks with fewer voxels keep their ends

    def __call__(self, voxel_mm: np.ndarray, voxel_kev: np.ndarray, data_voxel_size_mm: float) -> Topology:
        size = data_voxel_size_mm
        if self.voxel_size_mm is not None and self.voxel_size_mm != data_voxel_size_mm:
            voxel_mm, voxel_kev = regroup_voxels(voxel_mm, voxel_kev, data_voxel_size_mm, self.voxel_size_mm)
            size = self.voxel_size_mm
        if self.end_voxel_threshold_kev > 0 and len(voxel_kev):
            voxel_mm, voxel_kev = drop_end_voxels(voxel_mm, voxel_kev, size, self.end_voxel_threshold_kev,
                                                  self.min_track_voxels)
        return track_topology(voxel_mm, voxel_kev, size, self.blob_radius_mm)


def classification_metrics(scores: np.ndarray, labels: np.ndarray, prefix: str = "") -> dict[str, float]:
    """The metric names the NEXT tasks log, so baseline and networks share one table."""
    labels = np.asarray(labels).astype(int)
    out = {f"{prefix}auroc": float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else float("nan")}
    for eff in WORKING_POINTS:
        out[f"{prefix}background_rejection_at_{round(eff * 100)}"] = background_rejection_factor(scores, labels, eff)
    return out


def blob_energies(events: list[tuple[np.ndarray, np.ndarray]], voxel_size_mm: float,
                  topology: TopologyReconstruction) -> np.ndarray:
    """(n, 2) keV: the more and the less energetic blob of each (voxel_mm, voxel_kev) event."""
    topologies = [topology(mm, kev, voxel_size_mm) for mm, kev in events]
    return np.array([[t.blob1_kev, t.blob2_kev] for t in topologies]).reshape(-1, 2)


def blob_cut_scores(events: list[tuple[np.ndarray, np.ndarray]], voxel_size_mm: float,
                    blob_radius_mm: float) -> np.ndarray:
    """Discriminant of the cut for each (voxel_mm, voxel_kev) event: the smaller blob energy in keV."""
    return blob_energies(events, voxel_size_mm, TopologyReconstruction(blob_radius_mm))[:, 1]


def classical_chain_scores(cut_scores: np.ndarray, n_tracks: np.ndarray) -> np.ndarray:
    """NEXT's classical selection as one discriminant, for ROC curves (Ferrario et al. 2019: fiducial, one track,
    energy, then the blob cut): the cut's score for single-track events, below every score for the others."""
    cut_scores = np.asarray(cut_scores, dtype=float)
    floor = cut_scores.min() - 1.0 if len(cut_scores) else 0.0
    return np.where(np.asarray(n_tracks) == 1, cut_scores, floor)


def classical_chain_rejection(cut_scores: np.ndarray, n_tracks: np.ndarray, labels: np.ndarray,
                              signal_efficiency: float) -> float:
    """Background rejection of the single-track selection followed by the blob cut, at `signal_efficiency` of all
    signal events (the multi-track background counts as rejected; the cut is the k-th highest single-track signal
    score, k = ceil(efficiency x all signal), as numl.metrics counts working points). NaN without both classes, or
    where fewer signal events are single-track than k: the chain cannot keep so much signal at any cut."""
    labels, single = np.asarray(labels).astype(int), np.asarray(n_tracks) == 1
    cut_scores = np.asarray(cut_scores, dtype=float)
    n_signal, n_background = int(labels.sum()), int((labels == 0).sum())
    k = max(math.ceil(signal_efficiency * n_signal - 1e-9), 1)
    kept_signal = np.sort(cut_scores[single & (labels == 1)])[::-1]
    if n_signal == 0 or n_background == 0 or len(kept_signal) < k:
        return float("nan")
    passing = int((single & (labels == 0) & (cut_scores >= kept_signal[k - 1])).sum())
    return n_background / max(passing, 1)


class BlobCutBaseline(Baseline):
    """The cut on the smaller blob's energy, on exactly the test events (all their voxels); the metrics carry
    the names the NEXT tasks log (auroc, background_rejection_at_65 / _72). `voxel_size_mm`, `end_voxel_threshold_kev`
    and `min_track_voxels` build the tracks as NEXT's Paolina does (TopologyReconstruction)."""

    label = "blob cut"

    def __init__(self, blob_radius_mm: float = 18.0, voxel_size_mm: float | None = None,
                 end_voxel_threshold_kev: float = 0.0, min_track_voxels: int = 3) -> None:
        check_positive("baseline.blob_cut.blob_radius_mm", blob_radius_mm)
        if voxel_size_mm is not None:
            check_positive("baseline.blob_cut.voxel_size_mm", voxel_size_mm)
        check_positive("baseline.blob_cut.end_voxel_threshold_kev", end_voxel_threshold_kev, allow_zero=True)
        check_positive("baseline.blob_cut.min_track_voxels", min_track_voxels, integer=True)
        self.topology = TopologyReconstruction(float(blob_radius_mm),
                                               None if voxel_size_mm is None else float(voxel_size_mm),
                                               float(end_voxel_threshold_kev), int(min_track_voxels))

    def evaluate(self, datamodule) -> BaselineResult:
        voxel_size_mm = datamodule.sim.voxel_size_mm
        if self.topology.voxel_size_mm is not None and self.topology.voxel_size_mm < voxel_size_mm:
            raise ConfigError(f"baseline.blob_cut.voxel_size_mm={self.topology.voxel_size_mm:g} is below the data's "
                              f"voxels (data.sim.voxel_size_mm={voxel_size_mm:g}); voxels can only be regrouped "
                              "into larger ones")
        test = datamodule.events("test")
        topologies = [self.topology(e.voxel_centres_mm(voxel_size_mm), e.voxel_energy_kev, voxel_size_mm)
                      for e in test]
        blob1, blob2 = (np.array([getattr(t, key) for t in topologies]) for key in ("blob1_kev", "blob2_kev"))
        n_tracks = np.array([t.n_tracks for t in topologies])
        labels = np.array([e.label for e in test])
        single = n_tracks == 1
        metrics = {**classification_metrics(blob2, labels),
                   "single_track_signal_fraction": float(single[labels == 1].mean()),
                   "single_track_background_fraction": float(single[labels == 0].mean()),
                   # the network is compared with this too: the cut alone ignores that NEXT's selection already
                   # rejects the multi-track (Compton, X-ray) background a network can see
                   **{f"chain_background_rejection_at_{round(eff * 100)}":
                      classical_chain_rejection(blob2, n_tracks, labels, eff) for eff in WORKING_POINTS}}
        # both blobs per event, for the figure NEXT publishes (the larger against the smaller, per class)
        return BaselineResult(self.label, metrics,
                              {"score": blob2, "label": labels, "blob1_kev": blob1, "n_tracks": n_tracks})
