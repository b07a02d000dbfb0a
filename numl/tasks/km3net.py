"""KM3NeT multi-task reconstruction: direction (von Mises-Fisher) and log10 energy (Gaussian) from hit sets.

The backbone (numl.models.edgeconv.DynEdge or numl.models.hit_transformer.HitTransformer) maps the hits to one
embedding per event; the task's DirectionEnergyHead turns it into a unit `direction`, its concentration `kappa`,
`log10_energy` and `log10_energy_log_sigma`; with data.prefit the direction is predicted in each event's
prefit-track frame and turned back into the detector's by the batch's `prefit_rotation`. The loss is the vMF
negative log likelihood plus `energy_weight` times the Gaussian one. Metrics: median and mean angular error (deg),
sigma(log10 E), and the kappa calibration `direction_coverage_68`: the fraction of events whose true direction
lies inside the predicted 68 % cone (0.68 when kappa is calibrated).

Particle identification (CLASS_HEADS): with `track_weight` > 0 a second head gives each event a track logit (nu_mu
CC, event type 0, against every other type: the track / shower classes of KM3NeT/ORCA) trained by binary
cross-entropy weighted by `track_weight`; metrics `track_auroc` and `track_accuracy` (probability > 0.5),
predictions `track_probability`. `atmospheric_muon_weight` > 0 adds the same for atmospheric muon bundles against
neutrinos (`atmospheric_muon_auroc`, `atmospheric_muon_probability`).

Calibration: after every validation epoch (not the sanity check) one factor `kappa_scale` is fitted on the
validation events of all ranks (`fit_kappa_scale`) and stored as a buffer; predictions carry the network's
`kappa` and `kappa_calibrated` = kappa_scale * kappa.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import CatMetric, MeanMetric, MetricCollection
from torchmetrics.classification import BinaryAccuracy

from numl.metrics import BinaryAUROCOrNaN, EventStatistic, angular_error_deg, gaussian_nll
from numl.models.edgeconv import mlp
from numl.sim.km3net.events import is_atmospheric_muon_event, is_track_event
from numl.tasks.base import BaseTask
from numl.tasks.losses import vmf_angle_cdf, vmf_nll_3d
from numl.utils.errors import ConfigError, check_positive

#: keys of a batch passed through to predictions when present (real files carry the official reconstruction)
PASSTHROUGH_KEYS = ("direction", "log10_energy", "energy_gev", "event_type", "n_hits", "event_index",
                    "official_direction", "official_log10_energy", "prefit_direction")


class DirectionEnergyHead(nn.Module):
    """Event embedding -> unit direction, vMF concentration kappa, log10 E and its Gaussian log sigma."""

    def __init__(self, in_dim: int, hidden: int = 128, kappa_min: float = 1e-3) -> None:
        super().__init__()
        self.net = mlp([in_dim, hidden, hidden])
        self.out = nn.Linear(hidden, 6)
        self.kappa_min = kappa_min

    def forward(self, embedding: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.out(self.net(embedding))
        direction = F.normalize(out[:, 0:3], dim=-1, eps=1e-8)
        kappa = F.softplus(out[:, 3]) * 10.0 + self.kappa_min  # x10: typical kappas are 10-1000, keep raw O(1)
        return {"direction": direction, "direction_raw": out[:, 0:3], "kappa": kappa, "log10_energy": out[:, 4],
                "log10_energy_log_sigma": out[:, 5].clamp(-7.0, 3.0)}


class KM3NeTRecoTask(BaseTask):
    """Args: model: a hit backbone with `embedding_dim`; head_hidden: width of the heads' hidden layers;
    track_weight, atmospheric_muon_weight: weights of the class-probability losses (CLASS_HEADS), 0 for no head."""

    input_key = "hit_features"

    def __init__(self, model: nn.Module, optimizer=None, scheduler=None, energy_weight: float = 1.0,
                 head_hidden: int = 128, prefit: str = "none", track_weight: float = 0.0,
                 atmospheric_muon_weight: float = 0.0, **hparams) -> None:
        check_positive("task.track_weight", track_weight, allow_zero=True)
        check_positive("task.atmospheric_muon_weight", atmospheric_muon_weight, allow_zero=True)
        super().__init__(model, optimizer, scheduler, energy_weight=energy_weight, head_hidden=head_hidden,
                         prefit=prefit, track_weight=track_weight, atmospheric_muon_weight=atmospheric_muon_weight,
                         **hparams)
        self.energy_weight = float(energy_weight)
        self.head = DirectionEnergyHead(model.embedding_dim, head_hidden)
        #: the class heads this task trains, with their loss weights; each head is the attribute `<name>_head`
        self.class_weights = {name: float(self.hparams[f"{name}_weight"]) for name in CLASS_HEADS
                              if self.hparams[f"{name}_weight"] > 0.0}
        for name in self.class_weights:
            setattr(self, f"{name}_head", nn.Sequential(mlp([model.embedding_dim, head_hidden]),
                                                        nn.Linear(head_hidden, 1)))
        #: data.prefit: the network predicts a correction to each event's prefit direction
        self.prefit = prefit
        if prefit != "none":
            # the correction starts at zero: the untrained network predicts the prefit direction itself
            with torch.no_grad():
                self.head.out.weight[:3].zero_()
                self.head.out.bias[:3].zero_()
        self.register_buffer("kappa_scale", torch.ones(()))
        # (kappa, angular error) of the validation events; torchmetrics gathers them from all ranks on compute
        self.val_kappa_and_error = CatMetric(nan_strategy="disable")

    def configure_metrics(self) -> MetricCollection:
        metrics = {
            "angular_error_deg_median": EventStatistic("median"),
            "angular_error_deg_mean": MeanMetric(),
            "sigma_log10_energy": EventStatistic("std"),
            "direction_coverage_68": MeanMetric(),
        }
        for name in CLASS_HEADS:  # called by BaseTask before self.class_weights is set
            if self.hparams.get(f"{name}_weight", 0.0) > 0.0:
                metrics.update({f"{name}_auroc": BinaryAUROCOrNaN(), f"{name}_accuracy": BinaryAccuracy()})
        return MetricCollection(metrics)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        embedding = self.model(batch["hit_features"], batch["hit_mask"])
        outputs = self.head(embedding)
        for name in self.class_weights:
            outputs[f"{name}_logit"] = getattr(self, f"{name}_head")(embedding).squeeze(-1)
        if self.prefit != "none":
            if "prefit_rotation" not in batch:
                raise ConfigError(f"task.prefit={self.prefit!r}: the batches carry no prefit frame; set data.prefit "
                                  f"to the same value")
            # data.prefit: the network predicts a correction to the prefit direction, +z in the prefit track's
            # frame: d = normalize(z + raw output), zero when untrained. R maps detector to frame, so the
            # detector-frame direction is R^T d.
            prefit_axis = torch.zeros_like(outputs["direction_raw"])
            prefit_axis[:, 2] = 1.0
            local = F.normalize(prefit_axis + outputs["direction_raw"], dim=-1, eps=1e-8)
            outputs["direction"] = torch.einsum("bji,bj->bi", batch["prefit_rotation"], local)
        return outputs

    def compute_loss(self, outputs, batch) -> torch.Tensor:
        direction_nll = vmf_nll_3d(outputs["direction"], outputs["kappa"], batch["direction"])
        energy_nll = gaussian_nll(outputs["log10_energy"], outputs["log10_energy_log_sigma"], batch["log10_energy"])
        loss = direction_nll.mean() + self.energy_weight * energy_nll.mean()
        for name, weight in self.class_weights.items():
            loss = loss + weight * F.binary_cross_entropy_with_logits(outputs[f"{name}_logit"],
                                                                      event_class(batch, name).float())
        return loss

    def update_metrics(self, metrics, outputs, batch) -> None:
        error_deg = angular_error_deg(outputs["direction"], batch["direction"])
        metrics["angular_error_deg_median"].update(error_deg)
        metrics["angular_error_deg_mean"].update(error_deg)
        metrics["sigma_log10_energy"].update(outputs["log10_energy"] - batch["log10_energy"])
        cdf = vmf_angle_cdf(torch.deg2rad(error_deg), outputs["kappa"])
        metrics["direction_coverage_68"].update((cdf <= 0.68).float())
        for name in self.class_weights:
            probability = torch.sigmoid(outputs[f"{name}_logit"]).detach()  # the epoch's AUROC keeps every value
            target = event_class(batch, name).long()
            metrics[f"{name}_auroc"].update(probability, target)
            metrics[f"{name}_accuracy"].update(probability, target)
        if getattr(metrics, "prefix", None) == "val/":
            self.val_kappa_and_error.update(torch.stack([outputs["kappa"], error_deg], dim=1).detach())

    def on_validation_epoch_end(self) -> None:
        # compute() gathers every rank's events (a collective: all ranks call it, also in the sanity check)
        values = self.val_kappa_and_error.compute()
        self.val_kappa_and_error.reset()
        # The sanity check sees a few batches of an untrained network: no calibration from those.
        if self.trainer.sanity_checking or isinstance(values, list):
            return
        values = values.double().cpu()
        self.kappa_scale.fill_(fit_kappa_scale(values[:, 0].numpy(), values[:, 1].numpy()))
        self.log("val/kappa_scale", self.kappa_scale)

    def predictions(self, outputs, batch) -> dict[str, torch.Tensor]:
        out = {
            "direction_pred": outputs["direction"],
            "kappa": outputs["kappa"],
            "kappa_calibrated": outputs["kappa"] * self.kappa_scale,
            "log10_energy_pred": outputs["log10_energy"],
            "log10_energy_sigma": torch.exp(outputs["log10_energy_log_sigma"]),
            "angular_error_deg": angular_error_deg(outputs["direction"], batch["direction"]),
        }
        for name in self.class_weights:
            out[f"{name}_probability"] = torch.sigmoid(outputs[f"{name}_logit"])
        out.update({key: batch[key] for key in PASSTHROUGH_KEYS if key in batch})
        return out

    def attribution_forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Predicted log10 E from the padded hit features alone; all-zero rows are padding."""
        return self.head(self.model(inputs, inputs.abs().sum(dim=-1) > 0))["log10_energy"]


