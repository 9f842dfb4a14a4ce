#!/usr/bin/env bash
# Set up and run the appliance on the bundled demo clip; prints each change of emotion.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/tools/bootstrap.sh"
mkdir -p "$root/.cache/demo"
exec "$root/.venv/bin/emotion-appliance" run --source demo \
    --set storage.state_dir="$root/.cache/demo/state" \
    --set service.runtime_dir="$root/.cache/demo/run" "$@"
