"""Where does a lensing CNN find its information: peaks (clusters) or voids?

Two measurements on convergence maps [B, n_z, N, N]:

* attribution mass binned in nu = (kappa - <kappa>) / sigma_kappa of each map (Zorrilla Matilla
  et al. 2020, arXiv:2007.06529), compared with the fraction of pixels in each bin;
* a masking experiment: test metrics after replacing the x % highest-kappa pixels, the x % lowest
  ones, or x % random pixels of every map by the map's mean (Golshan & Bayer 2024, arXiv:2410.00914,
  ask the same question with Integrated Gradients).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from torch import nn

from numl.figures.common import plt, save_figure
from numl.utils.errors import ConfigError, check_choice, check_range

LENSING_INPUT_KEY = "convergence_map"
DEFAULT_EDGES_SIGMA = (-np.inf, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, np.inf)
MASK_MODES = ("highest", "lowest", "random")
FILLS = ("mean", "zero")


def check_lensing_task(task: nn.Module, key: str = "ckpt_path", value: str = "") -> None:
    """The analysis reads convergence maps; a checkpoint of another domain's task is refused by name."""
    input_key = getattr(task, "input_key", None)
    if input_key != LENSING_INPUT_KEY:
        where = f"{key}={value!r}" if value else key
        raise ConfigError(f"{where}: task {type(task).__name__} reads {input_key!r}; the voids-vs-clusters "
                          f"analysis needs a lensing task whose input is {LENSING_INPUT_KEY!r}")


def standardised_kappa(maps: torch.Tensor, smoothing_sigma_pix: float = 0.0) -> torch.Tensor:
    """nu = (kappa - mean) / std per map and source-redshift channel, optionally after Gaussian smoothing
    (which brings noisy maps' peaks and voids back out of the pixel noise)."""
    if maps.ndim != 4:
        raise ConfigError(f"{LENSING_INPUT_KEY}: expected shape [batch, n_z, N, N], got {tuple(maps.shape)}")
    kappa = maps.detach().cpu().double()
    if smoothing_sigma_pix > 0:
        kappa = torch.as_tensor(gaussian_filter(kappa.numpy(), sigma=(0, 0, smoothing_sigma_pix, smoothing_sigma_pix),
                                                mode="wrap"))
    mean = kappa.mean(dim=(2, 3), keepdim=True)
    std = kappa.std(dim=(2, 3), keepdim=True).clamp_min(1e-30)
    return (kappa - mean) / std


@dataclass
class KappaBinnedAttribution:
    edges_sigma: np.ndarray  # bin edges in nu = kappa / sigma_kappa (after mean subtraction)
    attribution_fraction: np.ndarray  # share of |attribution| per bin, averaged over maps (sums to 1)
    pixel_fraction: np.ndarray  # share of pixels per bin
    signed_mean: np.ndarray  # mean signed attribution per pixel in the bin / mean |attribution| per pixel

    @property
    def enrichment(self) -> np.ndarray:
        """Attribution per pixel relative to the map average: > 1 where the network looks more."""
        return self.attribution_fraction / np.maximum(self.pixel_fraction, 1e-12)

    def fraction_where(self, lo: float, hi: float) -> tuple[float, float]:
        """(attribution share, pixel share) between nu = lo and hi; lo and hi must be bin edges."""
        edges = list(self.edges_sigma)
        if lo not in edges or hi not in edges:
            raise ConfigError(f"bin_edges_sigma: {lo} and {hi} must both be edges (edges are {edges})")
        sl = slice(edges.index(lo), edges.index(hi))
        return float(self.attribution_fraction[sl].sum()), float(self.pixel_fraction[sl].sum())

    def labels(self) -> list[str]:
        def fmt(v: float) -> str:
            return "-inf" if v == -np.inf else "inf" if v == np.inf else f"{v:g}"

        return [f"[{fmt(a)}, {fmt(b)})" for a, b in zip(self.edges_sigma[:-1], self.edges_sigma[1:], strict=True)]


