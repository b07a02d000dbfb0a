"""Water against the official ORCA6 file: late light and direct light by distance from the muon (issue 16).

For hits on PMTs whose Cherenkov emission point lies 20 m or more past the vertex, in bins of the PMT's distance
from the true muon: the share of late light (numl.sim.km3net.observables.late_light_share: hits with residual
20-220 ns minus the K-40 hits expected there, over that plus the hits within +-20 ns of direct light). Scattering
sets this share; the event geometry does not (it is a ratio at one distance). Also the per-PMT probability of a
direct-light hit (numl.sim.km3net.observables.direct_hit_probability) over the file's, which the photon detection
efficiency sets, and the rate of second, late hits on PMTs next to the track with a direct hit
(second_late_hit_rate). numl: `experiment=km3net_reconstruction/orca6_prefit` generated with the file's E^-2
spectrum, before (the former scattering and efficiency), with the first water fit and the muon's losses on its
Cherenkov cone (cone), and now (as configured: loss showers and large-angle scattered light).

    python experiments/km3net_reconstruction/scattering_check.py   # ~3 min; results/scattering_check.md, .json,
                                                                    # results/figures/scattering_check.png
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from fit_gap import CONE_WATER, EXPERIMENT, FORMER_WATER, RESULTS, prefit_study_datamodule, write_result

from numl.data.km3net import read_offline_file
from numl.sim.km3net import simulate_events
from numl.sim.km3net.observables import (
    LATE_WINDOW_NS,
    direct_hit_probability,
    late_light_share,
    second_late_hit_rate,
)

DISTANCE_EDGES_M = np.array([0.0, 10.0, 20.0, 30.0, 45.0, 60.0, 80.0, 120.0])
PROBABILITY_EDGES_M = np.array([10.0, 20.0, 30.0, 45.0, 60.0])
#: the simulation before the first water fit (and the efficiency that matched the file with it: fit_gap.py's
#: `light`), after it with the muon's losses on its Cherenkov cone and no large-angle scattered light, with the loss
#: showers but no large-angle scattered light (efficiency lowered for the showers' light), and now
CONFIGURATIONS = {"before": ["data.events.quantum_efficiency=0.125", *FORMER_WATER], "cone": CONE_WATER,
                  "showers": ["data.events.scattering_delay_ns_per_m=0.25", "data.events.quantum_efficiency=0.11",
                              "data.events.scattered_light_fraction=0"],
                  "now": []}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, default=RESULTS / "scattering_check")
    args = parser.parse_args()
    dm = prefit_study_datamodule([])
    file_events = read_offline_file(dm.real_test_files[0], dm.detector)
    file_share, file_direct = late_light_share(file_events, DISTANCE_EDGES_M)
    file_probability = direct_hit_probability(file_events, dm.detector, PROBABILITY_EDGES_M)[0]
    result = {"experiment": EXPERIMENT, "events": args.events, "seed": args.seed,
              "distance_edges_m": DISTANCE_EDGES_M.tolist(), "probability_edges_m": PROBABILITY_EDGES_M.tolist(),
              "file": {"late_share": file_share.tolist(), "direct_hits": file_direct.tolist(),
                       "second_late_hits_per_direct_hit": second_late_hit_rate(file_events)[0]}, "numl": {}}
    for name, overrides in CONFIGURATIONS.items():
        # the file's generation spectrum (its header: E^-2), so the muons' light is comparable
        config = replace(prefit_study_datamodule(overrides).event_config, spectral_index=2.0)
        start = time.perf_counter()
        events, _ = simulate_events(dm.detector, config, args.events, seed=args.seed)
        events_per_s = args.events / (time.perf_counter() - start)
        share, direct = late_light_share(events, DISTANCE_EDGES_M)
        probability = direct_hit_probability(events, dm.detector, PROBABILITY_EDGES_M)[0]
        result["numl"][name] = {
            "absorption_length_m": config.absorption_length_m, "scattering_length_m": config.scattering_length_m,
            "scattering_delay_ns_per_m": config.scattering_delay_ns_per_m,
            "quantum_efficiency": config.quantum_efficiency, "muon_light": config.muon_light,
            "scattered_light_fraction": config.scattered_light_fraction,
            "scattered_light_delay_ns": config.scattered_light_delay_ns,
            "second_late_hits_per_direct_hit": second_late_hit_rate(events)[0], "events_per_s": events_per_s,
            "late_share": share.tolist(),
            "direct_hits": direct.tolist(), "direct_probability_over_file": (probability / file_probability).tolist()}
        print(name, json.dumps(result["numl"][name]), flush=True)
    write_result(args.out, result, markdown(result))
    figure(result, RESULTS / "figures" / f"{args.out.name}.png")


def figure(result: dict, path: Path) -> None:
    """Late share by distance (the file with its binomial error) and each stage's direct-light probability over
    the file's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = np.array(result["distance_edges_m"])
    centre = 0.5 * (edges[1:] + edges[:-1])
    share, direct = np.array(result["file"]["late_share"]), np.array(result["file"]["direct_hits"])
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax.errorbar(centre, share, yerr=np.sqrt(share * (1 - share) / np.maximum(direct, 1)),
                xerr=0.5 * np.diff(edges), fmt="ko", label="ORCA6 file")
    pe = np.array(result["probability_edges_m"])
    for name, r in result["numl"].items():
        ax.step(edges, np.append(r["late_share"], r["late_share"][-1]), where="post", label=f"numl {name}")
        ax2.plot(0.5 * (pe[1:] + pe[:-1]), r["direct_probability_over_file"], "o-", label=f"numl {name}")
    ax.set(xlabel="PMT distance from the true muon (m)", ylabel="late share (20-220 ns, K-40 subtracted)")
    ax2.axhline(1.0, color="k", lw=0.8)
    ax2.set(xlabel="PMT distance from the true muon (m)", ylabel="direct-light hit probability / file's")
    ax.legend(fontsize=8)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)

