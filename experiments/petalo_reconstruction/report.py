"""PETALO reconstruction report: position resolution with a predicted error (two uncertainty schemes) against
the centroid + r-map, calibration of the predicted errors, the cut on the predicted z error, and the discard
taggers (two networks and the classical charge-spread cut), all on the same test events.

Reads the run directories of the study's experiments (test_metrics.json, test_predictions.npz,
.hydra/config.yaml), one subdirectory per experiment variant:

    python experiments/petalo_reconstruction/report.py /tmp/studies/petalo_reconstruction/runs

prints the Markdown tables beside the numbers the study published before the restructure (full size,
2026-11-23), and writes tables.md, results.json and figures/*.png next to this script.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from numl.baselines.petalo import resolution_metrics
from numl.figures.common import save_roc_curves
from numl.figures.petalo import plot_calibration, plot_residuals, plot_resolution_vs_depth, plot_sigma_cut
from numl.metrics import fwhm, gaussian_nll_mm, one_sigma_coverage, position_coverage, sigma_cut_curve
from numl.sim.petalo import COORDINATES

HERE = Path(__file__).resolve().parent
POSITION_RUNS = {"position_nll": "network, Gaussian NLL", "error_net": "network, error_net variant"}
TAGGER_RUNS = {"tagger_image": "MLP on the charge image", "tagger_row_column_sums": "MLP on row/column charge sums"}
CLASSICAL_TAGGER = "classical: inner-face charge spread cut"
# Figure names of the study (the keys of the study before the restructure): gaussian_nll, error_net.
FIGURE_NAMES = {"position_nll": "gaussian_nll", "error_net": "error_net"}
DEPTH_EDGES_MM = np.array([0, 5, 10, 20, 30, 50.0])
N_BOOTSTRAP = 200

# What the study published before the restructure (run_study.py, 150k / 10k / 20k events, 20 epochs, taggers 12,
# cosine learning rate, last-epoch weights; 2-core CPU, 2026-11-23). (r, r*phi, z) triples.
BEFORE_LABEL = "before (full size, 2026-11-23)"
BEFORE = {
    "resolution": {  # (FWHM, RMS) in mm
        ("centroid", "all"): ((1.93, 1.65, 12.85), (7.03, 19.21, 7.55)),
        ("position_nll", "all"): ((1.46, 1.26, 1.89), (5.30, 18.94, 4.33)),
        ("error_net", "all"): ((3.07, 2.84, 3.52), (5.56, 19.51, 4.62)),
        ("centroid", "single_site"): ((1.09, 1.37, 8.68), (3.12, 0.81, 6.23)),
        ("position_nll", "single_site"): ((0.96, 0.89, 1.33), (2.20, 1.06, 1.30)),
        ("error_net", "single_site"): ((2.30, 2.17, 2.61), (2.92, 1.94, 1.83)),
    },
    "depth": {  # Gaussian-NLL network: (events, network FWHM, centroid FWHM) per depth bin of DEPTH_EDGES_MM
        "all": [(3812, (0.66, 0.53, 1.00), (1.74, 1.17, 7.33)), (3459, (1.30, 1.05, 1.42), (1.63, 1.30, 11.96)),
                (5293, (3.01, 1.90, 2.62), (2.84, 1.89, 19.82)), (3600, (3.83, 3.00, 4.39), (6.84, 2.61, 22.95)),
                (3836, (3.12, 2.21, 3.19), (10.41, 2.02, 13.32))],
        "single_site": [(1780, (0.44, 0.45, 0.77), (0.50, 1.02, 5.80)),
                        (1555, (1.08, 0.89, 1.23), (1.06, 1.09, 9.96)),
                        (2357, (2.29, 1.59, 2.03), (2.17, 1.58, 19.05)),
                        (1587, (2.82, 2.52, 3.31), (5.09, 2.31, 22.92)),
                        (1997, (2.44, 1.85, 2.53), (9.49, 1.63, 11.83))],
    },
    "calibration": {
        "position_nll": {"factor": (1.738, 1.478, 1.879), "within_1_raw": (0.480, 0.538, 0.460),
                         "within_1": (0.682, 0.676, 0.681), "within_1_single_site": (0.800, 0.820, 0.771),
                         "within_1_multi_site": (0.581, 0.552, 0.603), "within_2": (0.862, 0.856, 0.873),
                         "nll_raw": (15.17, 211.1, 11.49), "nll": (6.28, 97.7, 4.61)},
        "error_net": {"factor": (1.578, 1.341, 1.420), "within_1_raw": (0.529, 0.581, 0.545),
                      "within_1": (0.694, 0.685, 0.682), "within_1_single_site": (0.832, 0.872, 0.842),
                      "within_1_multi_site": (0.575, 0.522, 0.543), "within_2": (0.879, 0.873, 0.896),
                      "nll_raw": (5.99, 42.8, 3.81), "nll": (3.79, 24.8, 3.02)},
    },
    "sigma_cut": {  # cut on calibrated sigma_z [mm]: (efficiency, z FWHM, z RMS)
        "position_nll": {0.5: (0.107, 0.82, 1.49), 0.75: (0.184, 0.93, 2.43), 1.0: (0.258, 1.04, 2.50),
                         1.5: (0.383, 1.17, 2.53), 2.0: (0.483, 1.34, 2.61), 3.0: (0.624, 1.49, 2.93),
                         4.0: (0.721, 1.62, 3.05), 6.0: (0.843, 1.80, 3.34), 8.0: (0.907, 1.82, 3.53),
                         12.0: (0.956, 1.84, 3.76)},
        "error_net": {0.5: (0.0, float("nan"), float("nan")), 0.75: (0.001, 0.39, 1.30), 1.0: (0.020, 1.68, 1.24),
                      1.5: (0.140, 1.92, 1.90), 2.0: (0.261, 2.25, 2.53), 3.0: (0.585, 2.95, 3.51),
                      4.0: (0.832, 3.25, 3.86), 6.0: (0.953, 3.48, 4.16), 8.0: (0.977, 3.52, 4.32),
                      12.0: (0.991, 3.51, 4.51)},
    },
    "taggers": {  # AUROC, single-site kept, multi-site discarded, all events kept
        "tagger_image": (0.821, 0.900, 0.563, 0.652),
        "tagger_row_column_sums": (0.831, 0.899, 0.575, 0.645),
        "charge_spread": (0.609, 0.906, 0.126, 0.889),
    },
    "kept_resolution": {  # (FWHM, RMS) of the kept events, Gaussian-NLL network and centroid
        ("tagger_image", "network"): ((1.06, 0.99, 1.50), (4.26, 21.19, 3.16)),
        ("tagger_image", "centroid"): ((1.23, 1.46, 9.91), (4.67, 21.19, 6.91)),
        ("tagger_row_column_sums", "network"): ((1.06, 0.98, 1.52), (4.18, 21.00, 3.08)),
        ("tagger_row_column_sums", "centroid"): ((1.23, 1.47, 9.62), (4.56, 20.98, 6.97)),
        ("charge_spread", "network"): ((1.33, 1.19, 1.79), (4.80, 19.85, 4.14)),
        ("charge_spread", "centroid"): ((1.76, 1.62, 13.24), (6.47, 19.98, 7.52)),
    },
}


def triple(values, digits: int = 2) -> str:
    return " / ".join("nan" if not np.isfinite(v) else f"{v:.{digits}f}" for v in values)


def percent_triple(values) -> str:
    return " / ".join(f"{100 * v:.1f} %" for v in values)


def read_run(run_dir: Path) -> dict:
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    with np.load(run_dir / "test_predictions.npz") as npz:
        arrays = {key: npz[key] for key in npz.files}
    # Wall time of the whole run (simulation or reading, training, test, baselines): config first, metrics last.
    wall_s = (run_dir / "test_metrics.json").stat().st_mtime - (run_dir / ".hydra" / "config.yaml").stat().st_mtime
    return {
        "cfg": cfg,
        "metrics": json.loads((run_dir / "test_metrics.json").read_text())["metrics"],
        "network": {k.removeprefix("network/"): v for k, v in arrays.items() if k.startswith("network/")},
        "baseline": {k.removeprefix("baseline/"): v for k, v in arrays.items() if k.startswith("baseline/")},
        "wall_s": wall_s,
    }


def resolution_triples(predicted: np.ndarray, true: np.ndarray) -> tuple[tuple, tuple]:
    m = resolution_metrics(predicted, true)
    return tuple(m[f"{c}_fwhm_mm"] for c in COORDINATES), tuple(m[f"{c}_rms_mm"] for c in COORDINATES)


def fwhm_bootstrap_error(predicted: np.ndarray, true: np.ndarray, rng: np.random.Generator) -> tuple:
    """Standard deviation of the FWHM per coordinate over bootstrap resamples of the events."""
    residual = predicted - true
    residual = residual[np.isfinite(residual).all(axis=1)]
    samples = np.array([[fwhm(residual[idx, i]) for i in range(3)]
                        for idx in rng.integers(0, len(residual), (N_BOOTSTRAP, len(residual)))])
    return tuple(samples.std(axis=0))


def resolution_section(position: dict, centroid_mm: np.ndarray, true: np.ndarray, single: np.ndarray,
                       results: dict) -> list[str]:
    rng = np.random.default_rng(2026)
    methods = {"centroid": ("centroid + r-map", centroid_mm)}
    methods |= {name: (label, run["network"]["position_mm_pred"]) for name, (label, run) in position.items()}
    lines = ["| method | events | FWHM r / r*phi / z, before | now (± bootstrap) | RMS r / r*phi / z, before | now |",
             "| --- | --- | --- | --- | --- | --- |"]
    results["resolution"] = {}
    for subset, mask in (("all", np.ones_like(single)), ("single_site", single)):
        for name, (label, predicted) in methods.items():
            fwhm_now, rms_now = resolution_triples(predicted[mask], true[mask])
            error = fwhm_bootstrap_error(predicted[mask], true[mask], rng)
            fwhm_before, rms_before = BEFORE["resolution"][(name, subset)]
            now = " / ".join(f"{v:.2f} ± {e:.2f}" for v, e in zip(fwhm_now, error, strict=True))
            lines.append(f"| {label} | {subset.replace('_', '-')} ({int(mask.sum())}) | {triple(fwhm_before)} | "
                         f"{now} | {triple(rms_before)} | {triple(rms_now)} |")
            results["resolution"][f"{name}/{subset}"] = {"fwhm_mm": fwhm_now, "fwhm_bootstrap_mm": error,
                                                         "rms_mm": rms_now, "n_events": int(mask.sum())}
    return lines


def depth_tables(predictions: dict, centroid_mm: np.ndarray, single: np.ndarray, figures: Path,
                 figure_name: str) -> dict[str, list[dict]]:
    """FWHM per depth bin of a network and the centroid, on all and on single-site events, with their figures."""
    tables = {}
    for subset, mask in (("all", np.ones_like(single)), ("single_site", single)):
        suffix = "" if subset == "all" else "_single_site"
        sub = {k: v[mask] for k, v in predictions.items()}
        _, tables[subset] = plot_resolution_vs_depth(sub, figures / f"resolution_vs_depth_{figure_name}{suffix}.png",
                                                     centroid_mm[mask], DEPTH_EDGES_MM)
    return tables


def depth_section(tables: dict[str, list[dict]]) -> list[str]:
    """The Gaussian-NLL network's depth tables beside the published ones."""
    lines = []
    for subset, table in tables.items():
        suffix = "" if subset == "all" else "_single_site"
        lines += ["", f"FWHM [mm] vs true depth, {subset.replace('_', '-')} test events "
                  f"(`figures/resolution_vs_depth_gaussian_nll{suffix}.png`):", "",
                  "| depth [mm] | events before / now | network r / r*phi / z, before | now "
                  "| centroid r / r*phi / z, before | now |", "| --- | --- | --- | --- | --- | --- |"]
        for row, (n_before, net_before, base_before) in zip(table, BEFORE["depth"][subset], strict=True):
            net = [row[f"net_{c}_fwhm_mm"] for c in COORDINATES]
            base = [row[f"base_{c}_fwhm_mm"] for c in COORDINATES]
            lines.append(f"| {row['depth_lo_mm']:.0f}-{row['depth_hi_mm']:.0f} | {n_before} / {row['n']} | "
                         f"{triple(net_before)} | {triple(net)} | {triple(base_before)} | {triple(base)} |")
    return lines


