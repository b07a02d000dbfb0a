"""KM3NeT multi-task reconstruction: direction (von Mises-Fisher) and log10 energy (Gaussian) from hit sets.

The model (numl.models.edgeconv.DynEdge or numl.models.hit_transformer.HitTransformer) returns a dict with a
unit `direction`, its concentration `kappa`, `log10_energy` and `log10_energy_log_sigma`. The loss is the vMF
negative log likelihood plus `energy_weight` times the Gaussian one. Metrics: median and mean angular error
(deg), sigma(log10 E), and the kappa calibration `direction_coverage_68`: the fraction of events whose true
direction lies inside the predicted 68 % cone (0.68 when kappa is calibrated).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchmetrics import MeanMetric, Metric, MetricCollection

from numl.tasks.base import BaseTask
from numl.tasks.losses import gaussian_nll, vmf_angle_cdf, vmf_nll_3d

#: keys of a batch passed through to predictions when present (real files carry the official reconstruction)
PASSTHROUGH_KEYS = ("direction", "log10_energy", "energy_gev", "event_type", "n_hits", "event_index",
                    "official_direction", "official_log10_energy")


def angular_error_deg(predicted: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    cos = (predicted * true).sum(dim=-1) / (predicted.norm(dim=-1) * true.norm(dim=-1)).clamp(min=1e-12)
    return torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0)))


class _CatMetric(Metric):
    """Keeps every per-event value of the epoch; subclasses reduce them."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("values", default=[], dist_reduce_fx="cat")

    def update(self, values: torch.Tensor) -> None:  # type: ignore[override]
        self.values.append(values.detach().float().flatten())

    def _all(self) -> torch.Tensor:
        return torch.cat(self.values) if isinstance(self.values, list) else self.values


class MedianMetric(_CatMetric):
    def compute(self) -> torch.Tensor:
        return self._all().median()


class StdMetric(_CatMetric):
    def compute(self) -> torch.Tensor:
        values = self._all()
        return values.std(unbiased=False) if values.numel() > 1 else torch.zeros((), device=values.device)


class KM3NeTRecoTask(BaseTask):
    input_key = "hit_features"

    def __init__(self, model: nn.Module, optimizer=None, scheduler=None, energy_weight: float = 1.0,
                 **hparams) -> None:
        super().__init__(model, optimizer, scheduler, energy_weight=energy_weight, **hparams)
        self.energy_weight = float(energy_weight)

    def configure_metrics(self) -> MetricCollection:
        return MetricCollection({
            "angular_error_deg_median": MedianMetric(),
            "angular_error_deg_mean": MeanMetric(),
            "sigma_log10_energy": StdMetric(),
            "direction_coverage_68": MeanMetric(),
        })

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.model(batch["hit_features"], batch["hit_mask"])

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

    def predictions(self, outputs, batch) -> dict[str, torch.Tensor]:
        out = {
            "direction_pred": outputs["direction"],
            "kappa": outputs["kappa"],
            "log10_energy_pred": outputs["log10_energy"],
            "log10_energy_sigma": torch.exp(outputs["log10_energy_log_sigma"]),
            "angular_error_deg": angular_error_deg(outputs["direction"], batch["direction"]),
        }
        out.update({key: batch[key] for key in PASSTHROUGH_KEYS if key in batch})
        return out

    def attribution_forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Predicted log10 E from the padded hit features alone; all-zero rows are padding."""
        return self.model(inputs, inputs.abs().sum(dim=-1) > 0)["log10_energy"]

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
