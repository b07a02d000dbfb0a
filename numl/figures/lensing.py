"""Lensing figures: example maps of each class, the spectrum check, the ROC of the network beside the
baselines' (classification) or the M_nu scatter and pulls (regression)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from numl.baselines.base import BaselineResult
from numl.figures.common import plt, save_figure, save_regression_figures, save_roc_curves, score_curves
from numl.sim.lensing import measure_power_spectrum
from numl.sim.lensing.maps import default_apodisation_pixels


def draw(datamodule: Any, predictions: dict[str, torch.Tensor], baselines: dict[str, BaselineResult],
         output_dir: Path) -> list[Path]:
    """Every lensing figure the run's outputs allow, into `output_dir`."""
    output_dir = Path(output_dir)
    test = datamodule.events("test")
    paths = [plot_example_maps(test.maps, test.labels, datamodule.m_nu_values, datamodule.field_deg,
                               output_dir / "example_maps.png")]
    if datamodule.source != "fits":  # maps from elsewhere: no CAMB spectra of their cosmology to compare with
        datamodule.build_simulators()
        ell_edges = datamodule.ell_bin_edges(15)
        taper = default_apodisation_pixels(datamodule.periodic_maps, datamodule.n_pix)
        measured = [measure_power_spectrum(test.maps[test.labels == k][:256], datamodule.field_deg, ell_edges, taper)
                    for k in range(len(datamodule.m_nu_values)) if (test.labels == k).any()]
        paths.append(plot_spectra_check(datamodule.simulators, datamodule.m_nu_values, measured,
                                        output_dir / "power_spectra.png"))
    curves = score_curves(predictions, baselines)
    if curves:
        paths.append(save_roc_curves(curves, output_dir / "roc_vs_baselines.png", positive="massive",
                                     negative="massless"))
    return paths + save_regression_figures(predictions, output_dir)


def plot_example_maps(maps: torch.Tensor, labels: torch.Tensor, m_nu_values: list[float], field_deg: float,
                      path: Path, per_class: int = 3) -> Path:
    """First channel of a few maps of each class, in units of the map's standard deviation."""
    classes = [k for k in range(len(m_nu_values)) if (labels == k).any()][:4]
    fig, axes = plt.subplots(len(classes), per_class, figsize=(3 * per_class, 3 * len(classes)), squeeze=False)
    scale = float(maps[:, 0].std())
    for row, k in enumerate(classes):
        members = maps[labels == k][:per_class, 0]
        for col in range(per_class):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col < len(members):
                im = ax.imshow(members[col].numpy() / scale, cmap="RdBu_r", vmin=-3, vmax=3,
                               extent=(0, field_deg, 0, field_deg))
            if col == 0:
                ax.set_ylabel(f"M_nu = {m_nu_values[k]:.2f} eV")
    fig.colorbar(im, ax=axes, shrink=0.8, label="kappa / sigma_kappa")
    fig.suptitle(f"convergence maps, {field_deg:g} x {field_deg:g} deg")
    return save_figure(fig, path, dpi=110, tight=False)


def plot_spectra_check(simulators, m_nu_values: list[float], measured: list[tuple], path: Path) -> Path:
    """CAMB's C_ell^kappa (+ shape noise) per class, the input of Gaussian and lognormal maps and the reference of
    N-body ones, against the spectrum measured on the test maps, and the massive/massless ratio that carries the
    neutrino signal."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 7), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    inputs = []
    for k, (simulator, (ell_centers, cl_measured)) in enumerate(zip(simulators, measured, strict=False)):
        spectra = simulator.spectra
        ell = spectra.ell[2:]
        total = spectra.cl[0, 0, 2:] + float(np.atleast_1d(simulator.noise_power)[0])
        inputs.append((ell, spectra.cl[0, 0, 2:]))
        line, = top.loglog(ell, ell * (ell + 1) * total / (2 * np.pi), label=f"CAMB, M_nu={m_nu_values[k]:.2f} eV")
        cl = np.asarray(cl_measured)[0, 0]
        ec = np.asarray(ell_centers)
        top.loglog(ec, ec * (ec + 1) * cl / (2 * np.pi), "o", color=line.get_color(), ms=4,
                   label=f"measured on test maps, M_nu={m_nu_values[k]:.2f} eV")
    top.set_ylabel("ell (ell + 1) C_ell / 2 pi  (signal + noise)")
    top.legend(fontsize=7)
    if len(inputs) >= 2:
        (ell, c0), (_, c1) = inputs[0], inputs[-1]
        bottom.semilogx(ell, c1 / c0, label="C_ell(massive) / C_ell(massless), signal only")
        bottom.axhline(1, color="k", lw=0.5)
        bottom.set_ylabel("ratio")
        bottom.legend(fontsize=7)
    bottom.set_xlabel("multipole ell")
    return save_figure(fig, path, dpi=110)