def kappa_binned_attribution(maps: torch.Tensor, attributions: torch.Tensor,
                             edges_sigma: Sequence[float] = DEFAULT_EDGES_SIGMA,
                             smoothing_sigma_pix: float = 0.0) -> KappaBinnedAttribution:
    """Share of each map's |attribution| that falls in each nu bin; every map weighs the same."""
    edges = np.asarray(edges_sigma, dtype=float)
    if len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ConfigError(f"bin_edges_sigma={list(edges_sigma)}: need at least two strictly increasing edges")
    if attributions.shape != maps.shape:
        raise ConfigError(f"attributions of shape {tuple(attributions.shape)} do not match maps {tuple(maps.shape)}")
    nu = standardised_kappa(maps, smoothing_sigma_pix).flatten(1).numpy()
    attr = attributions.detach().cpu().double().flatten(1).numpy()
    weight = np.abs(attr) / np.maximum(np.abs(attr).sum(1, keepdims=True), 1e-300)
    mean_abs = np.maximum(np.abs(attr).mean(1, keepdims=True), 1e-300)
    n_bins = len(edges) - 1
    index = np.clip(np.digitize(nu, edges) - 1, 0, n_bins - 1)
    attribution_fraction = np.zeros(n_bins)
    pixel_fraction = np.zeros(n_bins)
    signed = np.zeros(n_bins)
    for b in range(n_bins):
        inside = index == b
        attribution_fraction[b] = (weight * inside).sum(1).mean()
        pixel_fraction[b] = inside.mean()
        n_in = inside.sum()
        signed[b] = ((attr / mean_abs) * inside).sum() / n_in if n_in else np.nan
    return KappaBinnedAttribution(edges, attribution_fraction, pixel_fraction, signed)


def mask_maps(maps: torch.Tensor, fraction: float, mode: str, fill: str = "mean", seed: int = 0,
              ranking_smoothing_pix: float = 0.0) -> torch.Tensor:
    """Replace `fraction` of the pixels of every map and channel: the highest-kappa, the lowest-kappa or
    random ones, by the map's mean (its information removed, its amplitude kept) or by zero."""
    check_range("masking.fractions", fraction, 0.0, 1.0)
    check_choice("masking.modes", mode, MASK_MODES)
    check_choice("masking.fill", fill, FILLS)
    b, c, n1, n2 = maps.shape
    k = int(round(fraction * n1 * n2))
    flat = maps.detach().clone().reshape(b, c, n1 * n2)
    if k == 0:
        return flat.reshape(maps.shape)
    if mode == "random":
        generator = torch.Generator().manual_seed(seed)
        order = torch.argsort(torch.rand(b, c, n1 * n2, generator=generator), dim=2).to(maps.device)
    else:
        rank_by = standardised_kappa(maps, ranking_smoothing_pix).reshape(b, c, n1 * n2).to(maps.device)
        order = torch.argsort(rank_by, dim=2, descending=mode == "highest")
    chosen = order[:, :, :k]
    value = flat.mean(dim=2, keepdim=True) if fill == "mean" else torch.zeros_like(flat[:, :, :1])
    flat.scatter_(2, chosen, value.expand(b, c, k))
    return flat.reshape(maps.shape)


@torch.no_grad()
def evaluate_metrics(task: nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, float]:
    """The task's own test metrics (accuracy, AUROC, ...) on the given batches, without a Trainer."""
    metrics = task.metrics["test_metrics"].clone()
    metrics.reset()
    task.eval()
    for batch in batches:
        task.update_metrics(metrics, task(batch), batch)
    return {name.split("/", 1)[-1]: float(value) for name, value in metrics.compute().items()}


def masking_experiment(task: nn.Module, batches: list[dict[str, torch.Tensor]],
                       fractions: Sequence[float] = (0.01, 0.05, 0.1, 0.2, 0.4), fill: str = "mean",
                       seed: int = 0, ranking_smoothing_pix: float = 0.0) -> dict[str, dict[float, dict[str, float]]]:
    """Test metrics with the top / bottom / random x % of pixels masked, for each x in `fractions`.

    Returns {"unmasked": {0.0: metrics}, "highest": {x: metrics}, "lowest": ..., "random": ...}.
    """
    check_lensing_task(task)
    key = task.input_key
    results: dict[str, dict[float, dict[str, float]]] = {"unmasked": {0.0: evaluate_metrics(task, batches)}}
    for mode in MASK_MODES:
        results[mode] = {}
        for x in fractions:
            masked = [{**batch, key: mask_maps(batch[key], x, mode, fill, seed + i, ranking_smoothing_pix)}
                      for i, batch in enumerate(batches)]
            results[mode][float(x)] = evaluate_metrics(task, masked)
    return results


