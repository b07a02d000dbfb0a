"""numl's atmospheric muon bundles against KM3NeT's own MUPAGE files in km3net-testdata (issue 16): the rate of
bundles above each file's energy threshold, and two-sample p-values of the muon multiplicity (chi-square on
binned counts), the bundle's zenith, each muon's energy and the bundle's energy at the can (Kolmogorov-Smirnov),
numl's bundles drawn with the files' MUPAGE settings (numl.sim.km3net.atmospheric.KM3NET_TESTDATA_MUPAGE).

    python experiments/km3net_reconstruction/mupage_check.py   # about 30 s; writes results/mupage_check.md
"""

from __future__ import annotations

from pathlib import Path

from numl.sim.km3net.atmospheric import KM3NET_TESTDATA_MUPAGE, compare_with_km3net_mupage_file

RESULTS = Path(__file__).parent / "results"
BUNDLES_DRAWN = {"atmospheric_muons_sample.h5 (> 10 TeV)": 2000, "mupage_ARCA.h5 (> 50 TeV)": 500}


def main() -> None:
    lines = ["| MUPAGE file | its bundles | its rate (Hz) | numl's rate / its rate | p: multiplicity (chi2) | "
             "zenith (KS) | muon energy (KS) | bundle energy (KS) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, (_, _, generated, livetime_s) in KM3NET_TESTDATA_MUPAGE.items():
        c = compare_with_km3net_mupage_file(name, BUNDLES_DRAWN[name])
        lines.append(f"| {name} | {c.file_bundles} | {generated / livetime_s:.4g} | {c.rate_ratio:.3f} +- "
                     f"{c.rate_ratio_error:.3f} | " + " | ".join(f"{c.p_values[k]:.3f}" for k in (
                         "n_muons", "cos_zenith", "muon_energy_gev", "bundle_energy_gev")) + " |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "mupage_check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
