#!/bin/sh
# numl's container entry point (Docker ENTRYPOINT, Apptainer runscript; `numl` on the image's PATH):
#   <image> COMMAND [ARGS...]   runs   python -m numl.COMMAND [ARGS...]
#   <image>                     runs   python -m numl.train (the default experiment)
#   <image> key=value ... / -m  runs   python -m numl.train key=value ... (Hydra overrides and flags)
#   <image> python|bash|sh ...  runs   that program (a shell, a script, pytest...)
# An unknown command is one line on stderr and exit code 2, like every numl usage error.
set -eu

COMMANDS="train evaluate simulate generate attribute export"
USAGE="usage: numl {$(echo "$COMMANDS" | tr ' ' '|')|python|bash|sh} [ARGS...] (no command: train)"

# Writable HOME and caches: the image may be read-only (Apptainer). env.sh lies beside this script.
here=$(dirname -- "$(readlink -f -- "$0")")
# shellcheck source=docker/env.sh
. "$here/env.sh"

if [ $# -eq 0 ]; then
    set -- train
fi

case "$1" in
    -h | --help | help)
        echo "$USAGE"
        echo "  train       python -m numl.train [overrides]      (e.g. experiment=lensing_cnn trainer=gpu)"
        echo "  evaluate    python -m numl.evaluate ckpt_path=... [overrides]"
        echo "  simulate    python -m numl.simulate experiment=... output=data/<file>.h5"
        echo "  generate    python -m numl.generate ckpt_path=<generator>.ckpt n=... output=data/<file>.h5"
        echo "  attribute   python -m numl.attribute ckpt_path=... attribution=..."
        echo "  export      python -m numl.export <run dir> [--format torchscript|onnx]"
        echo "  python, bash, sh: run that program; COMMAND --help: that command's own help"
        exit 0
        ;;
    python | python3 | bash | sh)
        exec "$@"
        ;;
    -* | *=*)
        # Hydra overrides or flags without a command (`<image> experiment=lensing_cnn`): train, as before.
        command=train
        ;;
    *)
        command=$1
        shift
        case " $COMMANDS " in
            *" $command "*) ;;
            *)
                echo "numl: error: unknown command '$command': must be one of $(echo "$COMMANDS" | sed 's/ /, /g'), python, bash, sh ($USAGE)" >&2
                exit 2
                ;;
        esac
        ;;
esac

cache=${NUML_CACHE:-$XDG_CACHE_HOME/numl}
if ! mkdir -p "$cache" 2>/dev/null || [ ! -w "$cache" ]; then
    echo "numl: error: cache directory $cache is not writable: bind a writable directory to HOME, or set NUML_CACHE or XDG_CACHE_HOME to one" >&2
    exit 2
fi
exec python -m "numl.$command" "$@"
