"""KM3NeT direction and energy reconstruction study: transformer and EdgeConv vs the line fit + chi-square fit.

Stages (each a subcommand; they share the simulated events through HDF5 files in --output-dir, so they can run
in parallel and be re-run one by one):

    python run.py simulate                       # simulated nu_mu CC (19-DU ORCA-like) + ORCA6 training events
    python run.py train --model transformer --epochs 12
    python run.py train --model edgeconv --epochs 3
    python run.py predict --model transformer    # re-predict from a training stage's last.ckpt
    python run.py baseline                       # line fit + chi-square fit on the same test events
    python run.py real --epochs 8                # ORCA6: network trained on simulated ORCA6 events, tested on
                                                 # the official ORCA6 file of km3net-testdata beside JMuon
    python run.py report                         # tables, figures, results.json

Part 1 compares median / mean angular error and sigma(log10 E) in bins of true energy, and the kappa
calibration, on the same simulated test events. Part 2 runs the network and the classical fit on the real-file
events and puts them beside the official JMuon reconstruction stored in the file.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from numl.callbacks import EpochSeed
from numl.data.km3net import KM3NeTDataModule
from numl.models.edgeconv import DynEdge
from numl.models.hit_transformer import HitTransformer
from numl.tasks.km3net import KM3NeTRecoTask, binned_resolution, fit_kappa_scale, save_resolution_figures
from numl.tasks.losses import vmf_angle_cdf
from numl.tasks.schedulers import cosine_with_warmup

CONF = Path(__file__).resolve().parents[2] / "conf" / "data"
MODELS = {"transformer": HitTransformer, "edgeconv": DynEdge}
LABELS = {"transformer": "transformer", "edgeconv": "EdgeConv (DynEdge)"}


def data_config(name: str) -> dict:
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    if "defaults" in cfg:  # km3net_orca6 extends km3net
        base = OmegaConf.load(CONF / "km3net.yaml")
        cfg = OmegaConf.merge(base, {k: v for k, v in cfg.items() if k != "defaults"})
    out = OmegaConf.to_container(cfg)
    out.pop("_target_")
    return out


def datamodule(args, part: str) -> KM3NeTDataModule:
    """The study's events; simulated once by `simulate` into an HDF5 file, read back by every other stage."""
    name = "km3net" if part == "sim" else "km3net_orca6"
    cfg = data_config(name)
    cfg.update(n_train=args.n_train if part == "sim" else args.n_train_orca6,
               n_val=args.n_val if part == "sim" else args.n_val_orca6, batch_size=args.batch_size, seed=args.seed)
    if part == "sim":
        cfg["n_test"] = args.n_test
    path = args.output_dir / f"events_{part}.h5"
    if path.exists():
        cfg.update(source="hdf5", hdf5_path=str(path))
    return KM3NeTDataModule(**cfg)


def simulate(args) -> None:
    for part in ("sim", "orca6"):
        dm = datamodule(args, part)
        start = time.perf_counter()
        dm.write_hdf5(args.output_dir / f"events_{part}.h5")
        n = dm.n["train"] + dm.n["val"] + dm.n["test"]
        rate = n / (time.perf_counter() - start)
        print(f"[{part}] simulated {n} events in {time.perf_counter() - start:.0f} s ({rate:.1f} events/s)")
        save_json(args, f"simulate_{part}", {"events": n, "events_per_s": rate})


