"""Classical PETALO reconstruction and the resolution metrics shared with the networks.

Baseline (petalo-project/ANTEA reco_functions): charge-weighted phi and z of the SiPMs above a threshold
around the hottest SiPM, and r from the spread in phi of the inner-face charge through an "r-map" (the
median true r per bin of that spread), fit on the training events.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from numl.baselines.base import Baseline, BaselineResult
from numl.metrics import BackgroundRejectedFraction, fwhm, rms
from numl.sim.petalo import COORDINATES, PetaloConfig
from numl.utils.errors import check_positive, check_range


def resolution_metrics(predicted_mm: np.ndarray, true_mm: np.ndarray) -> dict[str, float]:
    """FWHM and RMS of (predicted - true) per coordinate, in mm, over the events with a finite prediction."""
    predicted_mm, true_mm = np.asarray(predicted_mm, dtype=np.float64), np.asarray(true_mm, dtype=np.float64)
    ok = np.isfinite(predicted_mm).all(axis=1)
    out = {"reconstructed_fraction": float(ok.mean())}
    for i, name in enumerate(COORDINATES):
        res = predicted_mm[ok, i] - true_mm[ok, i]
        out[f"{name}_fwhm_mm"] = fwhm(res)
        out[f"{name}_rms_mm"] = rms(res)
    return out


class CentroidRMap:
    """Charge centroid in phi and z, r from an r-map of the inner-face phi spread.

    Works on the readout window ([N, 2 faces, rows, columns] charges, hottest column in the middle).
    Events without a SiPM above threshold get NaN: flagged, never a made-up position.
    """

    def __init__(self, config: PetaloConfig, threshold_pe: float = 2.0, n_bins: int = 40) -> None:
        self.config = config
        self.threshold_pe = threshold_pe
        self.n_bins = n_bins
        pitch_rad = 2 * np.pi / config.n_columns
        self.column_phi_rad = (np.arange(config.window_columns) - config.window_columns // 2) * pitch_rad
        self.row_z_mm = (np.arange(config.n_rows) + 0.5) * config.sipm_pitch_mm - config.axial_length_mm / 2
        self.map_spread: np.ndarray | None = None
        self.map_r_mm: np.ndarray | None = None

    def _moments(self, charge: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Charge-weighted phi [rad], z [mm] (both faces) and phi spread [rad] of the inner face."""
        q = np.where(np.nan_to_num(charge, nan=0.0) >= self.threshold_pe, np.nan_to_num(charge, nan=0.0), 0.0)
        total = q.sum(axis=(1, 2, 3))
        with np.errstate(invalid="ignore", divide="ignore"):
            phi = np.einsum("nfrc,c->n", q, self.column_phi_rad) / total
            z = np.einsum("nfrc,r->n", q, self.row_z_mm) / total
            inner = q[:, 0]
            inner_total = inner.sum(axis=(1, 2))
            mean_inner = np.einsum("nrc,c->n", inner, self.column_phi_rad) / inner_total
            var = np.einsum("nrc,nc->n", inner, (self.column_phi_rad[None, :] - mean_inner[:, None]) ** 2) / inner_total
        bad = ~np.isfinite(charge).all(axis=(1, 2, 3)) | (total <= 0)
        phi[bad] = np.nan
        z[bad] = np.nan
        return phi, z, np.sqrt(np.where(bad, np.nan, var))

    def fit(self, events: dict[str, np.ndarray]) -> CentroidRMap:
        """Build the r-map: median true r in quantile bins of the inner-face phi spread."""
        _, _, spread = self._moments(events["sipm_charge"])
        r_true = events["position_mm"][:, 0]
        ok = np.isfinite(spread)
        edges = np.unique(np.quantile(spread[ok], np.linspace(0, 1, self.n_bins + 1)))
        which = np.clip(np.digitize(spread[ok], edges[1:-1]), 0, len(edges) - 2)
        filled = [b for b in range(len(edges) - 1) if (which == b).any()]
        self.map_spread = np.array([np.median(spread[ok][which == b]) for b in filled])
        self.map_r_mm = np.array([np.median(r_true[ok][which == b]) for b in filled])
        return self

    def predict(self, charge: np.ndarray) -> np.ndarray:
        """(r, r * phi offset, z) in mm per event; NaN where the event has no usable charge."""
        if self.map_spread is None:
            raise RuntimeError("CentroidRMap.predict before fit")
        charge = np.asarray(charge, dtype=np.float64)
        expected = (2, self.config.n_rows, self.config.window_columns)
        if charge.ndim != 4 or charge.shape[1:] != expected:
            raise ValueError(f"sipm_charge shape {charge.shape}: expected [N, {', '.join(map(str, expected))}]")
        phi, z, spread = self._moments(charge)
        r = np.interp(spread, self.map_spread, self.map_r_mm)
        r[~np.isfinite(spread)] = np.nan
        return np.stack([r, r * phi, z], axis=1)


