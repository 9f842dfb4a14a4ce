#!/usr/bin/env bash
# Set up and run every test (and the linter). Tests needing ../shared/data skip without it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/tools/bootstrap.sh" dev
cd "$root"
# The training extra (TensorFlow) lets the training-script test run; where no wheel
# exists for this machine that test skips instead. Once installed, pip (and the index)
# is not asked again.
has_tf='import importlib.util as u, sys; sys.exit(not u.find_spec("tensorflow"))'
if ! .venv/bin/python -c "$has_tf"; then
    .venv/bin/python -m pip install --quiet -e ".[train]" \
        || echo "TensorFlow unavailable here: training tests will skip" >&2
fi
# systemd-analyze verifies the unit file; a minimal CI image may lack it.
if ! command -v systemd-analyze >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -qq systemd >/dev/null 2>&1 \
        || echo "systemd-analyze unavailable: the unit verify test will skip" >&2
fi
.venv/bin/ruff check appliance tools tests
exec .venv/bin/python -m pytest "$@"
