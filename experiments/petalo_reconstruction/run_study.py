"""PETALO study: position with a predicted error (two uncertainty schemes, calibrated on validation events)
vs the centroid + r-map, the cut on the predicted z error, the discard taggers (two networks and a classical
charge-spread cut) with their ROC, and the exported taggers' throughput on this machine's CPU.

    python experiments/petalo_reconstruction/run_study.py                  # the README's run (1 CPU thread)
    python experiments/petalo_reconstruction/run_study.py --n-train 5000 --epochs 3 --tagger-epochs 2  # a look
    python experiments/petalo_reconstruction/run_study.py --benchmark-only --threads 2   # throughput, idle CPU

The events are simulated once and cached in results/ (HDF5, git-ignored), as are the exported taggers that
--benchmark-only times. Prints every number; writes figures/*.png and results.json next to this script
(--benchmark-only adds its numbers to results.json).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from sklearn.metrics import roc_auc_score

from numl.baselines.petalo import CentroidRMap, MultiSiteSpread, resolution_metrics
from numl.data.petalo import PetaloDataModule, PetaloEvents
from numl.export import export_torchscript
from numl.models.petalo_mlp import SiPMPatternMLP
from numl.tasks.petalo import (
    PetaloPositionTask,
    PetaloTaggerTask,
    coverage,
    gaussian_nll_mm,
    plot_calibration,
    plot_residuals,
    plot_resolution_vs_depth,
    plot_sigma_cut,
    sigma_cut_curve,
)
from numl.utils.plots import save_roc_curve

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"  # git-ignored: event cache and exported taggers
DEPTH_EDGES_MM = np.array([0, 5, 10, 20, 30, 50.0])
TAGGERS = {"image": False, "projections": True}  # name -> SiPMPatternMLP(projections=...)
BATCH_SIZES = (1, 64, 1024, 8192, 65536)


def rounded(d: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in d.items()}


def subset(pred: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[mask] for k, v in pred.items()}


def datamodule(args, use_time: bool = True) -> PetaloDataModule:
    """The study's events, simulated once into an HDF5 cache and read from it afterwards."""
    sizes = {"n_train": args.n_train, "n_val": args.n_val, "n_test": args.n_test}
    path = RESULTS / f"events_seed{args.seed}_{args.n_train}_{args.n_val}_{args.n_test}.h5"
    if not path.exists():
        PetaloDataModule(**sizes, seed=args.seed).write_hdf5(path)
    dm = PetaloDataModule(
        **sizes, batch_size=256, seed=args.seed, use_time=use_time, source="hdf5", hdf5_path=str(path)
    )
    dm.setup()
    return dm


def fit_and_predict(task, dm, epochs: int) -> dict[str, np.ndarray]:
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(task, datamodule=dm)
    batches = trainer.predict(task, dataloaders=dm.test_dataloader())
    return {k: torch.cat([b[k] for b in batches]).numpy() for k in batches[0]}


def cosine(epochs: int) -> dict:
    return {"scheduler": partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=epochs), "interval": "epoch"}


def depth_table(pred, path: Path, baseline: np.ndarray) -> list[dict[str, float]]:
    _, table = plot_resolution_vs_depth(pred, path, baseline, DEPTH_EDGES_MM)
    print("  FWHM vs depth [mm]: depth  n  net r/rphi/z  |  centroid r/rphi/z")
    for r in table:
        print(
            f"    {r['depth_lo_mm']:4.0f}-{r['depth_hi_mm']:<4.0f} n={r['n']:5d}  "
            f"{r['net_r_fwhm_mm']:.2f} {r['net_rphi_fwhm_mm']:.2f} {r['net_z_fwhm_mm']:.2f}  |  "
            f"{r['base_r_fwhm_mm']:.2f} {r['base_rphi_fwhm_mm']:.2f} {r['base_z_fwhm_mm']:.2f}"
        )
    return table


