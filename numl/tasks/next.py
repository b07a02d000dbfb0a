"""NEXT 0vbb signal vs background: binary classification on dense grids or sparse voxels, with the
working-point metrics NEXT-White quotes (background rejection at 65 % and 72 % signal efficiency)."""

from __future__ import annotations

from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC

from numl.metrics import NEXT_WORKING_POINTS, BackgroundRejectionFactor
from numl.tasks.classification import BinaryClassificationTask


def topology_metrics() -> dict[str, Metric]:
    """auroc and background_rejection_at_65 / _72 (rejection factor 1 / background efficiency at 65 / 72 %
    signal efficiency): the names `numl.baselines.next` reports with baseline/."""
    metrics: dict[str, Metric] = {"auroc": BinaryAUROC()}
    for eff in NEXT_WORKING_POINTS:
        metrics[f"background_rejection_at_{round(eff * 100)}"] = BackgroundRejectionFactor(eff)
    return metrics


class NextClassificationTask(BinaryClassificationTask):
    """Signal (two electrons) vs background (one electron). Dense models read batch["voxels"]; models
    with `sparse_input = True` get (features, coords, batch size)."""

    def __init__(self, model, optimizer=None, scheduler=None, **hparams) -> None:
        hparams.setdefault("input_key", "features" if getattr(model, "sparse_input", False) else "voxels")
        super().__init__(model, optimizer, scheduler, **hparams)

    def configure_metrics(self) -> MetricCollection:
        return MetricCollection({"acc": BinaryAccuracy(), **topology_metrics()})

    def forward(self, batch):
        if getattr(self.model, "sparse_input", False):
            return self.model(batch["features"], batch["coords"], len(batch[self.label_key])).reshape(-1)
        return self.model(batch[self.input_key]).reshape(-1)