def voids_vs_clusters(task: nn.Module, batches: list[dict[str, torch.Tensor]], result: dict, output_dir: Path,
                      bin_edges_sigma: Sequence[float] = DEFAULT_EDGES_SIGMA, smoothing_sigma_pix: float = 0.0,
                      masking_fractions: Sequence[float] = (0.01, 0.03, 0.1, 0.3), fill: str = "mean",
                      seed: int = 0) -> dict:
    """Kappa-binned attribution of `result` (from numl.explain.run.attribute_batches) and the masking
    experiment on the same test events; writes voids_vs_clusters.json and two PNGs into `output_dir`."""
    from numl.explain.run import as_numpy_dict

    check_lensing_task(task)
    binned = kappa_binned_attribution(result["inputs"], result["attributions"], list(bin_edges_sigma),
                                      float(smoothing_sigma_pix))
    masking = masking_experiment(task, batches, [float(x) for x in masking_fractions], fill, seed,
                                 float(smoothing_sigma_pix))
    save_kappa_binned_figure({"test maps": binned}, Path(output_dir) / "kappa_binned_attribution.png")
    metric = next(iter(masking["unmasked"][0.0]))
    save_masking_figure({"test maps": masking}, Path(output_dir) / "masking_experiment.png", metric=metric)
    void_share, void_pixels = binned.fraction_where(-np.inf, 0.0)
    summary = {
        "bin_labels": binned.labels(), "attribution_fraction": binned.attribution_fraction,
        "pixel_fraction": binned.pixel_fraction, "signed_mean": binned.signed_mean,
        "void_attribution_share": void_share, "void_pixel_share": void_pixels, "masking": masking,
    }
    (Path(output_dir) / "voids_vs_clusters.json").write_text(json.dumps(as_numpy_dict(summary), indent=2))
    return summary


def save_kappa_binned_figure(results: dict[str, KappaBinnedAttribution], path: Path, method: str = "") -> Path:
    """Attribution share and pixel share per nu bin, one panel per case (e.g. noise-free, noisy)."""
    fig, axes = plt.subplots(1, len(results), figsize=(5.2 * len(results), 4), squeeze=False)
    for ax, (name, r) in zip(axes[0], results.items(), strict=True):
        x = np.arange(len(r.pixel_fraction))
        ax.bar(x - 0.2, r.attribution_fraction, width=0.4, label=f"|{method or 'attribution'}| share")
        ax.bar(x + 0.2, r.pixel_fraction, width=0.4, label="pixel share", alpha=0.7)
        ax.set_xticks(x, r.labels(), rotation=30, fontsize=8)
        ax.set_xlabel(r"$\nu = (\kappa - \langle\kappa\rangle) / \sigma_\kappa$")
        ax.set_title(name)
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def save_masking_figure(results: dict[str, dict[str, dict[float, dict[str, float]]]], path: Path,
                        metric: str = "acc") -> Path:
    """Metric vs masked fraction for highest / lowest / random pixels, one panel per case."""
    fig, axes = plt.subplots(1, len(results), figsize=(5.2 * len(results), 4), squeeze=False)
    for ax, (name, res) in zip(axes[0], results.items(), strict=True):
        ax.axhline(res["unmasked"][0.0][metric], color="k", ls="--", lw=1, label="unmasked")
        for mode in MASK_MODES:
            xs = sorted(res[mode])
            ax.plot([100 * x for x in xs], [res[mode][x][metric] for x in xs], marker="o",
                    label=f"{mode}-kappa pixels" if mode != "random" else "random pixels")
        ax.set_xscale("log")
        ax.set_xlabel("masked pixels per map [%]")
        ax.set_ylabel(f"test {metric}")
        ax.set_title(name)
        ax.legend(fontsize=8)
    return save_figure(fig, path)
