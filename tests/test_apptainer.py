"""numl.def, the Apptainer definition, for a read-only image.

There is no apptainer here (Debian bookworm has no package), so nothing builds the image. What is checked:
- the file parses as Apptainer parses it (header, known sections), starts from the Dockerfile's base image,
  copies what the Dockerfile copies, and its runscript is the Docker image's entry point;
- its %post commands run for real, in a fresh venv standing in for the base image's Python, with the %files laid
  out as `apptainer build` lays them (cp -fLr), and install a numl that runs (slow);
- its %environment, run by sh as Apptainer sources it, sends numl's cache to $HOME, or to /tmp when HOME is not
  writable, never into the image: numl's own cache-directory resolution under those variables;
- a run in a read-only "image" (the checkout and its venv bind-mounted read-only, HOME a read-only mount, in a
  private mount namespace): only the working directory and the /tmp fallback are written (slow; root only).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import compose_config, venv_seeing_this_environment
from tests.test_dockerfile import _copies, _instructions, base_image

ROOT = Path(__file__).resolve().parents[1]
DEFINITION = ROOT / "numl.def"

# Apptainer's parser (pkg/build/types/parser/deffile.go): these sections and header keys, no others.
SECTIONS = {"help", "setup", "files", "labels", "environment", "pre", "post", "runscript", "test", "startscript",
            "arguments"}
HEADER_KEYS = {"bootstrap", "from", "stage", "registry", "namespace", "includecmd", "mirrorurl", "osversion",
               "include", "confurl", "updateurl", "product", "user", "regcode", "productpgp", "registerurl",
               "modules", "otherurl0", "fingerprints"}
# Where numl.def puts things in the image; the tests move them under a directory of their own.
IMAGE_PATHS = ("/opt/numl", "/usr/local/bin")


def parse_definition(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """(header, sections) as Apptainer splits a definition: a section starts at a line whose first word
    starts with %; the header is what comes before the first one (key: value, # comments)."""
    header: dict[str, str] = {}
    sections: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        words = line.split()
        if words and words[0].startswith("%"):
            current = words[0][1:].lower()
            assert current not in sections, f"%{current} twice"
            sections[current] = ""
        elif current is not None:
            sections[current] += line + "\n"
        elif line.strip() and not line.strip().startswith("#"):
            key, sep, value = line.split("#")[0].partition(":")
            assert sep, f"header line without a colon: {line!r}"
            header[key.strip().lower()] = value.strip()
    return header, sections


HEADER, SECTIONS_TEXT = parse_definition(DEFINITION.read_text())


def _files() -> list[tuple[str, str]]:
    pairs = []
    for line in SECTIONS_TEXT["files"].splitlines():
        if line.strip() and not line.strip().startswith("#"):
            src, dst = line.split()
            pairs.append((src, dst))
    return pairs


def _relocate(script: str, root: Path) -> str:
    """The section with the image's paths moved under root."""
    for path in IMAGE_PATHS:
        script = script.replace(path, f"{root}{path}")
    for line in script.splitlines():
        # Nothing else absolute may be written to by the test (a path not moved would be this machine's).
        assert not re.search(r"\b(rm|ln|mkdir|chmod|cp|mv)\b.*\s/(?!opt/conda)", line.replace(str(root), "ROOT")), line
    return script


def _lay_out_files(root: Path) -> None:
    """%files as `apptainer build` copies them: parents created, then cp -fLr from the build directory."""
    for src, dst in _files():
        target = Path(f"{root}{dst}")
        target.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-fLr", src, str(target)], cwd=ROOT, check=True)


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUML_CACHE", "XDG_CACHE_HOME", "NUML_ROOT", "PYTHONPATH", "MPLCONFIGDIR", "TMPDIR")}
    env.update(extra)
    return env


# --- the file ---------------------------------------------------------------------------------------------------

def test_definition_parses_and_starts_from_the_dockerfiles_base():
    assert set(HEADER) <= HEADER_KEYS
    assert HEADER["bootstrap"] == "docker"
    assert HEADER["from"] == base_image()
    assert set(SECTIONS_TEXT) <= SECTIONS
    assert {"files", "post", "environment", "runscript", "test", "help", "labels"} <= set(SECTIONS_TEXT)


def test_files_are_what_the_dockerfile_copies():
    sources = [src for src, _ in _files()]
    assert len(sources) == len(set(sources))
    docker_sources = {s for srcs, _ in _copies() for s in srcs}
    assert set(sources) == docker_sources
    for src, dst in _files():
        assert (ROOT / src).exists(), src
        assert dst.startswith("/opt/numl/"), dst
    # The entry point and its environment where the Docker image has them.
    assert ("docker/entrypoint.sh", "/opt/numl/entrypoint.sh") in _files()
    assert ("docker/env.sh", "/opt/numl/env.sh") in _files()


def test_post_installs_as_the_dockerfile_does():
    post = SECTIONS_TEXT["post"]
    assert post.lstrip().startswith("set -eu")
    assert re.search(r"python requirements\.py pyproject\.toml", post)
    assert re.search(r"pip install .*-r \S*requirements\.txt -c \S*constraints\.txt", post)
    assert re.search(r"pip install .*--no-deps /opt/numl/src", post)
    assert "ln -sf /opt/numl/entrypoint.sh /usr/local/bin/numl" in post
    assert "rm -rf /opt/numl/src" in post
    docker_runs = " ".join(v for k, v in _instructions() if k == "RUN")
    assert "requirements.py pyproject.toml" in docker_runs and "--no-deps ." in docker_runs


def test_runscript_is_the_docker_entrypoint():
    assert SECTIONS_TEXT["runscript"].split() == ["exec", "/opt/numl/entrypoint.sh", '"$@"']
    assert ". /opt/numl/env.sh" in SECTIONS_TEXT["environment"]


def test_nothing_in_the_environment_points_into_the_image():
    environment = SECTIONS_TEXT["environment"]
    for key in ("NUML_ROOT", "NUML_CACHE", "XDG_CACHE_HOME", "MPLCONFIGDIR", "HOME"):
        assert not re.search(rf"\b{key}=/(opt|usr|workspace)", environment), key


# --- %environment: where numl's cache goes ----------------------------------------------------------------------

def _environment(tmp_path: Path, env: dict[str, str]) -> tuple[dict[str, str], str]:
    """The variables after sourcing %environment with sh, as Apptainer does at run time; and its stderr."""
    root = tmp_path / "image"
    if not root.exists():
        _lay_out_files(root)
    script = _relocate(SECTIONS_TEXT["environment"], root) + "\nenv -0\n"
    done = subprocess.run(["sh", "-c", script], env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    pairs = [item.split("=", 1) for item in done.stdout.decode().split("\0") if "=" in item]
    return dict(pairs), done.stderr.decode()


def _numl_cache_dir(monkeypatch, tmp_path: Path, env: dict[str, str]) -> str:
    """numl's CAMB cache directory (paths.cache_dir -> data.cache_dir) under env."""
    for key in ("NUML_CACHE", "XDG_CACHE_HOME", "HOME"):
        if key in env:
            monkeypatch.setenv(key, env[key])
        else:
            monkeypatch.delenv(key, raising=False)
    return compose_config("train", ["experiment=lensing_cnn"], tmp_path / "out").data.cache_dir


def test_cache_goes_to_home_when_it_is_writable(monkeypatch, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env, stderr = _environment(tmp_path, _clean_env(HOME=str(home)))
    assert env["HOME"] == str(home) and env["XDG_CACHE_HOME"] == str(home / ".cache")
    assert stderr == ""
    assert _numl_cache_dir(monkeypatch, tmp_path, env) == str(home / ".cache" / "numl" / "camb")


def test_cache_goes_to_tmp_when_home_is_not_writable(monkeypatch, tmp_path):
    # HOME not mounted in the image (`mount home = no`, --no-home): it does not exist and cannot be made.
    blocker = tmp_path / "file"
    blocker.write_text("")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env, stderr = _environment(tmp_path, _clean_env(HOME=str(blocker / "home"), TMPDIR=str(tmp)))
    fallback = tmp / f"numl-home-{os.getuid()}"
    assert env["HOME"] == str(fallback) and fallback.is_dir()
    assert stderr.splitlines() == [f"numl: note: HOME={blocker / 'home'} is not writable: caches go to {fallback}"]
    assert _numl_cache_dir(monkeypatch, tmp_path, env) == str(fallback / ".cache" / "numl" / "camb")


def test_users_cache_settings_are_kept(monkeypatch, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env, _ = _environment(tmp_path, _clean_env(HOME=str(home), XDG_CACHE_HOME=str(tmp_path / "xdg")))
    assert _numl_cache_dir(monkeypatch, tmp_path, env) == str(tmp_path / "xdg" / "numl" / "camb")
    env, _ = _environment(tmp_path, _clean_env(HOME=str(home), NUML_CACHE=str(tmp_path / "team")))
    assert _numl_cache_dir(monkeypatch, tmp_path, env) == str(tmp_path / "team" / "camb")


# --- %post, run ---------------------------------------------------------------------------------------------------

def _run_post(root: Path, path_first: Path, timeout: float) -> subprocess.CompletedProcess:
    """%post relocated under root, run by sh -e as `apptainer build` runs it, `python` from path_first."""
    script = _relocate(SECTIONS_TEXT["post"], root)
    env = _clean_env(PATH=f"{path_first}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(["sh", "-e", "-c", script], cwd=root, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_a_failing_post_command_fails_the_build(tmp_path):
    # The harness below must see a failure: a `python` that fails stops %post at its first use.
    root = tmp_path / "image"
    _lay_out_files(root)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text("#!/bin/sh\necho broken python >&2\nexit 3\n")
    (bin_dir / "python").chmod(0o755)
    done = _run_post(root, bin_dir, timeout=60)
    assert done.returncode == 3, done.stderr
    assert (root / "opt" / "numl" / "src").is_dir()  # nothing after the failing command ran


@pytest.mark.slow
def test_post_installs_a_numl_that_runs(tmp_path):
    # A fresh venv stands in for the base image's Python: it sees this environment's packages (torch among them,
    # as the image has its CUDA torch) through a .pth line, which does not run that site's .pth files, so the
    # editable numl stays out; %post must install numl itself, and its dependency step must find everything.
    python, site = venv_seeing_this_environment(tmp_path)
    venv = python.parent.parent
    assert subprocess.run([str(python), "-c", "import numl"], cwd=tmp_path, capture_output=True).returncode != 0

    root = tmp_path / "image"
    _lay_out_files(root)
    (root / "usr" / "local" / "bin").mkdir(parents=True)  # as in the base image
    done = _run_post(root, venv / "bin", timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "requirements.py: extras km3net, sparse" in done.stdout
    assert not (root / "opt" / "numl" / "src").exists()
    numl_command = root / "usr" / "local" / "bin" / "numl"
    assert numl_command.is_symlink() and numl_command.resolve() == (root / "opt" / "numl" / "entrypoint.sh")

    # The installed numl, from another directory, through the image's command and %test.
    work = tmp_path / "work"
    (work / "home").mkdir(parents=True)
    env = _clean_env(PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", HOME=str(work / "home"))
    where = subprocess.run([str(numl_command), "python", "-c", "import numl.conf; print(numl.conf.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(site)
    job = subprocess.run([str(numl_command), "train", "experiment=lensing_cnn", "--cfg", "job"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=300)
    assert job.returncode == 0, job.stderr[-3000:]
    assert OmegaConf.create(job.stdout).task_name == "lensing_cnn"
    test_section = subprocess.run(["sh", "-e", "-c", _relocate(SECTIONS_TEXT["test"], root)], cwd=work, env=env,
                                  capture_output=True, text=True, timeout=120)
    assert test_section.returncode == 0, test_section.stderr


# --- a read-only image, for real ---------------------------------------------------------------------------------

def _can_make_mount_namespaces() -> bool:
    try:
        return subprocess.run(["unshare", "--mount", "true"], capture_output=True, timeout=30).returncode == 0
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _can_make_mount_namespaces(), reason="needs `unshare --mount` (root)")
def test_run_in_a_read_only_image_writes_only_outside_it(tmp_path):
    # In a private mount namespace: the checkout and its venv (the image: code and Python) read-only, HOME a
    # read-only mount (as a site whose HOME is not mounted), the working directory and TMPDIR writable (Apptainer
    # mounts the working directory and /tmp). The entry point sources env.sh; the run must succeed, its logs in
    # the working directory, the CAMB cache in the /tmp fallback; the probes show the mounts are read-only.
    home, work, tmp = tmp_path / "home", tmp_path / "work", tmp_path / "tmp"
    for d in (home, work, tmp):
        d.mkdir()
    script = f"""
set -eu
mount -t tmpfs -o ro,size=1m tmpfs {home}
mount --bind {ROOT} {ROOT}
mount -o remount,bind,ro {ROOT}
if touch {home}/probe 2>/dev/null || touch {ROOT}/.read_only_probe 2>/dev/null; then
    echo "not read-only" >&2; exit 99
fi
cd {work}
exec {ROOT}/docker/entrypoint.sh train experiment=lensing_cnn debug=fast_dev_run
"""
    env = _clean_env(HOME=str(home), TMPDIR=str(tmp), PATH=f"{Path(sys.executable).parent}{os.pathsep}"
                     f"{os.environ['PATH']}", OMP_NUM_THREADS="1")
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    fallback = tmp / f"numl-home-{os.getuid()}"
    assert f"numl: note: HOME={home} is not writable: caches go to {fallback}" in done.stderr.splitlines()
    (run_dir,) = (work / "logs" / "lensing_cnn" / "runs").iterdir()
    assert (run_dir / "test_metrics.json").is_file()
    assert list((fallback / ".cache" / "numl" / "camb").glob("cl_kappa_*.npz"))
    assert not (ROOT / ".read_only_probe").exists()
    assert sorted(p.name for p in work.iterdir()) == ["logs"]
