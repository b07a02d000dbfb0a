"""Attribute a task's test events and write what came out: HDF5, PNGs, a JSON summary.

Shared by `python -m numl.attribute` (from a checkpoint) and `numl.callbacks.attribution` (at the end
of a training run); both hand over a task and its DataModule.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytorch_lightning as pl
import torch

import numl
from numl.explain.attribution import AttributionConfig, AttributionResult, attribute
from numl.explain.figures import save_attribution_figures
from numl.utils.errors import ConfigError, check_positive
from numl.utils.files import replaced_when_complete

log = logging.getLogger("numl.attribute")


def check_task(task: Any, key: str = "ckpt_path", value: str = "") -> None:
    """Captum needs the shared task interface; anything else is refused by name."""
    missing = [name for name in ("attribution_forward", "input_key", "predictions") if not hasattr(task, name)]
    if missing:
        where = f"{key}={value!r}" if value else key
        raise ConfigError(f"{where}: {type(task).__name__} is not a numl task (no {', '.join(missing)}); "
                          "numl.attribute explains tasks built on numl.tasks.base.BaseTask")


def load_test_batches(datamodule: pl.LightningDataModule, n_events: int, device: torch.device) -> list[dict]:
    """The first `n_events` test events, through the DataModule's own batch hooks (scaling, on-device
    generation), exactly as the Trainer would hand them to the model."""
    check_positive("n_events", n_events, integer=True)
    datamodule.setup("test")
    batches, n = [], 0
    for batch in datamodule.test_dataloader():
        batch = datamodule.on_before_batch_transfer(batch, 0)
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        batch = datamodule.on_after_batch_transfer(batch, 0)
        take = min(n_events - n, len(next(iter(batch.values()))))
        batches.append({k: v[:take] for k, v in batch.items()})
        n += take
        if n >= n_events:
            break
    return batches


def attribute_batches(task: torch.nn.Module, batches: list[dict[str, torch.Tensor]], cfg: AttributionConfig,
                      target: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Attributions, baselines, deltas, predictions and truth of every batch, concatenated on the CPU."""
    check_task(task)
    key = task.input_key
    if key not in batches[0]:
        raise ConfigError(f"task.input_key={key!r}: not a key of the test batches ({', '.join(batches[0])})")
    task.eval()
    # The 'mean' baseline is the mean input over all attributed events, not per batch.
    reference_mean = torch.cat([b[key] for b in batches]).mean(0).detach()
    out: dict[str, list] = {"inputs": [], "attributions": [], "baseline": [], "convergence_delta": [], "target": []}
    predictions: dict[str, list] = {}
    for i, batch in enumerate(batches):
        result: AttributionResult = attribute(task, batch[key], cfg, target, reference_mean, seed=seed + i)
        out["inputs"].append(batch[key].detach().cpu())
        out["attributions"].append(result.attributions.cpu())
        if result.baseline is not None:
            out["baseline"].append(result.baseline.cpu())
        if result.convergence_delta is not None:
            out["convergence_delta"].append(result.convergence_delta.cpu())
        if isinstance(result.target, torch.Tensor):
            out["target"].append(result.target.cpu())
        with torch.no_grad():
            for name, value in task.predict_step(batch, i).items():
                predictions.setdefault(name, []).append(value)
    merged = {name: torch.cat(parts) if parts else None for name, parts in out.items()}
    merged["predictions"] = {name: torch.cat(parts) for name, parts in predictions.items()}
    merged["batch"] = {name: torch.cat([b[name].detach().cpu() for b in batches]) for name in batches[0]
                       if name != key and isinstance(batches[0][name], torch.Tensor)}
    merged["input_key"] = key
    return merged


def write_hdf5(path: Path, result: Mapping[str, Any], cfg: AttributionConfig, info: Mapping[str, Any]) -> Path:
    """One file: the inputs, their attributions, the baseline, the model's predictions and the truth.

    Layout: /<input_key>, /attributions, /baseline, /convergence_delta, /target (per-event class
    explained), /predictions/<name>, /batch/<name> (other batch entries, e.g. label, m_nu_ev).
    Attributes: numl_attribution (method and arguments, JSON), numl_version and `info`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced_when_complete(path) as partial, h5py.File(partial, "w") as h5:
        h5.attrs["numl_attribution"] = json.dumps(cfg.as_dict(), sort_keys=True)
        h5.attrs["numl_version"] = numl.__version__
        for name, value in info.items():
            h5.attrs[name] = json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)
        h5.create_dataset(result["input_key"], data=result["inputs"].numpy(), compression="lzf")
        h5.create_dataset("attributions", data=result["attributions"].numpy(), compression="lzf")
        for name in ("baseline", "convergence_delta", "target"):
            if result[name] is not None:
                h5.create_dataset(name, data=result[name].numpy(), compression="lzf" if name == "baseline" else None)
        for group in ("predictions", "batch"):
            g = h5.create_group(group)
            for name, value in result[group].items():
                g.create_dataset(name, data=value.numpy())
    return path


def summarise(result: Mapping[str, Any], cfg: AttributionConfig) -> dict[str, Any]:
    attr = result["attributions"].flatten(1)
    summary: dict[str, Any] = {"method": cfg.method, "config": cfg.as_dict(), "n_events": int(attr.shape[0]),
                               "mean_abs_attribution": float(attr.abs().mean())}
    delta = result["convergence_delta"]
    if delta is not None:
        total = attr.sum(1).abs()
        summary["convergence_delta_abs_max"] = float(delta.abs().max())
        summary["convergence_delta_abs_median"] = float(delta.abs().median())
        # Relative to the attributed score difference: how well completeness holds.
        summary["convergence_delta_relative_median"] = float((delta.abs() / total.clamp_min(1e-12)).median())
    return summary


def run_and_save(task: torch.nn.Module, batches: list[dict[str, torch.Tensor]], cfg: AttributionConfig,
                 output_dir: Path, target: int | None = None, seed: int = 0, n_examples: int = 4, channel: int = 0,
                 info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Attribute, then write attributions.h5, the PNG figures and summary.json into `output_dir`."""
    output_dir = Path(output_dir)
    result = attribute_batches(task, batches, cfg, target, seed)
    h5_path = write_hdf5(output_dir / "attributions.h5", result, cfg, dict(info or {}))
    labels = result["batch"].get(getattr(task, "label_key", "label"))
    if labels is not None and (labels.is_floating_point() or labels.ndim != 1):
        labels = None  # class-averaged figures only for integer class labels
    figures = save_attribution_figures(result["inputs"], result["attributions"], output_dir, labels=labels,
                                       input_name=result["input_key"], method=cfg.method, n_examples=n_examples,
                                       channel=channel)
    summary = summarise(result, cfg) | {"hdf5": str(h5_path), "figures": [str(p) for p in figures]}
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    log.info("attributions of %d events (%s) written to %s", summary["n_events"], cfg.method, output_dir)
    summary["result"] = result
    return summary


def as_numpy_dict(d: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-ready copy of nested results (numpy scalars and arrays become floats and lists)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out[str(k)] = as_numpy_dict(v)
        elif isinstance(v, np.ndarray):
            out[str(k)] = [float(x) for x in v]
        elif isinstance(v, np.generic):
            out[str(k)] = float(v)
        else:
            out[str(k)] = v
    return out
