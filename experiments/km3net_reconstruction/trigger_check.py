"""Which hits a trigger flags, on the official ORCA6 file and on numl's simulation (issue 16).

Each event's triggered flags are derived again from all its hits under each rule of numl.sim.km3net.trigger
(`l1_causal`, `muon_road`), beside the flags the events carry (the file: JTE's; numl: its configured trigger), on
the file's 140 events and on simulated validation events of the prefit study's configuration
(`experiment=km3net_reconstruction/orca6_prefit`, seed 7). Per rule: on the file, the share of its JTE-triggered
hits the rule finds (recall) and of the rule's hits that JTE triggered (precision); on both, the triggered hits,
DOMs and detection lines per event, the share of events on 1-2 lines, the share of triggered hits off the true
muon's direct light, and the median angle of the `line_fit_chi2` prefit to the true neutrino (68 % bootstrap
interval), which fits the triggered hits. Also the simulation's events per second under each rule.

    python experiments/km3net_reconstruction/trigger_check.py     # ~2 min; results/trigger_check.md and .json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from fit_gap import (
    EXPERIMENT,
    N_BOOTSTRAP,
    PREFIT,
    RESULTS,
    event_records,
    file_and_validation_events,
    prefit_study_datamodule,
    write_result,
)

from numl.data.km3net import hit_positions_m
from numl.sim.km3net import simulate_events
from numl.sim.km3net.trigger import TRIGGERS, trigger_flags

QUANTITIES = {"n_triggered": "triggered hits", "n_doms": "DOMs", "n_lines": "lines",
              "late_fraction": "off direct light (fraction)"}


def with_trigger(events, config):
    """Copies of `events` whose hits carry `config.trigger`'s flags (none where the event would not trigger)."""
    out = []
    for event in events:
        hits = event.hits.copy()
        flags = trigger_flags(hit_positions_m(hits), hits["t_ns"].astype(np.float64), hits["dom_id"], config)
        hits["triggered"] = False if flags is None else flags
        out.append(replace(event, hits=hits))
    return out


def rule_summary(records: dict[str, np.ndarray], flags: list[np.ndarray] | None, file_flags: list[np.ndarray] | None,
                 seed: int) -> dict:
    rng = np.random.default_rng(seed)
    error = records["error_deg"][np.isfinite(records["error_deg"])]
    boot = [np.median(error[rng.integers(0, len(error), len(error))]) for _ in range(N_BOOTSTRAP)]
    out = {"events": len(records["error_deg"]), "prefit_median_deg": float(np.median(error)),
           "prefit_median_68_deg": np.percentile(boot, [16, 84]).tolist(),
           "one_or_two_lines": float(np.mean(records["n_lines"] <= 2)),
           "quantiles": {key: np.nanpercentile(records[key], [10, 50, 90]).tolist() for key in QUANTITIES}}
    if flags is not None and file_flags is not None:
        found, official = np.concatenate(flags), np.concatenate(file_flags)
        out["recall"] = float((found & official).sum() / official.sum())
        out["precision"] = float((found & official).sum() / max(found.sum(), 1))
    return out


def markdown(result: dict) -> str:
    lines = [f"Triggered hits under each rule; prefit `{PREFIT}`; numl: `{EXPERIMENT}`, seed {result['seed']}, "
             f"{result['n_val']} events.", "",
             "| sample | rule | found of the file's JTE hits / of found that are JTE's | "
             + " | ".join(f"{t} p10 / p50 / p90" for t in QUANTITIES.values())
             + " | events on 1-2 lines | prefit median (deg, 68 %) |",
             "|---|---|---|" + "---|" * len(QUANTITIES) + "---|---|"]
    for sample, rules in result["samples"].items():
        for rule, r in rules.items():
            agreement = f"{r['recall']:.2f} / {r['precision']:.2f}" if "recall" in r else ""
            cells = [" / ".join(f"{v:.3g}" for v in r["quantiles"][key]) for key in QUANTITIES]
            lo, hi = r["prefit_median_68_deg"]
            lines.append(f"| {sample} | {rule} | {agreement} | " + " | ".join(cells)
                         + f" | {r['one_or_two_lines']:.2f} | {r['prefit_median_deg']:.1f} ({lo:.1f}-{hi:.1f}) |")
    speed = ", ".join(f"{rule} {rate:.1f}" for rule, rate in result["simulation_events_per_s"].items())
    lines += ["", f"Simulated events per second (one process, {result['speed_events']} events each): {speed}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-val", type=int, default=400)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--speed-events", type=int, default=300)
    parser.add_argument("--out", type=Path, default=RESULTS / "trigger_check")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data.events.muon_light=cone")
    args = parser.parse_args()
    dm = prefit_study_datamodule([f"data.n_val={args.n_val}", f"seed={args.seed}", *args.overrides])
    samples = file_and_validation_events(dm, f"numl ({dm.event_config.trigger})")
    result = {"experiment": EXPERIMENT, "seed": args.seed, "n_val": args.n_val, "speed_events": args.speed_events,
              "samples": {}}
    for sample, events in samples.items():
        is_file = sample == "ORCA6 file"
        file_flags = [e.hits["triggered"].astype(bool) for e in events] if is_file else None
        rules = {"as stored (file: JTE)" if is_file else "as simulated": events}
        rules.update({rule: with_trigger(events, replace(dm.event_config, trigger=rule)) for rule in TRIGGERS})
        result["samples"][sample] = {}
        for rule, rule_events in rules.items():
            records = event_records(rule_events, dm.detector, dm.hit_selection, dm.max_hits)
            flags = [e.hits["triggered"].astype(bool) for e in rule_events]
            result["samples"][sample][rule] = rule_summary(records, flags, file_flags, args.seed)
            print(sample, rule, json.dumps(result["samples"][sample][rule]), flush=True)
    # simulation speed under each rule, side by side in this process (the road's direction scan runs per triggered
    # candidate event)
    result["simulation_events_per_s"] = {}
    for rule in TRIGGERS:
        start = time.perf_counter()
        simulate_events(dm.detector, replace(dm.event_config, trigger=rule), args.speed_events, seed=args.seed)
        result["simulation_events_per_s"][rule] = args.speed_events / (time.perf_counter() - start)
    print("simulated events per second:", result["simulation_events_per_s"], flush=True)
    write_result(args.out, result, markdown(result))

if __name__ == "__main__":
    main()
