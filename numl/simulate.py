"""Write a domain's simulated dataset (train, val and test splits) to one HDF5 file.

    python -m numl.simulate experiment=lensing_cnn                     # -> data/lensing_cnn.h5
    python -m numl.simulate experiment=next_dense_cnn output=events.h5
    python -m numl.simulate experiment=lensing_cnn output_format=fits  # -> data/lensing_cnn_fits/, FITS maps

Without `output`, an experiment that reads its events from a file (data.hdf5_path) has them written there. An
existing file (or non-empty FITS directory) is never replaced unless `overwrite=true`: a dataset can take hours.

Then train from the file: `python -m numl.train experiment=X data.source=hdf5 data.hdf5_path=<file>`.
The file's metadata records the simulator, its config and seeds, and a mismatching file is refused.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from numl.data.lensing_fits import remove_fits_maps
from numl.utils.errors import ConfigError, check_choice
from numl.utils.runtime import (
    check_new_output,
    hydra_errors_in_one_line,
    one_line_errors,
    register_resolvers,
)

log = logging.getLogger("numl.simulate")


def simulate(cfg: DictConfig) -> Path:
    if cfg.get("data") is None:
        raise ConfigError("data: missing; choose an experiment (experiment=<name>) or data=<name>")
    # The experiment's own name: the default file name and the command that trains on the file.
    experiment = _experiment_choice() or cfg.task_name
    output_format = cfg.get("output_format", "hdf5")
    check_choice("output_format", output_format, ("hdf5", "fits"))
    if output_format == "fits":
        return _simulate_fits(cfg, experiment)
    default = Path(cfg.data.hdf5_path) if cfg.data.get("hdf5_path") else \
        Path(cfg.paths.data_dir) / f"{experiment.replace('/', '_')}.h5"
    output = check_new_output("output", cfg.output if cfg.get("output") else default, cfg.get("overwrite", False))
    data_cfg = OmegaConf.merge(cfg.data, {"source": "simulate"})
    datamodule = instantiate(data_cfg, _convert_="all")
    if not hasattr(datamodule, "write_hdf5"):
        raise ConfigError(f"data._target_={cfg.data._target_}: this DataModule cannot write HDF5")
    start = time.perf_counter()
    path = datamodule.write_hdf5(output)
    seconds = time.perf_counter() - start
    n_events = sum(int(cfg.data.get(k, 0)) for k in ("n_train", "n_val", "n_test"))
    print(f"wrote {n_events} events to {path} in {seconds:.1f} s ({n_events / seconds:.1f} events/s)")
    print(f"train on it: python -m numl.train experiment={experiment} data.source=hdf5 data.hdf5_path={path}")
    return path


def _experiment_choice() -> str | None:
    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().runtime.choices.get("experiment")


def _simulate_fits(cfg: DictConfig, experiment: str) -> Path:
    """The maps of every split as FITS files in a directory (MassiveNuS's layout), for data.source=fits."""
    default = Path(cfg.paths.data_dir) / f"{experiment.replace('/', '_')}_fits"
    output = check_new_output("output", cfg.output if cfg.get("output") else default, cfg.get("overwrite", False),
                              directory=True)
    datamodule = instantiate(OmegaConf.merge(cfg.data, {"source": "simulate"}), _convert_="all")
    if not hasattr(datamodule, "write_fits"):
        raise ConfigError(f"output_format=fits: data._target_={cfg.data._target_} cannot write FITS maps")
    start = time.perf_counter()
    remove_fits_maps(output)  # overwrite=true: no map of the former dataset may stay beside the new ones
    files = datamodule.write_fits(output)
    print(f"wrote {len(files)} FITS maps to {output} in {time.perf_counter() - start:.1f} s")
    print(f"train on them: python -m numl.train experiment={experiment} data.source=fits data.fits_dir={output}")
    return output


@hydra_errors_in_one_line
@hydra.main(version_base="1.3", config_path="pkg://numl.conf", config_name="simulate")
@one_line_errors
def main(cfg: DictConfig) -> None:
    simulate(cfg)


register_resolvers()

if __name__ == "__main__":
    main()
