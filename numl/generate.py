"""Write a trained generator's events to HDF5 in the format, and with the metadata, of `numl.simulate`.

    python -m numl.generate ckpt_path=logs/petalo_gan/runs/<time>/checkpoints/last.ckpt n=11000
    python -m numl.generate ckpt_path=... n=1000 +condition.z_mm=10 +condition.r_mm=160 output=gen.h5
    python -m numl.generate ckpt_path=logs/petalo_diffusion/runs/<time>/checkpoints/last.ckpt n=11000 sampling_steps=50
    python -m numl.generate ckpt_path=logs/lensing_gan/runs/<time>/checkpoints/last.ckpt n=3328 output=gen.h5
    python -m numl.generate ckpt_path=... n=1000 +condition.m_nu_ev=0.1

Then train on the events: `python -m numl.train experiment=petalo_position data.source=hdf5 data.hdf5_path=<file>`
(lensing: the experiment whose data config the generator was trained on, see experiments/generative_mc/README.md).
The file carries the simulator metadata of the generator's training data (so the same checks accept or refuse
it) and the generator's provenance in the attribute `numl_generator` (checkpoint path and SHA-256, run config,
seed, fixed conditions).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import warnings
from pathlib import Path

import hydra
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from numl.data.base import SPLITS
from numl.evaluate import run_config_for
from numl.tasks.conditions import TrainedConditions
from numl.utils.errors import ConfigError, check_choice, check_positive
from numl.utils.runtime import (
    check_checkpoint,
    check_new_output,
    hydra_errors_in_one_line,
    load_task_from_run,
    one_line_errors,
    register_resolvers,
)

log = logging.getLogger("numl.generate")


def split_sizes(n: int, data_cfg: DictConfig) -> dict[str, int]:
    """n events split like the run's data (n_train : n_val : n_test), at least one per split."""
    weights = {split: int(data_cfg[f"n_{split}"]) for split in SPLITS}
    total = sum(weights.values())
    if n < len(SPLITS):
        raise ConfigError(f"n={n}: must be >= {len(SPLITS)} (one event per train, val and test split)")
    sizes = {split: max(1, round(n * w / total)) for split, w in weights.items() if split != "train"}
    sizes["train"] = n - sum(sizes.values())
    return {split: sizes[split] for split in SPLITS}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_generator(ckpt_path: str | Path) -> tuple[TrainedConditions, DictConfig]:
    """The generator task of a numl.train checkpoint and its run config; any other checkpoint is refused."""
    ckpt_path = check_checkpoint("ckpt_path", ckpt_path)
    run_cfg = run_config_for(ckpt_path)
    target = run_cfg.task.get("_target_", "")
    try:
        is_generator = issubclass(get_class(target), TrainedConditions)
    except Exception:
        is_generator = False
    if not is_generator:
        raise ConfigError(f"ckpt_path={str(ckpt_path)!r}: not a generator checkpoint (its task is {target}); "
                          "train one with python -m numl.train experiment=petalo_gan "
                          "(or petalo_diffusion, lensing_gan)")
    task = load_task_from_run(run_cfg, ckpt_path)
    return task.eval(), run_cfg


def generate(cfg: DictConfig) -> Path:
    check_positive("n", cfg.n, integer=True)
    check_positive("batch_size", cfg.batch_size, integer=True)
    check_choice("allow_extrapolation", cfg.allow_extrapolation, (True, False))
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool):
        raise ConfigError(f"seed={cfg.seed!r}: must be an integer")
    task, run_cfg = load_generator(cfg.ckpt_path)
    if cfg.sampling_steps is not None or cfg.sampling_eta is not None:
        if not hasattr(task, "set_sampling"):
            raise ConfigError(f"sampling_steps, sampling_eta: only a diffusion generator samples in steps "
                              f"(this one is {run_cfg.task._target_}); leave them null")
        task.set_sampling(cfg.sampling_steps if cfg.sampling_steps is not None else task.sampling_steps,
                          cfg.sampling_eta if cfg.sampling_eta is not None else task.sampling_eta)
    fixed = OmegaConf.to_container(cfg.condition, resolve=True) if cfg.get("condition") else {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        task.check_conditions(fixed, cfg.allow_extrapolation)
    for warning in caught:
        log.warning("%s", warning.message)
    sizes = split_sizes(cfg.n, run_cfg.data)
    output = check_new_output("output", cfg.output if cfg.get("output") else
                              Path(cfg.paths.data_dir) / f"{run_cfg.task_name}_generated.h5", cfg.overwrite)

    # The run's DataModule, for its metadata and its event format; its seed is generate's.
    run_cfg.data = OmegaConf.merge(run_cfg.data, {"source": "simulate", "hdf5_path": None, "seed": cfg.seed,
                                                  **{f"n_{split}": n for split, n in sizes.items()}})
    if "simulation_fold" in run_cfg.data:  # which simulations a file's splits held: nothing to generate
        run_cfg.data.simulation_fold = None
    datamodule = instantiate(run_cfg.data, _convert_="all")
    if not hasattr(datamodule, "generated_events"):
        raise ConfigError(f"ckpt_path: the generator's data ({run_cfg.data._target_}) cannot store generated events")

    def split_events(split: str):
        noise_source = torch.Generator().manual_seed(datamodule.split_seed(split))
        conditions = task.draw_conditions(sizes[split], fixed, noise_source)
        events = torch.cat([task.generate(conditions[i:i + cfg.batch_size], noise_source)
                            for i in range(0, len(conditions), cfg.batch_size)])
        return datamodule.generated_events(events.cpu().numpy(), conditions.numpy(),
                                           datamodule.split_seed(split, "phi"))

    ckpt_path = Path(cfg.ckpt_path).resolve()
    provenance = {"checkpoint": str(ckpt_path), "checkpoint_sha256": _sha256(ckpt_path), "task": run_cfg.task._target_,
                  "seed": cfg.seed, "fixed_conditions": fixed,
                  "sampling": {"steps": task.sampling_steps, "eta": task.sampling_eta} if hasattr(task, "set_sampling")
                  else None, "allow_extrapolation": bool(cfg.allow_extrapolation),
                  "run_config": OmegaConf.to_container(run_cfg, resolve=True)}
    start = time.perf_counter()
    path = datamodule.write_hdf5(output, split_events, {"numl_generator": json.dumps(provenance, default=str)})
    seconds = time.perf_counter() - start
    print(f"wrote {cfg.n} generated events ({', '.join(f'{s} {n}' for s, n in sizes.items())}) to {path} "
          f"in {seconds:.1f} s ({cfg.n / seconds:.1f} events/s)")
    return path


@hydra_errors_in_one_line
@hydra.main(version_base="1.3", config_path="pkg://numl.conf", config_name="generate")
@one_line_errors
def main(cfg: DictConfig) -> None:
    generate(cfg)


register_resolvers()

if __name__ == "__main__":
    main()
