"""experiments/km3net_reconstruction/hit_probability.py: the two likelihood fits paired on the same events, per class
of triggered hits, and the events each takes out of or into the far tail."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "km3net_reconstruction" / "hit_probability.py"


def test_the_fits_are_paired_per_event_and_per_brightness(tmp_path):
    n_triggered = np.repeat([10, 40, 100], 30)  # three classes of 30 events
    plain = np.where(n_triggered == 10, 90.0, 3.0)  # the faint third lost without the term
    with_hits = plain.copy()
    with_hits[:12] = 5.0  # the term brings 12 faint events back
    with_hits[40] = 60.0  # and loses one bright one
    run = tmp_path / "run"
    run.mkdir()
    np.savez(run / "test_predictions.npz", **{
        "baseline/track_likelihood/angular_error_deg": plain,
        "baseline/track_likelihood/n_triggered": n_triggered,
        "baseline/track_likelihood_hit_probability/angular_error_deg": with_hits})
    out = subprocess.run([sys.executable, str(SCRIPT), "--runs", str(run), "--output-dir", str(tmp_path / "out"),
                          "--resamples", "300"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    rows = {line.split(" | ")[0].lstrip("| "): line for line in out.stdout.splitlines() if line.startswith("| ")}
    assert "| 3.00 (3.00-" in rows["likelihood fit"]
    assert "| 32.00 | 33.3 % | 33.3 % | 90.00, 100 %; 3.00, 0 %; 3.00, 0 % |" in rows["likelihood fit"]
    assert "| 90.00, 60 %; 3.00, 3 %; 3.00, 0 % |" in rows["likelihood fit with hit / no-hit"]
    assert ("12 events better by > 5 deg, 1 worse; of the 30 events beyond 45 deg without the term, 12 end within "
            "20 deg with it; 1 go the other way") in out.stdout
    summary = json.loads((tmp_path / "out" / "hit_probability.json").read_text())[0]
    assert summary["paired"]["median_difference"] == 0.0
    assert (tmp_path / "out" / "figures" / "hit_probability.png").stat().st_size > 0


def test_a_run_without_both_fits_is_one_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    np.savez(run / "test_predictions.npz", **{"baseline/track_likelihood/angular_error_deg": np.ones(5),
                                             "baseline/track_likelihood/n_triggered": np.ones(5)})
    out = subprocess.run([sys.executable, str(SCRIPT), "--runs", str(run), "--output-dir", str(tmp_path / "out")],
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert out.stderr.strip().count("\n") == 0
    assert "lacks baseline/track_likelihood or baseline/track_likelihood_hit_probability" in out.stderr