def train_and_predict(args, part: str, model_name: str) -> dict[str, np.ndarray]:
    dm = datamodule(args, part)
    model = MODELS[model_name]()
    task = KM3NeTRecoTask(model, optimizer=lambda params: torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4),
                          scheduler={"scheduler": cosine_with_warmup, "interval": "step"})
    run_dir = args.output_dir / f"{part}_{model_name}"
    trainer = pl.Trainer(max_epochs=args.epochs, accelerator=args.accelerator, devices=1, gradient_clip_val=1.0,
                         logger=CSVLogger(run_dir, name="", version=""), enable_progress_bar=False,
                         callbacks=[EpochSeed(args.seed), ModelCheckpoint(run_dir / "checkpoints", save_last=True)])
    start = time.perf_counter()
    trainer.fit(task, datamodule=dm)
    seconds = time.perf_counter() - start
    print(f"[{part} {model_name}] trained {trainer.current_epoch} epochs in {seconds:.0f} s")
    out = predict_and_save(trainer, task, dm, run_dir)
    save_json(args, f"train_{part}_{model_name}", {"epochs": trainer.current_epoch, "seconds": seconds,
                                                   "n_train": dm.n["train"], "parameters": sum(
                                                       p.numel() for p in model.parameters())})
    return out


def predict_and_save(trainer: pl.Trainer, task: KM3NeTRecoTask, dm: KM3NeTDataModule,
                     run_dir: Path) -> dict[str, np.ndarray]:
    """Test and validation predictions as npz (the validation ones calibrate kappa in `report`)."""
    for split, loader in (("val", dm.val_dataloader()), ("test", dm.test_dataloader())):
        predictions = trainer.predict(task, dataloaders=loader)
        out = {k: torch.cat([p[k] for p in predictions]).numpy() for k in predictions[0]}
        np.savez(run_dir / f"{split}_predictions.npz", **out)
    return out


def predict(args, part: str, model_name: str) -> None:
    """Predictions of a finished training stage's last checkpoint (e.g. after adding a split to save)."""
    dm = datamodule(args, part)
    run_dir = args.output_dir / f"{part}_{model_name}"
    task = KM3NeTRecoTask.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt", model=MODELS[model_name]())
    dm.setup("fit")
    predict_and_save(pl.Trainer(accelerator=args.accelerator, devices=1, logger=False, enable_progress_bar=False),
                     task, dm, run_dir)


def baseline(args, part: str) -> None:
    dm = datamodule(args, part)
    start = time.perf_counter()
    metrics = dm.run_baseline()
    seconds = time.perf_counter() - start
    n_fits = len(dm.events["test"]) + len(dm.events["val"])
    print(f"[{part}] classical fit: {seconds:.0f} s for {n_fits} events; {metrics}")
    np.savez(args.output_dir / f"baseline_{part}.npz", **dm.baseline_results)
    save_json(args, f"baseline_{part}", {**metrics, "seconds": seconds, "seconds_per_event": seconds / n_fits})


def save_json(args, key: str, value: dict) -> None:
    path = args.output_dir / "stages.json"
    stages = json.loads(path.read_text()) if path.exists() else {}
    stages[key] = value
    path.write_text(json.dumps(stages, indent=2))


def summary(name: str, error_deg: np.ndarray, log10e_residual: np.ndarray, kappa: np.ndarray | None = None,
            kappa_scale: float | None = None) -> dict:
    ok = np.isfinite(error_deg)
    row = {"method": name, "n": int(ok.sum()), "median_deg": float(np.median(error_deg[ok])),
           "mean_deg": float(np.mean(error_deg[ok])),
           "sigma_log10e": float(np.nanstd(log10e_residual[ok])) if np.isfinite(log10e_residual[ok]).any()
           else float("nan")}
    if kappa is not None:
        cdf = vmf_angle_cdf(torch.deg2rad(torch.as_tensor(error_deg, dtype=torch.float64)),
                            torch.as_tensor(kappa, dtype=torch.float64)).numpy()
        row["coverage_68"] = float(np.mean(cdf <= 0.68))
        row["median_kappa"] = float(np.median(kappa))
    if kappa is not None and kappa_scale is not None:
        cdf = vmf_angle_cdf(torch.deg2rad(torch.as_tensor(error_deg, dtype=torch.float64)),
                            torch.as_tensor(kappa_scale * kappa, dtype=torch.float64)).numpy()
        row["kappa_scale"] = kappa_scale
        row["coverage_68_calibrated"] = float(np.mean(cdf <= 0.68))
    return row


