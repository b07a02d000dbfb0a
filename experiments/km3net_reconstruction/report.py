"""KM3NeT reconstruction study report: reads the run directories of the study's experiments and writes the tables
(tables.md, results.json) and figures. It trains and fits nothing.

    python experiments/km3net_reconstruction/report.py --runs /tmp/studies/km3net_reconstruction

expects <runs>/transformer, <runs>/edgeconv and <runs>/orca6_real_file, the run directories of
experiment=km3net_reconstruction/<name> (any of them may be missing). Every network / fit comparison is on the
same test events: the chi-square fit scores the first `baseline.track_fit.max_events` test events, the networks
are compared on those; EdgeConv's run has no baseline and borrows the transformer run's fit, after checking that
the two runs' test events have the same true directions.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from numl.baselines.base import BaselineResult
from numl.figures.common import plt, save_figure
from numl.figures.km3net import binned_resolution, save_resolution_figures
from numl.tasks.losses import vmf_angle_cdf

HERE = Path(__file__).resolve().parent
NETWORKS = {"transformer": "transformer", "edgeconv": "EdgeConv (DynEdge)"}
#: the learning curves: validation events are simulated in every run, also in the real-file one
CURVE_LABELS = {"transformer": "transformer", "edgeconv": "EdgeConv (DynEdge)",
                "orca6_real_file": "transformer, simulated ORCA6 (real-file run)"}
#: the study's energy range, 3-300 GeV, in four bins of true log10 E
ENERGY_EDGES = np.linspace(np.log10(3.0), np.log10(300.0), 5)

#: The full-size numbers of 2026-11-23 (2-core CPU, no GPU) from the former stage script: 60k training events,
#: 1,000 test events, every one fitted; the real file trained on 20k simulated ORCA6 events for 8 epochs.
BEFORE_DATE = "2026-11-23"
BEFORE = {
    "transformer": {"events": 1000, "median_deg": 8.32, "mean_deg": 11.16, "sigma_log10e": 0.277,
                    "coverage_68": 0.68, "coverage_68_calibrated": 0.69, "kappa_scale": 0.97},
    "edgeconv": {"events": 1000, "median_deg": 11.80, "mean_deg": 15.09, "sigma_log10e": 0.326,
                 "coverage_68": 0.70, "coverage_68_calibrated": 0.69, "kappa_scale": 1.07},
    "track_fit": {"events": 1000, "median_deg": 12.05, "mean_deg": 33.52, "sigma_log10e": 0.396},
    "ratio": {"value": 0.69, "low": 0.64, "high": 0.74},
    "ratio_per_energy_bin": [0.66, 0.92, 0.84, 0.50],
    "orca6_transformer": {"events": 140, "median_deg": 22.40, "mean_deg": 29.50, "sigma_log10e": 0.281,
                          "coverage_68": 0.64, "coverage_68_calibrated": 0.61, "kappa_scale": 1.04},
    "orca6_track_fit": {"events": 140, "median_deg": 15.06, "mean_deg": 33.49, "sigma_log10e": 0.275},
    "orca6_official_reconstruction": {"events": 140, "median_deg": 6.07, "mean_deg": 21.17, "sigma_log10e": 0.890},
}


def load_run(run_dir: Path) -> dict | None:
    """A finished run's per-event outputs, metrics and configuration; None when the run is absent."""
    if not (run_dir / "test_predictions.npz").exists():
        return None
    arrays = dict(np.load(run_dir / "test_predictions.npz"))
    return {"dir": run_dir, "config": OmegaConf.load(run_dir / ".hydra" / "config.yaml"),
            "metrics": json.loads((run_dir / "test_metrics.json").read_text()),
            "network": {k.removeprefix("network/"): v for k, v in arrays.items() if k.startswith("network/")},
            "baselines": {name: {k.split("/", 2)[2]: v for k, v in arrays.items() if k.startswith(f"baseline/{name}/")}
                          for name in {k.split("/")[1] for k in arrays if k.startswith("baseline/")}}}


def coverage_68(angular_error_deg: np.ndarray, kappa: np.ndarray) -> float:
    """Fraction of events whose true direction lies inside the predicted 68 % vMF cone (0.68 when calibrated)."""
    cdf = vmf_angle_cdf(torch.deg2rad(torch.as_tensor(angular_error_deg, dtype=torch.float64)),
                        torch.as_tensor(kappa, dtype=torch.float64)).numpy()
    return float(np.mean(cdf <= 0.68))


def resolution_row(angular_error_deg: np.ndarray, log10e_residual: np.ndarray,
                   network: dict[str, np.ndarray] | None = None) -> dict:
    """Median / mean angular error and sigma(log10 E) over events with a direction; kappa coverage for networks."""
    ok = np.isfinite(angular_error_deg)
    row = {"events": int(ok.sum()), "median_deg": float(np.median(angular_error_deg[ok])),
           "mean_deg": float(np.mean(angular_error_deg[ok])), "sigma_log10e": float(np.nanstd(log10e_residual[ok]))}
    if network is not None:
        row["coverage_68"] = coverage_68(angular_error_deg, network["kappa"])
        row["coverage_68_calibrated"] = coverage_68(angular_error_deg, network["kappa_calibrated"])
        # one scale for all events, fitted by the task on the validation events
        row["kappa_scale"] = float(np.median(network["kappa_calibrated"] / network["kappa"]))
    return row


