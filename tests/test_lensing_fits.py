"""FITS convergence maps (data.source=fits): numl writes them in MassiveNuS's layout, the DataModule reads them
back with labels from headers or names, splits them deterministically, and refuses bad directories in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from astropy.io import fits

from numl.baselines.lensing import SummaryStatisticBaseline
from numl.data.lensing import LensingDataModule
from numl.data.lensing_fits import read_fits_directory, remove_fits_maps, split_indices, write_fits_maps
from numl.train import train
from numl.utils.errors import ConfigError
from tests.conftest import run_numl

FIELD_DEG = 3.5
REDSHIFTS = [1.0, 1.5]


def _toy_suite(directory, n_per_class: int = 20, n_pix: int = 16, m_nu_values=(0.0, 0.1), seed: int = 0):
    """Maps whose amplitude grows with M_nu, written by numl's FITS writer; returns (maps, m_nu)."""
    m_nu = torch.tensor(m_nu_values, dtype=torch.float32).repeat_interleave(n_per_class)
    white = torch.randn(len(m_nu), len(REDSHIFTS), n_pix, n_pix, generator=torch.Generator().manual_seed(seed))
    maps = 0.02 * white * (1 + 3 * m_nu)[:, None, None, None]
    write_fits_maps(maps, m_nu, directory, FIELD_DEG, REDSHIFTS)
    return maps, m_nu


def _datamodule(directory, **kwargs) -> LensingDataModule:
    args = dict(source="fits", fits_dir=str(directory), source_redshifts=REDSHIFTS, n_train=1000, n_val=1000,
                n_test=1000, batch_size=4, seed=0)
    return LensingDataModule(**(args | kwargs))


def test_fits_maps_read_back_through_the_datamodule(tmp_path):
    maps, m_nu = _toy_suite(tmp_path)
    assert (tmp_path / "mnv0.10000_numl" / "WLconv_z1.50_0003r.fits").is_file()  # MassiveNuS's names
    header = fits.getheader(tmp_path / "mnv0.10000_numl" / "WLconv_z1.00_0001r.fits")
    assert header["ANGLE"] == FIELD_DEG and header["M_NU"] == pytest.approx(0.1)
    dm = _datamodule(tmp_path)
    dm.setup()
    assert (dm.n_pix, dm.field_deg, dm.m_nu_values) == (16, FIELD_DEG, [0.0, 0.1])
    splits = {s: dm.events(s) for s in ("train", "val", "test")}
    assert sum(len(e) for e in splits.values()) == len(maps)
    assert all((e.labels == k).any() for e in splits.values() for k in (0, 1))  # every class in every split
    # Every map read is one written, both planes in order, with its M_nu.
    written = {tuple(m.flatten()[:4].tolist()): (m, mnu) for m, mnu in zip(maps, m_nu.tolist(), strict=True)}
    for events in splits.values():
        for m, label, mnu in zip(events.maps, events.labels, events.m_nu, strict=True):
            original, original_m_nu = written[tuple(m.flatten()[:4].tolist())]
            assert torch.equal(m, original) and mnu.item() == pytest.approx(original_m_nu)
            assert dm.m_nu_values[int(label)] == pytest.approx(original_m_nu)
    # Deterministic in the seed; another seed, other splits.
    again = _datamodule(tmp_path)
    assert torch.equal(again.events("test").maps, splits["test"].maps)
    assert not torch.equal(_datamodule(tmp_path, seed=1).events("test").maps, splits["test"].maps)
    # n_<split> caps a split.
    assert len(_datamodule(tmp_path, n_train=5).events("train")) == 5


def test_summary_statistics_fit_on_fits_training_maps(tmp_path):
    _toy_suite(tmp_path, n_per_class=60)
    dm = _datamodule(tmp_path, source_redshifts=[1.0])  # one plane of the two on disk
    baseline = SummaryStatisticBaseline(["one_point_pdf"], n_nu_bins=6, smoothing_arcmin=0.0)
    result = baseline.fit(dm).evaluate(dm)
    assert dm.events("test").maps.shape[1] == 1
    # FITS maps are cut out of a larger sky: the statistics leave out the pixels the periodic grid wraps
    assert not dm.periodic_maps and baseline.model.statistic.border == 1
    assert result.metrics["acc"] > 0.8  # the amplitude differs by 30 %: the PDF's width tells the classes apart