def calibration(predictions: dict, single: np.ndarray) -> dict[str, tuple]:
    def cover(mask, sigma_key="sigma_mm", factor=1.0):
        p = predictions
        return tuple(one_sigma_coverage(p["position_mm_pred"][mask], factor * p[sigma_key][mask],
                                        p["position_mm"][mask]))

    everything = np.ones_like(single)
    finite = np.isfinite(predictions["sigma_raw_mm"]).all(axis=1) & (predictions["sigma_raw_mm"] > 0).all(axis=1)
    return {
        # the task multiplies the network's sigma by one factor per coordinate, fitted on validation events
        "factor": tuple(np.median(predictions["sigma_mm"][finite] / predictions["sigma_raw_mm"][finite], axis=0)),
        "within_1_raw": tuple(position_coverage(predictions, "sigma_raw_mm").values()),
        "within_1": tuple(position_coverage(predictions).values()),
        "within_1_single_site": cover(single),
        "within_1_multi_site": cover(~single),
        "within_2": cover(everything, factor=2.0),
        "nll_raw": tuple(gaussian_nll_mm(predictions, "sigma_raw_mm").values()),
        "nll": tuple(gaussian_nll_mm(predictions).values()),
    }


CALIBRATION_ROWS = {
    "factor": "factor fitted on validation events",
    "within_1_raw": "within 1 sigma, network's own sigma",
    "within_1": "within 1 sigma, calibrated",
    "within_1_single_site": "within 1 sigma, calibrated, single-site only",
    "within_1_multi_site": "within 1 sigma, calibrated, multi-site only",
    "within_2": "within 2 sigma, calibrated (95.4 % if Gaussian)",
    "nll_raw": "mean NLL, network's own sigma",
    "nll": "mean NLL, calibrated",
}


