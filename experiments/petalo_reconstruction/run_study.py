"""PETALO study: position with predicted error (two uncertainty schemes) vs centroid + r-map, the cut on
predicted z error, calibration, the discard tagger's ROC, and tagger throughput on this machine's CPU.

    python experiments/petalo_reconstruction/run_study.py            # CPU scale (see README for timings)
    python experiments/petalo_reconstruction/run_study.py --n-train 3000 --epochs 4     # a quick look
    python experiments/petalo_reconstruction/run_study.py --n-train 200000 --epochs 40 --accelerator gpu

Prints every number and writes figures/*.png and results.json next to this script.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from sklearn.metrics import roc_auc_score

from numl.baselines.petalo import CentroidRMap, resolution_metrics
from numl.data.petalo import PetaloDataModule
from numl.export import export_torchscript
from numl.models.petalo_mlp import SiPMPatternMLP
from numl.tasks.petalo import (
    PetaloPositionTask,
    PetaloTaggerTask,
    coverage,
    plot_calibration,
    plot_residuals,
    plot_resolution_vs_depth,
    plot_sigma_cut,
    sigma_cut_curve,
)
from numl.utils.plots import save_roc_curve

HERE = Path(__file__).resolve().parent


def train(task, datamodule, epochs: int, accelerator: str) -> dict[str, np.ndarray]:
    trainer = pl.Trainer(max_epochs=epochs, accelerator=accelerator, devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(task, datamodule=datamodule)
    batches = trainer.predict(task, dataloaders=datamodule.test_dataloader())
    return {k: torch.cat([b[k] for b in batches]).numpy() for k in batches[0]}


def benchmark(path: Path, n_channels: int, datamodule, batch_sizes, seconds: float = 2.0) -> list[dict[str, float]]:
    """Events per second of the exported TorchScript tagger on real test patterns, per batch size."""
    module = torch.jit.load(str(path))
    patterns = datamodule.splits["test"].pattern[:, :n_channels]
    rows = []
    for batch_size in batch_sizes:
        reps = -(-batch_size // len(patterns))
        x = patterns.repeat(reps, 1, 1, 1)[:batch_size].contiguous()
        with torch.inference_mode():
            module(x)
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                module(x)
                n += batch_size
            elapsed = time.perf_counter() - start
        rows.append({"batch_size": batch_size, "events_per_s": n / elapsed})
        print(f"  batch {batch_size:>6}: {n / elapsed:,.0f} events/s")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-train", type=int, default=12000)
    parser.add_argument("--n-val", type=int, default=1500)
    parser.add_argument("--n-test", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    figures = HERE / "figures"
    figures.mkdir(exist_ok=True)
    torch.set_num_threads(2)
    pl.seed_everything(args.seed, workers=True)
    results: dict = {"args": vars(args)}

    t0 = time.time()
    dm = PetaloDataModule(n_train=args.n_train, n_val=args.n_val, n_test=args.n_test, batch_size=256, seed=args.seed)
    dm.setup()
    results["simulation_s"] = time.time() - t0
    test = dm.splits["test"].events
    results["test_multi_site_fraction"] = float(test["multi_site"].mean())
    print(f"simulated {args.n_train + args.n_val + args.n_test} photopeak events in {results['simulation_s']:.0f} s; "
          f"multi-site fraction {results['test_multi_site_fraction']:.3f}")

    baseline = CentroidRMap(dm.config).fit(dm.splits["train"].events).predict(test["sipm_charge"])
    results["baseline"] = resolution_metrics(baseline, test["position_mm"])
    print("centroid + r-map:", {k: round(v, 3) for k, v in results["baseline"].items()})

    optimizer = partial(torch.optim.AdamW, lr=1e-3, weight_decay=1e-4)
    scheduler = {"scheduler": partial(torch.optim.lr_scheduler.ExponentialLR, gamma=0.85), "interval": "epoch"}
    kwargs = {"in_channels": 4, "n_rows": dm.config.n_rows, "n_columns": dm.config.window_columns}
    variants = {
        "gaussian_nll": PetaloPositionTask(SiPMPatternMLP(hidden=[512, 256, 128], n_outputs=6, **kwargs),
                                           optimizer, scheduler),
        "error_net": PetaloPositionTask(SiPMPatternMLP(hidden=[512, 256, 128], n_outputs=3, **kwargs), optimizer,
                                        scheduler, error_model=SiPMPatternMLP(hidden=[256, 128], n_outputs=3, **kwargs),
                                        uncertainty="error_net"),
    }
    predictions = {}
    for name, task in variants.items():
        t0 = time.time()
        pred = predictions[name] = train(task, dm, args.epochs, args.accelerator)
        metrics = resolution_metrics(pred["position_mm_pred"], pred["position_mm"])
        single = pred["multi_site"] < 0.5
        metrics_single = resolution_metrics(pred["position_mm_pred"][single], pred["position_mm"][single])
        cut = sigma_cut_curve(pred)
        results[name] = {"train_s": time.time() - t0, "all": metrics, "single_site": metrics_single,
                         "coverage_1sigma": coverage(pred), "z_sigma_cut": cut}
        print(f"\n[{name}] trained in {results[name]['train_s']:.0f} s")
        print("  all events:", {k: round(v, 3) for k, v in metrics.items()})
        print("  single-site:", {k: round(v, 3) for k, v in metrics_single.items()})
        cover = {k: round(v, 3) for k, v in results[name]["coverage_1sigma"].items()}
        print("  fraction within 1 predicted sigma:", cover)
        print("  cut on predicted z sigma: cut_mm efficiency z_fwhm_mm z_rms_mm")
        for row in cut:
            print(f"    < {row['cut_mm']:5.2f}  {row['efficiency']:.3f}  {row['fwhm_mm']:.3f}  {row['rms_mm']:.3f}")
        plot_residuals(pred, figures / f"residuals_{name}.png", baseline)
        plot_sigma_cut(pred, figures / f"z_sigma_cut_{name}.png")
        plot_calibration(pred, figures / f"calibration_{name}.png")
        _, table = plot_resolution_vs_depth(pred, figures / f"resolution_vs_depth_{name}.png", baseline,
                                            np.array([0, 5, 10, 20, 30, 50.0]))
        results[name]["vs_depth"] = table
        print("  FWHM vs depth [mm]: depth  net r/rphi/z  |  centroid r/rphi/z")
        for r in table:
            print(f"    {r['depth_lo_mm']:4.0f}-{r['depth_hi_mm']:<4.0f} n={r['n']:5d}  "
                  f"{r['net_r_fwhm_mm']:.2f} {r['net_rphi_fwhm_mm']:.2f} {r['net_z_fwhm_mm']:.2f}  |  "
                  f"{r['base_r_fwhm_mm']:.2f} {r['base_rphi_fwhm_mm']:.2f} {r['base_z_fwhm_mm']:.2f}")

    # Discard tagger on charges only (the on-the-fly input), same events.
    tagger = PetaloTaggerTask(SiPMPatternMLP(in_channels=2, n_rows=dm.config.n_rows, n_columns=dm.config.window_columns,
                                             hidden=[64, 32], n_outputs=1, invalid_output=float("inf")),
                              partial(torch.optim.AdamW, lr=2e-3, weight_decay=1e-4), scheduler, keep_efficiency=0.9)
    dm_tag = PetaloDataModule(n_train=args.n_train, n_val=args.n_val, n_test=args.n_test, batch_size=256,
                              seed=args.seed, use_time=False)
    dm_tag.splits = {split: type(ds)(ds.events, False, dm.config.inner_radius_mm) for split, ds in dm.splits.items()}
    t0 = time.time()
    tag = train(tagger, dm_tag, args.epochs, args.accelerator)
    labels, logits = tag["label"], tag["logit"]
    threshold = float(tagger.discard_threshold_logit)
    keep = labels < 0.5
    results["tagger"] = {
        "train_s": time.time() - t0, "auroc": float(roc_auc_score(labels, logits)), "threshold_logit": threshold,
        "single_site_kept": float((logits[keep] <= threshold).mean()),
        "multi_site_discarded": float((logits[~keep] > threshold).mean()),
    }
    # What discarding does to the position resolution of the kept events (network from the NLL variant).
    kept = logits <= threshold
    nll = predictions["gaussian_nll"]
    results["tagger"]["kept_resolution_gaussian_nll"] = resolution_metrics(nll["position_mm_pred"][kept],
                                                                           nll["position_mm"][kept])
    save_roc_curve(logits, labels, figures / "tagger_roc.png", positive="multi-site (discard)", negative="single-site")
    print(f"\n[tagger] AUROC {results['tagger']['auroc']:.3f}; operating point (threshold from validation): "
          f"keeps {results['tagger']['single_site_kept']:.3f} of single-site, discards "
          f"{results['tagger']['multi_site_discarded']:.3f} of multi-site test events ({int(kept.sum())} kept)")
    print("  network resolution of the kept events:",
          {k: round(v, 3) for k, v in results["tagger"]["kept_resolution_gaussian_nll"].items()})

    path = export_torchscript(tagger.model, dm_tag.splits["test"].pattern[:64], figures.parent / "tagger.pt")
    print(f"\n[throughput] TorchScript tagger {path.name}, {torch.get_num_threads()} CPU threads:")
    results["throughput_cpu"] = benchmark(path, 2, dm_tag, [1, 64, 1024, 8192, 65536])
    path.unlink()
    (HERE / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
