"""Evaluate a trained checkpoint on its experiment's test set: metrics JSON and figures.

    python -m numl.evaluate ckpt_path=logs/lensing_cnn/runs/<time>/checkpoints/last.ckpt
    python -m numl.evaluate ckpt_path=... +data.n_test=10000 +data.seed=7
    python -m numl.evaluate ckpt_path=... +baseline.track_shower_features.fit_features=true
    python -m numl.evaluate ckpt_path=... 'baseline=[track_likelihood,track_likelihood_network_start]'

`data` and `baseline` keys given here are merged into the run's own (a whole baseline config, with its `_target_`,
or a config of the `baseline` group adds a baseline the run did not have).
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from numl.pipeline import evaluate_test_events
from numl.utils.errors import ConfigError
from numl.utils.runtime import (
    check_checkpoint,
    check_writable_dir,
    hydra_errors_in_one_line,
    load_task_from_run,
    one_line_errors,
    register_resolvers,
)


def run_config_for(ckpt_path: Path) -> DictConfig:
    """The resolved config saved by the run that wrote the checkpoint (<run dir>/.hydra/config.yaml)."""
    for parent in ckpt_path.resolve().parents:
        candidate = parent / ".hydra" / "config.yaml"
        if candidate.is_file():
            return OmegaConf.load(candidate)
    raise ConfigError(f"ckpt_path={str(ckpt_path)!r}: no .hydra/config.yaml in any parent directory: "
                      "not a checkpoint written by numl.train")


def with_overrides(run_cfg: DictConfig, cfg: DictConfig) -> DictConfig:
    """The run's config with this command's `data` and `baseline` keys merged into it."""
    run_cfg = run_cfg.copy()
    if cfg.get("data"):
        run_cfg.data = OmegaConf.merge(run_cfg.data, cfg.data)
    if cfg.get("baseline"):
        run_cfg.baseline = OmegaConf.merge(run_cfg.get("baseline") or {}, cfg.baseline)
    return run_cfg


def evaluate(cfg: DictConfig) -> dict[str, float]:
    ckpt_path = check_checkpoint("ckpt_path", cfg.ckpt_path)
    output_dir = check_writable_dir("paths.output_dir", cfg.paths.output_dir)
    run_cfg = run_config_for(ckpt_path)
    run_cfg = with_overrides(run_cfg, cfg)
    datamodule = instantiate(run_cfg.data, _convert_="all")
    task = load_task_from_run(run_cfg, ckpt_path)
    trainer = pl.Trainer(accelerator="auto", devices=1, logger=False, enable_checkpointing=False,
                         default_root_dir=str(output_dir))
    trainer.test(task, datamodule=datamodule)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    baselines = run_cfg.get("baseline") if cfg.get("run_baselines", True) else None
    baseline_metrics, _ = evaluate_test_events(trainer, task, datamodule, baselines, run_cfg.get("figures"),
                                               output_dir)
    metrics.update(baseline_metrics)
    summary = {"checkpoint": str(ckpt_path.resolve()), "run_dir": str(output_dir), "metrics": metrics}
    (output_dir / "test_metrics.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    print(json.dumps(metrics, indent=2, sort_keys=True))
    print(f"run directory: {output_dir}")
    return metrics


@hydra_errors_in_one_line
@hydra.main(version_base="1.3", config_path="pkg://numl.conf", config_name="evaluate")
@one_line_errors
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


register_resolvers()

if __name__ == "__main__":
    main()
