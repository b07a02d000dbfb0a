"""The prefits of data.prefit (issue 16): median angle to the true neutrino and CPU time per event of the line fit
(`line_fit`) and of the line fit refined by one chi-square fit (`line_fit_chi2`, numl.sim.km3net.prefit), on the
140 events of the official ORCA6 file and on the simulated validation events of the reduced runs (n_val=300,
seed 7: the same events as their validation split).

    python experiments/km3net_reconstruction/prefit.py        # ~1 min; writes results/prefit.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from fit_gap import RESULTS, file_and_validation_events, prefit_study_datamodule

from numl.data.km3net import hit_positions_m, select_hits, truth_direction
from numl.sim.km3net.physics import angle_between_deg
from numl.sim.km3net.prefit import PREFITS


def prefit_errors(events, hit_selection: str, max_hits: int) -> dict[str, dict[str, float]]:
    """Median, mean, 10th and 90th percentile of the angle (deg) and CPU ms per event of each prefit of
    data.prefit, on the hits the network sees (the same selection and cap)."""
    results = {}
    for name, prefit in PREFITS.items():
        errors, seconds = [], 0.0
        for event in events:
            hits = select_hits(event.hits, hit_selection, max_hits)
            pos, t = hit_positions_m(hits), hits["t_ns"].astype(np.float64)
            start = time.process_time()
            track = prefit(pos, t, hits["triggered"])
            seconds += time.process_time() - start
            errors.append(angle_between_deg(track.direction, truth_direction(event.truth)))
        p10, p90 = np.percentile(errors, [10, 90])
        results[name] = {"events": len(errors), "median_deg": float(np.median(errors)),
                         "mean_deg": float(np.mean(errors)), "p10_deg": float(p10), "p90_deg": float(p90),
                         "cpu_ms_per_event": 1e3 * seconds / len(errors)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-val", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS / "prefit.json")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data.events.muon_light=cone")
    args = parser.parse_args()
    dm = prefit_study_datamodule([f"data.n_val={args.n_val}", f"seed={args.seed}", *args.overrides])
    samples = file_and_validation_events(dm, f"simulated validation (n_val={args.n_val}, seed {args.seed})")
    results = {name: prefit_errors(events, dm.hit_selection, dm.max_hits) for name, events in samples.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print("| prefit | events | median angle (deg) | mean angle (deg) | 10 % / 90 % of events within (deg) | CPU ms per "
          "event |\n|---|---|---|---|---|---|")
    for sample, methods in results.items():
        for name, r in methods.items():
            print(f"| `{name}`, {sample} | {r['events']} | {r['median_deg']:.2f} | {r['mean_deg']:.2f} | "
                  f"{r['p10_deg']:.1f} / {r['p90_deg']:.1f} | {r['cpu_ms_per_event']:.2f} |")


if __name__ == "__main__":
    main()
