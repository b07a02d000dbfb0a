# numl's environment in a container (POSIX sh, sourced): what numl, matplotlib, numba and W&B write goes to
# writable places, never into the image, which Apptainer mounts read-only.
# Sourced by docker/entrypoint.sh (Docker's ENTRYPOINT, Apptainer's runscript) and by numl.def's %environment.
#
# - Logs and data: paths.root_dir = $NUML_ROOT, else the working directory (Docker: /workspace, with logs/ and
#   data/ bind-mounted; Apptainer: the directory `apptainer run` is started from, mounted by default).
# - Caches (CAMB spectra in $XDG_CACHE_HOME/numl/camb, matplotlib, numba) and W&B's settings go under $HOME, as
#   outside a container: $NUML_CACHE or $XDG_CACHE_HOME when set, else $HOME/.cache. When $HOME is not writable
#   (Apptainer with `mount home = no` or --no-home, `docker run --user UID` without a home, a read-only root),
#   HOME becomes ${TMPDIR:-/tmp}/numl-home-<uid>: a cache that lasts as long as /tmp; bind a directory to keep it.
_numl_writable() { [ -n "$1" ] && [ -d "$1" ] && [ -w "$1" ]; }
if ! _numl_writable "${HOME:-}"; then
    _numl_home="${TMPDIR:-/tmp}/numl-home-$(id -u)"
    if mkdir -p "$_numl_home" 2>/dev/null && _numl_writable "$_numl_home"; then
        echo "numl: note: HOME=${HOME:-(unset)} is not writable: caches go to $_numl_home" >&2
        HOME="$_numl_home"
        export HOME
    fi
    unset _numl_home
fi
# numl's resolver, matplotlib and numba read the XDG variable; set it so that all three agree.
XDG_CACHE_HOME="${XDG_CACHE_HOME:-$HOME/.cache}"
export XDG_CACHE_HOME
# Nothing numl starts writes bytecode next to the installed sources.
PYTHONDONTWRITEBYTECODE=1
export PYTHONDONTWRITEBYTECODE
unset -f _numl_writable