def table(rows: list[dict]) -> list[str]:
    lines = ["| method | events | median angle (deg) | mean angle (deg) | sigma(log10 E) | 68 % cone coverage: "
             "raw kappa | after the validation kappa scale |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        cov = f"{r['coverage_68']:.2f}" if "coverage_68" in r else "n/a"
        calibrated = (f"{r['coverage_68_calibrated']:.2f} (x{r['kappa_scale']:.2f})" if "kappa_scale" in r
                      else "n/a")
        lines.append(f"| {r['method']} | {r['n']} | {r['median_deg']:.2f} | {r['mean_deg']:.2f} | "
                     f"{r['sigma_log10e']:.3f} | {cov} | {calibrated} |")
    return lines


def binned_table(true_log10e, curves: dict[str, tuple[np.ndarray, np.ndarray]], edges) -> list[str]:
    binned = {name: binned_resolution(true_log10e, err, res, edges) for name, (err, res) in curves.items()}
    lines = ["| true log10(E/GeV) | events | " + " | ".join(curves) + " |", "|---" * (len(curves) + 2) + "|"]
    for b in range(len(edges) - 1):
        count = int(binned[next(iter(curves))]["count"][b])
        cells = " | ".join(f"{binned[n]['median_deg'][b]:.1f} / {binned[n]['mean_deg'][b]:.1f} / "
                           f"{binned[n]['sigma_log10e'][b]:.2f}" for n in curves)
        lines.append(f"| {edges[b]:.2f}-{edges[b + 1]:.2f} | {count} | {cells} |")
    return lines


def load_npz(path: Path) -> dict[str, np.ndarray] | None:
    return dict(np.load(path)) if path.exists() else None


def bootstrap_median_ratio(network_deg: np.ndarray, classical_deg: np.ndarray, n_resamples: int = 2000,
                           seed: int = 0) -> tuple[float, float]:
    """68 % interval of median(network) / median(classical) over resamplings of the same test events (paired:
    both methods see each resampled event), so the target is judged against the statistical error."""
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(network_deg), size=(n_resamples, len(network_deg)))
    ratios = np.nanmedian(network_deg[index], axis=1) / np.nanmedian(classical_deg[index], axis=1)
    low, high = np.percentile(ratios, [16, 84])
    return float(low), float(high)


def kappa_scale_from_val(run_dir: Path) -> float | None:
    val = load_npz(run_dir / "val_predictions.npz")
    return None if val is None else fit_kappa_scale(val["kappa"], val["angular_error_deg"])


