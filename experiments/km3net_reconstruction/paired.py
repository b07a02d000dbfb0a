"""Two runs on the same real-file events, paired event by event: median and mean angular error of each method and
the paired bootstrap 95 % interval of the change of the network's median (after - before); runs with data.prefit
also show their prefit's, and how far the network's direction moved from it.

    python experiments/km3net_reconstruction/paired.py --before RUN_A --after RUN_B [--before-offset 40]

`--before-offset N` drops the first N test events of the `before` run, so that a run tested on the whole file pairs
with a fine-tuned run whose test split starts after its N training events (data.real_train_events=N).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

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
    idx = rng.integers(0, n, size=(args.resamples, n))
    change = np.median(after["network"][idx], axis=1) - np.median(before["network"][idx], axis=1)
    lo, hi = np.percentile(change, [2.5, 97.5])
    print(f"network median change {np.median(after['network']) - np.median(before['network']):+.2f} deg, paired "
          f"95 % interval [{lo:+.2f}, {hi:+.2f}] over {n} events")


if __name__ == "__main__":
    main()
