"""Atmospheric muons against neutrinos in ORCA6 (issue 16), from the orca6_atmospheric_muons run's test predictions:
the classical selection (events reconstructed going up, by the network and by the chi-square track fit) against the
network's atmospheric-muon probability, at the same efficiency for the neutrinos that selection is for (truly
up-going ones), and the muons reconstructed going up against their true zenith.

    python experiments/km3net_reconstruction/atmospheric_muons.py \
        --run logs/km3net_reconstruction/orca6_atmospheric_muons
    # writes results/atmospheric_muons.md, results/atmospheric_muons.json and results/figures/atmospheric_muons.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from numl.sim.km3net.events import EVENT_TYPES, is_atmospheric_muon_event  # noqa: E402

RESULTS = Path(__file__).parent / "results"
COS_ZENITH_EDGES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # of the bundle's arrival: 1 straight down
FIT_KEY = "baseline/track_fit/direction"


def fraction(selected: np.ndarray) -> tuple[float, float]:
    """Fraction selected and its binomial error (one event's worth when none or all are)."""
    n = len(selected)
    p = float(np.mean(selected)) if n else float("nan")
    return p, float(np.sqrt(max(p * (1 - p), 1.0 / n) / n)) if n else float("nan")


def muons_kept_at_efficiency(muon_probability: np.ndarray, is_muon: np.ndarray, neutrinos: np.ndarray,
                             efficiency: float) -> tuple[float, float, float]:
    """Keeping events below a muon-probability threshold that keeps `efficiency` of the `neutrinos` (a mask):
    (threshold, fraction of the muons kept, its error)."""
    threshold = float(np.quantile(muon_probability[neutrinos], efficiency))
    return (threshold, *fraction(muon_probability[is_muon] <= threshold))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="run directory of orca6_atmospheric_muons")
    args = parser.parse_args()
    p = np.load(args.run / "test_predictions.npz")
    is_muon = is_atmospheric_muon_event(p["network/event_type"])
    true_dir, network_dir = p["network/direction"], p["network/direction_pred"]
    up_neutrinos = ~is_muon & (true_dir[:, 2] > 0.0)
    muon_probability = p["network/atmospheric_muon_probability"]
    selections = {"network direction going up": network_dir[:, 2] > 0.0}
    if FIT_KEY in p:
        # a failed fit selects nothing
        selections["chi-square fit direction going up"] = p["baseline/track_fit/ok"] & (p[FIT_KEY][:, 2] > 0.0)
    results = {"events": {"atmospheric_muons": int(is_muon.sum()), "neutrinos": int((~is_muon).sum()),
                          "up_going_neutrinos": int(up_neutrinos.sum())},
               "muon_auroc": float(roc_auc_score(is_muon, muon_probability)),
               "median_angle_deg": {}, "selections": {}}
    errors = {"network": p["network/angular_error_deg"]}
    if FIT_KEY in p:
        errors["chi-square fit"] = np.where(p["baseline/track_fit/ok"], p["baseline/track_fit/angular_error_deg"],
                                            np.nan)
    for kind, code in EVENT_TYPES.items():
        members = p["network/event_type"] == code
        if members.any():
            results["median_angle_deg"][kind] = {name: float(np.nanmedian(e[members])) for name, e in errors.items()}
    for name, selected in selections.items():
        efficiency, efficiency_error = fraction(selected[up_neutrinos])
        muons, muons_error = fraction(selected[is_muon])
        threshold, head_muons, head_error = muons_kept_at_efficiency(muon_probability, is_muon, up_neutrinos,
                                                                     efficiency)
        both = selected & (muon_probability <= threshold)
        results["selections"][name] = {
            "up_going_neutrino_efficiency": [efficiency, efficiency_error],
            "muons_kept": [muons, muons_error],
            "muon_head_at_same_efficiency": {"threshold": threshold, "muons_kept": [head_muons, head_error]},
            "both": {"up_going_neutrino_efficiency": list(fraction(both[up_neutrinos])),
                     "muons_kept": list(fraction(both[is_muon]))}}
    # muons reconstructed going up against their true arrival zenith
    cos_zenith = -true_dir[is_muon, 2]
    rows = []
    for low, high in zip(COS_ZENITH_EDGES[:-1], COS_ZENITH_EDGES[1:], strict=True):
        in_bin = (cos_zenith >= low) & (cos_zenith < high)
        row = {"low": low, "high": high, "muons": int(in_bin.sum())}
        for name, selected in selections.items():
            row[name] = list(fraction(selected[is_muon][in_bin]))
        rows.append(row)
    results["muons_going_up_by_cos_zenith"] = rows

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "atmospheric_muons.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [f"Test events: {results['events']['atmospheric_muons']} atmospheric muon bundles, "
             f"{results['events']['neutrinos']} neutrinos ({results['events']['up_going_neutrinos']} going up). "
             f"Muon head AUROC (muons against all neutrinos): {results['muon_auroc']:.3f}. Median angle (deg): "
             + "; ".join(f"{kind} " + ", ".join(f"{name} {v:.1f}" for name, v in by_method.items())
                         for kind, by_method in results["median_angle_deg"].items()) + ".", "",
             "| selection | up-going neutrinos kept | muons kept | muon head at that efficiency: muons kept | "
             "both: neutrinos kept | both: muons kept |", "| --- | --- | --- | --- | --- | --- |"]
    for name, r in results["selections"].items():
        cells = [r["up_going_neutrino_efficiency"], r["muons_kept"], r["muon_head_at_same_efficiency"]["muons_kept"],
                 r["both"]["up_going_neutrino_efficiency"], r["both"]["muons_kept"]]
        lines.append(f"| {name} | " + " | ".join(f"{v:.4f} +- {e:.4f}" for v, e in cells) + " |")
    lines += ["", "| true cos(zenith) of the muon | muons | " + " | ".join(f"{n}: fraction" for n in selections)
              + " |", "| --- | --- | " + " | ".join("---" for _ in selections) + " |"]
    for row in rows:
        lines.append(f"| {row['low']:g}-{row['high']:g} | {row['muons']} | "
                     + " | ".join(f"{row[n][0]:.3f} +- {row[n][1]:.3f}" for n in selections) + " |")
    (RESULTS / "atmospheric_muons.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    bins = np.linspace(0.0, 1.0, 41)
    left.hist(muon_probability[is_muon], bins, histtype="step", label="atmospheric muons", density=True)
    left.hist(muon_probability[up_neutrinos], bins, histtype="step", label="up-going neutrinos", density=True)
    left.set(xlabel="network's atmospheric-muon probability", ylabel="density", yscale="log")
    left.legend()
    shown = [r for r in rows if r["muons"] >= 10]  # a bin of a few muons says nothing on a log scale
    centres = [0.5 * (r["low"] + r["high"]) for r in shown]
    for name in selections:
        right.errorbar(centres, [r[name][0] for r in shown], yerr=[r[name][1] for r in shown], marker="o",
                       label=name, capsize=3)
    right.set(xlabel="true cos(zenith) of the bundle (1: straight down)", ylabel="muons reconstructed going up",
              yscale="log")
    right.legend()
    figure.tight_layout()
    (RESULTS / "figures").mkdir(exist_ok=True)
    figure.savefig(RESULTS / "figures" / "atmospheric_muons.png", dpi=120)


if __name__ == "__main__":
    main()
