"""Like/skip presses: which song they mean, stored durably before anything else happens.

A press means the song playing now: Spotify's currently-playing as the sync worker last
heard it (kept through failed polls for sync.NOW_PLAYING_FRESH_S, about one song), else
a guess from the song queue: the song last seen playing, else the newest one sent to the
player, else the last one recommended. The feedback row is
committed with synchronous=FULL before the press is acknowledged, so it survives a
crash or a power cut the moment after; skip then marks the song skipped and asks the
sync worker for Spotify's next-track.

Presses from another process (`emotion-appliance like` / `skip` over SSH) take the same
path with source REMOTE_SOURCE: the row is committed first, and the committed skip row
is itself the command the daemon's sync worker picks up (`remote_skips`) to ask Spotify
for the next track; it reports what became of it in status.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable

from appliance.music.outbox import Outbox
from appliance.store.database import StoreError, open_database, write_transaction
from appliance.store.samples import stream_stamp

log = logging.getLogger(__name__)

ACTIONS = ("like", "skip")
REMOTE_SOURCE = "cli"  # presses stored by another process; the daemon acts on its skips


class FeedbackRecorder:
    def __init__(
        self,
        state_dir: str,
        user: str,
        *,
        now_playing: Callable[[], dict | None] = lambda: None,
        request_next: Callable[[], None] = lambda: None,
        source: str = "gpio",
    ) -> None:
        self.state_dir = state_dir
        self.user = user
        self.now_playing = now_playing
        self.request_next = request_next
        self.source = source
        self._lock = threading.Lock()  # presses come from GPIO callback threads

    def press(self, action: str, source: str | None = None) -> dict | None:
        """Record a like or skip of the current song; returns the stored row (None: no
        song known yet). `source` says where it came from (gpio, cli, mqtt; default the
        recorder's own). Raises StoreError when the press could not be stored."""
        if action not in ACTIONS:
            raise ValueError(f"unknown feedback {action!r}; expected like or skip")
        with self._lock:
            db = open_database(self.state_dir)
            try:
                db.execute("PRAGMA synchronous = FULL")  # a press is rare and precious
                outbox = Outbox(db)
                track = self._current(db, outbox)
                if track is None:
                    log.info("%s pressed, but no song is known yet", action)
                    return None
                now = time.time()
                run_id, t_stream = stream_stamp(db, now)  # the run's clock, if one runs
                row = {
                    "user": self.user,
                    "uri": track["uri"],
                    "artist": track.get("main_artist") or track.get("artist"),
                    "action": action,
                    "t": now,
                    "source": source or self.source,
                    "run_id": run_id,
                    "t_stream": t_stream,
                }
                with write_transaction(db):  # the press and the skipped mark: both or none
                    row["id"] = db["feedback"].insert(row).last_pk
                    if action == "skip":
                        db.execute(
                            "UPDATE queue SET state = 'skipped', updated_at = ? WHERE"
                            " user = ? AND uri = ? AND state IN ('sent', 'played',"
                            " 'recommended')",
                            [row["t"], self.user, track["uri"]],
                        )
            except sqlite3.Error as exc:
                # reading the current song fails the same way as storing the press: the
                # caller logs "not stored" for a StoreError only
                raise StoreError(f"cannot store the {action}: {exc}") from exc
            finally:
                db.conn.close()
        log.info("%s: %s", action, track.get("name") or track["uri"])
        if action == "skip":
            self.request_next()
        return row

    def _current(self, db, outbox: Outbox) -> dict | None:
        playing = self.now_playing()
        if playing:
            main = db.execute(
                "SELECT main_artist FROM tracks WHERE uri = ?", [playing["uri"]]
            ).fetchone()
            artist = main[0] if main else (playing.get("artist") or "").split(", ")[0]
            return {**playing, "main_artist": artist}
        last = outbox.last_sent(self.user) or outbox.last(self.user)
        if last is None:
            return None
        main = db.execute("SELECT main_artist FROM tracks WHERE uri = ?", [last["uri"]]).fetchone()
        return {**last, "main_artist": main[0] if main else last.get("artist")}


def remote_skips(db, after_id: int) -> list[dict]:
    """Skips stored by another process (REMOTE_SOURCE) after row `after_id`, oldest
    first: {"id", "t", "uri"}. The sync worker runs Spotify's next-track for each."""
    try:
        cursor = db.execute(
            "SELECT id, t, uri FROM feedback WHERE source = ? AND action = 'skip' AND id > ?"
            " ORDER BY id",
            [REMOTE_SOURCE, after_id],
        )
        return [{"id": r[0], "t": r[1], "uri": r[2]} for r in cursor.fetchall()]
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the skips: {exc}") from exc
