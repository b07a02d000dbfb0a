"""Lensing interpretability report: does the CNN read peaks (clusters) or voids, with and without noise?

Reads, for each case (noise_free, noisy) under the study directory:

* `<case>/` — the `python -m numl.train experiment=lensing_interpretability/<case>` run
  (test_metrics.json: the CNN and the likelihood ratio on the same test maps; .hydra/config.yaml);
* `<case>/attribution/integrated_gradients/` and `<case>/attribution/saliency/` — the
  `python -m numl.attribute ... voids_vs_clusters.enabled=true` outputs (summary.json,
  voids_vs_clusters.json, .hydra/config.yaml and the attribution figures).

Prints the Markdown tables beside the numbers this study published before (2026-11-23) and writes
results/tables.md, results/results.json and figures/.

    python experiments/lensing_interpretability/report.py /tmp/studies/lensing_interpretability
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from numl.explain.lensing import MASK_MODES, KappaBinnedAttribution, save_kappa_binned_figure, save_masking_figure

HERE = Path(__file__).resolve().parent
CASES = {"noise_free": "noise-free", "noisy": "noisy"}
METHODS = {"integrated_gradients": "IG", "saliency": "saliency"}
# What this study published before the restructure (its own Trainer, final weights, 64 px, [8, 16, 32, 32],
# 6 x 1536 maps, IG on 128 test maps, masking on 512; README of 2026-11-23). None: not measured then.
BEFORE = {
    "noise-free": {
        "cnn": (0.947, 0.984), "likelihood_ratio": 0.951, "ig_relative_delta": 1.9e-3, "randomisation_rho": -0.02,
        "IG": [0.112, 0.222, 0.107, 0.138, 0.287, 0.119, 0.014],
        "saliency": [0.044, 0.168, 0.243, 0.280, 0.209, 0.052, 0.004],
        "masking": {"highest": [(0.648, 0.980), (0.479, 0.972), (0.479, 0.654), (0.479, 0.500)],
                    "lowest": [(0.783, 0.977), (0.490, 0.971), (0.479, 0.945), (0.479, 0.500)],
                    "random": [(0.941, 0.983), (0.900, 0.981), (0.617, 0.970), (0.479, 0.934)]},
    },
    "noisy": {
        "cnn": (0.742, 0.894), "likelihood_ratio": 0.811, "ig_relative_delta": 2.0e-3, "randomisation_rho": -0.01,
        "IG": [0.132, 0.260, 0.095, 0.106, 0.272, 0.120, 0.015],
        "saliency": [0.058, 0.207, 0.206, 0.239, 0.229, 0.057, 0.004],
        "masking": {"highest": [(0.521, 0.895), (0.479, 0.880), (0.479, 0.743), (0.479, 0.500)],
                    "lowest": [(0.568, 0.886), (0.479, 0.878), (0.479, 0.839), (0.479, 0.500)],
                    "random": [(0.787, 0.893), (0.791, 0.891), (0.486, 0.888), (0.479, 0.864)]},
    },
}
BEFORE_FRACTIONS = (0.01, 0.03, 0.1, 0.3)
BEFORE_LABEL = "before (2026-11-23)"
# Drawn by numl.attribute for each case (the binned and masking figures are redrawn here, both cases side by side).
ATTRIBUTION_FIGURES = ("input_maps.png", "attribution_overlay.png", "class_mean_attribution.png")


def read_case(case_dir: Path) -> dict:
    cfg = OmegaConf.load(case_dir / ".hydra" / "config.yaml")
    metrics = json.loads((case_dir / "test_metrics.json").read_text())["metrics"]
    out = {
        "run_dir": str(case_dir),
        "size": {"n_pix": cfg.data.n_pix, "epochs": cfg.trainer.max_epochs, "n_train": cfg.data.n_train,
                 "n_test": cfg.data.n_test, "channels": list(cfg.model.channels)},
        "cnn": (metrics["test/acc"], metrics["test/auroc"]),
        # Run with baseline=power_spectrum on lognormal maps, where it is not the optimum.
        "likelihood_ratio": metrics.get("baseline/likelihood_ratio/acc"),
    }
    for method, short in METHODS.items():
        attribution_dir = case_dir / "attribution" / method
        attribute_cfg = OmegaConf.load(attribution_dir / ".hydra" / "config.yaml")
        summary = json.loads((attribution_dir / "summary.json").read_text())
        vvc = json.loads((attribution_dir / "voids_vs_clusters.json").read_text())
        out[short] = {
            "n_events": summary["n_events"], "ckpt_path": attribute_cfg.ckpt_path,
            "attribution": OmegaConf.to_container(attribute_cfg.attribution),
            "edges_sigma": [float(x) for x in attribute_cfg.voids_vs_clusters.bin_edges_sigma],
            "bin_labels": vvc["bin_labels"], "attribution_fraction": vvc["attribution_fraction"],
            "pixel_fraction": vvc["pixel_fraction"], "signed_mean": vvc["signed_mean"],
            "void_attribution_share": vvc["void_attribution_share"], "void_pixel_share": vvc["void_pixel_share"],
            # JSON keys are strings: back to the masked fractions.
            "masking": {mode: {float(x): m for x, m in by_x.items()} for mode, by_x in vvc["masking"].items()},
        }
        if "convergence_delta_relative_median" in summary:
            out[short]["relative_delta_median"] = summary["convergence_delta_relative_median"]
    return out


def accuracy_table(results: dict) -> list[str]:
    header = " | ".join(f"{name}: {BEFORE_LABEL} | {name}: now" for name in results)
    lines = [f"| | {header} |", "|---" * (1 + 2 * len(results)) + "|"]
    rows = {  # label: (before, now) as text, per case
        "CNN test accuracy (AUROC)": lambda n, r: ("{:.3f} ({:.3f})".format(*BEFORE[n]["cnn"]),
                                                   "{:.3f} ({:.3f})".format(*r["cnn"])),
        "likelihood ratio on the same test maps (optimum)": lambda n, r: (
            f"{BEFORE[n]['likelihood_ratio']:.3f}",
            "not run" if r["likelihood_ratio"] is None else f"{r['likelihood_ratio']:.3f}"),
        "IG completeness: median \\|delta\\| / \\|sum of attributions\\|": lambda n, r: (
            f"{BEFORE[n]['ig_relative_delta']:.1e}", f"{r['IG']['relative_delta_median']:.1e}"),
        "model randomisation: median Spearman(IG trained, IG re-initialised)": lambda n, r: (
            f"{BEFORE[n]['randomisation_rho']:+.2f}", "not rebuilt"),
    }
    for label, texts in rows.items():
        lines.append(f"| {label} | " + " | ".join(" | ".join(texts(n, r)) for n, r in results.items()) + " |")
    return lines


def binned_table(results: dict) -> list[str]:
    columns = [(short, n) for short in METHODS.values() for n in results]
    header = " | ".join(f"\\|{short}\\| {n}: before | \\|{short}\\| {n}: now" for short, n in columns)
    lines = [f"| nu bin | pixels now | {header} |", "|---" * (2 + 2 * len(columns)) + "|"]
    first = next(iter(results.values()))["IG"]
    for i, label in enumerate(first["bin_labels"]):
        cells = " | ".join(f"{BEFORE[n][short][i]:.3f} | {results[n][short]['attribution_fraction'][i]:.3f}"
                           for short, n in columns)
        lines.append(f"| {label} | {first['pixel_fraction'][i]:.3f} | {cells} |")
    # nu < 0: the bins below the edge at 0 (the old numbers are given per bin only).
    n_void_bins = first["edges_sigma"].index(0.0)
    voids = " | ".join(f"**{sum(BEFORE[n][short][:n_void_bins]):.3f}** | "
                       f"**{results[n][short]['void_attribution_share']:.3f}**" for short, n in columns)
    lines.append(f"| **voids, nu < 0** | {first['void_pixel_share']:.3f} | {voids} |")
    return lines


def masking_table(results: dict) -> list[str]:
    header = " | ".join(f"{n}: {BEFORE_LABEL} | {n}: now" for n in results)
    lines = [f"| masked pixels | {header} |", "|---" * (1 + 2 * len(results)) + "|"]

    def cell(metrics: dict) -> str:
        return f"{metrics['acc']:.3f} / {metrics['auroc']:.3f}"

    lines.append("| none | " + " | ".join("{:.3f} / {:.3f} | ".format(*BEFORE[n]["cnn"])
                                           + cell(r["IG"]["masking"]["unmasked"][0.0]) for n, r in results.items())
                 + " |")
    fractions = sorted(next(iter(results.values()))["IG"]["masking"]["highest"])
    for x in fractions:
        for mode in MASK_MODES:
            cells = []
            for n, r in results.items():
                before = ("{:.3f} / {:.3f}".format(*BEFORE[n]["masking"][mode][BEFORE_FRACTIONS.index(x)])
                          if x in BEFORE_FRACTIONS else "")
                cells.append(f"{before} | {cell(r['IG']['masking'][mode][x])}")
            lines.append(f"| {100 * x:g} % {mode}{'-kappa' if mode != 'random' else ''} | " + " | ".join(cells) + " |")
    return lines


def save_figures(results: dict) -> None:
    figures = HERE / "figures"
    binned = {n: KappaBinnedAttribution(np.array(r["IG"]["edges_sigma"]), np.array(r["IG"]["attribution_fraction"]),
                                        np.array(r["IG"]["pixel_fraction"]), np.array(r["IG"]["signed_mean"]))
              for n, r in results.items()}
    save_kappa_binned_figure(binned, figures / "kappa_binned_attribution.png", "IG")
    masking = {n: r["IG"]["masking"] for n, r in results.items()}
    save_masking_figure(masking, figures / "masking_experiment.png")
    # Accuracy also moves when masking shifts the decision threshold; the AUROC measures the ranking alone.
    save_masking_figure(masking, figures / "masking_experiment_auroc.png", metric="auroc")
    for n, r in results.items():
        (figures / n).mkdir(exist_ok=True)
        for name in ATTRIBUTION_FIGURES:
            shutil.copyfile(Path(r["run_dir"]) / "attribution" / "integrated_gradients" / name, figures / n / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study_dir", type=Path, help="directory holding the noise_free/ and noisy/ run directories")
    args = parser.parse_args()
    results = {name: read_case(args.study_dir / case) for case, name in CASES.items()}
    size = results["noisy"]["size"]
    markdown = "\n".join([
        f"Now: {size['n_pix']} px, channels {size['channels']}, {size['epochs']} x {size['n_train']} maps, "
        f"{size['n_test']} test maps; attributions and masking on the first {results['noisy']['IG']['n_events']} "
        "test maps.", "",
        *accuracy_table(results), "", "Share of \\|attribution\\| per bin of nu = (kappa - <kappa>) / sigma_kappa:", "",
        *binned_table(results), "", "Masking experiment, test accuracy / AUROC:", "", *masking_table(results)])
    print(markdown)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "figures").mkdir(exist_ok=True)
    (HERE / "results" / "tables.md").write_text(markdown + "\n")
    (HERE / "results" / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True))
    save_figures(results)
    print(f"\nwrote {HERE / 'results'} and {HERE / 'figures'}")


if __name__ == "__main__":
    main()
