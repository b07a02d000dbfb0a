"""nu_mu CC kinematics of numl's simulation (numl.sim.km3net.kinematics) against the literature and the official
ORCA6 file's GENIE truth (issue 16): <y>(E) and sigma_CC / E, the nu-mu angle, E_mu / E_nu and Bjorken y at the
file's neutrino energies. Writes results/kinematics.md and results/kinematics.json; a few seconds.

    python experiments/km3net_reconstruction/kinematics.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import stats

from numl.data.km3net import read_file_kinematics
from numl.sim.km3net import kinematics
from numl.sim.km3net.detector import resolve_testdata_path

ORCA6_FILE = "mcv6.0.gsg_muon_highE-CC_50-500GeV.km3sim.jterbr00008357.jorcarec.aanet.905.root"
#: nu_mu CC <y> and sigma_CC / E (1e-38 cm^2 / GeV) of Gandhi, Quigg, Reno, Sarcevic, Phys. Rev. D 58 (1998)
#: 093009 (their tables of cross sections and mean inelasticity; CTEQ4-DIS, isoscalar nucleon)
GANDHI_MEAN_Y = {10.0: 0.483, 100.0: 0.477, 1000.0: 0.472, 10000.0: 0.426}
GANDHI_SIGMA_OVER_E = {10.0: 0.777, 100.0: 0.697, 1000.0: 0.625, 10000.0: 0.454}
#: PDG world average of sigma_CC(nu_mu N) / E, 30-200 GeV (Review of Particle Physics, neutrino cross sections)
PDG_SIGMA_OVER_E, PDG_SIGMA_OVER_E_ERR = 0.677, 0.014
QUANTITIES = {"angle_deg": "nu-mu angle (deg)", "muon_fraction": "E_mu / E_nu", "bjorken_y": "Bjorken y"}
ENERGY_BINS_GEV = (50.0, 100.0, 200.0, 500.0)


def bootstrap_median_err(values: np.ndarray, rng: np.random.Generator, n: int = 2000) -> float:
    return float(np.std([np.median(rng.choice(values, len(values))) for _ in range(n)]))


def compare(file: dict[str, np.ndarray], keep: np.ndarray, per_event: int, rng: np.random.Generator) -> dict:
    """numl sampled at the kept file events' energies against the file, per quantity: medians (bootstrap error of
    the file's), means and the two-sample KS p-value; the angle's median per energy bin too."""
    ours = kinematics.sample_at_energies(rng, file["energy_gev"][keep], per_event)
    out = {"events": int(keep.sum())}
    for key in QUANTITIES:
        f = file[key][keep]
        out[key] = {"file_median": float(np.median(f)), "file_median_err": bootstrap_median_err(f, rng),
                    "file_mean": float(np.mean(f)), "numl_median": float(np.median(ours[key])),
                    "numl_mean": float(np.mean(ours[key])), "ks_p": float(stats.ks_2samp(f, ours[key]).pvalue)}
    energies = np.repeat(file["energy_gev"][keep], per_event)
    out["angle_by_energy"] = []
    for lo, hi in zip(ENERGY_BINS_GEV[:-1], ENERGY_BINS_GEV[1:], strict=True):
        f = file["angle_deg"][keep][(file["energy_gev"][keep] >= lo) & (file["energy_gev"][keep] < hi)]
        o = ours["angle_deg"][(energies >= lo) & (energies < hi)]
        out["angle_by_energy"].append({"bin_gev": [lo, hi], "events": len(f), "file_median": float(np.median(f)),
                                       "file_median_err": bootstrap_median_err(f, rng),
                                       "numl_median": float(np.median(o)),
                                       "ks_p": float(stats.ks_2samp(f, o).pvalue)})
    return out


def run(per_event: int = 50, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    literature = [{"energy_gev": e, "numl_mean_y": kinematics.mean_y(e), "gandhi_mean_y": GANDHI_MEAN_Y[e],
                   "numl_sigma_over_e": kinematics.sigma_cc_cm2(e) / e / 1e-38,
                   "gandhi_sigma_over_e": GANDHI_SIGMA_OVER_E[e]} for e in GANDHI_MEAN_Y]
    pdg_range = np.geomspace(30.0, 200.0, 9)
    numl_pdg = float(np.mean([kinematics.sigma_cc_cm2(e) / e / 1e-38 for e in pdg_range]))
    low_energy = [{"energy_gev": e, **{k: float(np.median(v)) for k, v in
                                       kinematics.sample_at_energies(rng, np.array([e]), 4000).items()}}
                  for e in (3.0, 5.0, 10.0, 30.0, 100.0, 300.0)]
    file = read_file_kinematics(resolve_testdata_path(ORCA6_FILE, "offline", "file"))
    in_can = file["vertex_in_can"] == 1
    # the file's own (E, x, y) through numl's exact kinematics (free nucleon at rest, muon mass)
    angle_kin = np.degrees(np.arccos(kinematics.muon_cos_theta(file["energy_gev"], file["bjorken_x"],
                                                               file["bjorken_y"])))
    return {"file": ORCA6_FILE, "per_event": per_event, "seed": seed, "literature": literature,
            "pdg": {"numl_sigma_over_e_30_200": numl_pdg, "pdg": PDG_SIGMA_OVER_E, "pdg_err": PDG_SIGMA_OVER_E_ERR},
            "numl_medians_vs_energy": low_energy,
            "exact_kinematics": {"median_ratio": float(np.median(file["angle_deg"] / angle_kin)),
                                 "median_abs_rel_diff": float(np.median(np.abs(file["angle_deg"] / angle_kin - 1))),
                                 "median_angle_from_xy": float(np.median(angle_kin)),
                                 "median_angle_file": float(np.median(file["angle_deg"]))},
            "vertex_in_can": compare(file, in_can, per_event, rng),
            "all_events": compare(file, np.ones(len(in_can), bool), per_event, rng)}


def markdown(r: dict) -> str:
    lines = ["| E (GeV) | <y> numl | <y> Gandhi et al. 1998 | sigma_CC/E numl (1e-38 cm^2/GeV) | Gandhi et al. 1998 |",
             "|---|---|---|---|---|"]
    lines += [f"| {x['energy_gev']:g} | {x['numl_mean_y']:.3f} | {x['gandhi_mean_y']:.3f} | "
              f"{x['numl_sigma_over_e']:.3f} | {x['gandhi_sigma_over_e']:.3f} |" for x in r["literature"]]
    p = r["pdg"]
    lines += ["", f"sigma_CC/E averaged over 30-200 GeV: numl {p['numl_sigma_over_e_30_200']:.3f}, PDG world average "
              f"{p['pdg']:.3f} +- {p['pdg_err']:.3f} (1e-38 cm^2/GeV).", ""]
    lines += ["| E (GeV) | numl median nu-mu angle (deg) | median E_mu/E_nu | median y |", "|---|---|---|---|"]
    lines += [f"| {x['energy_gev']:g} | {x['angle_deg']:.2f} | {x['muon_fraction']:.3f} | {x['bjorken_y']:.3f} |"
              for x in r["numl_medians_vs_energy"]]
    k = r["exact_kinematics"]
    lines += ["", f"Exact kinematics on the file's own (E, x, y): median angle {k['median_angle_from_xy']:.3f} deg "
              f"against the file's muons' {k['median_angle_file']:.3f} deg; median |ratio - 1| "
              f"{k['median_abs_rel_diff']:.4f}.", ""]
    for name, label in (("vertex_in_can", "vertex inside the can"), ("all_events", "all events")):
        c = r[name]
        lines += [f"File vs numl at the file's energies, {label} ({c['events']} events, numl {r['per_event']} per "
                  "event):", "", "| quantity | file median | numl median | file mean | numl mean | KS p |",
                  "|---|---|---|---|---|---|"]
        for key, title in QUANTITIES.items():
            q = c[key]
            lines.append(f"| {title} | {q['file_median']:.3f} +- {q['file_median_err']:.3f} | {q['numl_median']:.3f} "
                         f"| {q['file_mean']:.3f} | {q['numl_mean']:.3f} | {q['ks_p']:.3f} |")
        for b in c["angle_by_energy"]:
            lo, hi = b["bin_gev"]
            lines.append(f"| nu-mu angle, {lo:g}-{hi:g} GeV ({b['events']} events) | {b['file_median']:.3f} +- "
                         f"{b['file_median_err']:.3f} | {b['numl_median']:.3f} | | | {b['ks_p']:.3f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--per-event", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    result = run(args.per_event, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "kinematics.json").write_text(json.dumps(result, indent=1))
    (args.out / "kinematics.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