def network_row(network: dict[str, np.ndarray], n_events: int) -> dict:
    first = {k: v[:n_events] for k, v in network.items()}
    return resolution_row(first["angular_error_deg"], first["log10_energy_pred"] - first["log10_energy"], first)


def baseline_row(outputs: dict[str, np.ndarray], true_log10e: np.ndarray) -> dict:
    return resolution_row(outputs["angular_error_deg"], outputs["log10_energy"] - true_log10e[:len(outputs["ok"])])


def size_label(run: dict) -> str:
    cfg = run["config"]
    return (f"{cfg.data.n_train:,} train events, {cfg.trainer.max_epochs} epochs, batch {cfg.data.batch_size}, "
            f"{cfg.data.n_test} test events")


def bootstrap_median_ratio(network_deg: np.ndarray, classical_deg: np.ndarray, n_resamples: int = 2000,
                           seed: int = 0) -> tuple[float, float]:
    """68 % interval of median(network) / median(fit) over resamplings of the test events, paired (both methods
    see each resampled event), so that the 0.7 target is judged against the statistical error."""
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(network_deg), size=(n_resamples, len(network_deg)))
    ratios = np.nanmedian(network_deg[index], axis=1) / np.nanmedian(classical_deg[index], axis=1)
    low, high = np.percentile(ratios, [16, 84])
    return float(low), float(high)


def cell(row: dict | None, key: str, digits: int) -> str:
    if row is None or key not in row:
        return "n/a"
    if key == "coverage_68_calibrated":
        return f"{row[key]:.2f} (x{row['kappa_scale']:.2f})"
    return f"{row[key]:.{digits}f}" if isinstance(row[key], float) else str(row[key])


def before_now_table(rows: list[tuple[str, dict | None, dict]], now_label: str) -> list[str]:
    """One line per method; each quantity as `before | now`."""
    columns = [("events", "events", 0), ("median angle (deg)", "median_deg", 2), ("mean angle (deg)", "mean_deg", 2),
               ("sigma(log10 E)", "sigma_log10e", 3), ("68 % cone coverage, raw kappa", "coverage_68", 2),
               ("after the validation kappa scale", "coverage_68_calibrated", 2)]
    header = "| method | " + " | ".join(f"{name}: before | now" for name, _, _ in columns) + " |"
    lines = [f"before: full size, {BEFORE_DATE}; now: {now_label}, 2026-12-01", "", header,
             "|---" * (1 + 2 * len(columns)) + "|"]
    for method, before, now in rows:
        cells = [f"{cell(before, key, d)} | {cell(now, key, d)}" for _, key, d in columns]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def simulated_part(transformer: dict, edgeconv: dict | None, results: dict, figures: Path) -> list[str]:
    fit = transformer["baselines"]["track_fit"]
    n_fit = len(fit["ok"])
    true_log10e = transformer["network"]["log10_energy"][:n_fit]
    networks = {"transformer": transformer} | ({"edgeconv": edgeconv} if edgeconv else {})
    for run in networks.values():
        if not np.allclose(run["network"]["direction"][:n_fit], transformer["network"]["direction"][:n_fit]):
            raise SystemExit(f"{run['dir']}: its test events differ from the transformer run's (data seed or sizes)")
    rows = {name: network_row(run["network"], n_fit) for name, run in networks.items()}
    rows["track_fit"] = baseline_row(fit, true_log10e) | {"fit_failure_fraction": float(1 - fit["ok"].mean())}
    labels = {**NETWORKS, "track_fit": "line fit + chi-square fit"}
    lines = ["## Simulated nu_mu CC (19-DU ORCA-like detector, 3-300 GeV): networks vs the chi-square fit", "",
             f"On the first {n_fit} test events (the ones the fit scored).", "",
             *before_now_table([(labels[k], BEFORE[k], row) for k, row in rows.items()], size_label(transformer)), ""]

    errors = {name: run["network"]["angular_error_deg"][:n_fit] for name, run in networks.items()}
    residuals = {name: run["network"]["log10_energy_pred"][:n_fit] - true_log10e for name, run in networks.items()}
    errors["track_fit"], residuals["track_fit"] = fit["angular_error_deg"], fit["log10_energy"] - true_log10e
    binned = {name: binned_resolution(true_log10e, errors[name], residuals[name], ENERGY_EDGES) for name in errors}
    lines += ["Per bin of true energy, median deg / mean deg / sigma(log10 E):", "",
              "| true log10(E/GeV) | events | " + " | ".join(labels[n] for n in binned)
              + " | transformer / fit medians: before | now |", "|---" * (len(binned) + 4) + "|"]
    for b in range(len(ENERGY_EDGES) - 1):
        cells = " | ".join(f"{binned[n]['median_deg'][b]:.1f} / {binned[n]['mean_deg'][b]:.1f} / "
                           f"{binned[n]['sigma_log10e'][b]:.2f}" for n in binned)
        ratio = binned["transformer"]["median_deg"][b] / binned["track_fit"]["median_deg"][b]
        lines.append(f"| {ENERGY_EDGES[b]:.2f}-{ENERGY_EDGES[b + 1]:.2f} | {int(binned['track_fit']['count'][b])} | "
                     f"{cells} | {BEFORE['ratio_per_energy_bin'][b]:.2f} | {ratio:.2f} |")

    best = min(networks, key=lambda name: rows[name]["median_deg"])
    ratio = rows[best]["median_deg"] / rows["track_fit"]["median_deg"]
    low, high = bootstrap_median_ratio(errors[best], errors["track_fit"])
    before = BEFORE["ratio"]
    lines += ["", f"Best network ({labels[best]}) / chi-square fit median angular error (target <= 0.7): before "
              f"{before['value']:.2f} (68 % paired bootstrap {before['low']:.2f}-{before['high']:.2f}), now "
              f"{ratio:.2f} ({low:.2f}-{high:.2f}).", ""]
    results["simulated"] = {"events": n_fit, "size": size_label(transformer), "rows": rows, "best_network": best,
                            "best_over_fit_median": ratio, "ratio_bootstrap_68": [low, high],
                            "per_energy_bin": {n: {k: v.tolist() for k, v in b.items()} for n, b in binned.items()}}
    fit_result = BaselineResult("chi-square fit", {}, fit)
    for name, run in networks.items():
        first = {k: v[:n_fit] for k, v in run["network"].items()}
        save_resolution_figures(first, figures / f"sim_{name}", {"track_fit": fit_result})
    return lines


