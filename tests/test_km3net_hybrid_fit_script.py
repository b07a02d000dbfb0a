"""experiments/km3net_reconstruction/hybrid_fit.py: runs of one checkpoint merged into one seed, the hybrid's fit
alone beside its answer with the network's fallback, and the paired medians."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "km3net_reconstruction" / "hybrid_fit.py"


def tilted(angles_deg: np.ndarray) -> np.ndarray:
    """Unit vectors at these angles from +z (the true direction of every test event below)."""
    a = np.radians(angles_deg)
    return np.stack([np.sin(a), np.zeros_like(a), np.cos(a)], axis=1)


def write_run(run: Path, checkpoint: str, arrays: dict[str, np.ndarray], n: int, truth_z: float = 1.0) -> Path:
    run.mkdir()
    truth = np.tile([0.0, 0.0, truth_z], (n, 1))
    np.savez(run / "test_predictions.npz", **{"network/direction": truth, "network/log10_energy": np.full(n, 2.0)},
             **arrays)
    (run / "test_metrics.json").write_text(json.dumps({"checkpoint": checkpoint}))
    return run


def test_runs_of_one_checkpoint_merge_and_the_hybrid_shows_its_fit_alone(tmp_path):
    n = 200
    network = np.full(n, 10.0)
    fit = np.where(np.arange(n) < 150, 2.0, 90.0)  # the fit is precise on 3/4 of the events, lost on the rest
    answer = np.where(fit > 45.0, network, fit)  # the network answers where the fit left its cone
    first = write_run(tmp_path / "a", "seed7.ckpt", {
        "network/angular_error_deg": network, "network/direction_pred": tilted(network),
        "baseline/track_likelihood/angular_error_deg": fit, "baseline/track_likelihood/direction": tilted(fit)}, n)
    lost = fit > 45.0
    second = write_run(tmp_path / "b", "seed7.ckpt", {
        "network/angular_error_deg": network, "network/direction_pred": tilted(network),
        "network/n_hits": np.where(lost, 10, 50), "network/kappa_calibrated": np.where(lost, 5.0, 50.0),
        "baseline/track_likelihood_network_start/network_start_won": np.arange(n) < 50,
        "baseline/track_likelihood_network_start/angular_error_deg": answer,
        "baseline/track_likelihood_network_start/direction": tilted(answer),
        "baseline/track_likelihood_network_start/fit_direction": tilted(fit),
        "baseline/track_likelihood_network_start/network_fallback": lost,
        "baseline/track_likelihood_network_start/fit_ok": np.ones(n, dtype=bool)}, n)
    out = subprocess.run([sys.executable, str(SCRIPT), "--runs", str(first), str(second), "--output-dir",
                          str(tmp_path / "out"), "--resamples", "500"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    rows = {line.split(" | ")[0].lstrip("| "): line for line in out.stdout.splitlines() if line.startswith("| ")}
    assert "| 2.00 (2.00-2.00) | 24.00 | 25.0 % |" in rows["likelihood fit"]
    assert "| 2.00 (2.00-2.00) | 24.00 | 25.0 % |" in rows["likelihood fit from the network, the fit alone"]
    with_fallback = rows["likelihood fit from the network, network outside its 99 % cone"]
    assert "| 2.00 (2.00-2.00) | 4.00 | 0.0 % |" in with_fallback
    assert "the network's direction on 25 %" in out.stdout
    assert "the best likelihood from a network start on 25 %" in out.stdout
    # the cone recomputed from the fit's direction and the network's kappa: the lost fits are 80 deg from a network
    # of kappa 5, inside its 99 % cone (cdf 0.984) but outside its 90 % one; the good ones 8 deg from kappa 50
    assert ("by cone: 0.9: median 2.00, mean 4.00 deg, network 25 %; 0.95: median 2.00, mean 4.00 deg, network 25 %; "
            "0.99: median 2.00, mean 24.00 deg, network 0 %") in out.stdout
    assert ("the fit from the network beyond 45 deg on 25.0 % of the events: there the network saw 10 hits (median; "
            "50 on the others), its calibrated kappa is 5.0 (50.0) and its error 10.0 deg (10.0); the network's cone "
            "takes over 100 % of them") in out.stdout
    assert "the plain fit's answer on 100 % of the events" in out.stdout  # the fit alone is the plain fit here
    summary = json.loads((tmp_path / "out" / "hybrid_fit.json").read_text())
    paired = summary["seed7.ckpt"]["paired"]["baseline/track_likelihood_network_start - network"]
    assert paired["median_difference"] == -8.0 and paired["share_below_zero"] == 1.0
    assert (tmp_path / "out" / "figures" / "hybrid_fit.png").stat().st_size > 10_000

    other = write_run(tmp_path / "c", "seed7.ckpt", {"network/angular_error_deg": network,
                                                     "network/direction_pred": tilted(network)}, n, truth_z=-1.0)
    out = subprocess.run([sys.executable, str(SCRIPT), "--runs", str(first), str(other), "--output-dir",
                          str(tmp_path / "out")], capture_output=True, text=True)
    assert out.returncode != 0 and "has other test events than the other runs of seed7.ckpt" in out.stderr
