"""What a numl container installs before numl itself: the requirement and constraint files of its dependency layer.

    python requirements.py pyproject.toml OUT_DIR      (writes OUT_DIR/requirements.txt, OUT_DIR/constraints.txt)

Run by the Dockerfile and by numl.def (%post) with the image's Python, before numl's code is copied in, so
that the dependency layer is rebuilt only when pyproject.toml changes.

- requirements.txt: numl's dependencies and those of every extra that the code uses at run time (all extras
  but `dev`, the repository's test and lint tools, and `all`, which only names the others). The `sparse`
  extra's `spconv` is the CPU-only build on PyPI; on a CUDA torch it is replaced by the spconv wheel built
  for the CUDA release of that torch (spconv-cu126 for torch 2.7.1+cu126), which provides the same `spconv`
  module. `SPCONV_PACKAGE=<name>` picks another one.
- constraints.txt: the torch packages already installed, pinned to their installed versions, so that pip
  keeps the base image's CUDA build instead of replacing it with another from PyPI (a dependency that needs
  another torch makes the install fail, not the torch silently change).

Only the standard library (Python >= 3.11: tomllib) and importlib.metadata: nothing is imported from the
packages it describes, torch included, so it runs before anything is installed.
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

# Extras that do not go into an image: `dev` (pytest, ruff, hadolint: the repository's tools; the image
# has no tests) and `all` (the union of the others).
NOT_IN_IMAGE = ("dev", "all")

# spconv's CUDA wheels on PyPI (spconv-cuXYZ), newest first. CUDA's minor-version compatibility lets a
# wheel built for 12.x run with any 12.y >= 12.x runtime and driver, so a torch built for CUDA 12.8 gets
# cu126 (there is no spconv-cu128).
SPCONV_CUDA_BUILDS = ((12, 6), (12, 4), (12, 1), (12, 0), (11, 8), (11, 7), (11, 6), (11, 4), (11, 3))

# The torch distributions whose installed version is kept when they are installed.
TORCH_PACKAGES = ("torch", "torchvision", "torchaudio", "triton")


def _name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def image_extras(pyproject: dict) -> list[str]:
    """The extras that an image installs: every one but those in NOT_IN_IMAGE."""
    extras = pyproject["project"].get("optional-dependencies", {})
    return [name for name in extras if name not in NOT_IN_IMAGE]


def torch_cuda_version() -> tuple[int, int] | None:
    """(major, minor) of the CUDA release the installed torch was built for, from its version's local label
    (2.7.1+cu126); None for a CPU build or no torch."""
    try:
        version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None
    match = re.search(r"\+cu(\d+)(\d)$", version)
    if match is None:
        # A torch without the label (e.g. from conda): the CUDA runtime pip package it depends on.
        for requirement in metadata.requires("torch") or []:
            runtime = re.match(r"nvidia-cuda-runtime-cu(\d+)\s*[=~<>!]*\s*(\d+)\.(\d+)", requirement)
            if runtime:
                return int(runtime.group(2)), int(runtime.group(3))
        return None
    return int(match.group(1)), int(match.group(2))


def spconv_package(cuda: tuple[int, int] | None) -> str:
    """The spconv distribution for a torch built for `cuda` (None: CPU): `spconv` or `spconv-cuXYZ`."""
    if os.environ.get("SPCONV_PACKAGE"):
        return os.environ["SPCONV_PACKAGE"]
    if cuda is None:
        return "spconv"
    for build in SPCONV_CUDA_BUILDS:
        if build[0] == cuda[0] and build <= cuda:
            return f"spconv-cu{build[0]}{build[1]}"
    raise SystemExit(
        f"requirements.py: no spconv build on PyPI for CUDA {cuda[0]}.{cuda[1]} "
        f"(builds: {', '.join(f'{a}.{b}' for a, b in SPCONV_CUDA_BUILDS)}); set SPCONV_PACKAGE=<distribution>"
    )


def requirements(pyproject: dict, cuda: tuple[int, int] | None) -> list[str]:
    """numl's dependencies plus those of every image extra, spconv replaced by the build for `cuda`."""
    project = pyproject["project"]
    lines = list(project["dependencies"])
    for extra in image_extras(pyproject):
        for requirement in project["optional-dependencies"][extra]:
            if _name(requirement) == "numl":
                continue
            if _name(requirement) == "spconv":
                # Same version bound, another distribution of the same module.
                requirement = spconv_package(cuda) + requirement.strip()[len("spconv"):]
            lines.append(requirement)
    return lines


def torch_constraints() -> list[str]:
    """`name==installed version` for every installed torch package."""
    pins = []
    for name in TORCH_PACKAGES:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return pins


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    pyproject = tomllib.loads(Path(argv[0]).read_text())
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    cuda = torch_cuda_version()
    (out / "requirements.txt").write_text("\n".join(requirements(pyproject, cuda)) + "\n")
    (out / "constraints.txt").write_text("\n".join(torch_constraints()) + "\n")
    torch_label = "CPU or no torch" if cuda is None else f"CUDA {cuda[0]}.{cuda[1]}"
    print(f"requirements.py: extras {', '.join(image_extras(pyproject))}; torch: {torch_label}; "
          f"kept: {', '.join(torch_constraints()) or 'nothing'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
