"""The owner's controls from a shell (SSH): what the song queue holds, clearing it, and
like/skip without buttons.

These commands run in their own process, beside the daemon or without one, and keep the
daemon's rules. `like` and `skip` take the buttons' path (feedback.FeedbackRecorder, with
source feedback.REMOTE_SOURCE): the press means the song the running daemon last heard
Spotify play, else the queue's guess, and it is committed (synchronous=FULL) before
anything else. Spotify's next-track for a skip is left to the daemon's sync worker, the
one writer of the Spotify state: it picks the committed row up within one poll, and says
in its status what it did (`remote_skip`), which `skip` waits for a little while.
Without a running daemon the press is stored all the same (history and recommendations
use it) and `skip` says that Spotify was not asked. `queue clear` withdraws the songs not
sent yet: they are marked, never deleted, and no like or skip is touched.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from appliance.common.process import still_running
from appliance.common.text import printable
from appliance.config import Config
from appliance.music.feedback import REMOTE_SOURCE, FeedbackRecorder
from appliance.music.outbox import Outbox
from appliance.music.sync import SKIP_STALE_MIN_S
from appliance.service.status import is_fresh, read_status, stale_after
from appliance.store.database import open_database

POLL_S = 0.2  # how often `skip` looks for the daemon's report
WHERE = {
    "sent": "on Spotify's queue",
    "sending": "pushed to Spotify, outcome being checked",
    "recommended": "waiting here, goes to Spotify as the listener reaches it",
}
LABEL = {"sent": "sent", "sending": "sending", "recommended": "waiting"}


def running_daemon(config: Config) -> dict[str, Any] | None:
    """The running daemon's last status snapshot; None when no daemon runs (no status,
    a stopped or failed one, a dead process, a stale file)."""
    snapshot = read_status(config.service.runtime_dir)
    if not snapshot or snapshot.get("state") not in ("starting", "running"):
        return None
    if still_running(snapshot) is False:
        return None
    if not is_fresh(snapshot, stale_after(config.service.status_interval_s)):
        return None
    return snapshot


def queue_report(config: Config) -> dict[str, Any]:
    """The user's songs not yet played (oldest first) and what plays, for `queue`."""
    user = config.music.user
    db = open_database(config.storage.state_dir, readonly=True)
    try:
        outbox = Outbox(db)
        rows = outbox.upcoming(user)
        seen = db.execute(
            "SELECT uri, name, artist, updated_at FROM queue WHERE user = ? AND state = 'played'"
            " AND error IS NULL ORDER BY updated_at DESC, id DESC LIMIT 1",
            [user],
        ).fetchone()
    finally:
        db.conn.close()
    live = running_daemon(config)
    playing = live.get("now_playing") if live else None
    return {
        "user": user,
        "daemon": "running" if live else "not running",
        "spotify": live.get("spotify") if live else None,
        "playing": playing if isinstance(playing, dict) else None,
        "last_seen_playing": (
            dict(zip(("uri", "name", "artist", "at"), seen, strict=True)) if seen else None
        ),
        "queue_ahead": config.music.queue_ahead,
        "songs_maybe_twice": live.get("songs_maybe_twice") if live else None,
        "songs": [
            {
                "id": row["id"],
                "state": row["state"],
                "uri": row["uri"],
                "name": row["name"],
                "artist": row["artist"],
                "mood": row["mood"],
                "queued_at": row["created_at"],
                "updated_at": row["updated_at"],
            }
            for row in rows
        ],
    }


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    local = time.localtime(t)
    same_day = time.strftime("%Y-%m-%d", local) == time.strftime("%Y-%m-%d")
    return time.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M", local)


