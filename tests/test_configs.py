"""Every config of every group composes, resolves and (where cheap) instantiates; every experiment runs
end to end with fast_dev_run on CPU."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from numl.explain.attribution import AttributionConfig
from numl.sweeps.search_space import check_keys_exist, parse_search_space
from numl.train import train
from numl.utils.runtime import build_task
from tests.conftest import CONF, EXPERIMENTS, compose_config

# Config groups and the root config that composes them (all others: train.yaml).
GROUPS = {
    "attribution": "attribute", "baseline": "train", "callbacks": "train", "data": "train", "debug": "train",
    "experiment": "train", "figures": "train", "hparams_search": "train", "hydra/launcher": "train",
    "logger": "train", "model": "train", "optimizer": "train", "paths": "train", "scheduler": "train",
    "task": "train", "trainer": "train",
}
# Groups whose configs belong to a domain: every experiment composes its choices of these; an option no
# experiment chooses is composed with an experiment of its domain (name prefix; none: lensing).
DOMAIN_GROUPS = {"baseline", "data", "figures", "model", "task"}
DOMAIN_EXPERIMENT = {"lensing": "lensing_cnn", "next": "next_dense_cnn", "petalo": "petalo_position",
                     "km3net": "km3net_transformer"}


def _options(group: str) -> list[str]:
    return sorted(p.relative_to(CONF / group).with_suffix("").as_posix() for p in (CONF / group).rglob("*.yaml"))


def _choices(config: str) -> dict[str, str]:
    """The group choices in a config's defaults list (config: its path under conf/), its included configs'
    choices included; an entry without a leading / is relative to the config's own folder, as in Hydra."""
    choices = {}
    for entry in OmegaConf.load(CONF / f"{config}.yaml").get("defaults", []):
        if isinstance(entry, str):
            included = entry[1:] if entry.startswith("/") else f"{Path(config).parent.as_posix()}/{entry}"
            choices = {**(_choices(included) if entry != "_self_" else {}), **choices}
        else:
            choices.update({key.removeprefix("override /"): value for key, value in entry.items()})
    return choices


def _domain_experiment(option: str) -> str:
    return DOMAIN_EXPERIMENT.get(option.split("_")[0], "lensing_cnn")


def _cases() -> list[tuple[str, str]]:
    """(group, option) pairs that together compose every config once (domain configs through experiments)."""
    experiments = _options("experiment")
    chosen = {choice for experiment in experiments for choice in _choices(f"experiment/{experiment}").items()}
    return [(group, option) for group in GROUPS for option in _options(group)
            if group not in DOMAIN_GROUPS or (group, option) not in chosen]


CASES = _cases()


def _targets(node: DictConfig | None) -> list[DictConfig]:
    """The `_target_` nodes directly under a group such as callbacks or logger."""
    return [sub for sub in (node or {}).values() if isinstance(sub, DictConfig) and "_target_" in sub]


def _leaves(node, prefix: str = ""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1], node


def test_every_config_folder_is_a_tested_group():
    folders = {p.name for p in CONF.iterdir() if p.is_dir() and p.name not in ("__pycache__", "local")}
    assert folders == {group.split("/")[0] for group in GROUPS}


