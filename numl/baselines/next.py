"""Classical NEXT topology cut: find the two ends of the main track, sum the energy around each end
("blobs") and cut on the smaller blob (NEXT-White, Kekic et al. JHEP01(2021)189; IC's paolina)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, dijkstra
from scipy.spatial import cKDTree
from sklearn.metrics import roc_auc_score

from numl.baselines.base import Baseline, BaselineResult
from numl.metrics import NEXT_WORKING_POINTS as WORKING_POINTS
from numl.metrics import background_rejection_factor
from numl.utils.errors import check_positive

#: graphs larger than this use a double Dijkstra sweep instead of all pairs to find the track ends
MAX_ALL_PAIRS_VOXELS = 1500


@dataclass
class Topology:
    blob1_kev: float  # the more energetic blob
    blob2_kev: float
    track_length_mm: float  # shortest-path length between the two ends over the voxel graph
    ends_mm: np.ndarray  # (2, 3)


def track_topology(voxel_mm: np.ndarray, voxel_kev: np.ndarray, voxel_size_mm: float,
                   blob_radius_mm: float) -> Topology:
    """Ends of the main track (the connected component with most energy) as the pair of voxels
    farthest apart along the voxel graph (26-neighbour edges, Euclidean weights), and the energy of
    the main-track voxels within `blob_radius_mm` of each end."""
    if len(voxel_kev) == 0:
        raise ValueError("empty event: no voxels above threshold")
    pairs = cKDTree(voxel_mm).query_pairs(np.sqrt(3) * voxel_size_mm * 1.01, output_type="ndarray")
    n = len(voxel_kev)
    lengths = np.linalg.norm(voxel_mm[pairs[:, 0]] - voxel_mm[pairs[:, 1]], axis=1)
    graph = coo_matrix((lengths, (pairs[:, 0], pairs[:, 1])), shape=(n, n)).tocsr()
    _, component = connected_components(graph, directed=False)
    main = component == np.argmax(np.bincount(component, weights=voxel_kev))
    nodes = np.flatnonzero(main)
    sub = graph[nodes][:, nodes]
    if len(nodes) == 1:
        a = b = 0
        length = 0.0
    elif len(nodes) <= MAX_ALL_PAIRS_VOXELS:
        dist = dijkstra(sub, directed=False)
        a, b = np.unravel_index(np.argmax(dist), dist.shape)
        length = float(dist[a, b])
    else:
        a = int(np.argmax(dijkstra(sub, directed=False, indices=0)))
        from_a = dijkstra(sub, directed=False, indices=a)
        b = int(np.argmax(from_a))
        length = float(from_a[b])
    ends = voxel_mm[nodes[[a, b]]]
    track_mm, track_kev = voxel_mm[nodes], voxel_kev[nodes]
    blobs = [float(track_kev[np.linalg.norm(track_mm - end, axis=1) < blob_radius_mm].sum()) for end in ends]
    return Topology(blob1_kev=max(blobs), blob2_kev=min(blobs), track_length_mm=length, ends_mm=ends)


def classification_metrics(scores: np.ndarray, labels: np.ndarray, prefix: str = "") -> dict[str, float]:
    """The metric names the NEXT tasks log, so baseline and networks share one table."""
    labels = np.asarray(labels).astype(int)
    out = {f"{prefix}auroc": float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else float("nan")}
    for eff in WORKING_POINTS:
        out[f"{prefix}background_rejection_at_{round(eff * 100)}"] = background_rejection_factor(scores, labels, eff)
    return out


def blob_energies(events: list[tuple[np.ndarray, np.ndarray]], voxel_size_mm: float,
                  blob_radius_mm: float) -> np.ndarray:
    """(n, 2) keV: the more and the less energetic blob of each (voxel_mm, voxel_kev) event."""
    topologies = [track_topology(mm, kev, voxel_size_mm, blob_radius_mm) for mm, kev in events]
    return np.array([[t.blob1_kev, t.blob2_kev] for t in topologies]).reshape(-1, 2)


def blob_cut_scores(events: list[tuple[np.ndarray, np.ndarray]], voxel_size_mm: float,
                    blob_radius_mm: float) -> np.ndarray:
    """Discriminant of the cut for each (voxel_mm, voxel_kev) event: the smaller blob energy in keV."""
    return blob_energies(events, voxel_size_mm, blob_radius_mm)[:, 1]


class BlobCutBaseline(Baseline):
    """The cut on the smaller blob's energy, on exactly the test events (all their voxels); the metrics carry
    the names the NEXT tasks log (auroc, background_rejection_at_65 / _72)."""

    label = "blob cut"

    def __init__(self, blob_radius_mm: float = 18.0) -> None:
        check_positive("baseline.blob_cut.blob_radius_mm", blob_radius_mm)
        self.blob_radius_mm = float(blob_radius_mm)

    def evaluate(self, datamodule) -> BaselineResult:
        voxel_size_mm = datamodule.sim.voxel_size_mm
        test = datamodule.events("test")
        events = [(e.voxel_centres_mm(voxel_size_mm), e.voxel_energy_kev) for e in test]
        blobs = blob_energies(events, voxel_size_mm, self.blob_radius_mm)
        labels = np.array([e.label for e in test])
        # both blobs per event, for the figure NEXT publishes (the larger against the smaller, per class)
        return BaselineResult(self.label, classification_metrics(blobs[:, 1], labels),
                              {"score": blobs[:, 1], "label": labels, "blob1_kev": blobs[:, 0]})
