#!/usr/bin/env bash
# Downloads into .whl/ (gitignored) the packages numl needs that the lent CUDA machine lacks, for its Python 3.12
# on manylinux x86_64, so that experiments/gpu/run_all.sh can install them there without a network:
#
#   experiments/gpu/fetch_wheels.sh            # here, with network; then carry .whl in the device call
#
# What the machine has (torch 2.11 + CUDA 13, pytorch-lightning 2.6, torchmetrics, numpy, scipy, h5py, matplotlib,
# scikit-learn, rich, tensorboard, pytest, ...) is not fetched and is never replaced: run_all.sh installs only the
# distributions that python lacks. Left out on purpose: wandb (an optional logger), the km3net extra (km3io, ...).
#
# spconv-cu126 and cumm-cu126 (the CUDA 12.6 builds of spconv, which run on the CUDA 13 driver; spconv has no
# CUDA 13 build) are 97 MB as wheels, more than the 64 MiB a device call carries: they are unpacked and
# recompressed with xz as <name>-<version>.site.tar.xz (~30 MB), which run_all.sh unpacks into its site folder.
# The versions are those numl's CPU environment is tested with.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
DEST="${1:-.whl}"
PYVER=3.12
PY="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"

WHEELS=(
  hydra-core==1.3.8 omegaconf==2.3.1                                      # configs
  optuna==5.0.0 alembic==1.20.1 sqlalchemy==2.1.9 colorlog==6.12.0 mako==1.4.3   # numl's Optuna sweeper plugin
  hydra-submitit-launcher==1.2.0 submitit==1.5.4                          # SLURM launcher plugin
  captum==0.9.0                                                           # attributions
  camb==2.0.5                                                             # C_ell^kappa for the lensing maps
  pccm==0.4.16 ccimport==0.4.4 fire==0.7.1 termcolor==3.3.0 lark==1.3.1   # spconv's pure-Python needs
)
PURE_SDIST=(antlr4-python3-runtime==4.9.3)   # hydra-core's parser: on PyPI as a source archive only
CUDA_BUILDS=(spconv-cu126==2.3.8 cumm-cu126==0.7.11)

PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64; do
  PLATFORMS+=(--platform "$p")
done
mkdir -p "$DEST"
echo "$PYVER" > "$DEST/PYTHON_VERSION"
download() {
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    "${PLATFORMS[@]}" -d "$1" "${@:2}"
}
download "$DEST" "${WHEELS[@]}"
# a pure-Python source archive builds the same wheel for any Python 3
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$DEST" "${PURE_SDIST[@]}"

STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
for spec in "${CUDA_BUILDS[@]}"; do
  name="${spec%%==*}"; version="${spec##*==}"; dist="${name//-/_}"
  out="$DEST/$dist-$version.site.tar.xz"
  if [ -s "$out" ]; then echo "have $out"; continue; fi
  download "$STAGE/dl" "$spec"
  mkdir -p "$STAGE/site-$dist"
  "$PY" -m zipfile -e "$STAGE"/dl/"$dist"-"$version"-*.whl "$STAGE/site-$dist"
  echo "compressing $out (xz -9; a few minutes)"
  tar -C "$STAGE/site-$dist" -cf - . | xz -9 -T0 > "$out.tmp"
  mv "$out.tmp" "$out"
done

# one version of each distribution, or pip refuses the whole install there
dups=$(find "$DEST" -maxdepth 1 \( -name '*.whl' -o -name '*.site.tar.xz' \) -printf '%f\n' \
  | sed -E 's/-[0-9].*//' | tr 'A-Z-' 'a-z_' | sort | uniq -d)
if [ -n "$dups" ]; then echo "more than one version in $DEST of: $dups" >&2; exit 1; fi
echo "$DEST: $(du -sh "$DEST" | cut -f1) (a device call carries at most 64 MiB, the working tree included)"
find "$DEST" -maxdepth 1 -type f -printf '%10s  %f\n' | sort -k2