def plot_learning_curves(out: Path, classical_median_deg: float | None) -> Path:
    """Validation median angular error per epoch of every trained network, beside the classical fit's."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for run_dir in sorted(out.glob("*_*/metrics.csv")):
        rows = [r for r in csv.DictReader(run_dir.open()) if r.get("val/angular_error_deg_median")]
        ax.plot([int(r["epoch"]) + 1 for r in rows], [float(r["val/angular_error_deg_median"]) for r in rows], "o-",
                label=run_dir.parent.name.replace("_", " "))
    if classical_median_deg is not None:
        ax.axhline(classical_median_deg, color="k", ls="--", label="chi-square fit (sim test events)")
        ax.axhline(0.7 * classical_median_deg, color="k", ls=":", label="target: 0.7 x fit")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation median angular error (deg)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "figures" / "km3net_learning_curves.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def report(args) -> None:
    out = args.output_dir
    results: dict = {"stages": json.loads((out / "stages.json").read_text())}
    lines: list[str] = []
    base = load_npz(out / "baseline_sim.npz")
    rows, curves = [], {}
    for name in MODELS:
        p = load_npz(out / f"sim_{name}" / "test_predictions.npz")
        if p is None:
            continue
        residual = p["log10_energy_pred"] - p["log10_energy"]
        rows.append(summary(LABELS[name], p["angular_error_deg"], residual, p["kappa"],
                            kappa_scale_from_val(out / f"sim_{name}")))
        curves[LABELS[name]] = (p["angular_error_deg"], residual)
        save_resolution_figures({k: torch.as_tensor(v) for k, v in p.items()}, out / "figures" / f"sim_{name}",
                                baseline=base)
        true_log10e = p["log10_energy"]
    if base is not None and rows:
        base_err = np.where(base["ok"], base["angular_error_deg"], np.nan)
        rows.append(summary("line fit + chi-square fit", base_err, base["log10_energy"] - true_log10e))
        rows[-1]["fit_failure_fraction"] = float(1 - base["ok"].mean())
        curves["chi-square fit"] = (base_err, base["log10_energy"] - true_log10e)
        best = min(rows[:-1], key=lambda r: r["median_deg"])
        ratio = best["median_deg"] / rows[-1]["median_deg"]
        low, high = bootstrap_median_ratio(curves[best["method"]][0], base_err)
        lines += ["simulated nu_mu CC, 19-DU ORCA-like detector, 3-300 GeV", *table(rows), "",
                  "median deg / mean deg / sigma(log10 E) per bin of true energy",
                  *binned_table(true_log10e, curves, np.linspace(np.log10(3.0), np.log10(300.0), 5)), "",
                  f"best network ({best['method']}) / classical median angular error: {ratio:.2f} "
                  f"(68 % bootstrap interval {low:.2f}-{high:.2f}; target <= 0.7)", ""]
        results["simulated"] = {"table": rows, "best_over_classical_median": ratio,
                                "ratio_bootstrap_68": [low, high]}
    p6 = load_npz(out / "orca6_transformer" / "test_predictions.npz")
    base6 = load_npz(out / "baseline_orca6.npz")
    if p6 is not None and base6 is not None:
        true6 = p6["log10_energy"]
        official_err = np.degrees(np.arccos(np.clip(np.sum(p6["official_direction"] * p6["direction"], axis=1), -1, 1)))
        rows6 = [summary("transformer (trained on simulated ORCA6)", p6["angular_error_deg"],
                         p6["log10_energy_pred"] - true6, p6["kappa"], kappa_scale_from_val(out / "orca6_transformer")),
                 summary("line fit + chi-square fit (numl)", np.where(base6["ok"], base6["angular_error_deg"], np.nan),
                         base6["log10_energy"] - true6),
                 summary("official JMuon (stored in the file)", official_err, p6["official_log10_energy"] - true6)]
        lines += [f"real ORCA6 file ({len(true6)} events, truth = MC neutrino)", *table(rows6)]
        save_resolution_figures({k: torch.as_tensor(v) for k, v in p6.items()}, out / "figures" / "orca6_real_file",
                                baseline=base6)
        results["real_file"] = {"table": rows6}
    classical = results.get("simulated", {}).get("table", [{}])[-1].get("median_deg")
    plot_learning_curves(out, classical)
    print("\n".join(lines))
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "tables.md").write_text("\n".join(lines) + "\n")
    print(f"\nfigures, tables.md and results.json in {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("simulate", "train", "predict", "baseline", "real", "report"))
    parser.add_argument("--model", choices=tuple(MODELS), default="transformer")
    parser.add_argument("--n-train", type=int, default=60000)
    parser.add_argument("--n-train-orca6", type=int, default=20000)
    parser.add_argument("--n-val", type=int, default=1000)
    parser.add_argument("--n-val-orca6", type=int, default=500)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pl.seed_everything(args.seed, workers=True)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    if args.stage == "simulate":
        simulate(args)
    elif args.stage == "train":
        train_and_predict(args, "sim", args.model)
    elif args.stage == "predict":
        predict(args, "sim", args.model)
    elif args.stage == "baseline":
        baseline(args, "sim")
        baseline(args, "orca6")
    elif args.stage == "real":
        train_and_predict(args, "orca6", "transformer")
    else:
        report(args)


if __name__ == "__main__":
    main()
