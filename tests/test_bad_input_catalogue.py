"""The catalogue of user mistakes, each run through the real command line as a user would: one line
`numl: error: <key or file>...`, exit code 2, and nothing written but Hydra's record of the command
(`.hydra/*.yaml` and the run's log): no checkpoint, data file, results, figures or study database.

The checks themselves are unit-tested beside their code (tests/test_bad_input.py, tests/test_sweeps.py,
tests/test_slurm_check.py); the SLURM cases that need a cluster are in tests/test_slurm.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from numl.data.lensing_fits import write_fits_maps
from numl.utils.runtime import build_task
from tests.conftest import compose_config, run_numl

pytestmark = pytest.mark.slow

TRAIN = ("train", "experiment=lensing_cnn", "debug=fast_dev_run")
SWEEP = ("train", "-m", "experiment=lensing_cnn", "hparams_search=lensing_optuna", "debug=small", "data.n_pix=32",
         "data.n_train=32", "data.n_val=16", "model.channels=[4,8]", "test=false", "hydra.sweep.dir={tmp}/sweep")

# id: (command and arguments, the start of the error line). {tmp} is the test's directory, {files} a
# directory of prepared inputs (checkpoints of other runs, a text file, a file where a directory should be).
CATALOGUE = {
    # Hydra finds these before numl runs.
    "unknown experiment": ((*TRAIN[:1], "experiment=does_not_exist"),
                           "experiment=does_not_exist: no such experiment config; available: km3net_edgeconv, "),
    "unknown model": ((*TRAIN, "model=nosuch"), "model=nosuch: no such model config; available: "),
    "misspelt key": ((*TRAIN, "data.bacth_size=3"), "data.bacth_size: no such key; data has: _target_, "),
    "bad override syntax": ((*TRAIN, "data.n_pix=["), "bad override syntax: "),
    "run directory under a file": ((*TRAIN, "hydra.run.dir={files}/a_file/run"),
                                   "hydra.run.dir='{files}/a_file/run': cannot create the run directory"),
    # numl's checks, before anything is simulated or trained.
    "negative learning rate": ((*TRAIN, "optimizer.lr=-1"), "optimizer.lr=-1"),
    "empty batch": ((*TRAIN, "data.batch_size=0"), "data.batch_size=0: must be an integer > 0"),
    # A shell's brace expansion turns data.nbody.simulations={train:16,val:4,test:4} into three overrides.
    "N-body simulations not a mapping": (("train", "experiment=lensing_nbody", "debug=fast_dev_run",
                                          "data.nbody.simulations=test:4"),
                                         "data.nbody.simulations='test:4': must be a mapping like "),
    "one-pixel maps": ((*TRAIN, "data.n_pix=1"), "data.n_pix=1: "),
    "smoothing erases every mode": ((*TRAIN, "data.smoothing_arcmin=1000"), "data.smoothing_arcmin=1000: must be <"),
    "tiny field": ((*TRAIN, "data.field_deg=1e-4"), "data.field_deg=0.0001: must be >= "),
    "ell_max beyond CAMB's practical range": ((*TRAIN, "data.ell_max=100000"), "data.ell_max=100000: must be in ["),
    "negative neutrino mass": ((*TRAIN, "data.m_nu_massive_ev=-0.1"), "data.m_nu_massive_ev=-0.1"),
    "unknown field model": ((*TRAIN, "data.field=voronoi"), "data.field='voronoi'"),
    "unknown NEXT background source": (("train", "experiment=next_sparse_cnn", "debug=fast_dev_run",
                                        "data.sim.background=co60"), "data.sim.background='co60'"),
    "NEXT energy ROI above the gamma line": (("train", "experiment=next_sparse_cnn", "debug=fast_dev_run",
                                              "data.sim.background=bi214", "data.sim.energy_roi_kev=[2500,2600]"),
                                             "data.sim.energy_roi_kev=[2500.0, 2600.0]: lower edge above every energy"),
    "NEXT energy ROI below zero": (("train", "experiment=next_sparse_cnn", "debug=fast_dev_run",
                                    "data.sim.energy_roi_kev=[-10,2500]"),
                                   "data.sim.energy_roi_kev=[-10.0, 2500.0]: must be null"),
    "NEXT SiPM pitch zero": (("train", "experiment=next_sparse_cnn", "debug=fast_dev_run",
                              "data.sim.detector_response=sensors", "data.sim.sipm_pitch_mm=0"),
                             "data.sim.sipm_pitch_mm=0: must be a number > 0"),
    "NEXT deconvolution without sensors": (("train", "experiment=next_sparse_cnn", "debug=fast_dev_run",
                                            "data.sim.deconvolution=richardson_lucy"),
                                           "data.sim.deconvolution='richardson_lucy': deconvolves sensor hits"),
    "NEXT deconvolution on a GPU that is not there": (("train", "experiment=next_sparse_cnn", "debug=fast_dev_run",
                                                       "data.sim.detector_response=sensors",
                                                       "data.sim.deconvolution=richardson_lucy",
                                                       "data.sim.deconvolution_device=cuda"),
                                                      "data.sim.deconvolution_device='cuda': no CUDA device"),
    "endless epochs": ((*TRAIN, "trainer.max_epochs=-1"), "trainer.max_epochs=-1: trains for ever"),
    "GPU on a CPU machine": ((*TRAIN, "trainer.accelerator=gpu"), "trainer.accelerator='gpu': no CUDA device"),
    "SyncBatchNorm on CPU DDP": ((*TRAIN, "trainer=ddp", "trainer.accelerator=cpu"),
                                 "trainer.sync_batchnorm=true: SyncBatchNorm needs CUDA devices"),
    "missing HDF5 file": ((*TRAIN, "data.source=hdf5", "data.hdf5_path={tmp}/none.h5"),
                          "data.hdf5_path='{tmp}/none.h5': no such file"),
    "missing checkpoint": ((*TRAIN, "ckpt_path={tmp}/none.ckpt"), "ckpt_path='{tmp}/none.ckpt'"),
    "text file as checkpoint": ((*TRAIN, "ckpt_path={files}/notes.ckpt"),
                                "ckpt_path='{files}/notes.ckpt': not a checkpoint"),
    "checkpoint of another model size": ((*TRAIN, "ckpt_path={files}/small_cnn.ckpt"),
                                         "ckpt_path='{files}/small_cnn.ckpt': checkpoint does not match task"),
    "checkpoint of another experiment": ((*TRAIN, "ckpt_path={files}/petalo.ckpt"),
                                         "ckpt_path='{files}/petalo.ckpt': checkpoint does not match task"),
    "evaluate without a checkpoint": (("evaluate", "ckpt_path={tmp}/none.ckpt"),
                                      "ckpt_path='{tmp}/none.ckpt': no such checkpoint file"),
    "FITS maps of mixed sizes": ((*TRAIN, "data.source=fits", "data.fits_dir={files}/fits_mixed"),
                                 "data.fits_dir: maps of mixed sizes: {files}/fits_mixed/mnv0.00000_numl/"
                                 "WLconv_z1.00_0002r.fits is 8x8 pixels"),
    "empty FITS directory": ((*TRAIN, "data.source=fits", "data.fits_dir={files}/fits_empty"),
                             "data.fits_dir='{files}/fits_empty': no FITS files"),
    "simulate over an existing dataset": (("simulate", "experiment=lensing_cnn", "output={files}/a_file"),
                                         "output='{files}/a_file': already holds a dataset; set overwrite=true"),
    "simulate into a file's subdirectory": (("simulate", "experiment=lensing_cnn", "output={files}/a_file/maps.h5"),
                                            "output="),
    "KM3NeT test file without MC truth": (("train", "experiment=km3net_transformer", "debug=fast_dev_run",
                                           "data.real_test_files=[km3net_offline.root]"),
                                          "data.real_test_files: 'km3net_offline.root' has no MC truth"),
    "KM3NeT test file beyond the simulated energies": (
        ("train", "experiment=km3net_transformer", "debug=fast_dev_run", "data.real_test_files=[mcv6.0.gsg_muon_highE-"
         "CC_50-500GeV.km3sim.jterbr00008357.jorcarec.aanet.905.root]"),
        "data.events.energy_min_gev=3, data.events.energy_max_gev=300: 16.4 % of the neutrinos"),
    "KM3NeT simulation workers without blocks": (
        ("train", "experiment=km3net_transformer", "debug=fast_dev_run", "data.simulation_workers=2"),
        "data.simulation_workers=2: needs data.events_per_block"),
    "KM3NeT shower profile that does not exist": (
        ("train", "experiment=km3net_transformer", "debug=fast_dev_run", "data.events.shower_profile=gaussian"),
        "data.events.shower_profile='gaussian': must be one of"),
    "KM3NeT negative track-identification weight": (
        ("train", "experiment=km3net_transformer", "debug=fast_dev_run", "task.track_weight=-1"),
        "task.track_weight=-1: must be a number >= 0"),
    "KM3NeT atmospheric muons at a site shallower than MUPAGE's parametrisation": (
        ("train", "experiment=km3net_transformer", "debug=fast_dev_run", "data.events.atmospheric_muon_fraction=0.5",
         "data.events.atmospheric_seabed_depth_m=500"),
        "data.events.atmospheric_seabed_depth_m=500: the can spans"),
    "NEXT simulation workers without blocks": (
        ("train", "experiment=next_sparse_cnn", "debug=fast_dev_run", "data.simulation_workers=2"),
        "data.simulation_workers=2: needs data.events_per_block"),
    "KM3NeT K-40 coincidences beyond the noise rate": (
        ("train", "experiment=km3net_transformer", "debug=fast_dev_run", "data.events.k40_coincidence_scale=200"),
        "data.events.k40_coincidence_scale=200: its coincidences alone exceed data.events.noise_rate_hz=7000.0"),
    # The sweeper's checks, before any trial.
    "no trials": ((*SWEEP, "hydra.sweeper.n_trials=0"), "hydra.sweeper.n_trials=0: must be an integer > 0"),
    "unknown direction": ((*SWEEP, "hydra.sweeper.direction=up"),
                          "hydra.sweeper.direction='up': must be one of minimize, maximize"),
    "log interval from 0": ((*SWEEP, "hydra.sweeper.params={{optimizer.lr:'tag(log, interval(0, 1))'}}"),
                            "hydra.sweeper.params.optimizer.lr: a log interval needs a start > 0"),
    "unknown search parameter": ((*SWEEP, "+hydra.sweeper.params.no_such_key='interval(0, 1)'"),
                                 "hydra.sweeper.params.no_such_key: names no config key"),
    "unknown storage scheme": ((*SWEEP, "hydra.sweeper.storage=nosuchdb://host/db"),
                               "hydra.sweeper.storage='nosuchdb://host/db': cannot connect to the storage"),
    "unreachable postgres": ((*SWEEP, "hydra.sweeper.storage=postgresql://numl@127.0.0.1:1/numl"),
                             "hydra.sweeper.storage='postgresql://numl@127.0.0.1:1/numl': cannot connect"),
    "storage path without scheme": ((*SWEEP, "hydra.sweeper.storage={tmp}/optuna.db"),
                                    "hydra.sweeper.storage='{tmp}/optuna.db': must be a database URL"),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("inputs")
    (directory / "a_file").write_text("a file, not a directory")
    (directory / "notes.ckpt").write_text("not a checkpoint")
    (directory / "fits_empty").mkdir()
    # Two maps of one cosmology: 16 x 16, then 8 x 8 pixels.
    write_fits_maps(torch.zeros(2, 1, 16, 16), torch.zeros(2), directory / "fits_mixed", 3.5, [1.0])
    write_fits_maps(torch.zeros(1, 1, 8, 8), torch.zeros(1), directory / "fits_small", 3.5, [1.0])
    (directory / "fits_small" / "mnv0.00000_numl" / "WLconv_z1.00_0001r.fits").replace(
        directory / "fits_mixed" / "mnv0.00000_numl" / "WLconv_z1.00_0002r.fits")
    for name, overrides in (("small_cnn", ["experiment=lensing_cnn", "model.channels=[4,8]"]),
                            ("petalo", ["experiment=petalo_position"])):
        task = build_task(compose_config("train", overrides, directory / "compose"))
        torch.save({"state_dict": task.state_dict(), "pytorch-lightning_version": "2.0.0"}, directory / f"{name}.ckpt")
    GlobalHydra.instance().clear()
    return directory


def _written(root: Path) -> list[str]:
    """Files under root other than Hydra's record of the command (its config copies and the run's log)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and ".hydra" not in p.parts and p.suffix != ".log")


def test_the_catalogue_has_every_case_the_issue_lists():
    assert len(CATALOGUE) >= 20


@pytest.mark.parametrize("case", list(CATALOGUE))
def test_mistake_gives_one_line_naming_the_key_and_writes_nothing(tmp_path, files, case):
    arguments, expected = CATALOGUE[case]
    fill = {"tmp": tmp_path, "files": files}
    arguments = [a.format(**fill) for a in arguments]
    expected = expected.format(**fill)
    before = _written(files)
    logs = tmp_path / "logs"
    result = run_numl(*arguments, f"paths.root_dir={logs}")
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [lines[-1]] and lines[-1].startswith(f"numl: error: {expected}"), result.stderr[-3000:]
    assert _written(tmp_path) == [], _written(tmp_path)
    assert _written(files) == before
