"""Regression of one or more targets with a predicted Gaussian uncertainty per target."""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import MeanSquaredError, MetricCollection

from numl.metrics import OneSigmaCoverage, gaussian_nll
from numl.tasks.base import BaseTask


class GaussianRegressionTask(BaseTask):
    """The model outputs 2 x n_targets numbers: means, then log variances (in target units)."""

    def __init__(self, model: nn.Module, optimizer=None, scheduler=None, input_key: str = "inputs",
                 target_keys: tuple[str, ...] | list[str] = ("target",), target_scale: float = 1.0, **hparams) -> None:
        self.input_key = input_key
        self.target_keys = list(target_keys)
        super().__init__(model, optimizer, scheduler, input_key=input_key, target_keys=self.target_keys,
                         target_scale=target_scale, **hparams)
        # Targets are divided by target_scale inside the network's space so that O(1) outputs suffice.
        self.target_scale = float(target_scale)

    def configure_metrics(self) -> MetricCollection:
        return MetricCollection({"rmse": MeanSquaredError(squared=False), "coverage_1sigma": OneSigmaCoverage()})

    def _targets(self, batch) -> torch.Tensor:
        return torch.stack([batch[k].float() for k in self.target_keys], dim=-1) / self.target_scale

    def forward(self, batch):
        out = self.model(batch[self.input_key]).reshape(len(batch[self.input_key]), 2, len(self.target_keys))
        return out[:, 0], out[:, 1].clamp(-20, 20)

    def compute_loss(self, outputs, batch):
        mean, log_var = outputs
        return gaussian_nll(mean, 0.5 * log_var, self._targets(batch)).mean()

    def update_metrics(self, metrics, outputs, batch):
        mean, log_var = outputs
        target = self._targets(batch) * self.target_scale
        mean = mean * self.target_scale
        metrics["rmse"].update(mean, target)
        metrics["coverage_1sigma"].update(mean, torch.exp(0.5 * log_var) * self.target_scale, target)

    def predictions(self, outputs, batch):
        mean, log_var = outputs
        out = {}
        for i, key in enumerate(self.target_keys):
            out[f"{key}_pred"] = mean[:, i] * self.target_scale
            out[f"{key}_sigma"] = torch.exp(0.5 * log_var[:, i]) * self.target_scale
            out[key] = batch[key].float()
        return out

    def attribution_forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model(inputs).reshape(len(inputs), 2, len(self.target_keys))[:, 0, 0]
