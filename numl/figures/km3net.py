"""KM3NeT figures: angular error and sigma(log10 E) against true energy for the network and every baseline
(the chi-square fit, the official JMuon reconstruction of a real file), and the network's kappa calibration;
with a track-probability head, particle identification against true energy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc, binary_roc

from numl.baselines.base import BaselineResult
from numl.figures.common import as_numpy, plt, save_figure
from numl.sim.km3net.events import is_atmospheric_muon_event, is_track_event
from numl.tasks.losses import vmf_angle_cdf


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


def write_resolution_table(curves: dict[str, dict[str, np.ndarray]], edges: np.ndarray, path: Path) -> Path:
    """The numbers behind km3net_resolution_vs_energy.png: one row per method and true-energy bin (events,
    median and mean angular error, sigma(log10 E)), so that methods compare on the same events per bin."""
    lines = ["method,e_min_gev,e_max_gev,events,median_angle_deg,mean_angle_deg,sigma_log10_e"]
    for name, curve in curves.items():
        for b in range(len(edges) - 1):
            lines.append(f"{name},{10 ** edges[b]:.4g},{10 ** edges[b + 1]:.4g},{int(curve['count'][b])},"
                         f"{curve['median_deg'][b]:.4g},{curve['mean_deg'][b]:.4g},{curve['sigma_log10e'][b]:.4g}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def draw(datamodule: Any, predictions: dict[str, torch.Tensor], baselines: dict[str, BaselineResult],
         output_dir: Path) -> list[Path]:
    return save_resolution_figures(predictions, Path(output_dir), baselines)


def save_resolution_figures(predictions: dict[str, Any], output_dir: Path,
                            baselines: dict[str, BaselineResult] | None = None) -> list[Path]:
    """km3net_resolution_vs_energy.png (network and each baseline with per-event angular errors) with its
    numbers in km3net_resolution_vs_energy.csv, and km3net_kappa_calibration.png; nothing when no event has a
    true energy."""
    p = {k: as_numpy(v) for k, v in predictions.items()}
    true_log10e = p["log10_energy"]
    finite = np.isfinite(true_log10e)
    if not finite.any():
        return []
    edges = np.linspace(np.floor(true_log10e[finite].min() * 4) / 4, np.ceil(true_log10e[finite].max() * 4) / 4, 7)
    centres = 0.5 * (edges[1:] + edges[:-1])
    curves = {"network": binned_resolution(true_log10e, p["angular_error_deg"],
                                           p["log10_energy_pred"] - true_log10e, edges)}
    is_track = is_track_event(p["event_type"]) if "event_type" in p else None
    # atmospheric muon bundles are no neutrino: kept apart from the track / shower classes
    is_muon = is_atmospheric_muon_event(p["event_type"]) if "event_type" in p else None
    both_classes = is_track is not None and 0 < is_track.sum() < (~is_muon).sum()
    if is_track is not None and 0 < is_track.sum() < len(is_track):  # a mixed sample: each class on its own too
        for name, members in (("network nu_mu CC", is_track), ("network other", ~is_track & ~is_muon),
                              ("network atmospheric muons", is_muon)):
            if members.any():
                curves[name] = binned_resolution(true_log10e[members], p["angular_error_deg"][members],
                                                 (p["log10_energy_pred"] - true_log10e)[members], edges)
    for result in (baselines or {}).values():
        out = result.outputs
        if "angular_error_deg" in out and len(out["angular_error_deg"]) == len(true_log10e):
            curves[result.label] = binned_resolution(true_log10e, out["angular_error_deg"],
                                                     out["log10_energy"] - true_log10e, edges)
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
    paths = [save_figure(fig, output_dir / "km3net_resolution_vs_energy.png"),
             write_resolution_table(curves, edges, output_dir / "km3net_resolution_vs_energy.csv")]

    cdf = vmf_angle_cdf(torch.deg2rad(torch.as_tensor(p["angular_error_deg"], dtype=torch.float64)),
                        torch.as_tensor(p["kappa"], dtype=torch.float64)).numpy()
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.hist(cdf, bins=20, range=(0, 1), density=True, alpha=0.7, label="network")
    ax.axhline(1.0, color="k", lw=1, label="calibrated (uniform)")
    ax.set_xlabel("vMF CDF of the true angular error")
    ax.set_ylabel("density")
    ax.set_title(f"coverage of the 68 % cone: {np.mean(cdf <= 0.68):.2f}")
    ax.legend()
    paths.append(save_figure(fig, output_dir / "km3net_kappa_calibration.png"))
    if both_classes and "track_probability" in p:
        scores = {"network": p["track_probability"]}
        for result in (baselines or {}).values():
            if len(result.outputs.get("track_probability", ())) == len(true_log10e):
                scores[result.label] = result.outputs["track_probability"]
        neutrinos = ~is_muon
        paths += save_track_identification_figures(true_log10e[neutrinos], {k: v[neutrinos] for k, v in scores.items()},
                                                   is_track[neutrinos], edges, output_dir, finite[neutrinos])
    return paths


def track_identification(track_probability: np.ndarray, is_track: np.ndarray, selected: np.ndarray
                         ) -> dict[str, float]:
    """For the selected events: how many of each class, the fraction of each classified as track (probability
    > 0.5, ORCA's way of showing its classifier) and the AUROC of tracks against the rest (NaN with one class)."""
    tracks, others = selected & is_track, selected & ~is_track
    out = {"tracks": int(tracks.sum()), "others": int(others.sum()), "tracks_as_track": np.nan,
           "others_as_track": np.nan, "auroc": np.nan}
    if tracks.any():
        out["tracks_as_track"] = float(np.mean(track_probability[tracks] > 0.5))
    if others.any():
        out["others_as_track"] = float(np.mean(track_probability[others] > 0.5))
    if tracks.any() and others.any():
        out["auroc"] = float(binary_auroc(torch.as_tensor(track_probability[selected]),
                                          torch.as_tensor(is_track[selected]).long()))
    return out


def binned_track_identification(true_log10e: np.ndarray, track_probability: np.ndarray, is_track: np.ndarray,
                                edges: np.ndarray) -> dict[str, np.ndarray]:
    """`track_identification` in each bin of true log10 E, one array per quantity."""
    index = np.digitize(true_log10e, edges) - 1
    per_bin = [track_identification(track_probability, is_track, index == b) for b in range(len(edges) - 1)]
    return {key: np.array([row[key] for row in per_bin], dtype=np.float64) for key in per_bin[0]}


def save_track_identification_figures(true_log10e: np.ndarray, scores: dict[str, np.ndarray], is_track: np.ndarray,
                                      edges: np.ndarray, output_dir: Path, finite: np.ndarray) -> list[Path]:
    """km3net_track_identification.png (fraction classified as track vs true energy for nu_mu CC and the other
    neutrino events, atmospheric muons left out by the caller; the ROC curves) for the network and each baseline
    with a track probability, and the numbers per bin in km3net_track_identification.csv (one row per method and
    bin, then one per method over all energies)."""
    lines = ["method,e_min_gev,e_max_gev,nu_mu_cc_events,other_events,nu_mu_cc_as_track,other_as_track,auroc"]
    centres = 0.5 * (edges[1:] + edges[:-1])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    is_track_t = torch.as_tensor(is_track).long()
    for name, probability in scores.items():
        binned = binned_track_identification(true_log10e, probability, is_track, edges)
        overall = track_identification(probability, is_track, finite)  # the events the bins hold, all together
        for b in range(len(edges) - 1):
            lines.append(f"{name},{10 ** edges[b]:.4g},{10 ** edges[b + 1]:.4g},{int(binned['tracks'][b])},"
                         f"{int(binned['others'][b])},{binned['tracks_as_track'][b]:.4g},"
                         f"{binned['others_as_track'][b]:.4g},{binned['auroc'][b]:.4g}")
        lines.append(f"{name},{10 ** edges[0]:.4g},{10 ** edges[-1]:.4g},{overall['tracks']},{overall['others']},"
                     f"{overall['tracks_as_track']:.4g},{overall['others_as_track']:.4g},{overall['auroc']:.4g}")
        line = axes[0].plot(centres, binned["tracks_as_track"], "o-", label=f"{name}: nu_mu CC")[0]
        axes[0].plot(centres, binned["others_as_track"], "s--", color=line.get_color(), label=f"{name}: other")
        false_positive, true_positive, _ = binary_roc(torch.as_tensor(probability), is_track_t)
        axes[1].plot(false_positive.numpy(), true_positive.numpy(), label=f"{name} (AUROC {overall['auroc']:.3f})")
    table = output_dir / "km3net_track_identification.csv"
    table.write_text("\n".join(lines) + "\n")
    axes[0].set_xlabel("true log10(E / GeV)")
    axes[0].set_ylabel("fraction classified as track (p > 0.5)")
    axes[0].set_ylim(0, 1)
    axes[1].plot([0, 1], [0, 1], "k:", lw=1)
    axes[1].set_xlabel("other events classified as track")
    axes[1].set_ylabel("nu_mu CC classified as track")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return [save_figure(fig, output_dir / "km3net_track_identification.png"), table]
