"""NEXT 0vbb topology study: blob cut vs dense CNN, sparse CNN and segmentation, on the same test events,
at 10 mm and 2 mm voxels. Prints the table (background rejection at 65 % and 72 % signal efficiency,
AUROC) and saves ROC PNGs and results.json in --out.

CPU scale (about 10 minutes on 2 cores):
    python experiments/next_topology/run_study.py
GPU scale (the issue's target):
    python experiments/next_topology/run_study.py --accelerator gpu --n-train 40000 --n-val 4000 \
        --n-test 10000 --epochs 30 --full-size --out experiments/next_topology/results_gpu
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from numl.baselines.next import classification_metrics, save_roc_comparison
from numl.sim.next.figures import save_event_displays
from numl.utils.runtime import build_task, register_resolvers

ROOT = Path(__file__).resolve().parents[2]
#: (name, experiment, overrides for the CPU-sized network); --full-size drops the overrides
RUNS = {
    10: [("dense CNN", "next_dense_cnn", ["model.channels=[8,16,32,64]"]),
         ("sparse CNN", "next_sparse_cnn", ["model.channels=[16,32,64]"]),
         ("segmentation", "next_segmentation", ["model.channels=[16,32,64]"])],
    2: [("sparse CNN", "next_sparse_cnn_2mm", ["model.channels=[16,32,64,64]"]),
        ("segmentation", "next_segmentation", ["data=next_2mm", "model.channels=[16,32,64]"])],
}


def compose_run(experiment: str, overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=[f"experiment={experiment}", *overrides])


def train_and_predict(cfg, datamodule, epochs: int, accelerator: str, workdir: Path) -> tuple[np.ndarray, float]:
    pl.seed_everything(cfg.seed, workers=True)
    task = build_task(cfg)
    monitor = "val/auroc"
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=workdir, monitor=monitor, mode="max", save_top_k=1)
    trainer = pl.Trainer(max_epochs=epochs, accelerator=accelerator, devices=1, precision="32-true", logger=False,
                         callbacks=[checkpoint], enable_model_summary=False, num_sanity_val_steps=0)
    start = time.perf_counter()
    trainer.fit(task, datamodule=datamodule)
    seconds = time.perf_counter() - start
    predictions = trainer.predict(task, dataloaders=datamodule.test_dataloader(), ckpt_path="best")
    return torch.cat([p["score"] for p in predictions]).numpy(), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voxel-sizes", type=int, nargs="+", default=[10, 2], choices=[10, 2])
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--n-val", type=int, default=400)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--full-size", action="store_true", help="the configs' network sizes, not the CPU ones")
    parser.add_argument("--only", nargs="*", default=None, help="run only these methods, e.g. 'sparse CNN'")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results"))
    args = parser.parse_args()
    register_resolvers()
    args.out.mkdir(parents=True, exist_ok=True)
    data_overrides = [f"data.n_train={args.n_train}", f"data.n_val={args.n_val}", f"data.n_test={args.n_test}",
                      f"data.batch_size={args.batch_size}", f"seed={args.seed}"]
    results = []
    for voxel_mm in args.voxel_sizes:
        data_choice = "data=next" if voxel_mm == 10 else "data=next_2mm"
        # one DataModule per voxel size: every method sees the same training and test events
        data_cfg = compose_run("next_sparse_cnn", [data_choice, *data_overrides]).data
        datamodule = instantiate(data_cfg, representation="dense" if voxel_mm == 10 else "sparse")
        start = time.perf_counter()
        datamodule.setup()
        n_events = args.n_train + args.n_val + args.n_test
        sim_rate = n_events / (time.perf_counter() - start)
        labels = np.array([e.label for e in datamodule.events["test"]])
        baseline = datamodule.run_baseline()
        curves = {"blob cut": (datamodule.baseline_scores, labels)}
        results.append({"voxel_mm": voxel_mm, "method": "blob cut", "train_s": 0.0, "events_per_s": sim_rate,
                        **{k.removeprefix("baseline/"): v for k, v in baseline.items()}})
        print(f"[{voxel_mm} mm] simulated {n_events} events at {sim_rate:.0f} events/s; blob cut {baseline}")
        for name, experiment, overrides in RUNS[voxel_mm]:
            if args.only and name not in args.only:
                continue
            extra = [] if args.full_size else overrides
            cfg = compose_run(experiment, [*(o for o in extra if o.startswith("data=")), data_choice, *data_overrides,
                                           *(o for o in extra if not o.startswith("data="))])
            with tempfile.TemporaryDirectory() as workdir:
                scores, seconds = train_and_predict(cfg, datamodule, args.epochs, args.accelerator, Path(workdir))
            metrics = classification_metrics(scores, labels)
            curves[name] = (scores, labels)
            results.append({"voxel_mm": voxel_mm, "method": name, "train_s": seconds, **metrics})
            print(f"[{voxel_mm} mm] {name}: {metrics} ({seconds:.0f} s training)")
        save_roc_comparison(curves, args.out / f"roc_{voxel_mm}mm.png")
        save_event_displays(datamodule.events["test"], datamodule.sim, args.out / f"events_{voxel_mm}mm.png")
        (args.out / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                           "results": results}, indent=2))

    header = "| voxels | method | AUROC | rejection at 65 % | rejection at 72 % | training (s) |"
    print("\n" + header + "\n|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['voxel_mm']} mm | {r['method']} | {r['auroc']:.3f} | {r['background_rejection_at_65']:.1f} | "
              f"{r['background_rejection_at_72']:.1f} | {r['train_s']:.0f} |")


if __name__ == "__main__":
    main()
