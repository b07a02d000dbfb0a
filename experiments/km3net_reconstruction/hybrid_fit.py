"""The network, numl's fits, the fits started from the network (and with its prior) and the file's official
reconstruction on the same test events: median with its bootstrap 95 % interval, mean, share beyond 45 deg and per
bin of true energy; the paired bootstrap of each hybrid's median against the plain likelihood fit and the official
one; how far each hybrid ended from the network and from the plain fit. Figure: the cumulative angular error.

    python experiments/km3net_reconstruction/hybrid_fit.py --runs RUN [RUN ...] [--output-dir DIR]

Runs of one checkpoint (`numl.evaluate` runs with different baselines) are merged into one network seed; several
checkpoints are several seeds, each with its own table. It fits nothing: it reads each run's test_predictions.npz.
Writes hybrid_fit.{md,json} and figures/hybrid_fit.png under --output-dir (default: results/ beside this script).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from numl.baselines.km3net import network_fallback  # noqa: E402
from numl.sim.km3net.physics import angle_between_deg  # noqa: E402

METHODS = {"network": "network", "baseline/track_fit": "chi-square fit", "baseline/track_likelihood": "likelihood fit",
           "baseline/track_likelihood_network_start/fit": "likelihood fit from the network, the fit alone",
           "baseline/track_likelihood_network_start": "likelihood fit from the network, network outside its 99 % cone",
           "baseline/track_likelihood_network_prior/fit": "likelihood fit with the network's prior, the fit alone",
           "baseline/track_likelihood_network_prior": "likelihood fit with the network's prior, network outside its "
                                                      "99 % cone",
           "baseline/official_reconstruction": "official (JMuon)"}
HYBRIDS = ("baseline/track_likelihood_network_start/fit", "baseline/track_likelihood_network_start",
           "baseline/track_likelihood_network_prior/fit", "baseline/track_likelihood_network_prior")
ENERGY_EDGES_GEV = (50.0, 100.0, 200.0, 500.0)


def merged_seeds(runs: list[Path]) -> dict[str, dict[str, np.ndarray]]:
    """{checkpoint: {method or key: per-event array}} with every run of a checkpoint merged (same test events)."""
    seeds: dict[str, dict[str, np.ndarray]] = {}
    for run in runs:
        checkpoint = json.loads((run / "test_metrics.json").read_text())["checkpoint"]
        predictions = np.load(run / "test_predictions.npz")
        arrays = {key: predictions[key] for key in predictions.files}
        seed = seeds.setdefault(checkpoint, {})
        if seed and not np.allclose(seed["network/direction"], arrays["network/direction"]):
            raise SystemExit(f"hybrid_fit.py: {run} has other test events than the other runs of {checkpoint}")
        for hybrid in HYBRIDS:  # a hybrid's own fit, before the network answers outside its cone
            if f"{hybrid}/fit_direction" in arrays:
                arrays[f"{hybrid}/fit/direction"] = arrays[f"{hybrid}/fit_direction"]
                arrays[f"{hybrid}/fit/angular_error_deg"] = angle_between_deg(arrays[f"{hybrid}/fit_direction"],
                                                                              arrays["network/direction"])
        seed.update(arrays)
    return seeds


def bootstrap_medians(errors: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """Medians of `n` resamples of the events (errors: methods x events; the same events for every method)."""
    picks = rng.integers(0, errors.shape[-1], size=(n, errors.shape[-1]))
    return np.median(errors[..., picks], axis=-1)


def seed_summary(arrays: dict[str, np.ndarray], rng: np.random.Generator, n_resamples: int,
                 containments: list[float]) -> dict:
    methods = [m for m in METHODS if f"{m}/angular_error_deg" in arrays]
    errors = np.stack([arrays[f"{m}/angular_error_deg"] for m in methods])
    scored = np.all(np.isfinite(errors), axis=0)  # events every method scored (failed fits are NaN)
    errors = errors[:, scored]
    energy_gev = 10.0 ** arrays["network/log10_energy"][scored]
    resampled = bootstrap_medians(errors, rng, n_resamples)  # methods x resamples
    rows = {}
    for i, method in enumerate(methods):
        bins = {}
        for lo, hi in zip(ENERGY_EDGES_GEV[:-1], ENERGY_EDGES_GEV[1:], strict=True):
            chosen = (energy_gev >= lo) & (energy_gev < hi)
            bins[f"{lo:g}-{hi:g} GeV"] = (float(np.median(errors[i, chosen])) if chosen.any() else None,
                                          int(chosen.sum()))
        rows[method] = {"label": METHODS[method], "median": float(np.median(errors[i])),
                        "median_95": [float(np.percentile(resampled[i], q)) for q in (2.5, 97.5)],
                        "mean": float(np.mean(errors[i])), "beyond_45": float(np.mean(errors[i] > 45.0)),
                        "per_energy_bin": bins}
    paired = {}
    for hybrid in (h for h in HYBRIDS if h in methods):
        for reference in ("baseline/track_likelihood", "baseline/official_reconstruction", "network"):
            if reference not in methods:
                continue
            difference = resampled[methods.index(hybrid)] - resampled[methods.index(reference)]
            observed = rows[hybrid]["median"] - rows[reference]["median"]
            paired[f"{hybrid} - {reference}"] = {
                "median_difference": float(observed),
                "95": [float(np.percentile(difference, 2.5)), float(np.percentile(difference, 97.5))],
                "share_below_zero": float(np.mean(difference < 0.0))}
    moved = {}
    network = arrays["network/direction_pred"][scored]
    for hybrid in (h for h in HYBRIDS if h in methods):
        direction = arrays[f"{hybrid}/direction"][scored]
        from_network = angle_between_deg(direction, network)
        moved[hybrid] = {"from_network_median": float(np.median(from_network)),
                         "beyond_20_from_network": float(np.mean(from_network > 20.0))}
        if f"{hybrid}/network_fallback" in arrays:
            moved[hybrid]["network_fallback"] = float(np.mean(arrays[f"{hybrid}/network_fallback"][scored]))
        if f"{hybrid}/network_start_won" in arrays:
            moved[hybrid]["network_start_won"] = float(np.mean(arrays[f"{hybrid}/network_start_won"][scored]))
        if "baseline/track_likelihood/direction" in arrays:
            same = angle_between_deg(direction, arrays["baseline/track_likelihood/direction"][scored]) < 0.5
            moved[hybrid]["same_as_plain_fit"] = float(np.mean(same))
    return {"n_events": int(scored.sum()), "methods": rows, "paired": paired, "moved": moved,
            "lost_events": lost_events(arrays, scored), "cones": cone_choices(arrays, scored, containments),
            "errors": {m: errors[i].tolist() for i, m in enumerate(methods)}}


def cone_choices(arrays: dict[str, np.ndarray], scored: np.ndarray, containments: list[float]) -> dict:
    """Each hybrid's median and mean angular error had its fallback used other cones (the baseline's own rule on the
    fit's direction, the network's direction and calibrated kappa): how much the result depends on the 99 %."""
    out = {}
    truth, network = arrays["network/direction"][scored], arrays["network/direction_pred"][scored]
    network = network / np.linalg.norm(network, axis=1, keepdims=True)
    kappa = arrays["network/kappa_calibrated"][scored]
    for hybrid in HYBRIDS:
        if f"{hybrid}/fit_direction" not in arrays:
            continue
        fit = arrays[f"{hybrid}/fit_direction"][scored]
        fit_ok = arrays[f"{hybrid}/fit_ok"][scored]
        out[hybrid] = {}
        for p in containments:
            fallback = network_fallback(fit, fit_ok, network, kappa, p)
            errors = angle_between_deg(np.where(fallback[:, None], network, fit), truth)
            out[hybrid][f"{p:g}"] = {"median": float(np.median(errors)), "mean": float(np.mean(errors)),
                                     "network_fallback": float(np.mean(fallback))}
    return out


def lost_events(arrays: dict[str, np.ndarray], scored: np.ndarray) -> dict | None:
    """The events where the network-started fit alone ends beyond 45 deg of the truth against the others: the
    network's input hits, its calibrated kappa and its error there, and how many the network's cone takes over."""
    key = "baseline/track_likelihood_network_start"
    if f"{key}/fit/angular_error_deg" not in arrays:
        return None
    lost = arrays[f"{key}/fit/angular_error_deg"][scored] > 45.0
    out = {"share": float(np.mean(lost))}
    for name, values in (("hits", arrays["network/n_hits"]), ("kappa", arrays["network/kappa_calibrated"]),
                         ("network_error_deg", arrays["network/angular_error_deg"])):
        values = values[scored]
        out[name] = [float(np.median(values[lost])), float(np.median(values[~lost]))]
    if f"{key}/network_fallback" in arrays:
        out["network_fallback"] = float(np.mean(arrays[f"{key}/network_fallback"][scored][lost]))
    return out


def markdown(summaries: dict[str, dict]) -> list[str]:
    lines = []
    for checkpoint, summary in summaries.items():
        bins = list(next(iter(summary["methods"].values()))["per_energy_bin"])
        counts = [next(iter(summary["methods"].values()))["per_energy_bin"][b][1] for b in bins]
        lines += [f"`{checkpoint}`: {summary['n_events']} events", "",
                  "| method | median (deg), 95 % bootstrap | mean (deg) | beyond 45 deg | "
                  + " | ".join(f"{b} ({n})" for b, n in zip(bins, counts, strict=True)) + " |",
                  "|---|---|---|---|" + "---|" * len(bins)]
        for row in summary["methods"].values():
            per_bin = " | ".join("-" if row["per_energy_bin"][b][0] is None else f"{row['per_energy_bin'][b][0]:.2f}"
                                 for b in bins)
            lo, hi = row["median_95"]
            lines.append(f"| {row['label']} | {row['median']:.2f} ({lo:.2f}-{hi:.2f}) | {row['mean']:.2f} | "
                         f"{100 * row['beyond_45']:.1f} % | {per_bin} |")
        lines.append("")
        for name, paired in summary["paired"].items():
            hybrid, reference = (METHODS[part] for part in name.split(" - "))
            lo, hi = paired["95"]
            lines.append(f"- {hybrid} - {reference}: median {paired['median_difference']:+.2f} deg (95 % {lo:+.2f} to "
                         f"{hi:+.2f}; {100 * paired['share_below_zero']:.0f} % of resamples below 0)")
        for hybrid, moved in summary["moved"].items():
            same = (f"; the plain fit's answer on {100 * moved['same_as_plain_fit']:.0f} % of the events"
                    if "same_as_plain_fit" in moved else "")
            fallback = (f"; the network's direction on {100 * moved['network_fallback']:.0f} %"
                        if "network_fallback" in moved else "")
            won = (f"; the best likelihood from a network start on {100 * moved['network_start_won']:.0f} %"
                   if "network_start_won" in moved else "")
            lines.append(f"- {METHODS[hybrid]}: {moved['from_network_median']:.2f} deg from the network's direction "
                         f"(median), {100 * moved['beyond_20_from_network']:.0f} % beyond 20 deg{same}{won}{fallback}")
        for hybrid, cones in summary["cones"].items():
            lines.append(f"- {METHODS[hybrid]}, by cone: " + "; ".join(
                f"{p}: median {c['median']:.2f}, mean {c['mean']:.2f} deg, network {100 * c['network_fallback']:.0f} %"
                for p, c in cones.items()))
        lost = summary["lost_events"]
        if lost:
            fallback = (f"; the network's cone takes over {100 * lost['network_fallback']:.0f} % of them"
                        if "network_fallback" in lost else "")
            lines.append(f"- the fit from the network beyond 45 deg on {100 * lost['share']:.1f} % of the events: "
                         f"there the network saw {lost['hits'][0]:.0f} hits (median; {lost['hits'][1]:.0f} on the "
                         f"others), its calibrated kappa is {lost['kappa'][0]:.1f} ({lost['kappa'][1]:.1f}) and its "
                         f"error {lost['network_error_deg'][0]:.1f} deg ({lost['network_error_deg'][1]:.1f}){fallback}")
        lines.append("")
    return lines


def plot_cumulative_errors(panels: dict[str, dict[str, list[float]]], path: Path) -> Path:
    """One panel per title: the cumulative angular error of each labelled method."""
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, (title, curves) in zip(axes[0], panels.items(), strict=True):
        for label, errors in curves.items():
            errors = np.sort(errors)
            ax.step(errors, np.arange(1, len(errors) + 1) / len(errors), where="post", label=label)
        ax.set_xscale("log")
        ax.set_xlim(0.3, 180)
        ax.axhline(0.5, color="grey", lw=0.5)
        ax.set_xlabel("angular error (deg)")
        ax.set_ylabel("fraction of events within")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot(summaries: dict[str, dict], path: Path) -> Path:
    return plot_cumulative_errors({Path(checkpoint).parent.parent.name: {METHODS[m]: e for m, e in s["errors"].items()}
                                   for checkpoint, s in summaries.items()}, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, nargs="+", required=True)
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--resamples", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--containments", type=float, nargs="+", default=[0.9, 0.95, 0.99],
                        help="fallback cones to recompute each hybrid's answer with")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    summaries = {checkpoint: seed_summary(arrays, rng, args.resamples, args.containments)
                 for checkpoint, arrays in merged_seeds(args.runs).items()}
    lines = markdown(summaries)
    print("\n".join(lines))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "hybrid_fit.md").write_text("\n".join(lines) + "\n")
    (args.output_dir / "hybrid_fit.json").write_text(json.dumps(
        {c: {k: v for k, v in s.items() if k != "errors"} for c, s in summaries.items()}, indent=2))
    print(f"figure: {plot(summaries, args.output_dir / 'figures' / 'hybrid_fit.png')}")


if __name__ == "__main__":
    main()
