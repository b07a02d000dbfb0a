"""numl's atmospheric muon bundles against KM3NeT's own MUPAGE files in km3net-testdata (issue 16): the rate of
bundles above each file's energy threshold, and two-sample Kolmogorov-Smirnov p-values of the muon multiplicity,
the bundle's zenith, each muon's energy and the bundle's energy (at the can), numl's bundles drawn with the files'
MUPAGE settings (their headers).

    python experiments/km3net_reconstruction/mupage_check.py   # about 90 s; writes results/mupage_check.md
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from km3net_testdata import data_path
from scipy.stats import ks_2samp

from numl.sim.km3net.atmospheric import BundleGenerator, read_mupage_bundles, sample_summary

RESULTS = Path(__file__).parent / "results"
# ARCA site: seabed 3450 m below the surface at z = 0; can radius 1018.4 m from z = 0 to 957 m; zenith 0-85 deg.
# Bundle thresholds: the files' smallest bundle energies (10,005.6 and 50,007.7 GeV); rates: events / livetime.
MUPAGE_FILES = {
    "atmospheric_muons_sample.h5 (> 10 TeV)": ("hdf5/atmospheric_muons_sample.h5", 1e4, 25_000, 6_660.0, 2000),
    "mupage_ARCA.h5 (> 50 TeV)": ("hdf5/mupage_ARCA.h5", 5e4, 10_000, 106_000.0, 500),
}


def compare_with_file(path: str, threshold_gev: float, n_bundles: int, seed: int = 1
                      ) -> tuple[float, float, dict[str, float]]:
    """(numl's rate (Hz), its statistical error, KS p-value per quantity) against the MUPAGE file at `path`."""
    generator = BundleGenerator((0.0, 0.0), 1018.4, 0.0, 957.0, seabed_depth_m=3450.0, seabed_z_m=0.0,
                                bundle_energy_min_gev=threshold_gev)
    sample = generator.sample(np.random.default_rng(seed), n_bundles)
    ours, theirs = sample_summary(sample), read_mupage_bundles(data_path(path))
    return sample.rate_hz, sample.rate_uncertainty_hz, {k: float(ks_2samp(ours[k], theirs[k]).pvalue) for k in ours}


def main() -> None:
    lines = ["| MUPAGE file | its bundles | its rate (Hz) | numl's rate (Hz) | ratio | KS p: multiplicity | "
             "zenith | muon energy | bundle energy |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, (path, threshold, events, livetime_s, n_bundles) in MUPAGE_FILES.items():
        rate, error, p = compare_with_file(path, threshold, n_bundles)
        n_file = len(read_mupage_bundles(data_path(path))["n_muons"])
        file_rate = events / livetime_s
        lines.append(f"| {name} | {n_file} | {file_rate:.4g} | {rate:.4g} +- {error:.2g} | {rate / file_rate:.3f} | "
                     + " | ".join(f"{p[k]:.3f}" for k in ("n_muons", "cos_zenith", "muon_energy_gev",
                                                          "bundle_energy_gev")) + " |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "mupage_check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