def test_regression_takes_every_m_nu_found_or_the_grid(tmp_path):
    _toy_suite(tmp_path, n_per_class=6, m_nu_values=(0.0, 0.1, 0.2))
    dm = _datamodule(tmp_path, target="regression")
    dm.setup()
    assert dm.m_nu_values == pytest.approx([0.0, 0.1, 0.2])
    assert sorted(set(dm.events("test").m_nu.tolist())) == pytest.approx([0.0, 0.1, 0.2])
    subset = _datamodule(tmp_path, target="regression", m_nu_grid_ev=[0.0, 0.2])
    subset.setup()
    assert subset.m_nu_values == [0.0, 0.2] and 0.1 not in subset.events("train").m_nu.tolist()


def test_maps_of_one_simulation_stay_in_one_split(tmp_path):
    # Labels from the names only (no M_NU in the headers), simulation ids from the folder.
    for sim in range(8):
        for i in range(3):
            folder = tmp_path / f"m{0.1 * (sim % 2):.2f}" / f"sim{sim}"
            folder.mkdir(parents=True, exist_ok=True)
            fits.PrimaryHDU(np.full((8, 8), sim + i / 10, dtype=np.float32)).writeto(folder / f"map{i}.fits")
    found = read_fits_directory(tmp_path, [1.0], r"m(?P<m_nu_ev>[0-9.]+)/sim(?P<simulation>\d+)/map\d+\.fits$",
                                field_deg=2.0)
    assert found.field_deg == 2.0 and sorted(set(found.m_nu_ev.tolist())) == [0.0, 0.1]
    index = split_indices(found.m_nu_ev, found.groups, [0.5, 0.25, 0.25], seed=3)
    simulation_of = found.maps[:, 0, 0, 0].floor().long()
    splits_of_simulation = {}
    for split, idx in index.items():
        for sim in simulation_of[idx].tolist():
            splits_of_simulation.setdefault(sim, set()).add(split)
    assert len(splits_of_simulation) == 8 and all(len(s) == 1 for s in splits_of_simulation.values())
    assert all(len(idx) > 0 for idx in index.values())


def test_training_step_on_fits_maps(tmp_path, compose_train):
    _toy_suite(tmp_path / "maps", n_per_class=8)
    cfg = compose_train(["experiment=lensing_cnn", "debug=fast_dev_run", "data.source=fits",
                         f"data.fits_dir={tmp_path / 'maps'}", "data.source_redshifts=[1.0,1.5]", "data.batch_size=4",
                         "baseline=none"])
    metrics = train(cfg)
    assert np.isfinite(metrics["test/loss"])


def _write(path, data, **header):
    path.parent.mkdir(parents=True, exist_ok=True)
    hdu = fits.PrimaryHDU(np.asarray(data, dtype=np.float32))
    for key, value in header.items():
        hdu.header[key] = value
    hdu.writeto(path)


