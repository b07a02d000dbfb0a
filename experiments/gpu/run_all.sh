#!/usr/bin/env bash
# Every GPU claim of numl in one run of at most 9 minutes on one CUDA machine (issue 18); see README.md here.
#
#   experiments/gpu/run_all.sh                       # CUDA if torch sees it; JSON and log in experiments/gpu/results/
#   OUT_DIR=$OUT experiments/gpu/run_all.sh          # on the lent machine: results come back from $OUT
#   experiments/gpu/run_all.sh --device cpu --out-dir /tmp/check     # dry run on the CPU, tiny sizes
#
# Any other option goes to experiments/gpu/gpu_check.py (--skip SECTION..., --train-minutes M, --budget-s S, ...).
#
# First it installs what the machine lacks, without touching its torch: the wheels in .whl/ (made here by
# experiments/gpu/fetch_wheels.sh) whose distributions are not installed go to a private folder on PYTHONPATH,
# the unpacked CUDA builds (.whl/*.site.tar.xz, spconv) likewise, and numl itself with
# `pip install --no-deps --no-build-isolation --no-index -e .` if `import numl.conf` fails. Then gpu_check.py
# runs the sections, each with its own time limit. Writes <out dir>/gpu_check.json and <out dir>/gpu_check.log.
set -uo pipefail
T0=$(date +%s.%N)
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT" || exit 1

OUT_DIR="${OUT_DIR:-$ROOT/experiments/gpu/results}"
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out-dir) OUT_DIR="$2"; shift 2 ;;
    --out-dir=*) OUT_DIR="${1#*=}"; shift ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
LOG="$OUT_DIR/gpu_check.log"
: > "$LOG"
exec > >(tee -a "$LOG") 2>&1

if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"
else PY="$(command -v python3)"; fi
export NUML_CACHE="${NUML_CACHE:-$ROOT/.cache}"
export PYTHONUNBUFFERED=1
echo "[run_all] $(date -u +%FT%TZ) python $PY ($("$PY" -c 'import sys; print(sys.version.split()[0])')), out $OUT_DIR"
"$PY" -c 'import torch; print("[run_all] torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' \
  || { echo "[run_all] this python has no torch"; exit 1; }
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

INSTALLED=()
SITE="${NUML_SITE:-${TMPDIR:-/tmp}/numl_site}"
PYVER="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
WHEEL_PYVER="$(cat .whl/PYTHON_VERSION 2>/dev/null || echo 3.12)"
if [ -d .whl ] && [ "$PYVER" != "$WHEEL_PYVER" ]; then
  echo "[run_all] .whl/ holds wheels for Python $WHEEL_PYVER, this is $PYVER: not installing them"
elif [ -d .whl ]; then
  # distributions among .whl/*.whl and .whl/*.site.tar.xz that this python does not have
  mapfile -t MISSING < <("$PY" - <<'EOF'
import glob, importlib.metadata as md, os, re
for path in sorted(glob.glob(".whl/*.whl") + glob.glob(".whl/*.site.tar.xz")):
    name = re.split(r"-\d", os.path.basename(path), maxsplit=1)[0]
    try:
        md.version(name)
    except md.PackageNotFoundError:
        print(path)
EOF
)
  WHEELS=(); TARBALLS=()
  for f in ${MISSING[@]+"${MISSING[@]}"}; do
    case "$f" in *.whl) WHEELS+=("$f") ;; *.tar.xz) TARBALLS+=("$f") ;; esac
  done
  mkdir -p "$SITE"
  if [ ${#WHEELS[@]} -gt 0 ]; then
    echo "[run_all] installing ${#WHEELS[@]} wheels into $SITE: ${WHEELS[*]##*/}"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${WHEELS[@]}" \
      && INSTALLED+=("${WHEELS[@]##*/}") || echo "[run_all] pip install of the wheels failed"
  fi
  for t in ${TARBALLS[@]+"${TARBALLS[@]}"}; do
    echo "[run_all] unpacking $t into $SITE"
    # Python's tarfile and lzma: the machine need not have the xz program
    "$PY" -c 'import sys, tarfile
with tarfile.open(sys.argv[1]) as tar:
    tar.extractall(sys.argv[2], **({"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}))' \
      "$t" "$SITE" && INSTALLED+=("${t##*/}") || echo "[run_all] unpacking $t failed"
  done
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! "$PY" -c 'import numl.conf' 2>/dev/null; then
  echo "[run_all] installing numl (editable, no dependencies)"
  if "$PY" -m pip install -q --no-deps --no-build-isolation --no-index -e . ; then
    INSTALLED+=("numl (pip install -e)")
  else
    # numl.train finds its configs as the package numl.conf (setup.py maps conf/ to it); a link does the same
    echo "[run_all] pip install -e failed: linking numl/conf -> ../conf and putting the checkout on PYTHONPATH"
    ln -sfn ../conf numl/conf
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
    INSTALLED+=("numl (numl/conf link)")
  fi
fi
# names and versions only: alembic-1.20.1-py3-none-any.whl -> alembic-1.20.1
STATUS="installed: $(printf '%s\n' ${INSTALLED[@]+"${INSTALLED[@]}"} | sed -E 's/-(py3|cp3)[^ ]*\.whl$//; s/\.site\.tar\.xz$//' \
  | paste -sd ' ')"
[ ${#INSTALLED[@]} -gt 0 ] || STATUS="installed: nothing"
echo "[run_all] $STATUS ($(awk "BEGIN { printf \"%.0f\", $(date +%s.%N) - $T0 }") s)"

"$PY" experiments/gpu/gpu_check.py --out-dir "$OUT_DIR" --t0 "$T0" --install-status "$STATUS" ${ARGS[@]+"${ARGS[@]}"}
RC=$?
echo "[run_all] gpu_check.py exit code $RC; $OUT_DIR/gpu_check.json"
exit $RC