def position_variants(args, dm) -> dict[str, PetaloPositionTask]:
    kwargs = {"in_channels": 4, "n_rows": dm.config.n_rows, "n_columns": dm.config.window_columns}
    optimizer = partial(torch.optim.AdamW, lr=args.lr, weight_decay=1e-4)
    return {
        "gaussian_nll": PetaloPositionTask(
            SiPMPatternMLP(hidden=args.hidden, n_outputs=6, **kwargs), optimizer, cosine(args.epochs)
        ),
        "error_net": PetaloPositionTask(
            SiPMPatternMLP(hidden=args.hidden, n_outputs=3, **kwargs),
            optimizer,
            cosine(args.epochs),
            error_model=SiPMPatternMLP(hidden=args.error_hidden, n_outputs=3, **kwargs),
            uncertainty="error_net",
        ),
    }


def run_position(args, dm, results, figures, baseline, name: str) -> dict[str, np.ndarray]:
    single_test = dm.splits["test"].events["multi_site"] < 0.5
    task = position_variants(args, dm)[name]  # built anew: the two variants never share a model
    t0 = time.time()
    pred = fit_and_predict(task, dm, args.epochs)
    np.savez_compressed(RESULTS / f"predictions_{name}.npz", **pred)
    single = pred["multi_site"] < 0.5
    out = results[name] = {
        "train_s": time.time() - t0,
        "sigma_scale_from_val": task.sigma_scale.tolist(),
        "all": resolution_metrics(pred["position_mm_pred"], pred["position_mm"]),
        "single_site": resolution_metrics(pred["position_mm_pred"][single], pred["position_mm"][single]),
        "coverage_1sigma_raw": coverage(pred, "sigma_raw_mm"),
        "coverage_1sigma_calibrated": coverage(pred),
        "coverage_1sigma_calibrated_single_site": coverage(subset(pred, single)),
        "nll_raw": gaussian_nll_mm(pred, "sigma_raw_mm"),
        "nll_calibrated": gaussian_nll_mm(pred),
        "z_sigma_cut": sigma_cut_curve(pred),
    }
    print(
        f"\n[{name}] trained in {out['train_s']:.0f} s; sigma scale fitted on val: "
        f"{np.round(out['sigma_scale_from_val'], 3).tolist()}"
    )
    print("  all events:", rounded(out["all"]))
    print("  single-site:", rounded(out["single_site"]))
    print(
        "  within 1 sigma, raw:",
        rounded(out["coverage_1sigma_raw"]),
        " calibrated:",
        rounded(out["coverage_1sigma_calibrated"]),
    )
    print("  NLL per coordinate, raw:", rounded(out["nll_raw"]), " calibrated:", rounded(out["nll_calibrated"]))
    print("  cut on calibrated z sigma: cut_mm efficiency z_fwhm_mm z_rms_mm")
    for row in out["z_sigma_cut"]:
        print(f"    < {row['cut_mm']:5.2f}  {row['efficiency']:.3f}  {row['fwhm_mm']:.3f}  {row['rms_mm']:.3f}")
    plot_residuals(pred, figures / f"residuals_{name}.png", baseline)
    plot_sigma_cut(pred, figures / f"z_sigma_cut_{name}.png")
    plot_calibration(pred, figures / f"calibration_{name}_raw.png", "sigma_raw_mm")
    plot_calibration(pred, figures / f"calibration_{name}.png")
    print("  all events")
    out["vs_depth"] = depth_table(pred, figures / f"resolution_vs_depth_{name}.png", baseline)
    print("  single-site events")
    out["vs_depth_single_site"] = depth_table(
        subset(pred, single), figures / f"resolution_vs_depth_{name}_single_site.png", baseline[single_test]
    )
    return pred


def rankable(scores: np.ndarray) -> np.ndarray:
    """Scores for ROC tools, which refuse inf: flagged events (+inf, always discarded) rank above all others."""
    finite = scores[np.isfinite(scores)]
    return np.where(np.isposinf(scores), finite.max() + 1.0, scores)


def operating_point(val_scores, val_labels, test_scores, test_labels, keep_efficiency: float) -> dict[str, float]:
    """Threshold keeping keep_efficiency of the single-site validation events; its effect on the test events."""
    threshold = float(np.quantile(val_scores[val_labels < 0.5], keep_efficiency))
    good = test_labels < 0.5
    return {
        "auroc": float(roc_auc_score(test_labels, rankable(test_scores))),
        "flagged_test_events": int(np.isposinf(test_scores).sum()),
        "threshold": threshold,
        "single_site_kept": float((test_scores[good] <= threshold).mean()),
        "multi_site_discarded": float((test_scores[~good] > threshold).mean()),
        "kept_fraction": float((test_scores <= threshold).mean()),
    }