@pytest.mark.parametrize("case, expected", [
    ("empty", r"data.fits_dir='.*': no FITS files"),
    ("missing", r"data.fits_dir='.*nowhere': no such directory"),
    ("mixed sizes", r"maps of mixed sizes: .*WLconv_z1.00_0002r.fits is 8x8 pixels, .*0001r.fits is 16x16"),
    ("no label", r"other.fits: no M_nu label: the header has no key 'M_NU' \(data.fits_m_nu_key\)"),
    ("not FITS", r"notes.fits: not a readable FITS file"),
    ("missing plane", r"WLconv_z1.00_0001r.fits: no plane at z_s=1.5"),
    ("mixed sides", r"maps of mixed sides: .*0002r.fits has ANGLE=5.0 deg"),
])
def test_bad_fits_directories_refused_in_one_line(tmp_path, case, expected):
    folder = tmp_path / "mnv0.00000_om0.3"
    if case != "empty" and case != "missing":
        _write(folder / "WLconv_z1.00_0001r.fits", np.zeros((16, 16)), ANGLE=3.5, M_NU=0.0)
    if case == "mixed sizes":
        _write(folder / "WLconv_z1.00_0002r.fits", np.zeros((8, 8)), ANGLE=3.5, M_NU=0.0)
    elif case == "mixed sides":
        _write(folder / "WLconv_z1.00_0002r.fits", np.zeros((16, 16)), ANGLE=5.0, M_NU=0.0)
    elif case == "no label":
        _write(tmp_path / "other.fits", np.zeros((16, 16)), ANGLE=3.5)
    elif case == "not FITS":
        (tmp_path / "notes.fits").write_text("a text file\n")
    tmp_path.mkdir(exist_ok=True)
    directory = tmp_path / "nowhere" if case == "missing" else tmp_path
    zs = [1.0, 1.5] if case == "missing plane" else [1.0]
    with pytest.raises(ConfigError, match=expected) as err:
        _datamodule(directory, source_redshifts=zs).setup()
    assert "\n" not in str(err.value)


def test_bad_fits_options_refused():
    with pytest.raises(ConfigError, match=r"data.fits_split_fractions=\[0.8, 0.2\]"):
        _datamodule(".", fits_split_fractions=[0.8, 0.2])
    with pytest.raises(ConfigError, match="data.source='fit': must be one of simulate, hdf5, fits"):
        _datamodule(".", source="fit")


@pytest.mark.slow
def test_simulate_writes_fits_that_train_reads(tmp_path):
    out = tmp_path / "fits_maps"
    small = ["data.n_train=24", "data.n_val=8", "data.n_test=8", "data.n_pix=32", f"paths.log_dir={tmp_path}"]
    written = run_numl("simulate", "experiment=lensing_cnn", "output_format=fits", f"output={out}", *small)
    assert written.returncode == 0, written.stderr[-2000:]
    assert len(list(out.rglob("*.fits"))) == 40
    trained = run_numl("train", "experiment=lensing_cnn", "debug=fast_dev_run", "data.source=fits",
                       f"data.fits_dir={out}", "baseline=none", f"paths.log_dir={tmp_path}")
    assert trained.returncode == 0, trained.stderr[-2000:]
    refused = run_numl("simulate", "experiment=lensing_cnn", "output_format=fit", f"paths.log_dir={tmp_path}")
    assert refused.returncode == 2 and "output_format='fit': must be one of hdf5, fits" in refused.stderr


def test_fewer_training_maps_than_one_batch_is_a_config_error(tmp_path):
    # The fixed training set drops its last partial batch; with no full batch Lightning would train nothing.
    _toy_suite(tmp_path, n_per_class=10)
    dm = _datamodule(tmp_path, batch_size=64)
    dm.setup()
    with pytest.raises(ConfigError, match=r"data.n_train=\d+: fewer training maps than data.batch_size=64"):
        dm.train_dataloader()


def test_a_dataset_written_again_keeps_none_of_the_former_maps(tmp_path):
    # numl.simulate overwrite=true on FITS: the former (larger) dataset's maps go, anything else stays
    write_fits_maps(torch.zeros(6, 1, 8, 8), torch.tensor([0.0, 0.0, 0.0, 0.1, 0.1, 0.1]), tmp_path, 3.5, [1.0])
    (tmp_path / "notes.txt").write_text("the user's own file")
    remove_fits_maps(tmp_path)
    write_fits_maps(torch.zeros(2, 1, 8, 8), torch.tensor([0.0, 0.1]), tmp_path, 3.5, [1.0])
    assert len(list(tmp_path.rglob("*.fits"))) == 2
    assert (tmp_path / "notes.txt").read_text() == "the user's own file"
