"""Fidelity of a generator against its simulator: the statistics a physicist checks before trusting generated events.

Each comparison is generated vs simulated events at the same true conditions (here PETALO first interaction
points), so a difference is the generator's, not a different mix of positions.
"""

from __future__ import annotations

import numpy as np
import torch

from numl.baselines.petalo import CentroidRMap, resolution_metrics
from numl.metrics import fwhm
from numl.sim.petalo import COORDINATES


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


def memorisation_check(training_charge: np.ndarray, simulated_charge: np.ndarray,
                       generated_charge: np.ndarray) -> dict[str, float]:
    """Nearest-neighbour distances to the generator's training events: generated events vs held-out simulated ones.

    A generator that copies its training set puts its events much closer to training events than independent
    simulated events are (ratio of medians well below 1); a faithful one gives a ratio near 1.
    """
    reference = log_charge_features(training_charge)
    test = nearest_neighbour_distance(log_charge_features(simulated_charge), reference)
    generated = nearest_neighbour_distance(log_charge_features(generated_charge), reference)
    return {"nn_distance_test_to_train_median": float(np.median(test)),
            "nn_distance_generated_to_train_median": float(np.median(generated)),
            "nn_distance_ratio_generated_over_test": float(np.median(generated) / np.median(test)),
            "nn_distance_generated_below_test_1pct": float(np.mean(generated < np.percentile(test, 1)))}