def run_taggers(args, dm, results, figures, baseline, nll_pred) -> None:
    config = dm.config
    charge_splits = {s: PetaloEvents(d.events, False, config.inner_radius_mm) for s, d in dm.splits.items()}
    dm_tag = PetaloDataModule(
        n_train=args.n_train, n_val=args.n_val, n_test=args.n_test, batch_size=256, seed=args.seed, use_time=False
    )
    dm_tag.splits = charge_splits
    labels = {s: d.events["multi_site"] for s, d in dm.splits.items()}
    true_test = dm.splits["test"].events["position_mm"]
    scores, tagger_results = {}, {}
    for name, projections in TAGGERS.items():
        model = SiPMPatternMLP(
            in_channels=2,
            n_rows=config.n_rows,
            n_columns=config.window_columns,
            hidden=args.tagger_hidden,
            n_outputs=1,
            invalid_output=float("inf"),
            projections=projections,
        )
        task = PetaloTaggerTask(
            model,
            partial(torch.optim.AdamW, lr=2e-3, weight_decay=1e-4),
            cosine(args.tagger_epochs),
            keep_efficiency=args.keep_efficiency,
        )
        t0 = time.time()
        pred = fit_and_predict(task, dm_tag, args.tagger_epochs)
        with torch.inference_mode():
            val_logits = task.model.eval()(charge_splits["val"].pattern)[:, 0].numpy()
        scores[name] = pred["logit"]
        tagger_results[name] = {
            "train_s": time.time() - t0,
            "hidden": list(args.tagger_hidden),
            **operating_point(val_logits, labels["val"], pred["logit"], labels["test"], args.keep_efficiency),
        }
        path = export_torchscript(model, charge_splits["test"].pattern[:256], RESULTS / f"tagger_{name}.pt")
        tagger_results[name]["exported"] = str(path.relative_to(HERE))
    spread = MultiSiteSpread(config)
    scores["classical_spread"] = spread(dm.splits["test"].events["sipm_charge"])
    tagger_results["classical_spread"] = operating_point(
        spread(dm.splits["val"].events["sipm_charge"]),
        labels["val"],
        scores["classical_spread"],
        labels["test"],
        args.keep_efficiency,
    )
    nll_all = resolution_metrics(nll_pred["position_mm_pred"], true_test)
    base_all = resolution_metrics(baseline, true_test)
    print(f"\n[taggers] operating point: keep {args.keep_efficiency:.0%} of single-site validation events")
    for name, out in tagger_results.items():
        kept = scores[name] <= out["threshold"]
        out["kept_resolution_network_gaussian_nll"] = resolution_metrics(
            nll_pred["position_mm_pred"][kept], true_test[kept]
        )
        out["kept_resolution_centroid"] = resolution_metrics(baseline[kept], true_test[kept])
        print(
            f"  {name}: AUROC {out['auroc']:.3f}; test: keeps {out['single_site_kept']:.3f} of single-site, "
            f"discards {out['multi_site_discarded']:.3f} of multi-site, keeps {out['kept_fraction']:.3f} of all"
        )
        print("    kept events, network:", rounded(out["kept_resolution_network_gaussian_nll"]))
        print("    kept events, centroid:", rounded(out["kept_resolution_centroid"]))
    print("  all events, network:", rounded(nll_all), "\n  all events, centroid:", rounded(base_all))
    results["taggers"] = tagger_results
    scores = {name: rankable(s) for name, s in scores.items()}
    save_roc_curve(
        scores["image"],
        labels["test"],
        figures / "tagger_roc.png",
        positive="multi-site (discard)",
        negative="single-site",
        extra_curves={
            "network, row/column sums": (scores["projections"], labels["test"]),
            "classical: inner-face charge spread": (scores["classical_spread"], labels["test"]),
        },
    )


