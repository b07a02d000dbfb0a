"""numl's Optuna sweeper: search-space grammar, pruning, failures, resume, several workers, bad input.

The end-to-end tests run a tiny Hydra + Lightning app (tests/sweep_app) shaped like numl.train, so each
trial takes about a second; test_lensing_sweep_through_numl_train runs the real entry point.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import pytorch_lightning as pl
import torch
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from numl.sweeps.pruning import OptunaPruningCallback
from numl.sweeps.search_space import parse_search_space, trial_overrides
from numl.utils.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "tests" / "sweep_app" / "app.py"


def _load_app():
    spec = importlib.util.spec_from_file_location("sweep_app", APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sweep(sweep_dir: Path, *overrides: str, wait: bool = True):
    command = [sys.executable, str(APP), "-m", f"hydra.sweep.dir={sweep_dir}", *overrides]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if not wait:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def _trials(sweep_dir: Path, name: str = "tiny") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{sweep_dir / 'optuna.db'}").trials


def test_search_space_grammar():
    distributions, fixed = parse_search_space(
        {
            "optimizer.lr": "tag(log, interval(1e-4, 1e-2))",
            "model.dropout": "interval(0.0, 0.5)",
            "model.width": "range(8, 64, step=8)",
            "data.batch_size": "choice(16, 32)",
            "model": "choice(lensing_cnn, lensing_resnet)",
            "trainer.max_epochs": "5",
        }
    )
    assert distributions["optimizer.lr"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert distributions["model.dropout"] == FloatDistribution(0.0, 0.5)
    # Hydra's range() excludes its end, like Python's.
    assert distributions["model.width"] == IntDistribution(8, 64, step=8)
    assert distributions["data.batch_size"] == CategoricalDistribution([16, 32])
    assert distributions["model"] == CategoricalDistribution(["lensing_cnn", "lensing_resnet"])
    assert fixed == {"trainer.max_epochs": "5"}
    with pytest.raises(ConfigError, match="hydra.sweeper.params.optimizer.lr"):
        parse_search_space({"optimizer.lr": "tag(log, interval(0.0, 1.0))"})


def test_trial_overrides_survive_hydra_parsing():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = {"optimizer.lr": 0.001, "model": "lensing_cnn", "name": "a b", "flag": True, "none": None}
    parsed = OverridesParser.create().parse_overrides(trial_overrides(params))
    assert {o.key_or_group: o.value() for o in parsed} == {**params, "flag": True}


def _fit(lr: float, callback: OptunaPruningCallback, max_epochs: int = 4) -> pl.Trainer:
    app = _load_app()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(8, 1)), batch_size=2)
    trainer = pl.Trainer(
        max_epochs=max_epochs, callbacks=[callback], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0,
    )
    trainer.fit(app.FitOneWeight(lr), loader, loader)
    return trainer


def test_pruning_callback_stops_a_bad_trial_and_records_it(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    pruner = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    study = optuna.create_study(study_name="p", storage=storage, direction="maximize", pruner=pruner)

    def callback(trial):
        return OptunaPruningCallback(storage, "p", trial.number, "val/score", pruner=pruner)

    good = study.ask()
    trainer = _fit(0.1, callback(good))
    assert trainer.current_epoch == 4  # a good trial runs to the end
    study.tell(good, float(trainer.callback_metrics["val/score"]))

    bad = study.ask()
    trainer = _fit(1e-5, callback(bad))
    frozen = study.trials[bad.number]
    assert frozen.state == TrialState.PRUNED
    assert trainer.current_epoch == 1  # stopped after its first validation
    assert list(frozen.intermediate_values) == [0]


@pytest.mark.slow
def test_sweep_tolerates_failures_saves_report_and_resumes(tmp_path):
    sweep_dir = tmp_path / "sweep"
    # Trials with lr < 2e-3 raise: the sweep records them FAIL and asks for more until 4 are finished.
    first = _sweep(sweep_dir, "fail_below_lr=0.002", "hydra.sweeper.max_failure_rate=1.0")
    assert first.returncode == 0, first.stderr[-3000:]
    trials = _trials(sweep_dir)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(finished) == 4
    assert failed, "the seeded sampler should propose some lr < 2e-3"
    assert all(t.params["lr"] < 0.002 for t in failed)
    assert all(t.params["lr"] >= 0.002 for t in finished)
    report = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    best = max((t for t in finished if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert report["best_value"] == pytest.approx(best.value)
    assert report["best_params"] == best.params
    for png in ("optimization_history.png", "param_importances.png"):
        assert (sweep_dir / png).stat().st_size > 1000
    assert all((sweep_dir / f"trial_{t.number:04d}").is_dir() for t in finished)

    # Resume: same study and storage, a larger budget. Earlier trials are kept unchanged.
    second = _sweep(sweep_dir, "fail_below_lr=0.002", "hydra.sweeper.max_failure_rate=1.0", "hydra.sweeper.n_trials=6")
    assert second.returncode == 0, second.stderr[-3000:]
    resumed = _trials(sweep_dir)
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in resumed) == 6
    for before in trials:
        after = resumed[before.number]
        assert (after.state, after.value, after.params) == (before.state, before.value, before.params)


@pytest.mark.slow
def test_sweep_stops_when_failure_rate_exceeded(tmp_path):
    result = _sweep(tmp_path, "fail_below_lr=1.0", "hydra.sweeper.max_failure_rate=0.25")
    assert result.returncode != 0
    assert "hydra.sweeper.max_failure_rate=0.25: 2 of 4 trials failed" in result.stderr
    assert [t.state for t in _trials(tmp_path)] == [TrialState.FAIL, TrialState.FAIL]


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="issue 13: a fixed sampler seed makes both workers draw the same start-up "
                   "parameters and the sweeper counts the other worker's trials as in flight (4 of 6 complete)")
def test_two_workers_share_one_study(tmp_path):
    workers = [_sweep(tmp_path, "hydra.sweeper.n_trials=6", "hydra.sweeper.n_jobs=1", wait=False) for _ in range(2)]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    trials = _trials(tmp_path)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    # Both asked the shared study; at most one trial more than the budget (both saw 5 finished).
    assert 6 <= len(complete) <= 7
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert all("sweep: " in out for out in outputs)  # both workers ran trials
    assert all((tmp_path / f"trial_{t.number:04d}").is_dir() for t in complete)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+hydra.sweeper.params.no_such_key='interval(0, 1)'", "hydra.sweeper.params.no_such_key: names no config key"),
        pytest.param("hydra.sweeper.storage=sqlite:///{tmp}/a_file/optuna.db", "hydra.sweeper.storage='sqlite:///",
                     marks=pytest.mark.slow),
        pytest.param("hydra/launcher=submitit_slurm", None, marks=pytest.mark.slow),  # partition set below
    ],
)
def test_bad_input_stops_before_any_trial(tmp_path, override, message):
    (tmp_path / "a_file").write_text("not a directory")
    overrides = [override.format(tmp=tmp_path)]
    if override.startswith("hydra/launcher"):
        overrides.append("hydra.launcher.partition=no_such_partition")
        message = "hydra.launcher.partition='no_such_partition': "
    result = _sweep(tmp_path / "sweep", *overrides)
    assert result.returncode != 0
    assert message in result.stderr
    assert not list((tmp_path / "sweep").glob("trial_*"))


@pytest.mark.slow
def test_lensing_sweep_through_numl_train(tmp_path):
    """The real entry point: 2 tiny lensing trials, pruning callback injected, study complete."""
    command = [
        sys.executable, "-m", "numl.train", "-m", "experiment=lensing_cnn", "hparams_search=lensing_optuna",
        "debug=small", "data.n_pix=32", "data.n_train=32", "data.n_val=16", "model.channels=[4,8]", "test=false",
        "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={tmp_path}", f"paths.root_dir={tmp_path}",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = optuna.load_study(study_name="lensing_cnn", storage=f"sqlite:///{tmp_path / 'optuna.db'}").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    # The pruning callback reported val/acc for each epoch of each trial.
    assert all(sorted(t.intermediate_values) == [0, 1] for t in trials)
    assert (tmp_path / "optimization_history.png").is_file()
