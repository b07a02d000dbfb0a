"""Two runs on the same test events (real-file or simulated), paired event by event: median and mean angular error
of each method and the paired bootstrap 95 % interval of the change of the network's median (after - before); runs
with data.prefit also show their prefit's, and how far the network's direction moved from it. On simulated test
sets of several event types (nu_mu CC, nu_e CC, ...) `--by-event-type` gives the network's change per type too.

    python experiments/km3net_reconstruction/paired.py --before RUN_A --after RUN_B [--before-offset 40]
        [--also RUN_A2 RUN_B2 ...] [--target 12]

For each run the network's median has its own bootstrap 95 % interval, with the share of resampled medians at or
below `--target` degrees and the share of events beyond 45 deg. `--also BEFORE AFTER` (repeatable) adds pairs of
other seeds on the same events: the change and the after-median averaged over the pairs, the events resampled
jointly for all of them.

`--before-offset N` drops the first N test events of the `before` run, so that a run tested on the whole file pairs
with a fine-tuned run whose test split starts after its N training events (data.real_train_events=N).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from numl.sim.km3net.events import EVENT_TYPES
from numl.sim.km3net.physics import angle_between_deg

METHODS = ("network", "baseline/track_fit", "baseline/track_likelihood", "baseline/official_reconstruction")


def angular_errors(run: Path, offset: int) -> dict[str, np.ndarray]:
    """Angular error (deg) per event of each method of the run; with data.prefit also of the prefit itself."""
    predictions = np.load(run / "test_predictions.npz")
    errors = {m: predictions[f"{m}/angular_error_deg"][offset:] for m in METHODS
              if f"{m}/angular_error_deg" in predictions}
    if "network/prefit_direction" in predictions:
        errors["prefit"] = angle_between_deg(predictions["network/prefit_direction"],
                                             predictions["network/direction"])[offset:]
        # how far the network moved from its prefit (not an error: kept apart from METHODS)
        errors["network from prefit"] = angle_between_deg(predictions["network/prefit_direction"],
                                                          predictions["network/direction_pred"])[offset:]
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--after", type=Path, required=True)
    parser.add_argument("--before-offset", type=int, default=0)
    parser.add_argument("--resamples", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--also", nargs=2, type=Path, action="append", default=[], metavar=("BEFORE", "AFTER"))
    parser.add_argument("--target", type=float, default=12.0, help="median angle (deg) to compare with")
    # simulated test sets only: a real file's event_type says muon or not, not the interaction
    parser.add_argument("--by-event-type", action="store_true", help="the change per simulated event type too")
    args = parser.parse_args()
    before, after = angular_errors(args.before, args.before_offset), angular_errors(args.after, 0)
    if len(before["network"]) != len(after["network"]):
        raise SystemExit(f"paired.py: {len(before['network'])} events in --before, {len(after['network'])} in "
                         "--after; set --before-offset")
    for method in (*METHODS, "prefit"):
        if method in before and method in after:
            print(f"{method:36s} median {np.median(before[method]):6.2f} -> {np.median(after[method]):6.2f} deg, "
                  f"mean {np.mean(before[method]):6.2f} -> {np.mean(after[method]):6.2f} deg")
        elif method in before or method in after:
            only, errors = ("--before", before[method]) if method in before else ("--after", after[method])
            print(f"{method:36s} median {np.median(errors):6.2f} deg, mean {np.mean(errors):6.2f} deg ({only} only)")
    if "network from prefit" in after:
        moved = after["network from prefit"]
        print(f"--after network from its prefit: median {np.median(moved):.2f} deg, 90 % of events within "
              f"{np.percentile(moved, 90):.2f} deg")
    rng = np.random.default_rng(args.seed)
    n = len(after["network"])
    resampled = rng.integers(0, n, size=(args.resamples, n))
    for label, errors in (("--before", before["network"]), ("--after", after["network"])):
        medians = np.median(errors[resampled], axis=1)
        lo, hi = np.percentile(medians, [2.5, 97.5])
        print(f"{label} network median {np.median(errors):.2f} deg (95 % bootstrap {lo:.2f}-{hi:.2f}), "
              f"{np.mean(medians <= args.target):.0%} of resampled medians <= {args.target:g} deg, "
              f"{np.mean(errors > 45):.1%} of events beyond 45 deg")
    print_median_change("network", before["network"], after["network"], resampled)
    if args.also:
        pairs = [(before["network"], after["network"])]
        for extra_before, extra_after in args.also:
            pairs.append((angular_errors(extra_before, args.before_offset)["network"],
                          angular_errors(extra_after, 0)["network"]))
            if len(pairs[-1][0]) != n or len(pairs[-1][1]) != n:
                raise SystemExit(f"paired.py: --also {extra_before} {extra_after}: not the {n} events of --after")
        # the mean over pairs of each resample's medians: the change of the mean is the mean of the changes
        before_medians = np.mean([np.median(b[resampled], axis=1) for b, _ in pairs], axis=0)
        after_medians = np.mean([np.median(a[resampled], axis=1) for _, a in pairs], axis=0)
        change = after_medians - before_medians
        mean_after = np.mean([np.median(a) for _, a in pairs])
        mean_change = mean_after - np.mean([np.median(b) for b, _ in pairs])
        lo, hi = np.percentile(change, [2.5, 97.5])
        after_lo, after_hi = np.percentile(after_medians, [2.5, 97.5])
        print(f"over {len(pairs)} pairs: network median change {mean_change:+.2f} deg (paired 95 % interval "
              f"[{lo:+.2f}, {hi:+.2f}]); --after median {mean_after:.2f} deg (95 % {after_lo:.2f}-{after_hi:.2f}), "
              f"{np.mean(after_medians <= args.target):.0%} of resampled values <= {args.target:g} deg")
    if args.by_event_type:
        event_types = np.load(args.after / "test_predictions.npz")["network/event_type"]
        names = {code: name for name, code in EVENT_TYPES.items()}
        for code in np.unique(event_types):
            chosen = event_types == code
            print_median_change(f"network, {names[int(code)]}", before["network"][chosen], after["network"][chosen],
                                rng.integers(0, int(chosen.sum()), size=(args.resamples, int(chosen.sum()))))


def print_median_change(label: str, before: np.ndarray, after: np.ndarray, resampled: np.ndarray) -> None:
    """The change of the median (after - before) with its paired bootstrap 95 % interval over `resampled`
    (resamples x events indices)."""
    n = len(after)
    change = np.median(after[resampled], axis=1) - np.median(before[resampled], axis=1)
    lo, hi = np.percentile(change, [2.5, 97.5])
    print(f"{label} median {np.median(before):.2f} -> {np.median(after):.2f} deg, change "
          f"{np.median(after) - np.median(before):+.2f} deg, paired 95 % interval [{lo:+.2f}, {hi:+.2f}] over {n} "
          "events")


if __name__ == "__main__":
    main()
