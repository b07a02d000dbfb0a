"""Classical NEXT topology cut: find the two ends of the main track, sum the energy around each end
("blobs") and cut on the smaller blob (NEXT-White, Kekic et al. JHEP01(2021)189; IC's paolina)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, dijkstra
from scipy.spatial import cKDTree
from sklearn.metrics import roc_auc_score, roc_curve

from numl.metrics import NEXT_WORKING_POINTS as WORKING_POINTS
from numl.metrics import background_rejection_factor

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


def blob_cut_scores(events: list[tuple[np.ndarray, np.ndarray]], voxel_size_mm: float,
                    blob_radius_mm: float) -> np.ndarray:
    """Discriminant of the cut for each (voxel_mm, voxel_kev) event: the smaller blob energy in keV."""
    return np.array([track_topology(mm, kev, voxel_size_mm, blob_radius_mm).blob2_kev for mm, kev in events])


def save_roc_comparison(curves: dict[str, tuple[np.ndarray, np.ndarray]], path) -> None:
    """Background rejection versus signal efficiency for several discriminants on the same events."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for name, (scores, labels) in curves.items():
        fpr, tpr, _ = roc_curve(np.asarray(labels).astype(int), scores)
        ok = fpr > 0
        ax.plot(tpr[ok], 1 / fpr[ok], label=f"{name} (AUROC {roc_auc_score(labels, scores):.3f})")
    for eff in WORKING_POINTS:
        ax.axvline(eff, color="grey", lw=0.7, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("signal efficiency")
    ax.set_ylabel("background rejection factor 1/ε_b")
    ax.set_xlim(0.3, 1.0)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
