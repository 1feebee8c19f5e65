#!/usr/bin/env bash
# Creates (once) the Python venv used by tests and fixture generation, installs tools/requirements.txt
# into it whenever that file changes, and prints the venv's python path as the last line of stdout.
#
#   venv dir: ${ONNX_REWRITE_VENV:-<repo>/target/pyenv}
#   usage:    PY=$(tools/venv.sh | tail -n1); "$PY" tools/check_model.py model.onnx
#
# Idempotent and safe to run concurrently (serialised with flock on <venv>.lock).
# All installer output goes to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
venv="${ONNX_REWRITE_VENV:-$repo/target/pyenv}"
req="$here/requirements.txt"
python="${PYTHON:-python3}"

mkdir -p "$(dirname "$venv")"
lock="$venv.lock"

{
    flock -x 9

    want="$(sha256sum "$req" | cut -d' ' -f1)"
    stamp="$venv/.requirements.sha256"

    if [ ! -x "$venv/bin/python" ]; then
        echo "venv.sh: creating $venv" >&2
        rm -rf "$venv"
        "$python" -m venv "$venv" >&2
    fi

    have="$(cat "$stamp" 2>/dev/null || true)"
    if [ "$have" != "$want" ]; then
        echo "venv.sh: installing $req into $venv" >&2
        rm -f "$stamp"
        "$venv/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$req" >&2
        printf '%s\n' "$want" > "$stamp.tmp"
        mv "$stamp.tmp" "$stamp"
    fi
} 9>"$lock"

echo "$venv/bin/python"
