"""The muon's range in sea water (issue 16): numl's two energy-loss models (data.events.muon_energy_loss) against the
PDG muon table for water and against the muons of two official KM3NeT simulation files, whose stored track lengths
are the ranges the collaboration's propagation gave them when the muon stops inside the can. With --hdf5, also the
nu_mu CC test events of numl.simulate files per bin of muon energy (e.g. orca6_track_shower under each model).

    python experiments/km3net_reconstruction/muon_range_check.py    # seconds
    python experiments/km3net_reconstruction/muon_range_check.py \
        --hdf5 constant_a=data/km3net_reconstruction_orca6_track_shower.h5 \
        bethe_bloch=data/km3net_reconstruction_orca6_track_shower_bethe_bloch.h5 \
        --runs constant_a=logs/km3net_reconstruction/orca6_track_shower \
        bethe_bloch=logs/km3net_reconstruction/orca6_track_shower_bethe_bloch
With --runs, the track AUROC of each run's network and event-shape BDT on its own test events, with bootstrap
intervals (the runs' test events differ, so the difference's interval resamples both sets independently).

Writes results/muon_range_check.md, results/muon_range_check.json and results/figures/muon_range_check.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from km3net_testdata import data_path  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from numl.data.km3net import KM3NeTDataModule, read_file_muon_lengths  # noqa: E402
from numl.sim.km3net import physics  # noqa: E402
from numl.sim.km3net.events import is_track_event  # noqa: E402
from numl.utils.hdf5 import read_metadata  # noqa: E402

MODELS = physics.MUON_ENERGY_LOSS_MODELS
SEA_WATER_G_PER_CM2_PER_M = 100.0 * physics.DENSITY_SEA_WATER_G_PER_CM3
#: offline files with MC muons: an ORCA (det_id 49) production sample (gSeaGen + KM3Sim/sirene, 30 events of 1 GeV
#: to a few TeV) and an older nu_mu CC sample (10 events of 80-190 GeV muons)
FILES = {"ORCA v9.2 sample": ("offline/KM3NeT_00000049_00011291.mc.gsg_neutrinos.km3sim_sirene_merged.jterbr."
                              "jppmuon_jppshower_static.offline.v9.2.sample.root"),
         "numucc.root": "offline/numucc.root"}
#: below this energy a muon's range (< 45 m) keeps it inside the can it was generated in
STOPPING_ENERGY_GEV = 10.0
ENERGIES_GEV = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
MUON_ENERGY_EDGES_GEV = (0.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
TRACK_PROBABILITIES = {"network": "network/track_probability",
                       "event-shape BDT": "baseline/track_shower_features/track_probability"}
RESAMPLES = 2000


def bootstrap_auroc(labels: np.ndarray, score: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = len(labels)
    return np.array([roc_auc_score(labels[i], score[i]) for i in (rng.integers(0, n, n) for _ in range(RESAMPLES))])


def run_aurocs(runs: dict[str, Path]) -> dict:
    """Track AUROC of each run's network and BDT with a 68 % bootstrap interval, and the last run minus the first."""
    rng = np.random.default_rng(0)
    out, samples = {}, {}
    for label, run in runs.items():
        predictions = np.load(run / "test_predictions.npz")
        tracks = is_track_event(predictions["network/event_type"])
        out[label] = {}
        for method, key in TRACK_PROBABILITIES.items():
            samples[label, method] = bootstrap_auroc(tracks, predictions[key], rng)
            out[label][method] = {"auroc": float(roc_auc_score(tracks, predictions[key])),
                                  "interval_68": np.percentile(samples[label, method], [16, 84]).tolist()}
    first, last = list(runs)[0], list(runs)[-1]
    out["difference"] = {method: {"of": f"{last} - {first}",
                                  "auroc": out[last][method]["auroc"] - out[first][method]["auroc"],
                                  "interval_95": np.percentile(samples[last, method] - samples[first, method],
                                                               [2.5, 97.5]).tolist()}
                         for method in TRACK_PROBABILITIES}
    return out