@pytest.mark.parametrize("root", ["train", "evaluate", "simulate", "attribute", "generate"])
def test_root_config_composes(root, tmp_path):
    cfg = compose_config(root, ["ckpt_path=run/checkpoints/last.ckpt"] if root == "evaluate" else [], tmp_path)
    OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_group_option_composes_and_instantiates(group, option, tmp_path):
    overrides = [f"{group}={option}"]
    if group in DOMAIN_GROUPS or group in ("debug", "hparams_search"):  # the last two change an experiment
        overrides.insert(0, f"experiment={_domain_experiment(option)}")
    cfg = compose_config(GROUPS[group], overrides, tmp_path)
    # Every interpolation resolves (Hydra's own node aside: it holds runtime-only values).
    OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)

    if group == "experiment":
        assert cfg.data._target_ and cfg.model._target_ and cfg.task._target_
        assert cfg.optimized_metric, f"{option} must set optimized_metric for sweeps"
        build_task(cfg)
    elif group in ("model", "task"):
        build_task(cfg)
    elif group == "optimizer":
        instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(2))])
    elif group == "scheduler" and cfg.scheduler:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
        scheduler = instantiate(cfg.scheduler.scheduler)
        # numl.tasks.base passes total_steps to the schedulers that take it; any positive count will do here.
        kwargs = {"total_steps": 10} if "total_steps" in inspect.signature(scheduler.func).parameters else {}
        scheduler(optimizer, **kwargs)
    elif group == "callbacks":
        for node in _targets(cfg.callbacks):
            instantiate(node)
    elif group == "logger":
        for name, node in (cfg.logger or {}).items():
            if name != "wandb":  # a W&B logger starts a run at once
                instantiate(node)
    elif group == "trainer" and (cfg.trainer.accelerator != "gpu" or torch.cuda.is_available()):
        instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    elif group == "hparams_search":
        params = OmegaConf.to_container(cfg.hydra.sweeper.params)
        parse_search_space(params)
        check_keys_exist(list(params), cfg)
    elif group == "hydra/launcher":
        get_class(cfg.hydra.launcher._target_)
    elif group == "attribution":
        AttributionConfig.from_mapping(OmegaConf.to_container(cfg.attribution, resolve=True))
    elif group == "debug":
        # Debug comes last in train.yaml's defaults: each of its values wins over the experiment's.
        debug = OmegaConf.to_container(OmegaConf.load(CONF / "debug" / f"{option}.yaml"))
        for key, value in _leaves(debug):
            assert OmegaConf.select(cfg, key) == value, key


# CAMB runs for every cosmology of a tomographic or M_nu-grid experiment take a minute on a fresh cache.
# lensing_nbody_study runs the same code path as lensing_nbody, at other sizes.
CAMB_HEAVY = {"lensing_tomo", "lensing_mnu_regression", "lensing_nbody_mnu_regression", "lensing_nbody_study"}
# about 9 s or more each; their parts have fast tests of their own (test_diffusion.py, test_km3net_data.py,
# test_lensing_gan.py; next_sparse_cnn_2mm is next_sparse_cnn's network on 2 mm data), so the whole run is left to
# make test-full and CI, and make test stays under 5 minutes
SLOW_SMOKE = {"lensing_diffusion", "km3net_real_files", "lensing_gan", "next_sparse_cnn_2mm"}
# N-body experiments run a suite of simulations: here a tiny one (16^3 particles, one simulation per split and
# cosmology, under a second each), with enough training maps for the summary statistics' covariances.
NBODY_TINY = ["data.nbody.n_particles=16", "data.nbody.n_mesh=32", "data.nbody.n_steps=10",
              "data.nbody.simulations={train: 1, val: 1, test: 1}", "data.n_train=32", "data.n_val=16",
              "data.n_test=16", "data.batch_size=8"]


# The real-file experiment fits its 140 events with three classical fits (about 1 s per event for each likelihood).
REAL_FILE_FITS_TINY = ["baseline.track_fit.max_events=10", "baseline.track_likelihood.max_events=10",
                       "baseline.track_likelihood.n_starts=1", "baseline.track_likelihood_network_start.max_events=10",
                       "baseline.track_likelihood_network_start.n_starts=1"]


@pytest.mark.parametrize("experiment", [pytest.param(e, marks=pytest.mark.slow) if e in CAMB_HEAVY | SLOW_SMOKE else e
                                        for e in EXPERIMENTS])
def test_experiment_fast_dev_run(experiment, compose_train, tmp_path):
    is_nbody = compose_train([f"experiment={experiment}"]).data.get("field") == "nbody"
    tiny = NBODY_TINY if is_nbody else REAL_FILE_FITS_TINY if experiment == "km3net_real_files" else []
    cfg = compose_train([f"experiment={experiment}", "debug=fast_dev_run", *tiny])
    metrics = train(cfg)
    assert any(k.startswith("test/") for k in metrics), metrics
    assert (tmp_path / "test_metrics.json").is_file()
    if experiment == "km3net_real_files":  # the hybrid got the network's predictions through numl.pipeline
        assert 0.0 <= metrics["baseline/track_likelihood_network_start/network_fallback_fraction"] <= 1.0
        outputs = np.load(tmp_path / "test_predictions.npz")
        assert len(outputs["baseline/track_likelihood_network_start/direction"]) == min(
            10, len(outputs["network/direction_pred"]))