#: the classes a head can learn, each against every other event: tracks (nu_mu CC) and atmospheric muon bundles
CLASS_HEADS = {"track": is_track_event, "atmospheric_muon": is_atmospheric_muon_event}


def event_class(batch: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """The batch's events of class `name` (CLASS_HEADS)."""
    if "event_type" not in batch:
        raise ConfigError(f"task.{name}_weight > 0: the batches carry no event_type to learn the class from")
    return CLASS_HEADS[name](batch["event_type"])


def fit_kappa_scale(kappa: np.ndarray, angular_error_deg: np.ndarray) -> float:
    """Post-hoc calibration of the vMF concentration: the factor s that minimises the vMF negative log likelihood
    of the observed angular errors under concentrations s * kappa (fit it on validation events, apply it to test
    events). A network trained with the vMF loss for few epochs is usually over- or under-confident overall
    while still ranking events well; one factor fixes the coverage without touching the directions."""
    from scipy.optimize import minimize_scalar

    kappa_t = torch.as_tensor(kappa, dtype=torch.float64)
    cos_t = torch.cos(torch.deg2rad(torch.as_tensor(angular_error_deg, dtype=torch.float64)))
    finite = torch.isfinite(kappa_t) & torch.isfinite(cos_t)
    if not bool(finite.any()):
        raise ValueError("fit_kappa_scale: no event with a finite kappa and angular error")
    kappa_t, cos_t = kappa_t[finite], cos_t[finite]
    unit = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64).expand(len(kappa_t), 3)
    target = torch.stack([torch.sqrt((1 - cos_t**2).clamp(min=0)), torch.zeros_like(cos_t), cos_t], dim=1)

    def nll(log_scale: float) -> float:
        return float(vmf_nll_3d(unit, kappa_t * np.exp(log_scale), target).mean())

    return float(np.exp(minimize_scalar(nll, bounds=(-7.0, 7.0), method="bounded").x))
