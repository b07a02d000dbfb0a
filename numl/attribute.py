"""Captum attributions of a trained model on its run's test events.

    python -m numl.attribute ckpt_path=<run dir>/checkpoints/last.ckpt
    python -m numl.attribute ckpt_path=... attribution=gradient_shap attribution.n_samples=64
    python -m numl.attribute ckpt_path=... voids_vs_clusters.enabled=true      # lensing checkpoints

The run's `.hydra/config.yaml` rebuilds its DataModule and task; the checkpoint gives the weights.
Writes attributions.h5 (inputs, attributions, predictions, truth), PNG figures and summary.json to
`output_dir` (default <run dir>/attribution/<method>).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from numl.explain.attribution import AttributionConfig
from numl.explain.lensing import check_lensing_task, voids_vs_clusters
from numl.explain.run import check_task, load_test_batches, run_and_save
from numl.utils.errors import ConfigError, check_choice, check_keys, check_positive
from numl.utils.runtime import (
    check_checkpoint,
    check_writable_dir,
    hydra_errors_in_one_line,
    load_task_from_run,
    one_line_errors,
    register_resolvers,
)

log = logging.getLogger("numl.attribute")
VOIDS_VS_CLUSTERS_KEYS = {"bin_edges_sigma", "smoothing_sigma_pix", "masking_fractions", "fill"}


def run_directory(ckpt_path: Path) -> Path:
    """<run dir>/checkpoints/x.ckpt -> <run dir>; a checkpoint elsewhere must sit in its run dir."""
    return ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent


def load_run_config(ckpt_path: Path) -> DictConfig:
    config_path = run_directory(ckpt_path) / ".hydra" / "config.yaml"
    if not config_path.is_file():
        raise ConfigError(f"ckpt_path={str(ckpt_path)!r}: no {config_path} next to it; numl.attribute needs a "
                          "checkpoint inside a numl.train run directory")
    run_cfg = OmegaConf.load(config_path)
    for key in ("data", "model", "task"):
        if run_cfg.get(key) is None:
            raise ConfigError(f"ckpt_path={str(ckpt_path)!r}: {config_path} has no {key!r} node")
    return run_cfg


def resolve_device(name: str) -> torch.device:
    check_choice("device", name, ("cpu", "cuda"))
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda: no CUDA device is available here; use device=cpu")
    return torch.device(name)


def attribute_run(cfg: DictConfig) -> dict[str, Any]:
    attribution = AttributionConfig.from_mapping(OmegaConf.to_container(cfg.attribution, resolve=True))
    check_positive("n_events", cfg.n_events, integer=True)
    check_positive("n_examples", cfg.n_examples, integer=True)
    if cfg.target is not None and (not isinstance(cfg.target, int) or isinstance(cfg.target, bool)):
        raise ConfigError(f"target={cfg.target!r}: must be a class index (integer) or null")
    device = resolve_device(cfg.device)
    if not cfg.ckpt_path:
        raise ConfigError("ckpt_path: missing; give ckpt_path=<run dir>/checkpoints/last.ckpt of a numl.train run")
    ckpt_path = check_checkpoint("ckpt_path", cfg.ckpt_path)
    run_cfg = load_run_config(ckpt_path)
    options = OmegaConf.to_container(cfg.voids_vs_clusters, resolve=True)
    enabled = options.pop("enabled")
    check_keys("voids_vs_clusters", options, VOIDS_VS_CLUSTERS_KEYS | {"enabled"})

    task = load_task_from_run(run_cfg, ckpt_path)  # a checkpoint of another network is a ConfigError there
    check_task(task, "ckpt_path", str(ckpt_path))
    if enabled:
        check_lensing_task(task, "ckpt_path", str(ckpt_path))
    default_dir = run_directory(ckpt_path) / "attribution" / attribution.method
    output_dir = check_writable_dir("output_dir", cfg.output_dir or default_dir)
    task = task.to(device).eval()
    datamodule = instantiate(run_cfg.data, _convert_="all")
    batches = load_test_batches(datamodule, cfg.n_events, device)
    info = {"ckpt_path": str(ckpt_path), "task": run_cfg.task._target_, "data": run_cfg.data._target_}
    summary = run_and_save(task, batches, attribution, output_dir, cfg.target, cfg.seed, cfg.n_examples,
                           cfg.channel, info)
    result = summary.pop("result")
    if enabled:
        summary["voids_vs_clusters"] = voids_vs_clusters(task, batches, result, output_dir, seed=cfg.seed, **options)
    _print_summary(summary, output_dir)
    return summary


def _print_summary(summary: dict[str, Any], output_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"numl attribution: {summary['method']}")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    keys = ("n_events", "mean_abs_attribution", "convergence_delta_abs_median", "convergence_delta_relative_median")
    for key in keys:
        if key in summary:
            table.add_row(key, f"{summary[key]:.4g}")
    vvc = summary.get("voids_vs_clusters")
    if vvc:
        table.add_row("attribution share in voids (nu < 0)", f"{vvc['void_attribution_share']:.3f}")
        table.add_row("pixel share in voids (nu < 0)", f"{vvc['void_pixel_share']:.3f}")
        for mode in ("highest", "lowest", "random"):
            for x, metrics in vvc["masking"][mode].items():
                table.add_row(f"masked {100 * x:g} % {mode}", ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    console = Console()
    console.print(table)
    console.print(f"attributions: {output_dir}")


@hydra_errors_in_one_line
@hydra.main(version_base="1.3", config_path="pkg://numl.conf", config_name="attribute")
@one_line_errors
def main(cfg: DictConfig) -> None:
    attribute_run(cfg)


register_resolvers()

if __name__ == "__main__":
    main()
