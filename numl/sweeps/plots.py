"""Sweep summary: best trial printed and saved as YAML, PNGs of optimisation history and importances."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

from numl.figures.common import plt

log = logging.getLogger(__name__)


def summarize_study(study: optuna.Study) -> dict:
    states = [t.state for t in study.get_trials(deepcopy=False)]
    summary = {
        "study_name": study.study_name,
        "direction": study.direction.name.lower(),
        "n_complete": states.count(TrialState.COMPLETE),
        "n_pruned": states.count(TrialState.PRUNED),
        "n_failed": states.count(TrialState.FAIL),
    }
    if summary["n_complete"]:
        best = study.best_trial
        summary.update(best_trial=best.number, best_value=float(best.value), best_params=dict(best.params))
    return summary


def save_study_report(study: optuna.Study, output_dir: Path) -> list[Path]:
    """Write optimization_results.yaml and the PNGs into `output_dir`; returns the files written."""
    output_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize_study(study)
    results = output_dir / "optimization_results.yaml"
    results.write_text(yaml.safe_dump(summary, sort_keys=False))
    written = [results]
    plots = {
        "optimization_history.png": optuna.visualization.matplotlib.plot_optimization_history,
        "param_importances.png": optuna.visualization.matplotlib.plot_param_importances,
        "intermediate_values.png": optuna.visualization.matplotlib.plot_intermediate_values,
    }
    for name, plot in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                axes = plot(study)
        except (ValueError, RuntimeError) as err:
            # Importances need >= 2 complete trials with varied parameters; say why a plot is missing.
            log.warning("sweep: %s not drawn: %s", name, err)
            continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.tight_layout()
        figure.savefig(output_dir / name, dpi=120)
        plt.close(figure)
        written.append(output_dir / name)
    return written