def simulated_tracks(path: Path) -> dict:
    """Per bin of muon energy, the nu_mu CC test events of a numl.simulate file: how many, their mean range and
    mean triggered hits (all, and those of the event's light)."""
    with h5py.File(path, "r") as f:
        model = read_metadata(f, KM3NeTDataModule.metadata_added_defaults)["events"]["muon_energy_loss"]
        truth, offsets, hits = f["test/truth"][:], f["test/hit_offsets"][:], f["test/hits"][:]
    triggered = np.add.reduceat(hits["triggered"].astype(np.int64), offsets[:-1]) * (np.diff(offsets) > 0)
    light = np.add.reduceat((hits["triggered"] & hits["is_signal"]).astype(np.int64), offsets[:-1])
    light *= np.diff(offsets) > 0
    tracks = is_track_event(truth["event_type"])
    rows = []
    for low, high in zip(MUON_ENERGY_EDGES_GEV[:-1], MUON_ENERGY_EDGES_GEV[1:], strict=True):
        in_bin = tracks & (truth["muon_energy_gev"] >= low) & (truth["muon_energy_gev"] < high)
        n = int(in_bin.sum())
        rows.append({"low": low, "high": high, "events": n,
                     "mean_range_m": float(truth["muon_range_m"][in_bin].mean()) if n else None,
                     "mean_triggered_hits": float(triggered[in_bin].mean()) if n else None,
                     "mean_triggered_light_hits": float(light[in_bin].mean()) if n else None})
    return {"path": str(path), "muon_energy_loss": model, "tracks": int(tracks.sum()), "others": int((~tracks).sum()),
            "bins": rows}


def check() -> dict:
    pdg = []
    for kinetic, table in sorted(physics.PDG_WATER_CSDA_RANGE_G_PER_CM2.items()):
        energy = kinetic + physics.MUON_MASS_GEV
        row = {"kinetic_gev": kinetic, "pdg_g_per_cm2": table}
        for model in MODELS:
            row[model] = float(physics.muon_range_m(energy, model)) * SEA_WATER_G_PER_CM2_PER_M
        pdg.append(row)
    files = {}
    for name, path in FILES.items():
        muons = read_file_muon_lengths(data_path(path))
        keep = muons["energy_gev"] < 300.0
        rows = [{"energy_gev": float(e), "length_m": float(length),
                 **{model: float(physics.muon_range_m(e, model)) for model in MODELS}}
                for e, length in zip(muons["energy_gev"][keep], muons["length_m"][keep], strict=True)]
        stopping = [row for row in rows if row["energy_gev"] < STOPPING_ENERGY_GEV]
        files[name] = {"muons": rows, "stopping_muons": len(stopping), **{
            key: {model: float(np.median([row["length_m"] / row[model] for row in chosen])) if chosen else None
                  for model in MODELS} for key, chosen in (("stopping_median_ratio", stopping),
                                                           ("median_ratio", rows))}}
    ranges = [{"energy_gev": e, **{model: float(physics.muon_range_m(e, model)) for model in MODELS}}
              for e in ENERGIES_GEV]
    loss = [{"energy_gev": e, "a_gev_per_m": float(physics.muon_ionisation_loss_gev_per_m(e))} for e in ENERGIES_GEV]
    # stopping powers in MeV cm^2/g, as PDG tabulates them
    per_density = 10.0 / physics.DENSITY_SEA_WATER_G_PER_CM3
    near_minimum = np.geomspace(0.15, 10.0, 20_000)
    at_2_gev = 2.0 + physics.MUON_MASS_GEV
    stopping = {"pdg": {"minimum_ionisation": physics.PDG_WATER_MIN_IONISATION_MEV_CM2_PER_G,
                        "total_at_2_gev": physics.PDG_WATER_TOTAL_LOSS_AT_2_GEV_MEV_CM2_PER_G}}
    for model in MODELS:
        stopping[model] = {
            "minimum_ionisation": float((physics.muon_dedx_gev_per_m(near_minimum, model)
                                         - physics.MUON_DEDX_B_PER_M * near_minimum).min() * per_density),
            "total_at_2_gev": float(physics.muon_dedx_gev_per_m(at_2_gev, model) * per_density)}
    # where the two models meet: a(E) reaches the constant a (it rises monotonically above 1 GeV), and the ranges
    # cross (the first energy above 10 GeV where bethe_bloch's is the shorter)
    grid = np.geomspace(1.0, 1000.0, 30_001)
    crossings = {"a_equals_constant_gev": float(np.interp(
                     0.0, physics.muon_ionisation_loss_gev_per_m(grid) - physics.MUON_DEDX_A_GEV_PER_M, grid)),
                 "equal_range_gev": float(grid[np.argmax((physics.muon_range_m(grid, "bethe_bloch")
                                                          < physics.muon_range_m(grid, "constant_a")) & (grid > 10))])}
    return {"pdg_water": pdg, "stopping_power": stopping, "files": files, "ranges_m": ranges, "bethe_bloch_a": loss,
            "crossings": crossings}


