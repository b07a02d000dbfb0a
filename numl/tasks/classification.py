"""Binary classification (signal vs background, massive vs massless) on one logit per event."""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC

from numl.tasks.base import BaseTask


class BinaryClassificationTask(BaseTask):
    """BCE on a single logit. `input_key` and `label_key` name the batch entries."""

    def __init__(self, model: nn.Module, optimizer=None, scheduler=None, input_key: str = "inputs",
                 label_key: str = "label", positive_class: str = "signal", negative_class: str = "background",
                 **hparams) -> None:
        self.input_key = input_key
        self.label_key = label_key
        super().__init__(model, optimizer, scheduler, input_key=input_key, label_key=label_key,
                         positive_class=positive_class, negative_class=negative_class, **hparams)

    def configure_losses(self) -> None:
        self.loss_fn = nn.BCEWithLogitsLoss()

    def configure_metrics(self) -> MetricCollection:
        return MetricCollection({"acc": BinaryAccuracy(), "auroc": BinaryAUROC()})

    def forward(self, batch):
        return self.model(batch[self.input_key]).reshape(-1)

    def compute_loss(self, outputs, batch):
        return self.loss_fn(outputs, batch[self.label_key].float())

    def update_metrics(self, metrics, outputs, batch):
        metrics.update(torch.sigmoid(outputs), batch[self.label_key].long())

    def predictions(self, outputs, batch):
        return {"score": torch.sigmoid(outputs), "label": batch[self.label_key]}

    def attribution_forward(self, inputs: torch.Tensor) -> torch.Tensor:
        # The logit of the positive class: its attribution says what pushes towards that class.
        return self.model(inputs).reshape(-1)