def markdown(result: dict) -> str:
    edges = result["distance_edges_m"]
    bins = [f"{edges[i]:g}-{edges[i + 1]:g} m" for i in range(len(edges) - 1)]
    lines = [f"Share of late light (residual {LATE_WINDOW_NS[0]:g}-{LATE_WINDOW_NS[1]:g} ns, K-40 subtracted) among "
             f"hits by distance from the true muon; numl: {result['events']} events of `{result['experiment']}` with "
             f"the file's E^-2 spectrum, seed {result['seed']}.", "",
             "| sample | absorption length (m) / scattering length (m) / delay (ns per m) / efficiency | muon light "
             "/ large-angle scattered share / its delay (ns) | " + " | ".join(bins)
             + " | second late hits per direct hit within 10 m |",
             "|---|---|---|" + "---|" * len(bins) + "---|",
             "| ORCA6 file | | | " + " | ".join(f"{v:.3f}" for v in result["file"]["late_share"])
             + f" | {result['file']['second_late_hits_per_direct_hit']:.4f} |"]
    for name, r in result["numl"].items():
        lines.append(f"| numl {name} | {r['absorption_length_m']:g} / {r['scattering_length_m']:g} / "
                     f"{r['scattering_delay_ns_per_m']:g} / {r['quantum_efficiency']:g} | {r['muon_light']} / "
                     f"{r['scattered_light_fraction']:g} / {r['scattered_light_delay_ns']:g} | "
                     + " | ".join(f"{v:.3f}" for v in r["late_share"])
                     + f" | {r['second_late_hits_per_direct_hit']:.4f} |")
    speed = ", ".join(f"{name} {r['events_per_s']:.1f}" for name, r in result["numl"].items())
    lines += ["", f"Simulated events per second (one process, one after the other, {result['events']} each): {speed}."]
    pe = result["probability_edges_m"]
    lines += ["", "Per-PMT probability of a direct-light hit, numl over the file:", "",
              "| sample | " + " | ".join(f"{pe[i]:g}-{pe[i + 1]:g} m" for i in range(len(pe) - 1)) + " | mean |",
              "|---|" + "---|" * len(pe)]
    for name, r in result["numl"].items():
        ratio = r["direct_probability_over_file"]
        lines.append(f"| numl {name} | " + " | ".join(f"{v:.2f}" for v in ratio) + f" | {np.mean(ratio):.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
