"""Tracks of a NEXT event as connected groups of its voxels: what NEXT's track reconstruction (IC's Paolina) builds,
shared by the classical blob cut (numl.baselines.next) and the single-track event selection (numl.data.next)."""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree


def voxel_graph(voxel_mm: np.ndarray, voxel_size_mm: float):
    """Sparse graph of 26-neighbour voxel contiguity with Euclidean edge lengths (mm)."""
    pairs = cKDTree(voxel_mm).query_pairs(np.sqrt(3) * voxel_size_mm * 1.01, output_type="ndarray")
    n = len(voxel_mm)
    lengths = np.linalg.norm(voxel_mm[pairs[:, 0]] - voxel_mm[pairs[:, 1]], axis=1)
    graph = coo_matrix((lengths, (pairs[:, 0], pairs[:, 1])), shape=(n, n)).tocsr()
    return graph + graph.T


def count_tracks(voxel_mm: np.ndarray, voxel_size_mm: float) -> int:
    """Connected pieces of an event's voxels (26-neighbour): NEXT's single-track selection keeps events of one."""
    return int(connected_components(voxel_graph(voxel_mm, voxel_size_mm), directed=False)[0])
