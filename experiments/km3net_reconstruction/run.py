"""KM3NeT direction and energy reconstruction study: EdgeConv and transformer vs the line fit + chi-square fit.

    python experiments/km3net_reconstruction/run.py                       # CPU scale, about 10 minutes
    python experiments/km3net_reconstruction/run.py --n-train 200000 --epochs 30 --accelerator gpu   # GPU scale

Part 1: simulated nu_mu CC in the 19-DU ORCA-like detector (conf/data/km3net.yaml): both networks and the
classical fit on the same test events; median / mean angular error and sigma(log10 E) in bins of true energy,
kappa calibration. Part 2: the ORCA6 geometry (D_ORCA006 detx) and the official ORCA6 simulation file of
km3net-testdata: EdgeConv trained on simulated ORCA6 events, the chi-square fit, and the official JMuon
reconstruction stored in the file, on the same real-file events. Prints tables, writes PNGs and results.json
into --output-dir.
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

from numl.data.km3net import KM3NeTDataModule
from numl.models.edgeconv import DynEdge
from numl.models.hit_transformer import HitTransformer
from numl.tasks.km3net import KM3NeTRecoTask, binned_resolution, save_resolution_figures
from numl.tasks.losses import vmf_angle_cdf

CONF = Path(__file__).resolve().parents[2] / "conf" / "data"


def data_config(name: str) -> dict:
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    if "defaults" in cfg:  # km3net_orca6 extends km3net
        base = OmegaConf.load(CONF / "km3net.yaml")
        cfg = OmegaConf.merge(base, {k: v for k, v in cfg.items() if k != "defaults"})
    out = OmegaConf.to_container(cfg)
    out.pop("_target_")
    return out


def train_and_predict(model: torch.nn.Module, dm: KM3NeTDataModule, args, tag: str) -> dict[str, np.ndarray]:
    optimizer = torch.optim.AdamW
    task = KM3NeTRecoTask(model, optimizer=lambda params: optimizer(params, lr=args.lr, weight_decay=1e-4))
    trainer = pl.Trainer(max_epochs=args.epochs, max_time={"minutes": args.minutes_per_model},
                         accelerator=args.accelerator, devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, gradient_clip_val=1.0)
    start = time.perf_counter()
    trainer.fit(task, datamodule=dm)
    print(f"[{tag}] trained {trainer.current_epoch} epochs in {time.perf_counter() - start:.0f} s")
    predictions = trainer.predict(task, dataloaders=dm.test_dataloader())
    return {k: torch.cat([p[k] for p in predictions]) for k in predictions[0]}


def summary(name: str, error_deg: np.ndarray, log10e_residual: np.ndarray, kappa: np.ndarray | None = None) -> dict:
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
    return row


def print_table(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    print(f"{'method':<22}{'n':>6}{'median deg':>12}{'mean deg':>10}{'sigma log10E':>14}{'cov68':>8}")
    for r in rows:
        print(f"{r['method']:<22}{r['n']:>6}{r['median_deg']:>12.2f}{r['mean_deg']:>10.2f}{r['sigma_log10e']:>14.3f}"
              f"{r.get('coverage_68', float('nan')):>8.2f}")


def binned_rows(true_log10e, curves: dict[str, tuple[np.ndarray, np.ndarray]], edges) -> list[str]:
    lines = [f"{'log10 E bin':<14}" + "".join(f"{name:>26}" for name in curves)]
    binned = {name: binned_resolution(true_log10e, err, res, edges) for name, (err, res) in curves.items()}
    for b in range(len(edges) - 1):
        cells = "".join(f"{binned[n]['median_deg'][b]:>9.1f}/{binned[n]['mean_deg'][b]:>6.1f}/"
                        f"{binned[n]['sigma_log10e'][b]:>5.2f} n={int(binned[n]['count'][b]):<3}" for n in curves)
        lines.append(f"{edges[b]:.2f}-{edges[b + 1]:.2f}   " + cells)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--n-val", type=int, default=200)
    parser.add_argument("--n-test", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--minutes-per-model", type=float, default=2.0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pl.seed_everything(args.seed, workers=True)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    results: dict = {"args": {k: str(v) for k, v in vars(args).items()}}

    # ----- part 1: simulated nu_mu CC ---------------------------------------------------------------------------
    cfg = data_config("km3net")
    cfg.update(n_train=args.n_train, n_val=args.n_val, n_test=args.n_test, batch_size=args.batch_size,
               seed=args.seed)
    dm = KM3NeTDataModule(**cfg)
    start = time.perf_counter()
    dm.setup("fit")
    n_events = args.n_train + args.n_val + args.n_test
    rate = n_events / (time.perf_counter() - start)
    print(f"simulated {n_events} events in {time.perf_counter() - start:.0f} s ({rate:.1f} events/s)")
    results["simulation_events_per_s"] = rate
    start = time.perf_counter()
    baseline_metrics = dm.run_baseline()
    fit_seconds = time.perf_counter() - start
    print(f"classical fit: {fit_seconds:.0f} s for {args.n_test + args.n_val} events; {baseline_metrics}")
    base = dm.baseline_results
    rows, curves = [], {}
    for name, model in (("EdgeConv (DynEdge)", DynEdge()), ("transformer", HitTransformer())):
        p = {k: v.numpy() for k, v in train_and_predict(model, dm, args, name).items()}
        residual = p["log10_energy_pred"] - p["log10_energy"]
        rows.append(summary(name, p["angular_error_deg"], residual, p["kappa"]))
        curves[name] = (p["angular_error_deg"], residual)
        save_resolution_figures({k: torch.as_tensor(v) for k, v in p.items()},
                                args.output_dir / ("sim_" + name.split()[0].lower()), baseline=base)
    true_log10e = base["true_log10_energy"]
    base_err = np.where(base["ok"], base["angular_error_deg"], np.nan)
    rows.append(summary("line fit + chi2 fit", base_err, base["log10_energy"] - true_log10e))
    curves["chi2 fit"] = (base_err, base["log10_energy"] - true_log10e)
    rows[-1]["fit_failure_fraction"] = float(1 - base["ok"].mean())
    print_table("simulated nu_mu CC, 19-DU ORCA-like detector, 3-300 GeV (test events)", rows)
    edges = np.linspace(np.log10(3.0), np.log10(300.0), 5)
    lines = binned_rows(true_log10e, curves, edges)
    print("\nper true-energy bin: median deg / mean deg / sigma(log10 E)")
    print("\n".join(lines))
    best = min(rows[:2], key=lambda r: r["median_deg"])
    ratio = best["median_deg"] / rows[-1]["median_deg"]
    print(f"\nbest network / classical median angular error: {ratio:.2f} (target <= 0.7)")
    results["simulated"] = {"table": rows, "binned": lines, "best_over_classical_median": ratio}

    # ----- part 2: ORCA6 geometry and the official ORCA6 simulation file -----------------------------------------
    cfg = data_config("km3net_orca6")
    cfg.update(n_train=args.n_train, n_val=args.n_val, batch_size=args.batch_size, seed=args.seed)
    dm6 = KM3NeTDataModule(**cfg)
    dm6.setup("fit")
    metrics6 = dm6.run_baseline()
    p = {k: v.numpy() for k, v in train_and_predict(DynEdge(), dm6, args, "EdgeConv ORCA6").items()}
    base6 = dm6.baseline_results
    official_err = np.degrees(np.arccos(np.clip(np.sum(p["official_direction"] * p["direction"], axis=1), -1, 1)))
    true6 = p["log10_energy"]
    rows6 = [summary("EdgeConv (DynEdge)", p["angular_error_deg"], p["log10_energy_pred"] - true6, p["kappa"]),
             summary("line fit + chi2 fit", np.where(base6["ok"], base6["angular_error_deg"], np.nan),
                     base6["log10_energy"] - true6),
             summary("official JMuon (file)", official_err, p["official_log10_energy"] - true6)]
    print_table(f"real file {Path(cfg['real_test_files'][0]).name}: {len(true6)} events, truth = MC neutrino", rows6)
    print("(official JMuon energy is the muon energy estimate; sigma(log10 E) vs the neutrino energy)")
    save_resolution_figures({k: torch.as_tensor(v) for k, v in p.items()}, args.output_dir / "orca6_real_file",
                            baseline=base6)
    results["real_file"] = {"table": rows6, "baseline_metrics": metrics6}
    (args.output_dir / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nfigures and results.json in {args.output_dir}")


if __name__ == "__main__":
    main()
