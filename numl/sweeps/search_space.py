"""Search spaces in Hydra's sweep grammar, turned into Optuna distributions.

One entry per config key, the same grammar Hydra's basic sweeper and lightning-hydra-template use:

    optimizer.lr: interval(1e-4, 1e-2)            # float, uniform
    optimizer.lr: tag(log, interval(1e-4, 1e-2))  # float, log-uniform
    model.channels: range(8, 64, step=8)          # int in [8, 64], step 8 (end included)
    data.batch_size: choice(16, 32, 64)           # categorical
    model: choice(lensing_cnn, lensing_resnet)    # categorical over a config group
    trainer.max_epochs: 10                        # fixed value given to every trial
"""

from __future__ import annotations

from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep, Transformer
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from numl.utils.errors import ConfigError


def parse_search_space(params: dict[str, str]) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """(distributions, fixed overrides) from `hydra.sweeper.params`."""
    parser = OverridesParser.create()
    distributions: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for key, value in params.items():
        try:
            (override,) = parser.parse_overrides([f"{key}={value}"])
        except Exception as err:
            raise ConfigError(f"hydra.sweeper.params.{key}={value!r}: not a valid sweep ({err})") from None
        name = override.get_key_element()
        if not override.is_sweep_override():
            fixed[name] = override.get_value_element_as_str()
            continue
        distributions[name] = _distribution(f"hydra.sweeper.params.{key}", override)
    return distributions, fixed


def _distribution(key: str, override: Any) -> BaseDistribution:
    value = override.value()
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step
        if any(isinstance(x, float) for x in (start, stop, step)):
            return FloatDistribution(start, stop, step=step)
        return IntDistribution(int(start), int(stop), step=int(step))
    if isinstance(value, IntervalSweep):
        log = "log" in value.tags
        if log and value.start <= 0:
            raise ConfigError(f"{key}: a log interval needs a start > 0, got {value.start}")
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    raise ConfigError(f"{key}: unsupported sweep {override.input_line!r}; use choice, range, interval or tag(log, ...)")


def check_keys_exist(names: list[str], job_config: DictConfig) -> None:
    """Every searched key must name a config value or a config group of the composed job config."""
    choices = job_config.hydra.runtime.choices if "hydra" in job_config else {}
    for name in names:
        key = name.lstrip("+~")
        if name.startswith("+"):
            continue  # "+key" adds a key on purpose
        if key in choices:
            continue
        if OmegaConf.select(job_config, key, default="__missing__", throw_on_missing=False) == "__missing__":
            raise ConfigError(f"hydra.sweeper.params.{name}: names no config key of this experiment")


def trial_overrides(params: dict[str, Any]) -> list[str]:
    """Hydra overrides for one trial's parameter values (strings quoted so Hydra reads them verbatim)."""
    out = []
    for name, value in params.items():
        if isinstance(value, str) and not value.replace("_", "").replace("-", "").replace(".", "").isalnum():
            value = "'" + value.replace("'", "\\'") + "'"
        elif isinstance(value, bool):
            value = str(value).lower()
        elif value is None:
            value = "null"
        out.append(f"{name}={value}")
    return out


def split_arguments(arguments: list[str]) -> tuple[dict[str, BaseDistribution], list[str]]:
    """Command-line overrides of `-m`: sweeps join the search space, the rest go verbatim to every trial."""
    parser = OverridesParser.create()
    distributions: dict[str, BaseDistribution] = {}
    fixed: list[str] = []
    for argument, override in zip(arguments, parser.parse_overrides(arguments), strict=True):
        if override.is_sweep_override():
            distributions[override.get_key_element()] = _distribution(f"command line {argument!r}", override)
        else:
            fixed.append(argument)
    return distributions, fixed
