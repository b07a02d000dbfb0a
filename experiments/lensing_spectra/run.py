"""Validation study of the weak-lensing simulator and its Bayes-optimal baseline.

Prints the numbers recorded in README.md and saves figures to experiments/lensing_spectra/figures/:

1. C_ell^kappa for M_nu = 0 and 0.1 eV (fixed A_s, Omega_m), the suppression, and the two CAMB routes.
2. The binned power of simulated Gaussian and lognormal maps against the input spectrum.
3. The one-point distribution of Gaussian and lognormal convergence.
4. The likelihood-ratio (Bayes-optimal) and power-spectrum classifiers at the reference setup, noisy and
   noise-free, and the optimal accuracy against source redshift.

Run from the repository root:  python experiments/lensing_spectra/run.py  (about 2-5 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import norm

from numl.baselines.lensing import GaussianLikelihoodRatio, PowerSpectrumClassifier
from numl.figures.common import plt
from numl.sim.lensing import (
    ConvergenceMapSimulator,
    ConvergenceSpectra,
    Cosmology,
    convergence_power_spectra,
    measure_power_spectrum,
    required_ell_max,
)

FIELD_DEG, N_PIX = 5.0, 128
SOURCE_Z = [0.5, 1.0, 1.5, 2.0]


def accuracy(score_massless: torch.Tensor, score_massive: torch.Tensor) -> float:
    return 0.5 * ((score_massive > 0).double().mean() + (score_massless <= 0).double().mean()).item()


def predicted_accuracy(moments: dict[str, float]) -> float:
    """Accuracy of the sign test if the score is normal with the analytic moments."""
    return 0.5 * (norm.cdf(moments["mean_massive"] / moments["std_massive"])
                  + norm.cdf(-moments["mean_massless"] / moments["std_massless"]))


def plane(spectra: ConvergenceSpectra, i: int) -> ConvergenceSpectra:
    return ConvergenceSpectra(ell=spectra.ell, cl=spectra.cl[i : i + 1, i : i + 1],
                              source_redshifts=spectra.source_redshifts[i : i + 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=".cache/camb")
    parser.add_argument("--figures", default=str(Path(__file__).parent / "figures"))
    parser.add_argument("--n-maps", type=int, default=2000, help="test maps per class")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # shows the CAMB progress lines
    figures = Path(args.figures)
    figures.mkdir(parents=True, exist_ok=True)
    ell_max = required_ell_max(FIELD_DEG, N_PIX) + 83  # 6600

    start = time.perf_counter()
    tomo = [convergence_power_spectra(Cosmology(m_nu_ev=m), SOURCE_Z, ell_max, args.cache_dir) for m in (0.0, 0.1)]
    limber = convergence_power_spectra(Cosmology(), [1.0], ell_max, args.cache_dir, route="limber")
    print(f"CAMB spectra ready in {time.perf_counter() - start:.1f} s")
    i1 = SOURCE_Z.index(1.0)
    massless, massive = plane(tomo[0], i1), plane(tomo[1], i1)

    # 1. spectra, suppression, routes
    ell = massless.ell[2:]
    ratio_mnu = massive.cl[0, 0, 2:] / massless.cl[0, 0, 2:]
    ratio_routes = limber.cl[0, 0, 2:] / massless.cl[0, 0, 2:]
    window = (ell >= 100) & (ell <= 5000)
    print(f"M_nu=0.1 eV / massless C_ell^kappa at z_s=1: ell=100 {ratio_mnu[98]:.4f}, ell=1000 {ratio_mnu[998]:.4f}, "
          f"ell=5000 {ratio_mnu[4998]:.4f}")
    print(f"Limber(Weyl) / source-window over 100..5000: {ratio_routes[window].min():.4f} .. "
          f"{ratio_routes[window].max():.4f}")
    fig, axes = plt.subplots(2, 1, figsize=(6, 6), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    for k, z in enumerate(SOURCE_Z):
        axes[0].loglog(ell, ell * (ell + 1) * tomo[0].cl[k, k, 2:] / (2 * np.pi), label=f"$z_s={z}$")
    axes[0].set_ylabel(r"$\ell(\ell+1)C_\ell^{\kappa}/2\pi$ ($M_\nu=0$)")
    axes[0].legend()
    axes[1].semilogx(ell, ratio_mnu, label=r"$M_\nu=0.1$ eV / 0")
    axes[1].semilogx(ell, ratio_routes, label="Limber (Weyl) / source window")
    axes[1].set_xlabel(r"$\ell$")
    axes[1].set_ylabel("ratio, $z_s=1$")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(figures / "spectra.png", dpi=120)
    plt.close(fig)

    # 2./3. simulated maps against the input
    edges = np.geomspace(100, 6000, 16)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for field, colour in (("gaussian", "C0"), ("lognormal", "C1")):
        sim = ConvergenceMapSimulator(massless, FIELD_DEG, N_PIX, field=field, galaxy_density_arcmin2=None)
        maps = sim.sample(1000, seed=1)
        centers, measured = measure_power_spectrum(maps, FIELD_DEG, edges)
        _, expected = sim.expected_binned_power(edges)
        dev = measured[0, 0] / expected[0, 0] - 1
        values = maps.double().flatten()
        skew = (((values - values.mean()) ** 3).mean() / values.var() ** 1.5).item()
        print(f"{field}: measured/input binned power - 1 in [{dev.min():+.4f}, {dev.max():+.4f}]; "
              f"variance {values.var().item():.3e} (target {sim.target_pixel_variance()[0]:.3e}), skewness {skew:.2f}")
        axes[0].semilogx(centers, dev, "o-", color=colour, label=field)
        axes[1].hist(values.numpy()[::50], bins=200, histtype="step", density=True, color=colour, label=field)
    axes[0].axhline(0, color="k", lw=0.5)
    axes[0].set_xlabel(r"$\ell$")
    axes[0].set_ylabel("measured / input - 1 (1000 maps, noise-free)")
    axes[0].legend()
    axes[1].set_yscale("log")
    axes[1].set_xlabel(r"$\kappa$ ($z_s=1$, 2.3' pixels)")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(figures / "maps_check.png", dpi=120)
    plt.close(fig)

    # 4. classifiers at the reference setup
    n = args.n_maps
    for noise in (30.0, None):
        kwargs = dict(field_deg=FIELD_DEG, n_pix=N_PIX, galaxy_density_arcmin2=noise)
        sims = [ConvergenceMapSimulator(s, **kwargs) for s in (massless, massive)]
        lr = GaussianLikelihoodRatio(*sims)
        test = [sims[0].sample(n, seed=10), sims[1].sample(n, seed=11)]
        fit = torch.cat([sims[0].sample(n, seed=12), sims[1].sample(n, seed=13)])
        labels = torch.cat([torch.zeros(n), torch.ones(n)])
        ps = PowerSpectrumClassifier(FIELD_DEG, np.geomspace(100, 4600, 13)).fit(fit, labels)
        moments = lr.expected_log_likelihood_ratio()
        acc_lr = accuracy(*(lr.log_likelihood_ratio(m) for m in test))
        acc_ps = accuracy(*(ps.log_likelihood_ratio(m) for m in test))
        err = np.sqrt(acc_lr * (1 - acc_lr) / (2 * n))  # binomial error on 2n test maps
        print(f"n_gal={noise}: LR accuracy {acc_lr:.4f} +- {err:.4f} (analytic {predicted_accuracy(moments):.4f}), "
              f"power-spectrum classifier {acc_ps:.4f}; KL(massive||massless) {moments['mean_massive']:.2f}")

    # Optimal accuracy against source redshift (analytic moments, no sampling).
    rows = []
    for k, z in enumerate(SOURCE_Z):
        for noise in (30.0, None):
            lr = GaussianLikelihoodRatio(plane(tomo[0], k), plane(tomo[1], k), field_deg=FIELD_DEG, n_pix=N_PIX,
                                         galaxy_density_arcmin2=noise)
            rows.append((z, noise, predicted_accuracy(lr.expected_log_likelihood_ratio())))
    lr_tomo = GaussianLikelihoodRatio(*tomo, field_deg=FIELD_DEG, n_pix=N_PIX, galaxy_density_arcmin2=30.0)
    acc_tomo = predicted_accuracy(lr_tomo.expected_log_likelihood_ratio())
    for z, noise, acc in rows:
        print(f"optimal accuracy z_s={z} n_gal={noise}: {acc:.4f}")
    print(f"optimal accuracy, 4 tomographic planes {SOURCE_Z} with n_gal=30 each: {acc_tomo:.4f}")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for noise, marker in ((30.0, "o-"), (None, "s--")):
        ax.plot(SOURCE_Z, [a for z, nz, a in rows if nz == noise], marker,
                label="noise-free" if noise is None else f"$n_g={noise:g}$/arcmin$^2$")
    ax.set_xlabel("source redshift $z_s$")
    ax.set_ylabel("Bayes-optimal accuracy")
    ax.set_title(r"$M_\nu$ = 0 vs 0.1 eV, 5x5 deg, 128 px")
    ax.legend()
    fig.tight_layout()
    fig.savefig(figures / "optimal_accuracy_vs_zs.png", dpi=120)
    plt.close(fig)
    print(f"done in {time.perf_counter() - start:.1f} s; figures in {figures}")


if __name__ == "__main__":
    main()
