"""What every entry point shares: config checks, one-line errors, instantiation of the run's parts."""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from numl.sim.km3net.features import hit_feature_names
from numl.utils.errors import ConfigError, check_positive

_RESOLVERS_REGISTERED = False


def register_resolvers() -> None:
    """OmegaConf resolvers used in conf/: `${len:...}`, `${km3net_hit_features:...}`, `${wandb_offline:}` and
    `${user_cache_dir:}`."""
    global _RESOLVERS_REGISTERED
    if _RESOLVERS_REGISTERED:
        return
    OmegaConf.register_new_resolver("len", lambda seq: len(seq), replace=True)
    # The KM3NeT hit networks' input width follows data.prefit (numl.sim.km3net.features).
    OmegaConf.register_new_resolver("km3net_hit_features", lambda prefit: len(hit_feature_names(prefit)),
                                    replace=True)
    # W&B logs offline unless the user has credentials or asked for online mode explicitly.
    OmegaConf.register_new_resolver(
        "wandb_offline",
        lambda: os.environ.get("WANDB_MODE", "") != "online" and not os.environ.get("WANDB_API_KEY"),
        replace=True,
    )
    # The XDG base directory spec: $XDG_CACHE_HOME when set and not empty, else ~/.cache.
    OmegaConf.register_new_resolver(
        "user_cache_dir", lambda: os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache"), replace=True
    )
    _RESOLVERS_REGISTERED = True


def _is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _user_error(err: BaseException | None) -> BaseException | None:
    """The user's mistake behind an exception, also when Hydra's instantiate wrapped it."""
    while err is not None:
        if isinstance(err, ConfigError | FileNotFoundError | PermissionError):
            return err
        err = err.__cause__
    return None