def benchmark(path: Path, patterns: torch.Tensor, batch_sizes, seconds: float) -> list[dict[str, float]]:
    """Events per second of an exported TorchScript tagger on real test patterns, per batch size."""
    module = torch.jit.load(str(path))
    rows = []
    for batch_size in batch_sizes:
        reps = -(-batch_size // len(patterns))
        x = patterns.repeat(reps, 1, 1, 1)[:batch_size].contiguous()
        with torch.inference_mode():
            for _ in range(3):  # warm-up: the TorchScript profiling executor optimises on the first calls
                module(x)
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                module(x)
                n += batch_size
            elapsed = time.perf_counter() - start
        rows.append({"batch_size": batch_size, "events_per_s": n / elapsed})
        print(f"  batch {batch_size:>6}: {n / elapsed:,.0f} events/s")
    return rows


def run_benchmark(args, dm) -> dict:
    patterns = dm.splits["test"].pattern[:, :2].contiguous()
    out = {"threads": torch.get_num_threads(), "load_average_before": os.getloadavg()}
    for name in TAGGERS:
        print(f"\n[throughput] TorchScript tagger {name}, {torch.get_num_threads()} CPU threads:")
        out[name] = benchmark(RESULTS / f"tagger_{name}.pt", patterns, BATCH_SIZES, args.bench_seconds)
    out["load_average_after"] = os.getloadavg()
    print("load average before / after:", out["load_average_before"], out["load_average_after"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-train", type=int, default=150000)
    parser.add_argument("--n-val", type=int, default=10000)
    parser.add_argument("--n-test", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--tagger-epochs", type=int, default=12)
    parser.add_argument("--hidden", type=int, nargs="+", default=[1024, 512, 256])
    parser.add_argument("--error-hidden", type=int, nargs="+", default=[256, 128])
    parser.add_argument("--tagger-hidden", type=int, nargs="+", default=[64, 32])
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--keep-efficiency", type=float, default=0.9)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--benchmark-only", action="store_true", help="time the taggers exported by a full run")
    parser.add_argument("--bench-seconds", type=float, default=2.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    figures = HERE / "figures"
    figures.mkdir(exist_ok=True)
    RESULTS.mkdir(exist_ok=True)
    results_path = HERE / "results.json"
    if args.benchmark_only:
        results = json.loads(results_path.read_text())
        results[f"throughput_cpu_threads{args.threads}"] = run_benchmark(args, datamodule(args, use_time=False))
        results_path.write_text(json.dumps(results, indent=2))
        return

    pl.seed_everything(args.seed, workers=True)
    results: dict = {"args": vars(args), "date": time.strftime("%Y-%m-%d"), "load_average_start": os.getloadavg()}
    t0 = time.time()
    dm = datamodule(args)
    results["data_s"] = time.time() - t0
    test = dm.splits["test"].events
    single = test["multi_site"] < 0.5
    results["test_multi_site_fraction"] = float(test["multi_site"].mean())
    print(
        f"{args.n_train + args.n_val + args.n_test} photopeak events (simulated or read from the cache) in "
        f"{results['data_s']:.0f} s; test multi-site fraction {results['test_multi_site_fraction']:.3f}"
    )

    t0 = time.time()
    baseline = CentroidRMap(dm.config).fit(dm.splits["train"].events).predict(test["sipm_charge"])
    results["baseline"] = {
        "fit_predict_s": time.time() - t0,
        "all": resolution_metrics(baseline, test["position_mm"]),
        "single_site": resolution_metrics(baseline[single], test["position_mm"][single]),
    }
    print("centroid + r-map, all:", rounded(results["baseline"]["all"]))
    print("centroid + r-map, single-site:", rounded(results["baseline"]["single_site"]))

    # Results are written after each stage, so that a late failure or a stop keeps the earlier ones.
    nll_pred = run_position(args, dm, results, figures, baseline, "gaussian_nll")
    results_path.write_text(json.dumps(results, indent=2))
    run_taggers(args, dm, results, figures, baseline, nll_pred)
    results_path.write_text(json.dumps(results, indent=2))
    run_position(args, dm, results, figures, baseline, "error_net")
    results["load_average_end"] = os.getloadavg()
    results_path.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
