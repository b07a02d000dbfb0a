"""Where track identification works (issue 16): the fraction of nu_mu CC events the orca6_track_shower run's network
and event-shape BDT call tracks (probability > 0.5), against the muon's energy and against Bjorken y, read from the
run's test predictions and the truth of the same test events in the HDF5 file numl.simulate wrote for it; and how
well each of the BDT's event-shape features alone separates the classes on those events (AUROC, or 1 - AUROC when
the feature is larger for showers).

    python experiments/km3net_reconstruction/track_identification.py \
        --run logs/km3net_reconstruction/orca6_track_shower \
        --fit-run logs/km3net_reconstruction/orca6_track_shower_eval_fit \
        --hdf5 data/km3net_reconstruction_orca6_track_shower.h5
    # writes results/track_identification.md and results/track_identification.json (--name: another file name)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import h5py
import numpy as np
from sklearn.metrics import roc_auc_score

from numl.baselines.km3net import EVENT_SHAPE_FEATURES, event_shape_features
from numl.data.km3net import KM3NeTDataModule
from numl.figures.km3net import binned_track_identification
from numl.sim.km3net.events import is_track_event
from numl.sim.km3net.physics import muon_range_m
from numl.utils.hdf5 import read_metadata

RESULTS = Path(__file__).parent / "results"
MUON_ENERGY_EDGES_GEV = (0.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
BJORKEN_Y_EDGES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
BDT_KEY = "baseline/track_shower_features/track_probability"


def fraction_as_track(probability: np.ndarray, variable: np.ndarray, edges) -> list[dict[str, float]]:
    """Per bin of `variable`: events and the fraction with probability > 0.5 (the figures' binning, every event a
    track here), with its binomial error."""
    binned = binned_track_identification(variable, probability, np.ones(len(variable), dtype=bool), np.array(edges))
    rows = []
    for low, high, n, fraction in zip(edges[:-1], edges[1:], binned["tracks"], binned["tracks_as_track"],
                                      strict=True):
        rows.append({"low": low, "high": high, "events": int(n), "as_track": float(fraction),
                     "error": float(np.sqrt(fraction * (1 - fraction) / n)) if n else float("nan")})
    return rows


def markdown_table(results: dict, names: list[str], variable: str, header: str) -> list[str]:
    """One row per bin of `variable`: its range (and the muon's range under the file's energy-loss model for muon
    energies), events, and each method's fraction called track."""
    model = results["muon_energy_loss"]
    extra_columns = header.count("|")
    lines = [f"| {header} | events | " + " | ".join(names) + " |",
             "| --- | " + "--- | " * extra_columns + "--- | " + " | ".join("---" for _ in names) + " |"]
    for i, row in enumerate(results[names[0]][variable]):
        cells = [f"{results[n][variable][i]['as_track']:.2f} +- {results[n][variable][i]['error']:.2f}" for n in names]
        bounds = f"{row['low']:g}-{row['high']:g}"
        if variable == "muon_energy_gev":
            low, high = (float(muon_range_m(energy, model)) for energy in (max(row["low"], 0.1), row["high"]))
            bounds += f" | {low:.0f}-{high:.0f}"
        lines.append(f"| {bounds} | {row['events']} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="run directory of orca6_track_shower")
    parser.add_argument("--fit-run", type=Path, help="numl.evaluate of that run with the BDT's fit_features")
    parser.add_argument("--hdf5", type=Path, required=True, help="the HDF5 file the run read its events from")
    parser.add_argument("--name", default="track_identification", help="file name of the results (no suffix)")
    args = parser.parse_args()
    predictions = np.load(args.run / "test_predictions.npz")
    probabilities = {"network": predictions["network/track_probability"], "event-shape BDT": predictions[BDT_KEY]}
    if args.fit_run:
        with_fits = np.load(args.fit_run / "test_predictions.npz")
        if not np.array_equal(with_fits["network/energy_gev"], predictions["network/energy_gev"]):
            raise SystemExit(f"{args.fit_run}: not the test events of {args.run} (energies differ)")
        probabilities["event-shape + fit BDT"] = with_fits[BDT_KEY]
    # the baselines' outputs are in the test order; the network's predictions must be too
    if not np.array_equal(predictions["network/event_index"], np.arange(len(predictions["network/event_index"]))):
        raise SystemExit(f"{args.run}: its predictions are not in the test events' order")
    with h5py.File(args.hdf5, "r") as f:
        truth = f["test/truth"][:]
        training_types = f["train/truth"]["event_type"]
        offsets, hits = f["test/hit_offsets"][:], f["test/hits"][:]
        muon_energy_loss = read_metadata(f, KM3NeTDataModule.metadata_added_defaults)["events"]["muon_energy_loss"]
    if not np.allclose(truth["energy_gev"], predictions["network/energy_gev"]):
        raise SystemExit(f"{args.hdf5}: its test events are not the run's (energies differ)")
    features = np.stack([event_shape_features(hits[offsets[i]:offsets[i + 1]]) for i in range(len(truth))])
    tracks = is_track_event(truth["event_type"])
    muon_gev, bjorken_y = truth["muon_energy_gev"][tracks], truth["bjorken_y"][tracks]
    results = {"run": str(args.run), "hdf5": str(args.hdf5), "muon_energy_loss": muon_energy_loss,
               "test_events": {"nu_mu_cc": int(tracks.sum()), "other": int((~tracks).sum())},
               "training_events": {"nu_mu_cc": int(is_track_event(training_types).sum()),
                                   "other": int((~is_track_event(training_types)).sum())}}
    for name, all_probabilities in probabilities.items():
        probability = all_probabilities[tracks]
        results[name] = {"muon_energy_gev": fraction_as_track(probability, muon_gev, MUON_ENERGY_EDGES_GEV),
                         "bjorken_y": fraction_as_track(probability, bjorken_y, BJORKEN_Y_EDGES)}
    separation = {}
    for name, column in zip(EVENT_SHAPE_FEATURES, features.T, strict=True):
        auroc = float(roc_auc_score(tracks, column))
        separation[name] = max(auroc, 1.0 - auroc)
    results["feature_separation_auroc"] = separation
    names = list(probabilities)
    lines = ["nu_mu CC test events classified as track (probability > 0.5), +- binomial error", "",
             *markdown_table(results, names, "muon_energy_gev", "muon energy (GeV) | muon range (m)"), "",
             *markdown_table(results, names, "bjorken_y", "Bjorken y")]
    lines += ["", "Each event-shape feature alone, nu_mu CC against the rest (AUROC, either sign), all test events:",
              "", "| feature | separation |", "| --- | --- |"]
    lines += [f"| {name} | {value:.3f} |" for name, value in sorted(separation.items(), key=lambda kv: -kv[1])]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    (RESULTS / f"{args.name}.json").write_text(json.dumps(results, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
