"""PETALO tasks: interaction point with a predicted error per coordinate, and on-the-fly event tagging.

Position (PetaloPositionTask), two ways to predict the error, chosen by `uncertainty`:
- "gaussian_nll": one network outputs (r, r*phi, z) and their log variances, trained on the Gaussian NLL.
- "error_net": the seed's scheme: the position network is trained on the squared error, and a separate
  fully connected error network (``error_model``) learns the log variance of the (frozen, detached)
  residuals with the Gaussian NLL, i.e. it predicts the expected squared error of each event.

Calibration: a network trained on the NLL can still come out over- or under-confident (finite training,
heavy-tailed multi-site residuals). With ``recalibrate_sigma`` (default on), one scale factor per coordinate
is fitted on the validation events of all ranks after every validation epoch, never in the sanity check
(`fit_sigma_scale`: the factor that puts 68.3 % of them within one sigma), and stored as the buffer
``sigma_scale``; every sigma in mm the task reports (metrics, predictions, the exported module) is multiplied
by it. ``sigma_raw_mm`` in the predictions keeps the network's own value. Training never sees the factor.

Tagging (PetaloTaggerTask): a logit per event, positive = discard (multi-site Compton events, whose
first interaction point the pattern does not pin down). The operating point is a threshold that keeps
``keep_efficiency`` of the single-site validation events (of all ranks, not in the sanity check); it is stored
with the weights.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torchmetrics import CatMetric, MeanSquaredError, Metric, MetricCollection

from numl.metrics import (
    ONE_SIGMA_COVERAGE,
    BackgroundRejectedFraction,
    EventStatistic,
    OneSigmaCoverage,
    gaussian_nll,
    signal_efficiency_threshold,
)
from numl.sim.petalo import COORDINATES
from numl.tasks.base import BaseTask
from numl.tasks.classification import BinaryClassificationTask
from numl.utils.errors import ConfigError, check_choice, check_range


class _PositionWithError(nn.Module):
    def __init__(
        self,
        model: nn.Module,
        error_model: nn.Module | None,
        center_mm: torch.Tensor,
        scale_mm: torch.Tensor,
        sigma_scale: torch.Tensor,
    ) -> None:
        super().__init__()
        self.model, self.error_model = model, error_model
        self.register_buffer("center_mm", center_mm.clone())
        self.register_buffer("scale_mm", scale_mm.clone())
        self.register_buffer("sigma_scale", sigma_scale.clone())

    def forward(self, pattern: torch.Tensor) -> torch.Tensor:
        out = self.model(pattern)
        log_var = out[:, 3:6] if self.error_model is None else self.error_model(pattern)[:, :3]
        sigma = torch.exp(0.5 * log_var.clamp(-20.0, 20.0)) * (self.scale_mm * self.sigma_scale)
        sigma = torch.nan_to_num(sigma, nan=math.inf)
        return torch.cat([out[:, :3] * self.scale_mm + self.center_mm, sigma], dim=1)


class PetaloPositionTask(BaseTask):
    """Interaction point (r, r*phi, z) in mm with a predicted sigma per coordinate.

    Args:
        model: network on `sipm_pattern`; outputs 6 numbers (gaussian_nll) or 3 (error_net).
        error_model: the error network for uncertainty="error_net" (3 outputs: log variances).
        target_center_mm, target_scale_mm: the networks work in (position - center) / scale.
        recalibrate_sigma: fit `sigma_scale` on the validation events after each validation epoch.
    """

    input_key = "sipm_pattern"
    module_arguments = ("error_model",)

    def __init__(
        self,
        model: nn.Module,
        optimizer=None,
        scheduler=None,
        error_model: nn.Module | None = None,
        uncertainty: str = "gaussian_nll",
        target_center_mm: list[float] = (175.0, 0.0, 0.0),
        target_scale_mm: list[float] = (15.0, 15.0, 15.0),
        recalibrate_sigma: bool = True,
        **hparams: Any,
    ) -> None:
        check_choice("task.recalibrate_sigma", recalibrate_sigma, (True, False))
        check_choice("task.uncertainty", uncertainty, ("gaussian_nll", "error_net"))
        if uncertainty == "error_net" and error_model is None:
            raise ConfigError("task.error_model: missing; task.uncertainty=error_net needs an error network")
        if uncertainty == "gaussian_nll" and error_model is not None:
            raise ConfigError("task.error_model: only used with task.uncertainty=error_net; set it to null")
        if len(target_center_mm) != 3 or len(target_scale_mm) != 3:
            raise ConfigError("task.target_center_mm / task.target_scale_mm: need three values (r, rphi, z)")
        self.uncertainty = uncertainty
        super().__init__(
            model,
            optimizer,
            scheduler,
            uncertainty=uncertainty,
            target_center_mm=list(target_center_mm),
            target_scale_mm=list(target_scale_mm),
            recalibrate_sigma=recalibrate_sigma,
            **hparams,
        )
        self.error_model = error_model
        self.recalibrate_sigma = recalibrate_sigma
        self.register_buffer("center_mm", torch.tensor(list(target_center_mm), dtype=torch.float32))
        self.register_buffer("scale_mm", torch.tensor(list(target_scale_mm), dtype=torch.float32))
        self.register_buffer("sigma_scale", torch.ones(3))
        # validation (residual, network sigma) [N, 6] in mm; torchmetrics gathers them from all ranks on compute
        self.val_residuals_and_sigmas = CatMetric(nan_strategy="disable")

    def configure_metrics(self) -> MetricCollection:
        metrics: dict[str, Metric] = {}
        for name in COORDINATES:
            metrics[f"{name}_fwhm_mm"] = EventStatistic("fwhm")
            metrics[f"{name}_rms_mm"] = MeanSquaredError(squared=False)
            metrics[f"{name}_coverage_1sigma"] = OneSigmaCoverage()
        return MetricCollection(metrics)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised means and log variances, each [B, 3]."""
        pattern = batch[self.input_key]
        out = self.model(pattern)
        if self.uncertainty == "gaussian_nll":
            mean, log_var = out[:, :3], out[:, 3:6]
        else:
            mean, log_var = out[:, :3], self.error_model(pattern)[:, :3]
        return mean, log_var.clamp(-20, 20)

    def _normalised_target(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return (batch["position_mm"].float() - self.center_mm) / self.scale_mm

    def compute_loss(self, outputs, batch):
        mean, log_var = outputs
        target = self._normalised_target(batch)
        if self.uncertainty == "gaussian_nll":
            return gaussian_nll(mean, 0.5 * log_var, target).mean()
        # Position net: squared error. Error net: NLL of the residuals with the position held fixed.
        return ((mean - target) ** 2).mean() + gaussian_nll(mean.detach(), 0.5 * log_var, target).mean()

    def to_mm(self, outputs, calibrated: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted position and sigma in mm (times `sigma_scale` if calibrated); sigma is inf for flagged events."""
        mean, log_var = outputs
        position = mean * self.scale_mm + self.center_mm
        sigma = torch.exp(0.5 * log_var) * self.scale_mm
        if calibrated:
            sigma = sigma * self.sigma_scale
        return position, torch.nan_to_num(sigma, nan=math.inf)

    def update_metrics(self, metrics, outputs, batch):
        position, sigma = self.to_mm(outputs)
        target = batch["position_mm"].float()
        if self.recalibrate_sigma and getattr(metrics, "prefix", None) == "val/":
            raw_sigma = self.to_mm(outputs, calibrated=False)[1]
            self.val_residuals_and_sigmas.update(torch.cat([position - target, raw_sigma], dim=1).detach())
        for i, name in enumerate(COORDINATES):
            # flagged events (NaN position) count as not covered, and are left out of FWHM and RMS
            finite = torch.isfinite(position[:, i])
            metrics[f"{name}_fwhm_mm"].update(position[:, i] - target[:, i])
            metrics[f"{name}_rms_mm"].update(position[finite, i], target[finite, i])
            metrics[f"{name}_coverage_1sigma"].update(position[:, i], sigma[:, i], target[:, i])

    def on_validation_epoch_end(self) -> None:
        if not self.recalibrate_sigma:
            return
        # compute() gathers every rank's events (a collective: all ranks call it, also in the sanity check)
        values = self.val_residuals_and_sigmas.compute()
        self.val_residuals_and_sigmas.reset()
        # The sanity check sees two batches of an untrained network: no calibration from those.
        if self.trainer.sanity_checking or isinstance(values, list):
            return
        values = values.double().cpu().numpy()
        scale = fit_sigma_scale(values[:, :3], values[:, 3:])
        self.sigma_scale.copy_(torch.as_tensor(scale, dtype=self.sigma_scale.dtype))
        for name, value in zip(COORDINATES, scale, strict=True):
            self.log(f"val/{name}_sigma_scale", float(value))

    def predictions(self, outputs, batch):
        position, sigma = self.to_mm(outputs)
        out = {
            "position_mm_pred": position,
            "sigma_mm": sigma,
            "sigma_raw_mm": self.to_mm(outputs, calibrated=False)[1],
            "valid": torch.isfinite(position).all(dim=1),
        }
        for key in ("position_mm", "depth_mm", "multi_site", "energy_kev", "n_interactions"):
            out[key] = batch[key]
        return out

    def export_module(self) -> nn.Module:
        """One module for inference: SiPM pattern -> [B, 6] = (r, r*phi, z) in mm, then their calibrated sigmas."""
        return _PositionWithError(self.model, self.error_model, self.center_mm, self.scale_mm, self.sigma_scale)

    def attribution_forward(self, inputs: torch.Tensor) -> torch.Tensor:
        # z, the coordinate the seed asks to cut on.
        return self.model(inputs)[:, 2]


def fit_sigma_scale(residual: np.ndarray | torch.Tensor, sigma: np.ndarray | torch.Tensor) -> np.ndarray:
    """Per-coordinate factor s such that a fraction ONE_SIGMA_COVERAGE of events has |residual| <= s * sigma.

    residual, sigma: [N, 3]. The factor is the 68.3 % quantile of |residual| / sigma, so it matches the
    coverage the issue asks for without being pulled by the long multi-site tails (an NLL-optimal factor,
    the RMS pull, would be). Events with a non-finite pull (flagged, sigma = inf) are left out; a coordinate
    with no usable event keeps the factor 1.
    """
    pull = np.abs(np.asarray(residual, dtype=np.float64) / np.asarray(sigma, dtype=np.float64))
    if pull.ndim != 2:
        raise ValueError(f"residual and sigma: expected [N, coordinates], got shape {pull.shape}")
    scale = np.ones(pull.shape[1])
    for i in range(pull.shape[1]):
        ok = pull[:, i][np.isfinite(pull[:, i])]
        if ok.size:
            scale[i] = max(float(np.quantile(ok, ONE_SIGMA_COVERAGE)), 1e-6)
    return scale


class PetaloTaggerTask(BinaryClassificationTask):
    """Discard tagger: BCE on one logit, label `multi_site` (1 = discard), SiPM pattern in.

    `keep_efficiency` sets the operating point: the logit threshold that keeps this fraction of
    single-site validation events. It is recomputed after every validation epoch and saved as the
    buffer `discard_threshold_logit`, so the exported tagger decides with `logit > threshold`.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer=None,
        scheduler=None,
        input_key: str = "sipm_pattern",
        label_key: str = "multi_site",
        keep_efficiency: float = 0.9,
        **hparams: Any,
    ) -> None:
        check_range("task.keep_efficiency", keep_efficiency, 0.01, 0.999)
        self.keep_efficiency = float(keep_efficiency)
        super().__init__(
            model,
            optimizer,
            scheduler,
            input_key=input_key,
            label_key=label_key,
            positive_class="discard (multi-site)",
            negative_class="keep (single-site)",
            keep_efficiency=keep_efficiency,
            **hparams,
        )
        self.register_buffer("discard_threshold_logit", torch.tensor(0.0))
        # validation (logit, label) [N, 2]; torchmetrics gathers them from all ranks on compute
        self.val_logits_and_labels = CatMetric(nan_strategy="disable")

    def configure_metrics(self) -> MetricCollection:
        metrics = super().configure_metrics()
        keep = int(round(100 * self.keep_efficiency))
        # the fraction of multi-site events discarded at the cut keeping keep_efficiency of the single-site ones
        metrics.add_metrics({f"discard_rejection_at_keep{keep}": BackgroundRejectedFraction(self.keep_efficiency)})
        return metrics

    def update_metrics(self, metrics, outputs, batch):
        labels = batch[self.label_key].long()
        if getattr(metrics, "prefix", None) == "val/":  # the validation logits set the operating point
            self.val_logits_and_labels.update(torch.stack([outputs, labels.to(outputs.dtype)], dim=1).detach())
        probabilities = torch.sigmoid(outputs)
        for name, metric in metrics.items():
            if name.endswith(("acc", "auroc")):
                metric.update(probabilities, labels)
            else:  # the kept "signal" is single-site (label 0); lower logit = more single-site-like
                metric.update(-outputs, 1 - labels)

    def on_validation_epoch_end(self) -> None:
        # compute() gathers every rank's events (a collective: all ranks call it, also in the sanity check)
        values = self.val_logits_and_labels.compute()
        self.val_logits_and_labels.reset()
        if self.trainer.sanity_checking or isinstance(values, list):
            return
        good = values[values[:, 1] < 0.5, 0]
        if len(good):  # keep logit <= threshold: the same cut as the discard_rejection metric
            self.discard_threshold_logit.fill_(float(-signal_efficiency_threshold(-good, self.keep_efficiency)))

    def predictions(self, outputs, batch):
        out = super().predictions(outputs, batch)
        out["logit"] = outputs
        out["discard"] = outputs > self.discard_threshold_logit
        for key in ("position_mm", "depth_mm", "energy_kev", "n_interactions"):
            out[key] = batch[key]
        return out