def calibration_section(position: dict, single: np.ndarray, results: dict) -> list[str]:
    lines = []
    results["calibration"] = {}
    n = len(single)
    for name, (label, run) in position.items():
        cal = results["calibration"][name] = calibration(run["network"], single)
        lines += ["", f"| {label}: r / r*phi / z | {BEFORE_LABEL} | now |", "| --- | --- | --- |"]
        for key, row in CALIBRATION_ROWS.items():
            before, now = BEFORE["calibration"][name][key], cal[key]
            if key.startswith("within"):
                lines.append(f"| {row} | {percent_triple(before)} | {percent_triple(now)} |")
            else:
                lines.append(f"| {row} | {triple(before, 3 if key == 'factor' else 2)} | "
                             f"{triple(now, 3 if key == 'factor' else 2)} |")
    lines.append(f"\n(Binomial error of a coverage near 68 % on {n} events: ±{100 * (0.68 * 0.32 / n) ** 0.5:.1f} %.)")
    return lines


def sigma_cut_section(position: dict, results: dict) -> list[str]:
    lines = []
    results["z_sigma_cut"] = {}
    for name, (label, run) in position.items():
        rows = results["z_sigma_cut"][name] = sigma_cut_curve(run["network"])
        lines += ["", f"{label} (`figures/z_sigma_cut_{FIGURE_NAMES[name]}.png`):", "",
                  "| cut: sigma_z < | efficiency, before | now | z FWHM [mm], before | now "
                  "| z RMS [mm], before | now |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for row in rows:
            eff, fw, rm = BEFORE["sigma_cut"][name][row["cut_mm"]]
            lines.append(f"| {row['cut_mm']:g} mm | {eff:.3f} | {row['efficiency']:.3f} | {fw:.2f} | "
                         f"{row['fwhm_mm']:.2f} | {rm:.2f} | {row['rms_mm']:.2f} |")
    return lines


def tagger_section(taggers: dict, position_run: dict, labels: np.ndarray, true: np.ndarray,
                   figures: Path, results: dict) -> list[str]:
    single = labels < 0.5
    kept: dict[str, np.ndarray] = {}
    rows = {}
    for name, (label, run) in taggers.items():
        kept[name] = ~run["network"]["discard"].astype(bool)  # threshold fitted on the validation events
        rows[name] = (label, run["metrics"]["test/auroc"])
    first_tagger_run = next(iter(taggers.values()))[1]
    spread = first_tagger_run["baseline"]
    spread_score = spread["charge_spread/score"]
    # The baseline has no validation events: its threshold keeps 90 % of the single-site test events.
    threshold = np.quantile(spread_score[single], 0.9, method="higher")
    kept["charge_spread"] = spread_score <= threshold
    rows["charge_spread"] = (CLASSICAL_TAGGER, first_tagger_run["metrics"]["baseline/charge_spread/auroc"])
    lines = ["| tagger | AUROC, before | now | single-site kept, before | now | multi-site discarded, before | now "
             "| all kept, before | now |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    results["taggers"] = {}
    for name, (label, auroc) in rows.items():
        now = (auroc, kept[name][single].mean(), (~kept[name][~single]).mean(), kept[name].mean())
        results["taggers"][name] = dict(zip(("auroc", "single_site_kept", "multi_site_discarded", "kept_fraction"),
                                            map(float, now), strict=True))
        cells = " | ".join(f"{b:.3f} | {n:.3f}" for b, n in zip(BEFORE["taggers"][name], now, strict=True))
        lines.append(f"| {label} | {cells} |")

    curves = {label: (run["network"]["score"], run["network"]["label"]) for label, run in taggers.values()}
    curves[CLASSICAL_TAGGER] = (spread_score, spread["charge_spread/label"])
    save_roc_curves(curves, figures / "tagger_roc.png", positive="multi-site (discarded)", negative="single-site")

    network_mm = position_run["network"]["position_mm_pred"]
    centroid_mm = position_run["baseline"]["centroid/position_mm_pred"]
    lines += ["", "What discarding does to the resolution (Gaussian-NLL network and centroid on the kept events):", "",
              "| events | method | FWHM r / r*phi / z, before | now | RMS r / r*phi / z, before | now |",
              "| --- | --- | --- | --- | --- | --- |"]
    results["kept_resolution"] = {}
    subsets = {"all": np.ones_like(single)} | kept
    for subset, mask in subsets.items():
        for method, predicted in (("network", network_mm), ("centroid", centroid_mm)):
            fwhm_now, rms_now = resolution_triples(predicted[mask], true[mask])
            results["kept_resolution"][f"{subset}/{method}"] = {"fwhm_mm": fwhm_now, "rms_mm": rms_now}
            if subset == "all":
                before = BEFORE["resolution"][("position_nll" if method == "network" else "centroid", "all")]
                events = "all (100 %)"
            else:
                before = BEFORE["kept_resolution"][(subset, method)]
                events = f"kept by {rows[subset][0]} ({100 * mask.mean():.1f} %)"
            lines.append(f"| {events} | {method} | {triple(before[0])} | {triple(fwhm_now)} | "
                         f"{triple(before[1])} | {triple(rms_now)} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs_dir", type=Path, help="holds one run directory per variant: "
                        + ", ".join([*POSITION_RUNS, *TAGGER_RUNS]))
    parser.add_argument("--out", type=Path, default=HERE, help="where tables.md, results.json, figures/ go")
    args = parser.parse_args()
    missing = [v for v in [*POSITION_RUNS, *TAGGER_RUNS] if not (args.runs_dir / v / "test_metrics.json").is_file()]
    if missing:
        raise SystemExit(f"{args.runs_dir}: no finished run for {', '.join(missing)} (see the README's commands)")
    position = {name: (label, read_run(args.runs_dir / name)) for name, label in POSITION_RUNS.items()}
    taggers = {name: (label, read_run(args.runs_dir / name)) for name, label in TAGGER_RUNS.items()}
    nll_run = position["position_nll"][1]
    true = nll_run["network"]["position_mm"]
    # The study compares methods event by event: every run must have tested the same events.
    for name, (_, run) in (position | taggers).items():
        if not np.array_equal(run["network"]["position_mm"], true):
            raise SystemExit(f"{args.runs_dir / name}: other test events than position_nll (seed, n_test or file)")
    single = nll_run["network"]["multi_site"] < 0.5
    centroid_mm = nll_run["baseline"]["centroid/position_mm_pred"]
    figures = args.out / "figures"

    data, trainer = nll_run["cfg"].data, nll_run["cfg"].trainer
    tagger_epochs = taggers["tagger_image"][1]["cfg"].trainer.max_epochs
    size = (f"{data.n_train} / {data.n_val} / {data.n_test} train / validation / test photopeak events, "
            f"{trainer.max_epochs} epochs (taggers {tagger_epochs}), seed {nll_run['cfg'].seed}")
    results: dict = {"size": size, "test_multi_site_fraction": float((~single).mean()),
                     "run_wall_s": {name: run["wall_s"] for name, (_, run) in (position | taggers).items()}}
    lines = [f"Now: {size}; {100 * (~single).mean():.1f} % of the test events are multi-site.", "",
             "## Resolution on the same test events (mm)", ""]
    lines += resolution_section(position, centroid_mm, true, single, results)
    results["fwhm_vs_depth"] = {name: depth_tables(run["network"], centroid_mm, single, figures, FIGURE_NAMES[name])
                                for name, (_, run) in position.items()}
    lines += depth_section(results["fwhm_vs_depth"]["position_nll"])
    lines += ["", "## Calibration of the predicted errors"]
    lines += calibration_section(position, single, results)
    lines += ["", "## Cut on the predicted z error (calibrated sigma)"]
    lines += sigma_cut_section(position, results)
    lines += ["", "## Discard tagger (multi-site vs single-site), same test events", ""]
    lines += tagger_section(taggers, nll_run, 1.0 - single, true, figures, results)
    lines += ["", "| run | wall time now [s] (simulation or reading, training, test, baselines, figures) |",
              "| --- | --- |"]
    lines += [f"| {name} | {wall:.0f} |" for name, wall in results["run_wall_s"].items()]

    for name, (_, run) in position.items():
        figure = FIGURE_NAMES[name]
        plot_residuals(run["network"], figures / f"residuals_{figure}.png", centroid_mm)
        plot_sigma_cut(run["network"], figures / f"z_sigma_cut_{figure}.png")
        plot_calibration(run["network"], figures / f"calibration_{figure}_raw.png", "sigma_raw_mm")
        plot_calibration(run["network"], figures / f"calibration_{figure}.png")

    markdown = "\n".join(lines) + "\n"
    print(markdown)
    (args.out / "tables.md").write_text(markdown)
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
