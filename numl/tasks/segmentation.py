"""Per-voxel segmentation (track / blob / other) and the explainable event classifier built on it.

The classifier reads the segmentation like a physicist reads an event display: group the voxels
predicted "blob" into connected clusters and take the energy of the second most energetic cluster.
A 0vbb event has two blobs of a few hundred keV; a single electron has one. The same metric names as
the NEXT classification task (auroc, background_rejection_at_65/72) put it in the same table.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryJaccardIndex, MulticlassAccuracy

from numl.sim.next import FEATURE_SCALE_KEV
from numl.sim.next.generator import BLOB, SEGMENT_CLASSES
from numl.tasks.base import BaseTask
from numl.tasks.next import topology_metrics
from numl.utils.errors import ConfigError

#: energy scale (keV) of the squashing that turns the second-blob energy into a score in [0, 1)
SCORE_SCALE_KEV = 400.0


def second_blob_energy_kev(coords: np.ndarray, energy_kev: np.ndarray, is_blob: np.ndarray,
                           batch_size: int) -> np.ndarray:
    """Energy of the second most energetic connected cluster of blob voxels in each event (0 if < 2 clusters).

    coords: (N, 4) = (event, x, y, z) voxel coordinates; clusters use 26-neighbour connectivity."""
    out = np.zeros(batch_size)
    for event in range(batch_size):
        sel = (coords[:, 0] == event) & is_blob
        if sel.sum() < 2:
            continue
        points = coords[sel, 1:].astype(np.float64)
        pairs = cKDTree(points).query_pairs(np.sqrt(3) + 1e-6, output_type="ndarray")
        n = len(points)
        graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
        n_clusters, cluster = connected_components(graph, directed=False)
        if n_clusters >= 2:
            out[event] = np.sort(np.bincount(cluster, weights=energy_kev[sel]))[-2]
    return out


class SegmentationTask(BaseTask):
    """Cross-entropy per voxel (class weights for the rarer blob and other voxels)."""

    input_key = "features"

    def __init__(self, model: nn.Module, optimizer=None, scheduler=None,
                 class_weights: tuple[float, ...] = (1.0, 2.0, 2.0), **hparams) -> None:
        if len(class_weights) != len(SEGMENT_CLASSES) or any(w <= 0 for w in class_weights):
            raise ConfigError(f"task.class_weights={list(class_weights)}: must be {len(SEGMENT_CLASSES)} positive "
                              f"numbers, one per class {', '.join(SEGMENT_CLASSES)}")
        if not getattr(model, "sparse_input", False):
            raise ConfigError(f"model._target_={type(model).__name__}: segmentation needs a sparse per-voxel model "
                              "such as numl.models.unet3d.SparseUNet3D")
        # a plain list, not Hydra's ListConfig: checkpoints then load with torch.load(weights_only=True)
        class_weights = [float(w) for w in class_weights]
        self.class_weights = class_weights
        super().__init__(model, optimizer, scheduler, class_weights=class_weights, **hparams)

    def configure_losses(self) -> None:
        self.loss_fn = nn.CrossEntropyLoss(weight=torch.tensor(self.class_weights))

    def configure_metrics(self) -> MetricCollection:
        # one binary IoU per class: Lightning logs scalar metrics only
        return MetricCollection({
            "voxel_acc": MulticlassAccuracy(len(SEGMENT_CLASSES), average="micro"),
            **{f"iou_{name}": BinaryJaccardIndex() for name in SEGMENT_CLASSES},
            **topology_metrics(),
        })

    def forward(self, batch):
        return self.model(batch["features"], batch["coords"], len(batch["label"]))

    def compute_loss(self, outputs, batch):
        return self.loss_fn(outputs, batch["segment"])

    def event_scores(self, outputs: torch.Tensor, batch) -> torch.Tensor:
        """Second-blob energy (keV) from the predicted segmentation, per event."""
        predicted_blob = (outputs.argmax(dim=1) == BLOB).cpu().numpy()
        energy_kev = batch["features"][:, 0].detach().cpu().numpy() * FEATURE_SCALE_KEV
        scores = second_blob_energy_kev(batch["coords"].cpu().numpy(), energy_kev, predicted_blob, len(batch["label"]))
        return torch.as_tensor(scores, dtype=torch.float32, device=outputs.device)

    def update_metrics(self, metrics, outputs, batch):
        score = self.event_scores(outputs, batch)
        score = score / (score + SCORE_SCALE_KEV)
        predicted = outputs.detach().argmax(dim=1)
        for name, metric in metrics.items(keep_base=True, copy_state=False):
            if name == "voxel_acc":
                metric.update(predicted, batch["segment"])
            elif name.startswith("iou_"):
                c = SEGMENT_CLASSES.index(name.removeprefix("iou_"))
                metric.update((predicted == c).long(), (batch["segment"] == c).long())
            else:
                metric.update(score, batch["label"])

    def predictions(self, outputs, batch):
        second_blob = self.event_scores(outputs, batch)
        return {"score": second_blob / (second_blob + SCORE_SCALE_KEV), "second_blob_kev": second_blob,
                "label": batch["label"]}
