#!/usr/bin/env bash
# Set up and run every test (and the linter). Tests needing ../shared/data skip without it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/tools/bootstrap.sh" dev
cd "$root"
.venv/bin/ruff check appliance tools tests
exec .venv/bin/python -m pytest "$@"
