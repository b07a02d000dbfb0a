"""Two runs on the same real-file events, paired event by event: median and mean angular error of each method and
the paired bootstrap 95 % interval of the change of the network's median (after - before).

    python experiments/km3net_reconstruction/paired.py --before RUN_A --after RUN_B [--before-offset 40]

`--before-offset N` drops the first N test events of the `before` run, so that a run tested on the whole file pairs
with a fine-tuned run whose test split starts after its N training events (data.real_train_events=N).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

METHODS = ("network", "baseline/track_fit", "baseline/track_likelihood", "baseline/official_reconstruction")


def angular_errors(run: Path, offset: int) -> dict[str, np.ndarray]:
    predictions = np.load(run / "test_predictions.npz")
    return {m: predictions[f"{m}/angular_error_deg"][offset:] for m in METHODS
            if f"{m}/angular_error_deg" in predictions}


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
    for method in METHODS:
        if method in before and method in after:
            print(f"{method:36s} median {np.median(before[method]):6.2f} -> {np.median(after[method]):6.2f} deg, "
                  f"mean {np.mean(before[method]):6.2f} -> {np.mean(after[method]):6.2f} deg")
    rng = np.random.default_rng(args.seed)
    n = len(after["network"])
    idx = rng.integers(0, n, size=(args.resamples, n))
    change = np.median(after["network"][idx], axis=1) - np.median(before["network"][idx], axis=1)
    lo, hi = np.percentile(change, [2.5, 97.5])
    print(f"network median change {np.median(after['network']) - np.median(before['network']):+.2f} deg, paired "
          f"95 % interval [{lo:+.2f}, {hi:+.2f}] over {n} events")


if __name__ == "__main__":
    main()
