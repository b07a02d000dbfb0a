"""The issue's own-simulation target, network / fit median angular error <= 0.7, on one run's simulated test events:
the median and mean angular error of the network and of each fit, and the ratio of the network's median to each
fit's with its paired bootstrap interval (both methods see every resampled event), on all events and per bin of
true energy. Runs of other network seeds on the same test events (`--also`) give the seed-averaged network median.

    python experiments/km3net_reconstruction/network_vs_fits.py --run RUN [--also RUN2 ...] [--edges 50 100 200 500]

It trains and fits nothing: it reads each run's test_predictions.npz.
"""

from __future__ import annotations

import argparse
from itertools import pairwise
from pathlib import Path

import numpy as np

FITS = {"baseline/track_fit": "chi-square fit", "baseline/track_likelihood": "likelihood fit"}
TARGET_RATIO = 0.7


def load(run: Path) -> dict[str, np.ndarray]:
    predictions = np.load(run / "test_predictions.npz")
    return {key: predictions[key] for key in predictions.files}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a run with the fits (baseline=[track_fit, ...])")
    parser.add_argument("--also", type=Path, nargs="*", default=[], help="other network seeds, same test events")
    parser.add_argument("--edges", type=float, nargs="+", default=[50.0, 100.0, 200.0, 500.0],
                        help="true-energy bin edges (GeV)")
    parser.add_argument("--resamples", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main_run = load(args.run)
    truth = main_run["network/direction"]
    networks = [main_run["network/angular_error_deg"]]
    for other in args.also:
        predictions = load(other)
        if not np.allclose(predictions["network/direction"], truth):
            raise SystemExit(f"network_vs_fits.py: {other} has other test events than {args.run}")
        networks.append(predictions["network/angular_error_deg"])
    network = np.stack(networks)  # seeds x events
    fits = {label: main_run[f"{key}/angular_error_deg"] for key, label in FITS.items()
            if f"{key}/angular_error_deg" in main_run}
    if not fits:
        raise SystemExit(f"network_vs_fits.py: {args.run} has no fit (run it with baseline=[track_fit, "
                         "track_likelihood])")
    # events every fit scored (a fit with max_events leaves the rest NaN)
    scored = np.all([np.isfinite(errors) for errors in fits.values()], axis=0)
    energy_gev = 10.0 ** main_run["network/log10_energy"]
    rng = np.random.default_rng(args.seed)
    bins = [("all", scored)] + [(f"{lo:g}-{hi:g} GeV", scored & (energy_gev >= lo) & (energy_gev < hi))
                                for lo, hi in pairwise(args.edges)]
    seeds = f" (mean of {len(networks)} seeds' medians)" if len(networks) > 1 else ""
    print(f"{args.run}: {int(scored.sum())} test events scored by every fit; network{seeds}")
    for name, errors in [(f"network, run {i + 1}", seed) for i, seed in enumerate(network)] + list(fits.items()):
        chosen = errors[scored]
        print(f"  {name}: median {np.median(chosen):.2f} deg, mean {chosen.mean():.2f}, beyond 45 deg "
              f"{100 * np.mean(chosen > 45.0):.1f} %")
    for label, chosen in bins:
        n = int(chosen.sum())
        if n == 0:
            continue
        resampled = rng.integers(0, n, size=(args.resamples, n))
        net = network[:, chosen]
        net_medians = np.mean([np.median(seed[resampled], axis=1) for seed in net], axis=0)
        net_median = float(np.mean(np.median(net, axis=1)))
        line = [f"{label} ({n} events): network median {net_median:.2f} deg, mean {net.mean():.2f}"]
        for name, errors in fits.items():
            fit = errors[chosen]
            ratios = net_medians / np.median(fit[resampled], axis=1)
            lo68, hi68 = np.percentile(ratios, [16, 84])
            lo95, hi95 = np.percentile(ratios, [2.5, 97.5])
            line.append(f"  {name}: median {np.median(fit):.2f} deg, mean {fit.mean():.2f}; network / fit "
                        f"{net_median / np.median(fit):.2f} (68 % {lo68:.2f}-{hi68:.2f}, 95 % {lo95:.2f}-{hi95:.2f}), "
                        f"resamples <= {TARGET_RATIO}: {100 * np.mean(ratios <= TARGET_RATIO):.0f} %")
        print("\n".join(line))


if __name__ == "__main__":
    main()
