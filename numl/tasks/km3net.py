"""KM3NeT multi-task reconstruction: direction (von Mises-Fisher) and log10 energy (Gaussian) from hit sets.

The backbone (numl.models.edgeconv.DynEdge or numl.models.hit_transformer.HitTransformer) maps the hits to one
embedding per event; the task's DirectionEnergyHead turns it into a unit `direction`, its concentration `kappa`,
`log10_energy` and `log10_energy_log_sigma`. The loss is the vMF negative log likelihood plus `energy_weight`
times the Gaussian one. Metrics: median and mean angular error (deg), sigma(log10 E), and the kappa calibration
`direction_coverage_68`: the fraction of events whose true direction lies inside the predicted 68 % cone (0.68
when kappa is calibrated).

Calibration: after every validation epoch (not the sanity check) one factor `kappa_scale` is fitted on the
validation events of all ranks (`fit_kappa_scale`) and stored as a buffer; predictions carry the network's
`kappa` and `kappa_calibrated` = kappa_scale * kappa.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import CatMetric, MeanMetric, MetricCollection

from numl.metrics import EventStatistic, angular_error_deg, gaussian_nll
from numl.models.edgeconv import mlp
from numl.tasks.base import BaseTask
from numl.tasks.losses import vmf_angle_cdf, vmf_nll_3d

#: keys of a batch passed through to predictions when present (real files carry the official reconstruction)
PASSTHROUGH_KEYS = ("direction", "log10_energy", "energy_gev", "event_type", "n_hits", "event_index",
                    "official_direction", "official_log10_energy")


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
        return {"direction": direction, "kappa": kappa, "log10_energy": out[:, 4],
                "log10_energy_log_sigma": out[:, 5].clamp(-7.0, 3.0)}


class KM3NeTRecoTask(BaseTask):
    """Args: model: a hit backbone with `embedding_dim`; head_hidden: width of the head's hidden layers."""

    input_key = "hit_features"

    def __init__(self, model: nn.Module, optimizer=None, scheduler=None, energy_weight: float = 1.0,
                 head_hidden: int = 128, **hparams) -> None:
        super().__init__(model, optimizer, scheduler, energy_weight=energy_weight, head_hidden=head_hidden,
                         **hparams)
        self.energy_weight = float(energy_weight)
        self.head = DirectionEnergyHead(model.embedding_dim, head_hidden)
        self.register_buffer("kappa_scale", torch.ones(()))
        # (kappa, angular error) of the validation events; torchmetrics gathers them from all ranks on compute
        self.val_kappa_and_error = CatMetric(nan_strategy="disable")

    def configure_metrics(self) -> MetricCollection:
        return MetricCollection({
            "angular_error_deg_median": EventStatistic("median"),
            "angular_error_deg_mean": MeanMetric(),
            "sigma_log10_energy": EventStatistic("std"),
            "direction_coverage_68": MeanMetric(),
        })

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.head(self.model(batch["hit_features"], batch["hit_mask"]))

    def compute_loss(self, outputs, batch) -> torch.Tensor:
        direction_nll = vmf_nll_3d(outputs["direction"], outputs["kappa"], batch["direction"])
        energy_nll = gaussian_nll(outputs["log10_energy"], outputs["log10_energy_log_sigma"], batch["log10_energy"])
        return direction_nll.mean() + self.energy_weight * energy_nll.mean()

    def update_metrics(self, metrics, outputs, batch) -> None:
        error_deg = angular_error_deg(outputs["direction"], batch["direction"])
        metrics["angular_error_deg_median"].update(error_deg)
        metrics["angular_error_deg_mean"].update(error_deg)
        metrics["sigma_log10_energy"].update(outputs["log10_energy"] - batch["log10_energy"])
        cdf = vmf_angle_cdf(torch.deg2rad(error_deg), outputs["kappa"])
        metrics["direction_coverage_68"].update((cdf <= 0.68).float())
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
        out.update({key: batch[key] for key in PASSTHROUGH_KEYS if key in batch})
        return out

    def attribution_forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Predicted log10 E from the padded hit features alone; all-zero rows are padding."""
        return self.head(self.model(inputs, inputs.abs().sum(dim=-1) > 0))["log10_energy"]

    def save_figures(self, predictions: dict[str, torch.Tensor], output_dir: Path) -> list[Path]:
        return save_resolution_figures(predictions, Path(output_dir))


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


def binned_resolution(true_log10e: np.ndarray, angular_error_deg: np.ndarray, log10e_residual: np.ndarray,
                      edges: np.ndarray) -> dict[str, np.ndarray]:
    """Median / mean angular error and sigma(log10 E) in bins of true log10 E (NaN in empty bins)."""
    index = np.digitize(true_log10e, edges) - 1
    out = {k: np.full(len(edges) - 1, np.nan) for k in ("median_deg", "mean_deg", "sigma_log10e", "count")}
    for b in range(len(edges) - 1):
        sel = (index == b) & np.isfinite(angular_error_deg)
        out["count"][b] = sel.sum()
        if sel.any():
            out["median_deg"][b] = np.median(angular_error_deg[sel])
            out["mean_deg"][b] = np.mean(angular_error_deg[sel])
            out["sigma_log10e"][b] = np.std(log10e_residual[sel])
    return out


def save_resolution_figures(predictions: dict[str, torch.Tensor], output_dir: Path,
                            baseline: dict[str, np.ndarray] | None = None) -> list[Path]:
    """Angular error and sigma(log10 E) vs true energy (network, classical fit, official reconstruction when
    present) and the kappa calibration histogram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = {k: v.detach().cpu().numpy() for k, v in predictions.items()}
    true_log10e = p["log10_energy"]
    finite = np.isfinite(true_log10e)
    if not finite.any():
        return []
    edges = np.linspace(np.floor(true_log10e[finite].min() * 4) / 4, np.ceil(true_log10e[finite].max() * 4) / 4, 7)
    centres = 0.5 * (edges[1:] + edges[:-1])
    curves = {"network": binned_resolution(true_log10e, p["angular_error_deg"],
                                           p["log10_energy_pred"] - true_log10e, edges)}
    if baseline is not None and len(baseline["ok"]) == len(true_log10e):
        err = np.where(baseline["ok"], baseline["angular_error_deg"], np.nan)
        curves["chi-square fit"] = binned_resolution(true_log10e, err, baseline["log10_energy"] - true_log10e, edges)
    if "official_direction" in p:
        official_err = np.degrees(np.arccos(np.clip(np.sum(p["official_direction"] * p["direction"], axis=1), -1, 1)))
        curves["official JMuon"] = binned_resolution(true_log10e, official_err,
                                                     p["official_log10_energy"] - true_log10e, edges)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, curve in curves.items():
        axes[0].plot(centres, curve["median_deg"], "o-", label=f"{name} median")
        axes[0].plot(centres, curve["mean_deg"], "x--", label=f"{name} mean", alpha=0.6)
        axes[1].plot(centres, curve["sigma_log10e"], "o-", label=name)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("angular error (deg)")
    axes[1].set_ylabel("sigma(log10 E)")
    for ax in axes:
        ax.set_xlabel("true log10(E / GeV)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(output_dir / "km3net_resolution_vs_energy.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    cdf = vmf_angle_cdf(torch.deg2rad(torch.as_tensor(p["angular_error_deg"], dtype=torch.float64)),
                        torch.as_tensor(p["kappa"], dtype=torch.float64)).numpy()
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.hist(cdf, bins=20, range=(0, 1), density=True, alpha=0.7, label="network")
    ax.axhline(1.0, color="k", lw=1, label="calibrated (uniform)")
    ax.set_xlabel("vMF CDF of the true angular error")
    ax.set_ylabel("density")
    ax.set_title(f"coverage of the 68 % cone: {np.mean(cdf <= 0.68):.2f}")
    ax.legend()
    fig.tight_layout()
    paths.append(output_dir / "km3net_kappa_calibration.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths
