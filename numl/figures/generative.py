"""Figures of a generator against its simulator at the same true conditions. PETALO: example SiPM images side
by side, and the total-charge and charge-centroid residual distributions overlaid with their Poisson error
bands. Lensing: maps side by side per M_nu, and every summary statistic (power spectrum, massive/massless ratio,
pixel PDF, peaks, Minkowski functionals) overlaid with the errors of the means."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

from numl.baselines.petalo import CentroidRMap
from numl.explain.generative import (
    LENSING_NU_EDGES,
    compare_statistics,
    histogram_with_error,
    lensing_statistics,
    ratio_with_error,
    window_charge_pe,
)
from numl.figures.common import plt, save_figure
from numl.sim.petalo import COORDINATES


def draw_petalo(datamodule: Any, predictions: dict[str, torch.Tensor], baselines: dict, output_dir: Path) -> list[Path]:
    """The run's test events (simulated) beside the generator's events at their true points (the predictions)."""
    output_dir = Path(output_dir)
    simulated = datamodule.events("test")
    generated_charge = predictions["generated_sipm_pattern"].numpy()[:, :2]
    n = len(generated_charge)  # fast_dev_run predicts only the first batch
    simulated = {k: v[:n] for k, v in simulated.items()}
    centroid = CentroidRMap(datamodule.config).fit(datamodule.events("train"))
    return [plot_side_by_side(simulated["sipm_charge"], generated_charge, simulated["position_mm"],
                              output_dir / "generated_vs_simulated_events.png"),
            plot_total_charge(simulated["sipm_charge"], generated_charge, output_dir / "total_charge.png"),
            plot_centroid_residuals(simulated, generated_charge, centroid, output_dir / "centroid_residuals.png")]


def plot_side_by_side(simulated_charge: np.ndarray, generated_charge: np.ndarray, position_mm: np.ndarray,
                      path: Path, n_events: int = 4) -> Path:
    """Inner-face charge of a few events: simulated (top) and generated (bottom) at the same true point."""
    n_events = min(n_events, len(simulated_charge))
    fig, axes = plt.subplots(2, n_events, figsize=(3.0 * n_events, 4.8), squeeze=False)
    for j in range(n_events):
        vmax = max(simulated_charge[j, 0].max(), 1.0)
        for row, (name, charge) in enumerate((("simulated", simulated_charge), ("generated", generated_charge))):
            ax = axes[row, j]
            image = ax.imshow(charge[j, 0], origin="lower", aspect="auto", cmap="viridis", vmin=0, vmax=vmax)
            fig.colorbar(image, ax=ax, label="pe")
            r, rphi, z = position_mm[j]
            ax.set_title(f"{name}: r={r:.0f}, r*phi={rphi:.1f}, z={z:.0f} mm", fontsize=7)
            ax.set_xlabel("phi column")
            ax.set_ylabel("z row")
    return save_figure(fig, path, dpi=110)


def _overlay(ax, simulated: np.ndarray, generated: np.ndarray, edges: np.ndarray, xlabel: str) -> None:
    centres = 0.5 * (edges[1:] + edges[:-1])
    for name, values, colour in (("simulated", simulated, "C0"), ("generated", generated, "C1")):
        density, error = histogram_with_error(values, edges)
        ax.step(centres, density, where="mid", color=colour, label=name)
        ax.fill_between(centres, density - error, density + error, step="mid", color=colour, alpha=0.3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("events (normalised)")
    ax.legend(fontsize=8)


def plot_total_charge(simulated_charge: np.ndarray, generated_charge: np.ndarray, path: Path) -> Path:
    simulated, generated = window_charge_pe(simulated_charge), window_charge_pe(generated_charge)
    lo, hi = np.percentile(np.concatenate([simulated, generated]), [0.5, 99.5])
    fig, ax = plt.subplots(figsize=(5, 3.6))
    _overlay(ax, simulated, generated, np.linspace(lo, hi, 41), "total charge in the readout window [pe]")
    ax.set_title("photopeak events, same true points; bands: Poisson 1 sigma", fontsize=8)
    return save_figure(fig, path)


def plot_centroid_residuals(simulated: dict[str, np.ndarray], generated_charge: np.ndarray, centroid: CentroidRMap,
                            path: Path) -> Path:
    """Charge centroid (+ r-map) minus the true point, per coordinate, for simulated and generated patterns."""
    true_mm = simulated["position_mm"]
    residual_sim = centroid.predict(simulated["sipm_charge"]) - true_mm
    residual_gen = centroid.predict(generated_charge) - true_mm
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for i, (ax, name) in enumerate(zip(axes, COORDINATES, strict=True)):
        lo, hi = np.nanpercentile(residual_sim[:, i], [2, 98])
        _overlay(ax, residual_sim[:, i], residual_gen[:, i], np.linspace(lo, hi, 41),
                 f"centroid {name} - true {name} [mm]")
    return save_figure(fig, path)


# ----- weak-lensing maps ----------------------------------------------------------------------------------------
def draw_lensing(datamodule: Any, predictions: dict[str, torch.Tensor], baselines: dict,
                 output_dir: Path) -> list[Path]:
    """The run's test maps (simulated) beside the generator's maps at their M_nu (the predictions)."""
    output_dir = Path(output_dir)
    generated = predictions["generated_convergence_map"]
    n = len(generated)  # fast_dev_run predicts only the first batch
    test = datamodule.events("test")
    simulated, m_nu = test.maps[:n], test.m_nu[:n].numpy()
    values = [m for m in datamodule.m_nu_values if np.any(np.isclose(m_nu, m))]
    sim_by = {m: simulated[np.isclose(m_nu, m)] for m in values}
    gen_by = {m: generated[np.isclose(m_nu, m)] for m in values}
    ell_edges = datamodule.ell_bin_edges(8)
    sigma, periodic = float(simulated.std()), datamodule.periodic_maps
    stats = {m: (lensing_statistics(sim_by[m], datamodule.field_deg, ell_edges, sigma, periodic),
                 lensing_statistics(gen_by[m], datamodule.field_deg, ell_edges, sigma, periodic)) for m in values}
    return [plot_lensing_maps(sim_by, gen_by, output_dir / "generated_vs_simulated_maps.png"),
            plot_lensing_statistics(stats, ell_edges, paired_generated=False,
                                    path=output_dir / "lensing_statistics.png")]


def plot_lensing_maps(simulated: dict[float, torch.Tensor], generated: dict[float, torch.Tensor], path: Path,
                      n_maps: int = 4) -> Path:
    """A few maps per M_nu: simulated row above generated row, one colour scale (kappa) for all."""
    vmax = 4 * float(torch.cat(list(simulated.values())).std())
    fig, axes = plt.subplots(2 * len(simulated), n_maps, figsize=(2.4 * n_maps, 2.4 * 2 * len(simulated)),
                             squeeze=False)
    for k, m_nu in enumerate(simulated):
        for row, (name, maps) in enumerate((("simulated", simulated[m_nu]), ("generated", generated[m_nu]))):
            for j in range(n_maps):
                ax = axes[2 * k + row, j]
                ax.set_axis_off()
                if j < len(maps):
                    ax.imshow(maps[j, 0], origin="lower", cmap="magma", vmin=-vmax / 2, vmax=vmax)
                    ax.set_title(f"{name}, M_nu={m_nu:g} eV", fontsize=7)
    fig.suptitle(f"convergence, colour scale -2 to +4 sigma_kappa = {vmax / 4:.3g}", fontsize=8)
    return save_figure(fig, path, dpi=110)


def _band(ax, x, mean, error, colour, label, step=False):
    if step:
        ax.step(x, mean, where="mid", color=colour, label=label)
        ax.fill_between(x, mean - error, mean + error, step="mid", color=colour, alpha=0.3)
    else:
        ax.plot(x, mean, color=colour, label=label)
        ax.fill_between(x, mean - error, mean + error, color=colour, alpha=0.3)


def _ell_axis(ax) -> None:
    """A log multipole axis labelled at 1-2-5 steps: matplotlib labels every minor tick of an axis spanning less
    than a decade, and those labels overlap."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_lensing_statistics(stats: dict[float, tuple[dict, dict]], ell_bin_edges: np.ndarray, path: Path,
                            paired_generated: bool) -> Path:
    """stats[M_nu] = (simulated, generated) per-map statistics (lensing_statistics). Panels: ell^2 C_ell / 2 pi,
    generated / simulated C_ell, the massive / massless C_ell ratio (with two cosmologies), pixel PDF, peak
    counts, V0, V1, V2; bands: error of the mean (the ratio's: ratio_with_error, generated maps `paired` when
    both cosmologies share the generator noise)."""
    ell = np.sqrt(ell_bin_edges[1:] * ell_bin_edges[:-1])
    nu = {k: 0.5 * (v[1:] + v[:-1]) for k, v in LENSING_NU_EDGES.items()}
    panels = [("power_spectrum", ell, "ell", "ell^2 C_ell / 2 pi"),
              ("power_ratio", ell, "ell", "C_ell generated / simulated"),
              ("m_nu_ratio", ell, "ell", "C_ell(massive) / C_ell(massless)"),
              ("one_point_pdf", nu["one_point_pdf"], "nu = kappa / sigma", "pixel PDF"),
              ("peak_counts", nu["peak_counts"], "peak height nu", "peaks per map"),
              ("minkowski_v0", nu["minkowski_functionals"], "nu", "V0"),
              ("minkowski_v1", nu["minkowski_functionals"], "nu", "V1 [1/pixel]"),
              ("minkowski_v2", nu["minkowski_functionals"], "nu", "V2 [1/pixel^2]")]
    fig, axes = plt.subplots(2, 4, figsize=(17, 7.5))
    styles = {}
    for k, m_nu in enumerate(stats):
        styles[m_nu] = (f"C{2 * k}", f"C{2 * k + 1}")
    for ax, (name, x, xlabel, ylabel) in zip(axes.flat, panels, strict=True):
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        if name == "m_nu_ratio":
            if len(stats) == 2:
                (m0, (sim0, gen0)), (m1, (sim1, gen1)) = stats.items()
                for label, a, b, paired, colour in (("simulated", sim1, sim0, False, "C0"),
                                                    ("generated", gen1, gen0, paired_generated, "C1")):
                    ratio, error = ratio_with_error(a["power_spectrum"], b["power_spectrum"], paired)
                    _band(ax, ell, ratio, error, colour, label)
                ax.set_title(f"M_nu {m1:g} / {m0:g} eV", fontsize=8)
                _ell_axis(ax)
                ax.legend(fontsize=7)
            continue
        for m_nu, (sim, gen) in stats.items():
            c_sim, c_gen = styles[m_nu]
            if name == "power_ratio":
                comparison = compare_statistics({"p": sim["power_spectrum"]}, {"p": gen["power_spectrum"]})["p"]
                error = comparison["ratio"] * np.hypot(comparison["simulated_error"] / comparison["simulated"],
                                                       comparison["generated_error"] / comparison["generated"])
                _band(ax, x, comparison["ratio"], error, c_gen, f"M_nu={m_nu:g} eV")
                ax.axhline(1.0, color="k", lw=0.5)
                _ell_axis(ax)
                continue
            factor = ell**2 / (2 * np.pi) if name == "power_spectrum" else 1.0
            comparison = compare_statistics({name: sim[name]}, {name: gen[name]})[name]
            _band(ax, x, factor * comparison["simulated"], factor * comparison["simulated_error"], c_sim,
                  f"simulated {m_nu:g} eV", step=name != "power_spectrum")
            _band(ax, x, factor * comparison["generated"], factor * comparison["generated_error"], c_gen,
                  f"generated {m_nu:g} eV", step=name != "power_spectrum")
            if name == "power_spectrum":
                _ell_axis(ax)
                ax.set_yscale("log")
        ax.legend(fontsize=6)
    fig.suptitle("generated vs simulated convergence maps; bands: error of the mean", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)
