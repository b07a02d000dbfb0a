"""experiments/gpu/run_all.sh (issue 18): the CPU dry run goes through every section and writes one JSON in which
each section has its numbers or says why it was skipped; asked for CUDA where there is none, it says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("prepare", "tests", "throughput_eager", "throughput_compile", "generation", "training", "tagger")


def _run_all(*args: str, tmp_path: Path, timeout: float) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run(["bash", "experiments/gpu/run_all.sh", "--out-dir", str(out),
                           "--work-dir", str(tmp_path / "work"), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    result = json.loads((out / "gpu_check.json").read_text()) if (out / "gpu_check.json").is_file() else {}
    return done, result


@pytest.mark.slow
def test_cpu_dry_run_writes_every_section_with_numbers_or_a_skip_reason(tmp_path):
    done, result = _run_all("--device", "cpu", "--tests-on-cpu", tmp_path=tmp_path, timeout=400)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert tuple(result["sections"]) == SECTIONS
    for name, record in result["sections"].items():
        assert record["status"] in ("ok", "skipped"), (name, record)
        if record["status"] == "skipped":
            assert record["reason"], name
    sections = result["sections"]
    assert sections["throughput_compile"]["status"] == "skipped"
    assert "torch.compile" in sections["throughput_compile"]["reason"]

    tests = sections["tests"]  # the gpu tests themselves, run on the CPU
    assert tests["passed"] >= 8 and tests["failed"] == tests["errors"] == 0, tests
    eager = sections["throughput_eager"]
    assert len(eager["numl_samples_per_s"]) == len(eager["plain_samples_per_s"]) == 2
    assert eager["numl_over_plain"] > 0 and eager["numl_over_plain_median"] > 0
    for side in ("numl", "plain"):
        split = eager["step_split_ms"][side]
        assert split["step"] > 0 and split["forward"] > 0 and split["backward"] > 0
    assert {"update_metrics", "log"} <= set(eager["step_split_ms"]["numl"])
    rows = sections["generation"]["rows"]
    assert [r["batch_size"] for r in rows] == [8, 64]
    assert all(0 < r["training_batch_share_of_step"] < 10 and r["gaussian_maps_per_s"] > 0 for r in rows)
    training = sections["training"]
    assert 0 <= training["cnn_test_accuracy"] <= 1 and 0.5 < training["likelihood_ratio_test_accuracy"] <= 1
    assert training["epochs"] >= 1 and training["max_time_s"] > 0
    tagger = sections["tagger"]
    assert [r["batch_size"] for r in tagger["rows"]] == [64, 1024]
    assert tagger["max_exported_events_per_s"] > 0
    assert all(r["max_abs_logit_difference"] == 0 for r in tagger["rows"])

    assert set(result["targets"]) == {"gpu_tests", "numl_over_plain_eager", "generation_share_of_step",
                                      "cnn_test_accuracy", "tagger_events_per_s"}
    assert all(t["device"] == "cpu" for t in result["targets"].values())
    assert result["wall_s"] < result["budget_s"]
    log = (tmp_path / "out" / "gpu_check.log").read_text()
    assert "[run_all]" in log and "section tagger: ok" in log


@pytest.mark.slow  # a python subprocess running numl end to end: with the slow tests
def test_asked_for_cuda_without_it_the_json_says_so(tmp_path):
    if __import__("torch").cuda.is_available():
        pytest.skip("this machine has CUDA")
    done, result = _run_all("--device", "cuda", tmp_path=tmp_path, timeout=120)
    assert done.returncode == 1
    assert tuple(result["sections"]) == SECTIONS
    assert all(r["status"] == "skipped" and "no CUDA device" in r["reason"] for r in result["sections"].values())
