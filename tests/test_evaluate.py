"""numl.evaluate rebuilds a run from its checkpoint and reproduces its test metrics, figures included."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import run_numl

TINY = ["experiment=lensing_cnn", "debug=small", "data.n_pix=32", "model.channels=[4,8]",
        "callbacks.rich_progress_bar=null", "trainer.max_epochs=1"]


@pytest.mark.slow
def test_evaluate_reproduces_the_runs_test_metrics(tmp_path):
    run_dir, eval_dir = tmp_path / "run", tmp_path / "eval"
    trained = run_numl("train", *TINY, f"hydra.run.dir={run_dir}")
    assert trained.returncode == 0, trained.stderr[-2000:]
    summary = json.loads((run_dir / "test_metrics.json").read_text())
    evaluated = run_numl("evaluate", f"ckpt_path={summary['best_checkpoint']}", f"hydra.run.dir={eval_dir}")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    metrics = json.loads((eval_dir / "test_metrics.json").read_text())["metrics"]
    # the network and the run's baselines (its `baseline` group) on the same test maps
    for key in ("test/acc", "test/loss", "baseline/likelihood_ratio/acc", "baseline/power_spectrum/auroc"):
        assert abs(metrics[key] - summary["metrics"][key]) < 1e-6, key
    assert (eval_dir / "figures" / "roc_vs_baselines.png").is_file()
    outputs = np.load(eval_dir / "test_predictions.npz")
    assert len(outputs["network/score"]) == len(outputs["baseline/likelihood_ratio/score"])


def test_evaluate_merges_data_and_baseline_overrides_into_the_runs_config():
    from omegaconf import OmegaConf

    from numl.evaluate import with_overrides

    run = OmegaConf.create({"data": {"n_test": 100, "seed": 1},
                            "baseline": {"fit": {"_target_": "a.B", "fit_features": False, "max_events": 5}}})
    command = OmegaConf.create({"ckpt_path": "x", "data": {"n_test": 7},
                                "baseline": {"fit": {"fit_features": True}, "extra": {"_target_": "c.D"}}})
    merged = with_overrides(run, command)
    assert merged.data == {"n_test": 7, "seed": 1}
    assert merged.baseline.fit == {"_target_": "a.B", "fit_features": True, "max_events": 5}
    assert merged.baseline.extra._target_ == "c.D"
    assert run.data.n_test == 100 and run.baseline.fit.fit_features is False  # the run's own config untouched
    # a run without baselines gains the command's
    assert with_overrides(OmegaConf.create({"data": {}, "baseline": None}), command).baseline.extra._target_ == "c.D"