class MultiSiteSpread:
    """Classical multi-site (Compton) tagger score: larger = more multi-site-like, from the SiPM charges alone.

    The charge-weighted RMS distance [mm] of the inner-face SiPMs above threshold from their centroid:
    a second deposit widens the light spot. Single-site spots widen with depth as well, which limits it.
    No fit. Events without usable charge (all zero, NaN or inf anywhere) score +inf: always discarded.
    """

    def __init__(self, config: PetaloConfig, threshold_pe: float = 2.0) -> None:
        self.config, self.threshold_pe = config, threshold_pe

    def __call__(self, charge: np.ndarray) -> np.ndarray:
        charge = np.asarray(charge, dtype=np.float64)
        expected = (2, self.config.n_rows, self.config.window_columns)
        if charge.ndim != 4 or charge.shape[1:] != expected:
            raise ValueError(f"sipm_charge shape {charge.shape}: expected [N, {', '.join(map(str, expected))}]")
        bad = ~np.isfinite(charge).all(axis=(1, 2, 3))
        inner = np.nan_to_num(charge[:, 0])
        pitch = self.config.sipm_pitch_mm
        rows = np.arange(self.config.n_rows)[:, None] * pitch
        cols = np.arange(self.config.window_columns)[None, :] * pitch
        q = np.where(inner >= self.threshold_pe, inner, 0.0)
        total = q.sum(axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_r = (q * rows).sum(axis=(1, 2)) / total
            mean_c = (q * cols).sum(axis=(1, 2)) / total
            var = (q * ((rows - mean_r[:, None, None]) ** 2 + (cols - mean_c[:, None, None]) ** 2)).sum(axis=(1, 2))
            spread = np.sqrt(var / total)
        return np.where(bad | ~(total > 0), np.inf, spread)


# ----- the baselines a run executes (numl.baselines.base) -------------------------------------------------------
class CentroidBaseline(Baseline):
    """Charge centroid + r-map, the r-map fitted on the training events, on the test events; the FWHM and RMS
    per coordinate carry the names the position task logs."""

    label = "centroid + r-map"

    def __init__(self, threshold_pe: float = 2.0, n_bins: int = 40) -> None:
        check_positive("baseline.centroid.threshold_pe", threshold_pe, allow_zero=True)
        check_positive("baseline.centroid.n_bins", n_bins, integer=True)
        self.threshold_pe, self.n_bins = float(threshold_pe), int(n_bins)
        self.model: CentroidRMap | None = None

    def fit(self, datamodule) -> CentroidBaseline:
        self.model = CentroidRMap(datamodule.config, self.threshold_pe, self.n_bins).fit(datamodule.events("train"))
        return self

    def evaluate(self, datamodule) -> BaselineResult:
        test = datamodule.events("test")
        predicted = self.model.predict(test["sipm_charge"])
        return BaselineResult(self.label, resolution_metrics(predicted, test["position_mm"]),
                              {"position_mm_pred": predicted})


class ChargeSpreadTaggerBaseline(Baseline):
    """The classical multi-site tagger (`MultiSiteSpread`) on the test events: AUROC of discarding multi-site
    events, and the fraction of them discarded at the cut keeping `keep_efficiency` of the single-site ones,
    the metric (and name) of the tagger task."""

    label = "charge spread"

    def __init__(self, keep_efficiency: float = 0.9, threshold_pe: float = 2.0) -> None:
        check_range("baseline.charge_spread.keep_efficiency", keep_efficiency, 0.01, 0.999)
        check_positive("baseline.charge_spread.threshold_pe", threshold_pe, allow_zero=True)
        self.keep_efficiency, self.threshold_pe = float(keep_efficiency), float(threshold_pe)

    def evaluate(self, datamodule) -> BaselineResult:
        test = datamodule.events("test")
        # +inf (no usable charge: always discarded) as the largest finite score, so that AUROC is defined
        score = np.nan_to_num(MultiSiteSpread(datamodule.config, self.threshold_pe)(test["sipm_charge"]),
                              posinf=np.finfo(np.float64).max)
        labels = (test["multi_site"] > 0.5).astype(int)
        discarded = BackgroundRejectedFraction(self.keep_efficiency)
        discarded.update(torch.from_numpy(-score), torch.from_numpy(1 - labels))  # the kept "signal": single-site
        both = 0 < labels.sum() < len(labels)
        metrics = {"auroc": float(roc_auc_score(labels, score)) if both else float("nan"),
                   f"discard_rejection_at_keep{round(100 * self.keep_efficiency)}": float(discarded.compute())}
        return BaselineResult(self.label, metrics, {"score": score, "label": labels})
