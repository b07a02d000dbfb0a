"""The likelihood fit with and without the hit / no-hit term (baseline=track_likelihood_hit_probability) on the same
test events: median with its bootstrap 95 % interval, mean, shares beyond 20 and 45 deg, the same per class of
triggered hits (the faint third of the events is where the time residuals alone go wrong), the paired bootstrap of
the median's change, and how many events each fit takes out of or into the far tail. The file's official
reconstruction is shown beside them where the run has it. Figure: the cumulative angular error per run.

    python experiments/km3net_reconstruction/hit_probability.py --runs RUN [RUN ...] [--output-dir DIR]

It fits nothing: it reads each run's test_predictions.npz. Writes hit_probability.{md,json} and
figures/hit_probability.png under --output-dir (default: results/ beside this script).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

PLAIN, WITH_HITS = "baseline/track_likelihood", "baseline/track_likelihood_hit_probability"
METHODS = {PLAIN: "likelihood fit", WITH_HITS: "likelihood fit with hit / no-hit",
           "baseline/official_reconstruction": "official (JMuon)"}
#: an event counts as taken out of (into) the tail when one fit ends beyond FAR_DEG and the other within NEAR_DEG
FAR_DEG, NEAR_DEG = 45.0, 20.0
BRIGHTNESS_CLASSES = ("faint third", "middle third", "bright third")


def run_summary(run: Path, rng: np.random.Generator, n_resamples: int) -> dict:
    predictions = np.load(run / "test_predictions.npz")
    methods = [m for m in METHODS if f"{m}/angular_error_deg" in predictions.files]
    if PLAIN not in methods or WITH_HITS not in methods:
        raise SystemExit(f"hit_probability.py: {run} lacks {PLAIN} or {WITH_HITS} (its baselines: "
                         f"{sorted({k.split('/')[1] for k in predictions.files if k.startswith('baseline/')})})")
    # the script beside this one; imported after the check, since it loads torch (numl.baselines) and a wrong run
    # should be told at once
    from hybrid_fit import bootstrap_medians

    errors = np.stack([predictions[f"{m}/angular_error_deg"] for m in methods])
    scored = np.all(np.isfinite(errors), axis=0)  # events every method scored (failed fits are NaN)
    errors = errors[:, scored]
    n_triggered = predictions[f"{PLAIN}/n_triggered"][scored]
    class_edges = np.quantile(n_triggered, (1.0 / 3.0, 2.0 / 3.0))
    brightness = np.searchsorted(class_edges, n_triggered, side="right")
    resampled = bootstrap_medians(errors, rng, n_resamples)
    rows = {}
    for i, method in enumerate(methods):
        per_class = {name: {"events": int(np.sum(brightness == c)),
                            "median": float(np.median(errors[i, brightness == c])),
                            "beyond_45": float(np.mean(errors[i, brightness == c] > FAR_DEG))}
                     for c, name in enumerate(BRIGHTNESS_CLASSES) if np.any(brightness == c)}
        rows[method] = {"label": METHODS[method], "median": float(np.median(errors[i])),
                        "median_95": [float(np.percentile(resampled[i], q)) for q in (2.5, 97.5)],
                        "mean": float(np.mean(errors[i])), "beyond_20": float(np.mean(errors[i] > NEAR_DEG)),
                        "beyond_45": float(np.mean(errors[i] > FAR_DEG)), "per_brightness": per_class}
    plain, with_hits = errors[methods.index(PLAIN)], errors[methods.index(WITH_HITS)]
    difference = resampled[methods.index(WITH_HITS)] - resampled[methods.index(PLAIN)]
    paired = {"median_difference": float(np.median(with_hits) - np.median(plain)),
              "95": [float(np.percentile(difference, q)) for q in (2.5, 97.5)],
              "share_below_zero": float(np.mean(difference < 0.0)),
              "better_by_5": int(np.sum(with_hits < plain - 5.0)), "worse_by_5": int(np.sum(with_hits > plain + 5.0)),
              "out_of_tail": int(np.sum((plain > FAR_DEG) & (with_hits < NEAR_DEG))),
              "into_tail": int(np.sum((plain < NEAR_DEG) & (with_hits > FAR_DEG))),
              "plain_beyond_45": int(np.sum(plain > FAR_DEG))}
    return {"run": str(run), "n_events": int(scored.sum()), "brightness_class_edges": class_edges.tolist(),
            "methods": rows, "paired": paired, "errors": {m: errors[i].tolist() for i, m in enumerate(methods)}}


def markdown(summaries: list[dict]) -> list[str]:
    lines = []
    for summary in summaries:
        edges = summary["brightness_class_edges"]
        lines += [f"### {summary['run']} ({summary['n_events']} events)", "",
                  f"| method | median angle (deg), 95 % bootstrap | mean (deg) | beyond {NEAR_DEG:g} deg | beyond "
                  f"{FAR_DEG:g} deg | median, beyond {FAR_DEG:g} deg by triggered hits: < {edges[0]:g}; "
                  f"{edges[0]:g} to < {edges[1]:g}; >= {edges[1]:g} |", "|---|---|---|---|---|---|"]
        for row in summary["methods"].values():
            classes = "; ".join(f"{c['median']:.2f}, {100 * c['beyond_45']:.0f} %"
                                 for c in row["per_brightness"].values())
            lines.append(f"| {row['label']} | {row['median']:.2f} ({row['median_95'][0]:.2f}-{row['median_95'][1]:.2f})"
                         f" | {row['mean']:.2f} | {100 * row['beyond_20']:.1f} % | {100 * row['beyond_45']:.1f} % | "
                         f"{classes} |")
        p = summary["paired"]
        lines += ["", f"- with hit / no-hit minus without, paired: median {p['median_difference']:+.2f} deg (95 % "
                      f"{p['95'][0]:+.2f} to {p['95'][1]:+.2f}; {100 * p['share_below_zero']:.0f} % of resamples "
                      f"below 0); {p['better_by_5']} events better by > 5 deg, {p['worse_by_5']} worse; of the "
                      f"{p['plain_beyond_45']} events beyond {FAR_DEG:g} deg without the term, {p['out_of_tail']} "
                      f"end within {NEAR_DEG:g} deg with it; {p['into_tail']} go the other way.", ""]
    return lines


def plot(summaries: list[dict], path: Path) -> Path:
    from hybrid_fit import plot_cumulative_errors

    return plot_cumulative_errors({f"{Path(s['run']).name} ({s['n_events']} events)":
                                   {METHODS[m]: e for m, e in s["errors"].items()} for s in summaries}, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, nargs="+", required=True)
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--resamples", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    summaries = [run_summary(run, rng, args.resamples) for run in args.runs]
    lines = markdown(summaries)
    print("\n".join(lines))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "hit_probability.md").write_text("\n".join(lines) + "\n")
    (args.output_dir / "hit_probability.json").write_text(json.dumps(
        [{k: v for k, v in s.items() if k != "errors"} for s in summaries], indent=2))
    print(f"figure: {plot(summaries, args.output_dir / 'figures' / 'hit_probability.png')}")


if __name__ == "__main__":
    main()