def simulated_markdown(simulated: dict) -> list[str]:
    names = list(simulated)
    lines = ["", "nu_mu CC test events of numl.simulate files (" + "; ".join(
        f"{name}: {entry['muon_energy_loss']}, {entry['tracks']} nu_mu CC / {entry['others']} other"
        for name, entry in simulated.items()) + "): events, mean range (m), mean triggered hits (of them light)", "",
        "| muon energy (GeV) | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for i, row in enumerate(simulated[names[0]]["bins"]):
        cells = []
        for name in names:
            cell = simulated[name]["bins"][i]
            cells.append(f"{cell['events']}, {cell['mean_range_m']:.1f} m, {cell['mean_triggered_hits']:.1f} "
                         f"({cell['mean_triggered_light_hits']:.1f})" if cell["events"] else "0")
        lines.append(f"| {row['low']:g}-{row['high']:g} | " + " | ".join(cells) + " |")
    return lines


def markdown(result: dict) -> str:
    lines = ["CSDA range in water (g/cm^2) against the PDG muon table", "",
             "| kinetic energy (GeV) | PDG | bethe_bloch | constant_a |", "| --- | --- | --- | --- |"]
    for row in result["pdg_water"]:
        pdg = row["pdg_g_per_cm2"]
        lines.append(f"| {row['kinetic_gev']:g} | {pdg:.1f} | {row['bethe_bloch']:.1f} "
                     f"({100 * (row['bethe_bloch'] / pdg - 1):+.2f} %) | {row['constant_a']:.1f} "
                     f"({100 * (row['constant_a'] / pdg - 1):+.1f} %) |")
    stopping = result["stopping_power"]
    lines += ["", "| stopping power (MeV cm^2/g) | PDG | bethe_bloch | constant_a |", "| --- | --- | --- | --- |"]
    for key, name in (("minimum_ionisation", "minimum ionisation"), ("total_at_2_gev", "total at 2 GeV kinetic")):
        lines.append(f"| {name} | {stopping['pdg'][key]:.3f} | {stopping['bethe_bloch'][key]:.3f} | "
                     f"{stopping['constant_a'][key]:.3f} |")
    for name, entry in result["files"].items():
        ratio = entry["stopping_median_ratio"]
        lines += ["", f"MC muons of {name} (length > 0, E < 300 GeV; numl's ranges in m)", "",
                  "| muon energy (GeV) | file length (m) | bethe_bloch | constant_a |", "| --- | --- | --- | --- |"]
        lines += [f"| {row['energy_gev']:.2f} | {row['length_m']:.1f} | {row['bethe_bloch']:.1f} | "
                  f"{row['constant_a']:.1f} |" for row in sorted(entry["muons"], key=lambda r: r["energy_gev"])]
        every = entry["median_ratio"]
        lines += ["", f"all {len(entry['muons'])} listed: median file length / numl range {every['bethe_bloch']:.3f} "
                  f"(bethe_bloch), {every['constant_a']:.3f} (constant_a)"]
        if entry["stopping_muons"]:
            lines += ["", f"{entry['stopping_muons']} muons below {STOPPING_ENERGY_GEV:g} GeV: median file length / "
                      f"numl range {ratio['bethe_bloch']:.3f} (bethe_bloch), {ratio['constant_a']:.3f} (constant_a)"]
    lines += ["", "| muon energy (GeV) | " + " | ".join(str(row["energy_gev"]) for row in result["ranges_m"]) + " |",
              "| --- |" + " --- |" * len(result["ranges_m"])]
    for model in MODELS:
        lines.append(f"| range, {model} (m) | " + " | ".join(f"{row[model]:.1f}" for row in result["ranges_m"]) + " |")
    lines.append("| a(E), bethe_bloch (GeV/m) | " + " | ".join(f"{row['a_gev_per_m']:.3f}"
                                                              for row in result["bethe_bloch_a"]) + " |")
    crossings = result["crossings"]
    lines += ["", f"bethe_bloch's a(E) reaches the constant a = {physics.MUON_DEDX_A_GEV_PER_M} GeV/m at "
              f"{crossings['a_equals_constant_gev']:.1f} GeV; above {crossings['equal_range_gev']:.0f} GeV its range "
              "is the shorter one"]
    if result.get("simulated"):
        lines += simulated_markdown(result["simulated"])
    if result.get("runs"):
        runs = result["runs"]
        lines += ["", "Track AUROC on each run's test events (68 % bootstrap interval)", "",
                  "| run | " + " | ".join(TRACK_PROBABILITIES) + " |", "| --- |" + " --- |" * len(TRACK_PROBABILITIES)]
        for label in (k for k in runs if k != "difference"):
            lines.append(f"| {label} | " + " | ".join(
                f"{runs[label][m]['auroc']:.3f} ({runs[label][m]['interval_68'][0]:.3f}-"
                f"{runs[label][m]['interval_68'][1]:.3f})" for m in TRACK_PROBABILITIES) + " |")
        diff = runs["difference"]
        lines.append(f"| {diff['network']['of']} (95 % interval) | " + " | ".join(
            f"{diff[m]['auroc']:+.3f} ({diff[m]['interval_95'][0]:+.3f} to {diff[m]['interval_95'][1]:+.3f})"
            for m in TRACK_PROBABILITIES) + " |")
    return "\n".join(lines) + "\n"


def figure(result: dict, path: Path) -> None:
    energy = np.geomspace(0.3, 1000.0, 200)
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.2))
    for model, style in zip(MODELS, ("-", "--"), strict=True):
        ax[0].plot(energy, physics.muon_range_m(energy, model), style, label=f"numl {model}")
    for (name, entry), marker in zip(result["files"].items(), ("o", "s"), strict=True):
        muons = entry["muons"]
        ax[0].plot([m["energy_gev"] for m in muons], [m["length_m"] for m in muons], marker, ms=4, ls="none",
                   label=f"{name}: stored muon length")
    pdg = result["pdg_water"]
    ax[0].plot([r["kinetic_gev"] + physics.MUON_MASS_GEV for r in pdg],
               [r["pdg_g_per_cm2"] / SEA_WATER_G_PER_CM2_PER_M for r in pdg], "k^", ms=5, label="PDG water table")
    ax[0].set(xscale="log", yscale="log", xlabel="muon energy (GeV)", ylabel="range in sea water (m)")
    ax[0].legend(fontsize=7)
    ax[1].plot(energy, physics.muon_range_m(energy, "constant_a") / physics.muon_range_m(energy, "bethe_bloch"))
    ax[1].axhline(1.0, color="grey", lw=0.5)
    ax[1].set(xscale="log", xlabel="muon energy (GeV)", ylabel="range constant_a / bethe_bloch")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--hdf5", nargs="*", default=[], metavar="LABEL=PATH", help="numl.simulate files to compare")
    parser.add_argument("--runs", nargs="*", default=[], metavar="LABEL=RUN_DIR",
                        help="orca6_track_shower-like run directories to compare")
    args = parser.parse_args()
    result = check()
    if args.hdf5:
        result["simulated"] = {label: simulated_tracks(Path(path))
                               for label, path in (item.split("=", 1) for item in args.hdf5)}
    if args.runs:
        result["runs"] = run_aurocs({label: Path(path) for label, path in (item.split("=", 1) for item in args.runs)})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "muon_range_check.json").write_text(json.dumps(result, indent=1))
    (args.out / "muon_range_check.md").write_text(markdown(result))
    figure(result, args.out / "figures" / "muon_range_check.png")
    print(markdown(result))


if __name__ == "__main__":
    main()
