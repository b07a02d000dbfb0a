"""numl's simulated ORCA6 events against the official ORCA6 simulation file (issue 16): hits and triggered hits per
event, triggered DOMs, time residuals w.r.t. the true muon, ToT, hits per DOM, K-40 rate, readout window and
vertex distance, as quantiles and two-sample KS statistics, for each named simulator configuration, with overlaid
histograms. numl simulates with the file's generation settings (its header: E^-2 flux, 50-500 GeV) on the
experiment's detector; each configuration is a list of Hydra overrides on top of
`experiment=km3net_reconstruction/orca6_real_file`.

    python experiments/km3net_reconstruction/file_comparison.py --events 3000    # ~1 min per configuration

Writes results/file_comparison.md, results/file_comparison.json and results/figures/file_comparison/*.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from fit_gap import CONE_WATER, FORMER_WATER
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from numl.sim.km3net import simulate_events
from numl.sim.km3net.observables import EVENT_OBSERVABLES, HIT_OBSERVABLES, compare_observables, event_observables

CONF = Path(__file__).resolve().parents[2] / "conf"
EXPERIMENT = "km3net_reconstruction/orca6_real_file"
#: the file's generation settings (its header: flux 1E-5 * E^-2, cut_nu 50-500 GeV)
FILE_GENERATION = ["data.events.spectral_index=2.0", "data.events.energy_min_gev=50", "data.events.energy_max_gev=500"]
#: the light yield and seabed before fit_gap.py's fix (photon detection efficiency 0.25, no seabed)
FORMER_LIGHT = ["data.events.quantum_efficiency=0.25", "data.events.seabed_z_m=null", *FORMER_WATER]
#: the simulator before issue 16's event-physics work (vertices only in the can, 30 m around the detector, a short
#: readout, 7 kHz, L1 hits only), with the vertices, can, readout and K-40 rate of the file but L1 hits only, with the
#: L0 trigger (all three with the former light yield), with the light-yield fix and the former water, with the
#: first water fit and the cone light, and now
CONFIGURATIONS = {
    "before": ["data.events.vertex_sampling=can", "data.events.can_margin_m=30", "data.events.readout_margin_ns=300",
               "data.events.noise_rate_hz=7000", "data.events.trigger_l0_max_distance_m=0", *FORMER_LIGHT],
    "vertices": ["data.events.trigger_l0_max_distance_m=0", *FORMER_LIGHT],
    "trigger": FORMER_LIGHT,
    "light": ["data.events.quantum_efficiency=0.125", *FORMER_WATER],
    "cone": CONE_WATER,
    "now": [],
}
ENERGY_BINS_GEV = (50.0, 100.0, 200.0, 500.0)
BINNED = ("n_hits", "n_triggered", "n_prompt_hits")
HISTOGRAM_RANGES = {"n_hits": (0, 500), "n_triggered": (0, 300), "n_triggered_doms": (0, 70),
                    "n_prompt_hits": (0, 300), "window_ns": (0, 2500), "vertex_radius_m": (0, 400),
                    "noise_rate_hz": (0, 20000), "energy_gev": (50, 500), "residual_ns": (-200, 500),
                    "triggered_residual_ns": (-50, 200), "tot_ns": (0, 80), "triggered_tot_ns": (0, 80),
                    "hits_per_dom": (0, 30)}


def datamodule(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"experiment={EXPERIMENT}", *FILE_GENERATION, *overrides])
    return instantiate(cfg.data, _convert_="object")


def figures(file_obs: dict, simulated: dict[str, dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    for key, title in {**EVENT_OBSERVABLES, **HIT_OBSERVABLES}.items():
        fig, ax = plt.subplots(figsize=(5, 3.6))
        bins = np.linspace(*HISTOGRAM_RANGES[key], 41)
        ax.hist(file_obs[key], bins=bins, density=True, histtype="stepfilled", alpha=0.35, color="k",
                label="official ORCA6 file")
        for name, obs in simulated.items():
            ax.hist(obs[key], bins=bins, density=True, histtype="step", lw=1.5, label=f"numl {name}")
        ax.set_xlabel(title)
        ax.set_ylabel("density")
        if key in ("residual_ns", "triggered_residual_ns", "hits_per_dom"):
            ax.set_yscale("log")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / f"{key}.png", dpi=110)
        plt.close(fig)


def per_energy_bin(file_obs: dict, obs: dict) -> list[dict]:
    """Median hits, triggered hits and prompt hits per neutrino-energy bin, file vs simulation."""
    rows = []
    for lo, hi in zip(ENERGY_BINS_GEV[:-1], ENERGY_BINS_GEV[1:], strict=True):
        f = (file_obs["energy_gev"] >= lo) & (file_obs["energy_gev"] < hi)
        o = (obs["energy_gev"] >= lo) & (obs["energy_gev"] < hi)
        rows.append({"bin_gev": [lo, hi], "file_events": int(f.sum()), "events": int(o.sum()),
                     **{f"file_{k}": float(np.median(file_obs[k][f])) for k in BINNED},
                     **{k: float(np.median(obs[k][o])) for k in BINNED}})
    return rows


def markdown(result: dict) -> str:
    names = list(result["configurations"])
    lines = [f"Official file: {result['file']} ({result['file_events']} events); numl: {result['events']} simulated "
             f"events per configuration (seed {result['seed']}), the file's E^-2 flux over 50-500 GeV.", "",
             "| observable | per | file p10 / p50 / p90 | " + " | ".join(f"{n}: p10 / p50 / p90 | KS" for n in names)
             + " |", "|---|---|---|" + "---|---|" * len(names)]
    rows = {name: {r["observable"]: r for r in result["configurations"][name]["comparison"]} for name in names}
    for key in [r["observable"] for r in result["configurations"][names[0]]["comparison"]]:
        first = rows[names[0]][key]
        cells = [f"{first['title']}", first["per"], " / ".join(f"{q:.4g}" for q in first["reference_quantiles"])]
        for name in names:
            r = rows[name][key]
            cells += [" / ".join(f"{q:.4g}" for q in r["candidate_quantiles"]), f"{r['ks_statistic']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Medians per neutrino-energy bin (hits / triggered hits / prompt hits):", "",
              "| E (GeV) | file events | file | " + " | ".join(names) + " |", "|---|---|---|" + "---|" * len(names)]
    for i, first in enumerate(result["configurations"][names[0]]["per_energy_bin"]):
        cells = [f"{first['bin_gev'][0]:g}-{first['bin_gev'][1]:g}", str(first["file_events"]),
                 " / ".join(f"{first['file_' + k]:.0f}" for k in BINNED)]
        for name in names:
            row = result["configurations"][name]["per_energy_bin"][i]
            cells.append(" / ".join(f"{row[k]:.0f}" for k in BINNED))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--also", action="append", default=[], metavar="NAME=OVERRIDES",
                        help="another configuration: a name, '=', space-separated Hydra overrides")
    args = parser.parse_args()
    configurations = dict(CONFIGURATIONS)
    for extra in args.also:
        name, _, overrides = extra.partition("=")
        configurations[name] = overrides.split()

    from numl.data.km3net import read_offline_file

    result: dict = {"events": args.events, "seed": args.seed, "configurations": {}}
    simulated = {}
    file_obs = None
    for name, overrides in configurations.items():
        dm = datamodule(overrides)
        axis_xy = dm.detector.bounding_cylinder_m()[0]
        if file_obs is None:
            path = dm.real_test_files[0]
            file_events = read_offline_file(path, dm.detector)
            file_obs = event_observables(file_events, dm.detector.pmt_pos_m, axis_xy)
            result.update(file=path.name, file_events=len(file_events))
        start = time.perf_counter()
        events, generated = simulate_events(dm.detector, dm.event_config, args.events, args.seed)
        seconds = time.perf_counter() - start
        simulated[name] = event_observables(events, dm.detector.pmt_pos_m, axis_xy)
        result["configurations"][name] = {
            "overrides": overrides, "interactions_per_triggered_event": generated / args.events,
            "seconds": seconds, "comparison": compare_observables(file_obs, simulated[name]),
            "per_energy_bin": per_energy_bin(file_obs, simulated[name])}
        print(f"{name}: {args.events} events in {seconds:.0f} s ({generated / args.events:.1f} interactions each)")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "file_comparison.json").write_text(json.dumps(result, indent=1))
    (args.out / "file_comparison.md").write_text(markdown(result))
    figures(file_obs, simulated, args.out / "figures" / "file_comparison")
    print(markdown(result))


if __name__ == "__main__":
    main()
