"""Does a lensing CNN draw its information from clusters (peaks) or voids, with and without noise?

Trains the `lensing_cnn` experiment (massless vs M_nu = 0.1 eV, Gaussian convergence maps) twice,
on noise-free and on noisy maps (sigma_e = 0.26, 30 galaxies / arcmin^2), then on the test maps:

1. Integrated Gradients (zero baseline) with its completeness check and the model-randomisation check;
2. the share of |IG| in bins of nu = (kappa - <kappa>) / sigma_kappa, against the share of pixels;
3. the masking experiment: test accuracy after replacing the x % highest-kappa, the x % lowest-kappa
   or x % random pixels of every map by the map's mean.

CPU scale (about 10 minutes on 2 cores):
    python experiments/lensing_interpretability/run_study.py
GPU scale (the issue's setting; not run here, no GPU was available):
    python experiments/lensing_interpretability/run_study.py --n-pix 128 --n-train 16384 --epochs 30 \
        --n-test 4096 --n-attribute 1024 --ig-steps 64 --model-channels "[16,32,64,64]" --device cuda \
        [--field lognormal]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from numl.baselines.lensing import GaussianLikelihoodRatio
from numl.explain.attribution import AttributionConfig, randomised_copy, rank_correlation
from numl.explain.figures import save_attribution_figures
from numl.explain.lensing import (
    kappa_binned_attribution,
    masking_experiment,
    save_kappa_binned_figure,
    save_masking_figure,
)
from numl.explain.run import as_numpy_dict, attribute_batches, load_test_batches
from numl.utils.runtime import build_task, register_resolvers

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CASES = {"noise-free": "null", "noisy": "30.0"}  # data.galaxy_density_arcmin2
EDGES_SIGMA = (-np.inf, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, np.inf)
FRACTIONS = (0.01, 0.03, 0.1, 0.3)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-pix", type=int, default=64, help="pixels per side of the 5 x 5 deg maps")
    p.add_argument("--n-train", type=int, default=1536, help="fresh training maps per epoch")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--n-test", type=int, default=512, help="test maps for accuracy and masking")
    p.add_argument("--n-attribute", type=int, default=128, help="test maps attributed with Integrated Gradients")
    p.add_argument("--ig-steps", type=int, default=16)
    p.add_argument("--model-channels", default="[8,16,32,32]",
                   help="CNN widths; the lensing_cnn experiment's own are [16,32,64,64]")
    p.add_argument("--field", default="gaussian", choices=["gaussian", "lognormal"],
                   help="lognormal maps carry the peak/void asymmetry of the real convergence field")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--output-dir", type=Path, default=HERE / "figures")
    return p.parse_args()


def compose_case(args: argparse.Namespace, density: str):
    overrides = ["experiment=lensing_cnn", f"data.n_pix={args.n_pix}", f"data.n_train={args.n_train}",
                 "data.n_val=256", f"data.n_test={args.n_test}", f"data.galaxy_density_arcmin2={density}",
                 f"data.field={args.field}", f"trainer.max_epochs={args.epochs}", f"seed={args.seed}",
                 f"model.channels={args.model_channels}", f"paths.cache_dir={ROOT / '.cache'}"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides)


def run_case(name: str, density: str, args: argparse.Namespace) -> dict:
    cfg = compose_case(args, density)
    pl.seed_everything(args.seed, workers=True)
    datamodule = instantiate(cfg.data)
    task = build_task(cfg)
    # The experiment's model, task, optimizer and scheduler; a plain Trainer keeps the study self-contained.
    trainer = pl.Trainer(max_epochs=args.epochs, accelerator=args.device, devices=1, logger=False,
                         enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0)
    start = time.time()
    trainer.fit(task, datamodule=datamodule)
    train_s = time.time() - start
    device = torch.device(args.device)
    task = task.to(device).eval()
    batches = load_test_batches(datamodule, args.n_test, device)

    # Likelihood ratio with the known spectra on the same test maps (maps back in convergence units):
    # Bayes-optimal for Gaussian maps, the Gaussian approximation for lognormal ones.
    optimal = GaussianLikelihoodRatio(datamodule.simulators[0], datamodule.simulators[1])
    maps = torch.cat([b["convergence_map"] for b in batches]).cpu() * datamodule.map_scale
    labels = torch.cat([b["label"] for b in batches]).cpu()
    lr_acc = float(((optimal.log_likelihood_ratio(maps) > 0).long() == labels).float().mean())

    masking = masking_experiment(task, batches, FRACTIONS, fill="mean", seed=args.seed)

    ig = AttributionConfig.from_mapping({"method": "integrated_gradients", "baseline": "zero",
                                         "n_steps": args.ig_steps, "internal_batch_size": 256})
    n_attr_batches = max(1, args.n_attribute // datamodule.batch_size)
    attr_batches = batches[:n_attr_batches]
    result = attribute_batches(task, attr_batches, ig, seed=args.seed)
    binned = kappa_binned_attribution(result["inputs"], result["attributions"], EDGES_SIGMA)
    # |IG| from a zero baseline is ~ |kappa| x |gradient|, so it favours extreme pixels by construction;
    # the saliency |gradient| shows where the network is sensitive regardless of the pixel's amplitude.
    saliency = attribute_batches(task, attr_batches, AttributionConfig.from_mapping({"method": "saliency"}))
    binned_saliency = kappa_binned_attribution(result["inputs"], saliency["attributions"], EDGES_SIGMA)
    massive = result["batch"]["label"] == 1
    binned_massive = kappa_binned_attribution(result["inputs"][massive], result["attributions"][massive], EDGES_SIGMA)

    relative_delta = (result["convergence_delta"].abs() / result["attributions"].flatten(1).sum(1).abs()).median()
    randomised = attribute_batches(randomised_copy(task, seed=args.seed), attr_batches, ig, seed=args.seed)
    randomisation_rho = float(np.median(rank_correlation(result["attributions"], randomised["attributions"])))

    save_attribution_figures(result["inputs"], result["attributions"], args.output_dir / name,
                             labels=result["batch"]["label"], input_name="convergence map",
                             method="integrated_gradients", n_examples=4)
    void_share, void_pixels = binned.fraction_where(-np.inf, 0.0)
    peak_share, peak_pixels = binned.fraction_where(3.0, np.inf)
    return {
        "train_seconds": train_s, "test_acc": masking["unmasked"][0.0]["acc"],
        "test_auroc": masking["unmasked"][0.0]["auroc"], "likelihood_ratio_acc": lr_acc,
        "n_test": len(labels), "n_attributed": int(result["attributions"].shape[0]),
        "ig_relative_delta_median": float(relative_delta), "randomisation_spearman_median": randomisation_rho,
        "bin_labels": binned.labels(), "attribution_fraction": binned.attribution_fraction,
        "attribution_fraction_massive": binned_massive.attribution_fraction,
        "saliency_fraction": binned_saliency.attribution_fraction,
        "pixel_fraction": binned.pixel_fraction, "signed_mean": binned.signed_mean,
        "void_attribution_share": void_share, "void_pixel_share": void_pixels,
        "peak3_attribution_share": peak_share, "peak3_pixel_share": peak_pixels,
        "masking": masking, "_binned": binned,
    }


def main() -> None:
    args = parse_args()
    register_resolvers()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    results = {name: run_case(name, density, args) for name, density in CASES.items()}
    save_kappa_binned_figure({n: r.pop("_binned") for n, r in results.items()},
                             args.output_dir / "kappa_binned_attribution.png", "IG")
    save_masking_figure({n: r["masking"] for n, r in results.items()}, args.output_dir / "masking_experiment.png")
    # Accuracy also moves when masking shifts the decision threshold; the AUROC measures the ranking alone.
    save_masking_figure({n: r["masking"] for n, r in results.items()},
                        args.output_dir / "masking_experiment_auroc.png", metric="auroc")
    (args.output_dir / "results.json").write_text(json.dumps(as_numpy_dict({"args": {k: str(v) for k, v in
                                                                                     vars(args).items()},
                                                                            **results}), indent=2))
    for name, r in results.items():
        print(f"\n== {name} maps ({r['n_test']} test maps, {r['train_seconds']:.0f} s training)")
        print(f"CNN test accuracy {r['test_acc']:.3f} (AUROC {r['test_auroc']:.3f}); "
              f"power-spectrum likelihood-ratio accuracy {r['likelihood_ratio_acc']:.3f}")
        print(f"IG completeness: median |delta| / |sum attr| = {r['ig_relative_delta_median']:.2e}; "
              f"model randomisation: median Spearman(trained, random) = {r['randomisation_spearman_median']:.2f}")
        print("nu bin          |IG| share  (massive maps)  |saliency| share  pixel share  IG signed mean")
        for i, label in enumerate(r["bin_labels"]):
            print(f"{label:15s} {r['attribution_fraction'][i]:9.3f}  {r['attribution_fraction_massive'][i]:13.3f}  "
                  f"{r['saliency_fraction'][i]:16.3f}  {r['pixel_fraction'][i]:11.3f}  {r['signed_mean'][i]:+14.3f}")
        print(f"voids (nu < 0): {r['void_attribution_share']:.3f} of |IG| on {r['void_pixel_share']:.3f} of pixels; "
              f"peaks (nu > 3): {r['peak3_attribution_share']:.3f} on {r['peak3_pixel_share']:.4f}")
        print("masked %   highest-kappa  lowest-kappa  random   (test accuracy; unmasked "
              f"{r['masking']['unmasked'][0.0]['acc']:.3f})")
        for x in FRACTIONS:
            row = [r["masking"][m][x]["acc"] for m in ("highest", "lowest", "random")]
            print(f"{100 * x:7g}   {row[0]:13.3f}  {row[1]:12.3f}  {row[2]:6.3f}")
    print(f"\nfigures and results.json in {args.output_dir}")


if __name__ == "__main__":
    main()