def one_line_errors(task_function: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Turn a user error into `numl: error: <message>` and exit code 2.

    In a multirun the error propagates instead, so that the sweeper records the trial as failed
    and goes on.
    """

    @functools.wraps(task_function)
    def wrapper(cfg: DictConfig) -> Any:
        try:
            return task_function(cfg)
        except Exception as err:
            user_error = _user_error(err)
            if user_error is None or _is_multirun():
                raise
            message = str(user_error).splitlines()[0] if str(user_error) else type(user_error).__name__
            print(f"numl: error: {message}", file=sys.stderr, flush=True)
            sys.exit(2)

    return wrapper


def _composition_error_line(err: BaseException) -> str | None:
    """One line for a mistake Hydra finds before the task runs (config composition, override syntax, the run
    directory), or None if `err` is not one of those."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    if isinstance(err, MissingConfigException) and err.missing_cfg_file:
        group, _, name = err.missing_cfg_file.rpartition("/")
        if err.options:
            return f"{group}={name}: no such {group} config; available: {', '.join(err.options)}"
        return f"{err.missing_cfg_file}: no such config"
    if isinstance(err, OverrideParseException):
        return f"bad override syntax: {str(err).splitlines()[0]} (https://hydra.cc/docs/advanced/override_grammar/basic)"
    if isinstance(err, ConfigCompositionException):
        cause = err.__cause__
        if isinstance(cause, ConfigAttributeError | ConfigKeyError) and cause.full_key:
            parent, _, key = cause.full_key.rpartition(".")
            node = cause.parent_node
            keys = ", ".join(map(str, node.keys())) if node is not None else ""
            have = f"; {parent or 'the config'} has: {keys}" if keys else ""
            return f"{cause.full_key}: no such key{have} (to add one: +{cause.full_key}=...)"
        return " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    # Hydra's run_job makes the run directory before the task runs: the error is raised by pathlib called
    # straight from hydra/core/utils.py (every task also runs under that file, deeper down).
    callers = [f.filename for f in traceback.extract_tb(err.__traceback__)
               if not f.filename.endswith(("pathlib.py", f"{os.sep}os.py"))]
    if isinstance(err, OSError) and err.filename and callers and callers[-1].endswith(
            os.path.join("hydra", "core", "utils.py")):
        return f"hydra.run.dir={str(err.filename)!r}: cannot create the run directory ({err.strerror})"
    return None


def hydra_errors_in_one_line(hydra_main: Callable[[], Any]) -> Callable[[], Any]:
    """The entry point around `@hydra.main`: mistakes that Hydra finds before numl runs (an unknown config
    or key, bad override syntax, a run directory that cannot be made) become `numl: error: <line>`, exit 2,
    like numl's own (one_line_errors). Hydra prints them over many lines with exit 1; it re-raises them
    under HYDRA_FULL_ERROR=1, which numl sets for that reason. A user who sets it gets Hydra's tracebacks.
    """

    @functools.wraps(hydra_main)
    def main() -> Any:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            return hydra_main()
        os.environ["HYDRA_FULL_ERROR"] = "1"
        try:
            return hydra_main()
        except Exception as err:
            line = _composition_error_line(err)
            if line is None:
                raise
            print(f"numl: error: {line}", file=sys.stderr, flush=True)
            sys.exit(2)

    return main


def check_common_config(cfg: DictConfig) -> None:
    """Range checks on the keys every experiment shares; each domain checks its own in its DataModule."""
    for key in ("data", "model", "task", "optimizer", "trainer"):
        if cfg.get(key) is None:
            raise ConfigError(f"{key}: missing; choose one with {key}=<name> or an experiment (experiment=<name>)")
    lr = cfg.optimizer.get("lr")
    if lr is None:
        raise ConfigError("optimizer.lr: missing; set optimizer.lr=<positive number>")
    check_positive("optimizer.lr", lr)
    if cfg.optimizer.get("weight_decay") is not None:
        check_positive("optimizer.weight_decay", cfg.optimizer.weight_decay, allow_zero=True)
    for key, value in cfg.task.items():  # loss weights (task.energy_weight, task.track_weight): 0 turns a term off
        if str(key).endswith("_weight"):
            check_positive(f"task.{key}", value, allow_zero=True)
    for key in ("batch_size", "n_train", "n_val", "n_test"):
        if key in cfg.data:
            check_positive(f"data.{key}", cfg.data[key], integer=True)
    if "num_workers" in cfg.data:
        check_positive("data.num_workers", cfg.data.num_workers, integer=True, allow_zero=True)
    max_epochs = cfg.trainer.get("max_epochs")
    if max_epochs is not None and max_epochs != -1:
        check_positive("trainer.max_epochs", max_epochs, integer=True)
    if max_epochs == -1 and not _has_stopping_rule(cfg):
        # Lightning's -1 means "no epoch limit": without another limit the run never ends.
        raise ConfigError("trainer.max_epochs=-1: trains for ever without a stopping rule; set trainer.max_epochs "
                          "to a positive integer, or add trainer.max_steps, trainer.max_time or an EarlyStopping "
                          "callback")
    accelerator = cfg.trainer.get("accelerator")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        # Lightning says "No supported gpu backend found!" inside Trainer(...), naming no key.
        raise ConfigError(f"trainer.accelerator={accelerator!r}: no CUDA device on this machine; use "
                          "trainer.accelerator=cpu (or auto)")
    _check_map_size_for_cnn(cfg)
    if cfg.get("seed") is not None and not isinstance(cfg.seed, int):
        raise ConfigError(f"seed={cfg.seed!r}: must be an integer")


def _has_stopping_rule(cfg: DictConfig) -> bool:
    """Whether something other than max_epochs ends training: max_steps, max_time or EarlyStopping."""
    max_steps = cfg.trainer.get("max_steps")
    if max_steps is not None and max_steps != -1:
        return True
    if cfg.trainer.get("max_time"):
        return True
    callbacks = cfg.get("callbacks") or {}
    return any(isinstance(cb, DictConfig) and str(cb.get("_target_", "")).endswith("EarlyStopping")
               for cb in callbacks.values())


def _check_map_size_for_cnn(cfg: DictConfig) -> None:
    """ConvNet2d halves the map between its stages, and circular padding needs kernel_size // 2 pixels
    in the last stage: smaller maps fail inside the first forward pass with a long traceback."""
    if cfg.model.get("_target_") != "numl.models.cnn2d.ConvNet2d" or "n_pix" not in cfg.data:
        return
    channels, n_pix = cfg.model.get("channels"), cfg.data.n_pix
    kernel_size = cfg.model.get("kernel_size", 3)
    if not channels or not isinstance(n_pix, int) or not isinstance(kernel_size, int):
        return  # the DataModule and the model report malformed values with their own keys
    min_n_pix = 2 ** (len(channels) - 1) * max(1, kernel_size // 2)
    if n_pix < min_n_pix:
        raise ConfigError(f"data.n_pix={n_pix}: model.channels has {len(channels)} stages with kernel_size "
                          f"{kernel_size}, which need n_pix >= {min_n_pix}; raise data.n_pix or use fewer "
                          f"model.channels")


def check_writable_dir(key: str, path: str | Path) -> Path:
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".numl_write_probe"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"{key}={str(path)!r}: output directory is not writable ({err.strerror})") from None
    return path


def check_new_output(key: str, path: str | Path, overwrite: bool, directory: bool = False) -> Path:
    """A dataset's output path (a file, or with `directory` a folder of files): never an existing dataset unless
    `overwrite` (simulating or generating one can take hours), and not a folder where a file goes or the reverse.
    Also checks that its folder is writable."""
    path = Path(path)
    if path.exists() and path.is_dir() != directory:
        wanted, found = ("a directory", "a file") if directory else ("a file", "a directory")
        raise ConfigError(f"{key}={str(path)!r}: is {found}; give {wanted}")
    holds_data = path.is_dir() and any(path.iterdir()) if directory else path.exists()
    if holds_data and not overwrite:
        raise ConfigError(f"{key}={str(path)!r}: already holds a dataset; set overwrite=true to replace it, or "
                          f"{key}=<another path>")
    check_writable_dir(key, path if directory else path.parent)
    return path


def check_checkpoint(key: str, path: str | Path) -> Path:
    """A checkpoint path must exist and hold a Lightning checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{key}={str(path)!r}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:
        raise ConfigError(f"{key}={str(path)!r}: not a checkpoint (torch.load cannot read it)") from None
    if not isinstance(state, dict) or "state_dict" not in state:
        raise ConfigError(f"{key}={str(path)!r}: not a Lightning checkpoint (it has no state_dict)")
    return path


def check_checkpoint_matches_task(key: str, path: str | Path, task: torch.nn.Module, target: str) -> None:
    """The checkpoint's weights must have the task's names and shapes: a checkpoint of another experiment
    or model size otherwise fails deep inside Lightning's restore with a long traceback."""
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    expected = task.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise ConfigError(f"{key}={str(path)!r}: checkpoint does not match task {target} "
                          f"({len(missing)} missing and {len(unexpected)} unexpected weights)")
    for name, tensor in expected.items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise ConfigError(f"{key}={str(path)!r}: checkpoint does not match task {target} ({name}: shape "
                              f"{tuple(state[name].shape)} in the checkpoint, {tuple(tensor.shape)} in the model)")


def build_task(cfg: DictConfig):
    """Model, task, optimizer and scheduler from the composed config."""
    model = instantiate(cfg.model, _convert_="all")
    scheduler = None
    if cfg.get("scheduler"):
        scheduler = {k: v for k, v in OmegaConf.to_container(cfg.scheduler, resolve=True).items() if k != "scheduler"}
        scheduler["scheduler"] = instantiate(cfg.scheduler.scheduler)
    return instantiate(cfg.task, model=model, optimizer=instantiate(cfg.optimizer), scheduler=scheduler,
                       _convert_="all")


def _instantiate_group(node: DictConfig | None) -> list[Any]:
    """Every `_target_` node directly under a group (callbacks, logger); `null` entries are skipped."""
    if not node:
        return []
    return [instantiate(sub) for sub in node.values() if isinstance(sub, DictConfig) and "_target_" in sub]


def build_trainer(cfg: DictConfig, extra_callbacks: tuple = ()) -> tuple:
    """The Trainer of a run, with the `callbacks` and `logger` groups' instances (and `extra_callbacks`, e.g. a
    benchmark's timer); returns (trainer, loggers). What numl.train runs, so benchmarks time the same thing."""
    callbacks = _instantiate_group(cfg.get("callbacks")) + list(extra_callbacks)
    loggers = _instantiate_group(cfg.get("logger"))
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False), loggers


def load_task_from_run(cfg: DictConfig, ckpt_path: Path):
    """Rebuild a run's task from its config and load the checkpoint's weights."""
    task = build_task(cfg)
    state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    try:
        missing, unexpected = task.load_state_dict(state["state_dict"], strict=False)
    except RuntimeError as err:  # same names, other shapes: a checkpoint of another model size
        raise ConfigError(f"ckpt_path={str(ckpt_path)!r}: checkpoint does not match task {cfg.task._target_} "
                          f"({str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else err})") from None
    if missing or unexpected:
        raise ConfigError(
            f"ckpt_path={str(ckpt_path)!r}: checkpoint does not match task {cfg.task._target_} "
            f"({len(missing)} missing and {len(unexpected)} unexpected weights)"
        )
    return task