def format_queue(report: dict[str, Any]) -> str:
    lines = []
    playing = report["playing"]
    if playing:
        lines.append(f"playing  {playing.get('artist')} - {playing.get('name')}  (Spotify)")
    elif report["daemon"] == "running":
        lines.append("playing  nothing, as far as Spotify says")
    else:
        seen = report["last_seen_playing"]
        last = f"; last seen playing at {_when(seen['at'])}: {seen['artist']} - {seen['name']}"
        lines.append(f"playing  unknown: no daemon running{last if seen else ''}")
    for song in report["songs"]:
        label = LABEL.get(song["state"], song["state"])
        since = song["updated_at"] if song["state"] != "recommended" else song["queued_at"]
        lines.append(
            f"{label:<8} {_when(since):>8}  [{song['mood']}] {song['artist']} - {song['name']}"
            f"  ({WHERE.get(song['state'], song['state'])})"
        )
    counts = {state: 0 for state in LABEL}
    for song in report["songs"]:
        counts[song["state"]] = counts.get(song["state"], 0) + 1
    summary = (
        f"{len(report['songs'])} song(s) not played yet: {counts['sent']} sent,"
        f" {counts['sending']} sending, {counts['recommended']} waiting here"
        f" (at most {report['queue_ahead']} of ours wait on Spotify at once)"
    )
    if report["daemon"] == "running":
        summary += f"; Spotify {report['spotify']}"
        if report.get("songs_maybe_twice"):
            summary += f"; {report['songs_maybe_twice']} may have played twice"
    lines.append(summary)
    # titles and artists came from a catalog CSV or from Spotify: shown, never obeyed
    return "\n".join(map(printable, lines))


def clear_queue(config: Config) -> tuple[int, int]:
    """Withdraw the user's songs not sent yet: (withdrawn, still on Spotify's queue)."""
    db = open_database(config.storage.state_dir)
    try:
        db.execute("PRAGMA synchronous = FULL")
        outbox = Outbox(db)
        cleared = outbox.clear(config.music.user)
        left = [s for s in outbox.upcoming(config.music.user) if s["state"] != "recommended"]
    finally:
        db.conn.close()
    return cleared, len(left)


def press(
    config: Config,
    action: str,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[bool, str]:
    """A like or skip from the shell: (stored, what happened, in words). Raises
    StoreError when the press could not be stored."""
    live = running_daemon(config)
    playing = live.get("now_playing") if live else None
    recorder = FeedbackRecorder(
        config.storage.state_dir,
        config.music.user,
        now_playing=lambda: playing if isinstance(playing, dict) else None,
        source=REMOTE_SOURCE,
    )
    row = recorder.press(action)
    if row is None:
        return False, f"{action}: no song known yet (nothing queued or played): nothing stored"
    if isinstance(playing, dict) and playing.get("uri") == row["uri"]:
        song = f"{playing.get('artist')} - {playing.get('name')}"
    else:
        song = _song_name(config, row["uri"])
    stored = f"{action}: {song} (stored)"
    if action != "skip":
        return True, stored
    if live is None:
        return True, f"{stored}; no daemon is running, so Spotify was not asked to skip"
    if live.get("spotify") in (None, "local only"):
        return True, f"{stored}; Spotify is not configured, so there is nothing to skip there"
    # the daemon runs it within a poll, or drops it as stale; its status tells which
    poll_s = config.spotify.poll_s
    wait_s = max(2 * poll_s, SKIP_STALE_MIN_S) + 2 * config.service.status_interval_s + 1
    deadline = clock() + wait_s
    while clock() < deadline:
        report = (read_status(config.service.runtime_dir) or {}).get("remote_skip")
        if isinstance(report, dict) and report.get("id") == row["id"]:
            return True, f"{stored}; {report.get('result')}"
        sleep(POLL_S)
    return True, (
        f"{stored}; the daemon has not asked Spotify within {wait_s:.0f} s (Spotify"
        f" {live.get('spotify')}): the skip is dropped rather than skip a later song"
    )


def _song_name(config: Config, uri: str) -> str:
    db = open_database(config.storage.state_dir, readonly=True)
    try:
        found = db.execute(
            "SELECT artist, name FROM tracks WHERE uri = ? UNION ALL"
            " SELECT artist, name FROM queue WHERE uri = ? LIMIT 1",
            [uri, uri],
        ).fetchone()
    finally:
        db.conn.close()
    return f"{found[0]} - {found[1]}" if found else uri
