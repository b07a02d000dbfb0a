"""experiments/km3net_reconstruction/network_vs_fits.py: the network / fit median ratio of the issue's target, with
its paired bootstrap, from a run's test_predictions.npz."""

import subprocess
import sys
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "km3net_reconstruction" / "network_vs_fits.py"


def write_run(run: Path, network_deg: np.ndarray, fits: dict[str, np.ndarray], log10_energy: np.ndarray) -> Path:
    run.mkdir()
    directions = np.tile([0.0, 0.0, 1.0], (len(network_deg), 1))
    np.savez(run / "test_predictions.npz", **{"network/angular_error_deg": network_deg,
                                              "network/direction": directions,
                                              "network/log10_energy": log10_energy},
             **{f"baseline/{name}/angular_error_deg": errors for name, errors in fits.items()})
    return run


def run_script(*args: Path | str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def test_ratio_and_its_bootstrap_per_energy_bin(tmp_path):
    rng = np.random.default_rng(1)
    n = 400
    fit = rng.exponential(10.0, n)
    # the network half as far off as the chi-square fit; the likelihood fit as good as the network
    run = write_run(tmp_path / "seed7", 0.5 * fit, {"track_fit": fit, "track_likelihood": 0.5 * fit},
                    np.log10(np.where(np.arange(n) < n // 2, 70.0, 300.0)))
    result = run_script("--run", run, "--resamples", "500")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "400 test events" in lines[0]
    chi2 = [line for line in lines if "chi-square fit" in line and "network / fit" in line]
    likelihood = [line for line in lines if "likelihood fit" in line and "network / fit" in line]
    # all events and the bins 50-100 and 200-500 GeV (100-200 GeV has none)
    assert len(chi2) == 3 and len(likelihood) == 3
    assert all("network / fit 0.50" in line and "<= 0.7: 100 %" in line for line in chi2)
    assert all("network / fit 1.00" in line and "<= 0.7: 0 %" in line for line in likelihood)
    assert any(line.startswith("50-100 GeV (200 events)") for line in lines)
    assert not any(line.startswith("100-200 GeV") for line in lines)  # no event there: no line


def test_another_seed_must_have_the_same_test_events(tmp_path):
    errors = np.linspace(1.0, 20.0, 50)
    run = write_run(tmp_path / "seed7", errors, {"track_fit": errors}, np.full(50, 2.0))
    other = write_run(tmp_path / "seed8", errors, {}, np.full(50, 2.0))
    predictions = dict(np.load(other / "test_predictions.npz"))
    predictions["network/direction"] = predictions["network/direction"][::-1] * [1.0, 1.0, -1.0]
    np.savez(other / "test_predictions.npz", **predictions)
    result = run_script("--run", run, "--also", other)
    assert result.returncode != 0 and "other test events" in result.stderr


def test_a_run_without_fits_is_refused_in_one_line(tmp_path):
    run = write_run(tmp_path / "seed8", np.ones(10), {}, np.full(10, 2.0))
    result = run_script("--run", run)
    assert result.returncode != 0 and "has no fit" in result.stderr


def test_two_seeds_average_their_medians_and_events_without_a_fit_are_left_out(tmp_path):
    n = 300
    fit = np.full(n, 10.0)
    fit[:30] = np.nan  # fits with max_events leave the rest NaN
    energy = np.full(n, np.log10(70.0))
    run = write_run(tmp_path / "seed7", np.full(n, 4.0), {"track_fit": fit}, energy)
    other = write_run(tmp_path / "seed8", np.full(n, 6.0), {}, energy)
    result = run_script("--run", run, "--also", other, "--resamples", "200")
    assert result.returncode == 0, result.stderr
    assert "270 test events scored by every fit" in result.stdout
    assert "network median 5.00 deg" in result.stdout and "network / fit 0.50" in result.stdout
    assert "network, run 1: median 4.00" in result.stdout and "network, run 2: median 6.00" in result.stdout