def real_file_part(run: dict, results: dict, figures: Path) -> list[str]:
    network = run["network"]
    true_log10e = network["log10_energy"]
    rows = {"orca6_transformer": network_row(network, len(true_log10e))}
    labels = {"orca6_transformer": "transformer (trained on simulated ORCA6)",
              "orca6_track_fit": "line fit + chi-square fit (numl)",
              "orca6_official_reconstruction": "official JMuon (stored in the file)"}
    for name in ("track_fit", "official_reconstruction"):
        if name in run["baselines"]:
            rows[f"orca6_{name}"] = baseline_row(run["baselines"][name], true_log10e)
    cfg = run["config"]
    size = (f"{cfg.data.n_train:,} simulated ORCA6 train events, {cfg.trainer.max_epochs} epochs, "
            f"batch {cfg.data.batch_size}")
    results["real_file"] = {"events": len(true_log10e), "size": size, "rows": rows}
    save_resolution_figures(network, figures / "orca6_real_file",
                            {name: BaselineResult(labels[f"orca6_{name}"], {}, outputs)
                             for name, outputs in run["baselines"].items()})
    return [f"## Real file: official ORCA6 simulation, {len(true_log10e)} events (truth = MC neutrino)", "",
            *before_now_table([(labels[k], BEFORE[k], row) for k, row in rows.items()], size), ""]


def plot_learning_curves(runs: dict[str, dict], fit_median_deg: float | None, figures: Path) -> Path:
    """Validation median angular error per epoch of every network (the runs' CSV logs), beside the fit's median."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, run in runs.items():
        with (run["dir"] / "csv" / "metrics.csv").open() as f:
            rows = [r for r in csv.DictReader(f) if r.get("val/angular_error_deg_median")]
        ax.plot([int(r["epoch"]) + 1 for r in rows], [float(r["val/angular_error_deg_median"]) for r in rows], "o-",
                label=CURVE_LABELS[name])
    if fit_median_deg is not None:
        ax.axhline(fit_median_deg, color="k", ls="--", label="chi-square fit (simulated test events)")
        ax.axhline(0.7 * fit_median_deg, color="k", ls=":", label="target: 0.7 x fit")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation median angular error (deg)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, figures / "km3net_learning_curves.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("/tmp/studies/km3net_reconstruction"),
                        help="folder holding the run directories transformer/, edgeconv/, orca6_real_file/")
    parser.add_argument("--output-dir", type=Path, default=HERE / "results")
    args = parser.parse_args()
    runs = {name: run for name in ("transformer", "edgeconv", "orca6_real_file")
            if (run := load_run(args.runs / name)) is not None}
    figures = args.output_dir / "figures"
    results: dict = {"runs": {name: str(run["dir"]) for name, run in runs.items()}}
    lines = ["# KM3NeT reconstruction: tables", ""]
    if "transformer" in runs:
        lines += simulated_part(runs["transformer"], runs.get("edgeconv"), results, figures)
    if "orca6_real_file" in runs:
        lines += real_file_part(runs["orca6_real_file"], results, figures)
    fit_median = results.get("simulated", {}).get("rows", {}).get("track_fit", {}).get("median_deg")
    plot_learning_curves(runs, fit_median, figures)
    text = "\n".join(lines)
    print(text)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "tables.md").write_text(text + "\n")
    (args.output_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\ntables.md, results.json and figures/ in {args.output_dir}")


if __name__ == "__main__":
    main()
