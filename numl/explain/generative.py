"""Fidelity of a generator against its simulator: the statistics a physicist checks before trusting generated events.

Each comparison is generated vs simulated events at the same true conditions (PETALO first interaction
points; lensing M_nu), so a difference is the generator's, not a different mix of conditions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torchmetrics.functional.classification import binary_auroc

from numl.baselines.petalo import CentroidRMap, resolution_metrics
from numl.metrics import auroc_standard_error, fwhm
from numl.sim.lensing.maps import binned_power_spectra
from numl.sim.lensing.statistics import (
    minkowski_functionals,
    one_point_pdf,
    peak_counts,
    wraparound_border_pixels,
)
from numl.sim.petalo import COORDINATES

#: thresholds nu = kappa / sigma of the lensing statistics: the ranges of numl.baselines.lensing.MapStatistics
#: (peaks -1..4, PDF -2.5..3.5, Minkowski -2..3), 8 bins each
LENSING_NU_EDGES = {"peak_counts": np.linspace(-1.0, 4.0, 9), "one_point_pdf": np.linspace(-2.5, 3.5, 9),
                    "minkowski_functionals": np.linspace(-2.0, 3.0, 9)}
#: every lensing statistic lensing_statistics measures, in the order of the figures
LENSING_STATISTICS = ("power_spectrum", "one_point_pdf", "peak_counts", "minkowski_v0", "minkowski_v1",
                      "minkowski_v2")


def window_charge_pe(sipm_charge: np.ndarray) -> np.ndarray:
    """Total charge [pe] of each event's readout window (both faces)."""
    return np.asarray(sipm_charge, dtype=np.float64).sum(axis=(1, 2, 3))


