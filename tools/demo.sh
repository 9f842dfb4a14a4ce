#!/usr/bin/env bash
# Set up and run the appliance on the bundled demo clip; prints each change of emotion,
# and - when the shared song catalog is at ../shared/data/catalog - the moods it sees and
# the songs it would queue (kept in the local queue: no Spotify account needed). In a
# terminal the clip plays in real time (70 s); DEMO_FAST=1 or a pipe runs it flat out.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/tools/bootstrap.sh"
demo="$root/.cache/demo"
rm -rf "$demo/state"  # every demo starts from an empty history
mkdir -p "$demo"
app="$root/.venv/bin/emotion-appliance"
settings=(
    --set storage.state_dir="$demo/state"
    --set service.runtime_dir="$demo/run"
    --set music.mood_hold_s=3
    --set music.min_interval_s=5
)
catalog="$root/../shared/data/catalog/spotify_tracks_sample.csv"
songs=0
if [ ! -f "$catalog" ]; then
    echo "(no song catalog at $catalog: moods and songs are skipped)"
# WARNING level keeps the import's INFO lines out of the demo, but not its errors and
# skipped rows; a failed import must not end the demo (set -e) without a word.
elif "$app" catalog import "$catalog" "${settings[@]}" --set logging.level=WARNING; then
    songs=1
else
    echo "(the song catalog import failed, see above: moods and songs are skipped)"
fi
# Watched in a terminal, the clip plays at its own pace (--realtime), so each change is
# printed when it happens, as with a live camera; piped or with DEMO_FAST=1 it runs as
# fast as the machine goes (the same changes and songs: they follow the clip's time).
pace=()
if [ -t 1 ] && [ -z "${DEMO_FAST:-}" ]; then
    pace=(--realtime)
fi
"$app" run --source demo "${settings[@]}" ${pace[@]+"${pace[@]}"} "$@"
if [ "$songs" = 1 ]; then
    echo "songs queued locally during the demo:"
    "$root/.venv/bin/python" - "$demo/state/appliance.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
for mood, artist, name in db.execute(
    "SELECT mood, artist, name FROM queue ORDER BY id DESC LIMIT 8"
).fetchall()[::-1]:
    print(f"  [{mood}] {artist} - {name}")
PY
fi