def histogram_with_error(values: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalised counts per bin (density) and their Poisson one-sigma error."""
    values = np.asarray(values)[np.isfinite(values)]
    counts, _ = np.histogram(values, bins=edges)
    norm = max(len(values), 1) * np.diff(edges)
    return counts / norm, np.sqrt(counts) / norm


def petalo_fidelity(simulated: dict[str, np.ndarray], generated_charge: np.ndarray,
                    centroid: CentroidRMap) -> dict[str, float]:
    """Total window charge and charge-centroid residuals, simulated vs generated at the same true points.

    simulated: events with `sipm_charge` [N, 2, rows, columns] and `position_mm` [N, 3];
    generated_charge: [N, 2, rows, columns] at the same positions; centroid: fitted on simulated events.
    The errors of the means are the sample standard deviations over sqrt(N).
    """
    out: dict[str, float] = {}
    true_mm = simulated["position_mm"]
    for name, charge in (("simulated", simulated["sipm_charge"]), ("generated", generated_charge)):
        total = window_charge_pe(charge)
        out[f"{name}/total_charge_mean_pe"] = float(total.mean())
        out[f"{name}/total_charge_mean_error_pe"] = float(total.std() / np.sqrt(len(total)))
        out[f"{name}/total_charge_std_pe"] = float(total.std())
        residual = centroid.predict(charge) - true_mm
        for i, coordinate in enumerate(COORDINATES):
            out[f"{name}/centroid_{coordinate}_fwhm_mm"] = fwhm(residual[:, i])
            out[f"{name}/centroid_{coordinate}_median_mm"] = float(np.nanmedian(residual[:, i]))
    out["total_charge_mean_ratio"] = out["generated/total_charge_mean_pe"] / out["simulated/total_charge_mean_pe"]
    out["total_charge_std_ratio"] = out["generated/total_charge_std_pe"] / out["simulated/total_charge_std_pe"]
    for coordinate in COORDINATES:
        out[f"centroid_{coordinate}_fwhm_ratio"] = (out[f"generated/centroid_{coordinate}_fwhm_mm"]
                                                    / out[f"simulated/centroid_{coordinate}_fwhm_mm"])
    return out


def position_resolution(predicted_mm: np.ndarray, true_mm: np.ndarray, prefix: str) -> dict[str, float]:
    """FWHM and RMS per coordinate of a position network's residuals, keys `<prefix>/<coordinate>_fwhm_mm`."""
    return {f"{prefix}/{k}": v for k, v in resolution_metrics(predicted_mm, true_mm).items()}


def log_charge_features(sipm_charge: np.ndarray) -> torch.Tensor:
    """Events as vectors of log(1 + charge) per SiPM: the space the nearest-neighbour distances are taken in."""
    return torch.log1p(torch.as_tensor(np.asarray(sipm_charge), dtype=torch.float32).clamp(min=0)).flatten(1)


def nearest_neighbour_distance(query: torch.Tensor, reference: torch.Tensor, chunk: int = 512) -> np.ndarray:
    """Euclidean distance of every query vector to its nearest reference vector."""
    out = [torch.cdist(query[i:i + chunk], reference).min(dim=1).values for i in range(0, len(query), chunk)]
    return torch.cat(out).numpy()


def memorisation_check(training_charge: np.ndarray, simulated_charge: np.ndarray, generated_charge: np.ndarray,
                       features: Callable[[np.ndarray], torch.Tensor] = log_charge_features) -> dict[str, float]:
    """Nearest-neighbour distances to the generator's training events: generated events vs held-out simulated ones.

    A generator that copies its training set puts its events much closer to training events than independent
    simulated events are (ratio of medians well below 1); a faithful one gives a ratio near 1. `features` maps
    events to the vectors the distances are taken between (PETALO: log(1 + charge) per SiPM).
    """
    reference = features(training_charge)
    test = nearest_neighbour_distance(features(simulated_charge), reference)
    generated = nearest_neighbour_distance(features(generated_charge), reference)
    return {"nn_distance_test_to_train_median": float(np.median(test)),
            "nn_distance_generated_to_train_median": float(np.median(generated)),
            "nn_distance_ratio_generated_over_test": float(np.median(generated) / np.median(test)),
            "nn_distance_generated_below_test_1pct": float(np.mean(generated < np.percentile(test, 1)))}


# ----- weak-lensing maps ----------------------------------------------------------------------------------------
def lensing_statistics(maps: torch.Tensor, field_deg: float, ell_bin_edges: Sequence[float],
                       sigma: float, periodic: bool = True) -> dict[str, np.ndarray]:
    """Per map, of the first source plane: the binned power spectrum C_ell [sr] and, at thresholds nu = kappa /
    `sigma` (LENSING_NU_EDGES, `sigma` fixed from the simulated reference so that amplitude differences show),
    the pixel PDF of nu, the peak counts and the Minkowski functionals V0, V1, V2; each [n_maps, n_bins]. Maps
    that are not `periodic` (ray-traced, FITS) lose their edge pixels from all but the spectrum."""
    maps = torch.as_tensor(maps, dtype=torch.float32)[:, :1]
    border = wraparound_border_pixels(periodic, field_deg, maps.shape[-1], smoothing_arcmin=0.0)
    v0, v1, v2 = minkowski_functionals(maps, LENSING_NU_EDGES["minkowski_functionals"] * sigma, border)
    pdf = one_point_pdf(maps, LENSING_NU_EDGES["one_point_pdf"] * sigma, border)
    return {"power_spectrum": binned_power_spectra(maps, field_deg, ell_bin_edges)[:, 0, 0].numpy(),
            "one_point_pdf": (pdf[:, 0] * sigma).numpy(),
            "peak_counts": peak_counts(maps, LENSING_NU_EDGES["peak_counts"] * sigma, border)[:, 0].numpy(),
            "minkowski_v0": v0[:, 0].numpy(), "minkowski_v1": v1[:, 0].numpy(), "minkowski_v2": v2[:, 0].numpy()}


def mean_with_error(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over maps per bin and its error (sample standard deviation / sqrt(n))."""
    values = np.asarray(values, dtype=np.float64)
    return values.mean(axis=0), values.std(axis=0, ddof=1) / np.sqrt(len(values))


def compare_statistics(simulated: dict[str, np.ndarray], generated: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per statistic (lensing_statistics' keys): simulated and generated means with errors of the mean, the
    ratio generated / simulated per bin, and chi2 / bins of the difference (both errors; uncorrelated bins
    assumed, so a guide rather than a test)."""
    out = {}
    for name in simulated:
        sim, sim_err = mean_with_error(simulated[name])
        gen, gen_err = mean_with_error(generated[name])
        error = np.sqrt(sim_err**2 + gen_err**2)
        pull = np.where(error > 0, (gen - sim) / np.where(error > 0, error, 1.0), 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(sim != 0, gen / sim, np.nan)
        out[name] = {"simulated": sim, "simulated_error": sim_err, "generated": gen, "generated_error": gen_err,
                     "ratio": ratio, "chi2_per_bin": float(np.mean(pull**2))}
    return out


def ratio_with_error(massive: np.ndarray, massless: np.ndarray, paired: bool) -> tuple[np.ndarray, np.ndarray]:
    """mean(massive) / mean(massless) per bin, [n_maps, n_bins] each, and its error: for `paired` maps (the
    same generator noise in both cosmologies) from the scatter of massive_i - R massless_i (delta method), else
    the two errors of the mean in quadrature."""
    massive, massless = np.asarray(massive, dtype=np.float64), np.asarray(massless, dtype=np.float64)
    ratio = massive.mean(axis=0) / massless.mean(axis=0)
    if paired:
        residual = massive - ratio * massless
        error = residual.std(axis=0, ddof=1) / np.sqrt(len(massive)) / massless.mean(axis=0)
    else:
        (m1, e1), (m0, e0) = mean_with_error(massive), mean_with_error(massless)
        error = ratio * np.sqrt((e1 / m1) ** 2 + (e0 / m0) ** 2)
    return ratio, error


class _TwoSampleCNN(nn.Module):
    """A small CNN that scores how much a map looks generated (logit)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        layers, width = [], in_channels
        for out in (16, 32, 64):
            layers += [nn.Conv2d(width, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(), nn.MaxPool2d(2)]
            width = out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(width, 1)

    def forward(self, x):
        return self.head(self.features(x)).squeeze(1)


def classifier_two_sample_test(simulated: torch.Tensor, generated: torch.Tensor, scale: float, epochs: int = 8,
                               batch_size: int = 64, seed: int = 0) -> dict[str, float]:
    """Classifier two-sample test (Lopez-Paz & Oquab 2017): a CNN is trained to tell generated from simulated
    maps on half of each set and scored on the other half. AUROC 0.5: the CNN cannot tell them apart; 1: it
    always can. The inputs are images [N, channels, rows, columns] (kappa maps, SiPM patterns), divided by `scale`;
    the sets are cut to the same size. Returns the held-out AUROC, its standard error (Hanley & McNeil 1982) and
    the map counts."""
    generator = torch.Generator().manual_seed(seed)
    n = min(len(simulated), len(generated))
    sim = torch.as_tensor(simulated, dtype=torch.float32)[torch.randperm(len(simulated), generator=generator)[:n]]
    gen = torch.as_tensor(generated, dtype=torch.float32)[torch.randperm(len(generated), generator=generator)[:n]]
    half = n // 2
    maps = torch.cat([sim, gen]) / scale
    labels = torch.cat([torch.zeros(n), torch.ones(n)])
    is_train = torch.zeros(2 * n, dtype=torch.bool)
    is_train[:half] = True
    is_train[n:n + half] = True
    train_maps, train_labels = maps[is_train], labels[is_train]
    test_maps, test_labels = maps[~is_train], labels[~is_train]

    torch.manual_seed(seed)
    network = _TwoSampleCNN(maps.shape[1])
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    network.train()
    for _ in range(epochs):
        order = torch.randperm(len(train_maps), generator=generator)
        for i in range(0, len(order) - batch_size + 1, batch_size):
            batch = order[i:i + batch_size]
            loss = nn.functional.binary_cross_entropy_with_logits(network(train_maps[batch]), train_labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    network.eval()
    with torch.no_grad():
        scores = torch.cat([network(test_maps[i:i + 256]) for i in range(0, len(test_maps), 256)])
    auroc = float(binary_auroc(scores, test_labels.long()))
    error = auroc_standard_error(auroc, len(test_maps) // 2, len(test_maps) // 2)
    return {"c2st_auroc": auroc, "c2st_auroc_error": error, "c2st_train_maps": int(len(train_maps)),
            "c2st_test_maps": int(len(test_maps))}
