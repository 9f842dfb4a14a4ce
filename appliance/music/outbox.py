"""The local song queue: every recommendation is stored before anything is sent.

    recommended -> sending -> sent -> played | skipped
                          \\-> recommended (retry later)   \\-> failed (Spotify refused it)

`played` also ends a `sent` song the player no longer has some minutes after it was sent
(it played while the worker was offline, or the listener cleared the queue or switched
device): `error` then says it was not seen playing. Without that end it would count as
waiting forever and the director would never top the queue up again. `skipped` also ends
a `recommended` song the owner withdrew before it was sent (`queue clear`): `error` says
so, and the row stays as history.

Each change is its own committed transaction (the sync worker commits with
synchronous=FULL), so a power cut loses at most the change in flight. `sending` marks a
push whose outcome is unknown (the reply was lost, or the process died during the call);
the sync worker settles it against Spotify's queue before pushing again, so a song is
not lost, and not queued twice while it is still ahead of the listener (one that already
played before it could be settled is pushed again: at-least-once, see sync.py). Every
database failure, read or write, is a StoreError, which the callers already handle by
reopening later.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import sqlite_utils

from appliance.music.recommender import Recommendation
from appliance.store.database import StoreError
from appliance.store.samples import stream_stamp

WAITING = ("recommended", "sending", "sent")  # still ahead of the listener
CLEARED = "cleared by the owner before it was sent (emotion-appliance queue clear)"


class Outbox:
    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db

    def _execute(self, sql: str, params: list[Any]) -> sqlite3.Cursor:
        """One statement in its own transaction; a database error is a StoreError."""
        try:
            with self.db.conn:
                return self.db.conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot update the song queue: {exc}") from exc

    def _write(self, sql: str, params: list[Any]) -> int:
        return int(self._execute(sql, params).lastrowid or 0)

    def add(
        self,
        rec: Recommendation,
        user: str,
        now: float | None = None,
        *,
        run_id: str | None = None,
        t_stream: float | None = None,
    ) -> int:
        """Queue a song; `run_id` and `t_stream`: the run and stream time it was chosen
        at (the report's clock)."""
        now = time.time() if now is None else now
        return self._write(
            "INSERT INTO queue (user, uri, name, artist, mood, score, state, created_at,"
            " updated_at, run_id, t_stream) VALUES (?, ?, ?, ?, ?, ?, 'recommended', ?, ?, ?, ?)",
            [user, rec.uri, rec.name, rec.artist, rec.mood, rec.score, now, now, run_id, t_stream],
        )

    def claim(self, item_id: int) -> bool:
        """recommended -> sending (one more attempt), only if it is still recommended: a
        song withdrawn meanwhile by another process (`queue clear`, a skip) stays so."""
        cursor = self._execute(
            "UPDATE queue SET state = 'sending', updated_at = ?, error = NULL,"
            " attempts = attempts + 1 WHERE id = ? AND state = 'recommended'",
            [time.time(), item_id],
        )
        return cursor.rowcount == 1

    def set_state(
        self,
        item_id: int,
        state: str,
        *,
        error: str | None = None,
        retry_at: float | None = None,
        attempt: bool = False,
    ) -> None:
        now = time.time()
        self._write(
            "UPDATE queue SET state = ?, updated_at = ?, error = ?,"
            " next_attempt_at = coalesce(?, next_attempt_at),"
            " attempts = attempts + ? WHERE id = ?",
            [state, now, error, retry_at, int(attempt), item_id],
        )

    def due(self, now: float | None = None, limit: int = 10) -> list[dict]:
        """Recommended songs whose next attempt is due, oldest first."""
        now = time.time() if now is None else now
        return self._rows(
            "SELECT * FROM queue WHERE state = 'recommended' AND next_attempt_at <= ?"
            " ORDER BY id LIMIT ?",
            [now, limit],
        )

    def in_state(self, state: str) -> list[dict]:
        return self._rows("SELECT * FROM queue WHERE state = ? ORDER BY id", [state])

    def on_player(self) -> int:
        """Songs pushed to the player and not seen playing yet (sent), or whose push has
        an unknown outcome (sending): how far ahead of the listener our songs reach."""
        return self._rows("SELECT count(*) AS n FROM queue WHERE state IN ('sending', 'sent')", [])[
            0
        ]["n"]

    def pushed_before(self, item_id: int, limit: int) -> list[dict]:
        """The last `limit` songs pushed before this one that reached the player (sent,
        or seen playing), newest first."""
        return self._rows(
            "SELECT * FROM queue WHERE id < ? AND state IN ('sent', 'played')"
            " ORDER BY id DESC LIMIT ?",
            [item_id, limit],
        )

    def upcoming(self, user: str) -> list[dict]:
        """The user's songs not yet played, skipped or failed, oldest first."""
        marks = ",".join("?" * len(WAITING))
        return self._rows(
            f"SELECT * FROM queue WHERE user = ? AND state IN ({marks}) ORDER BY id",
            [user, *WAITING],
        )

    def clear(self, user: str, now: float | None = None) -> int:
        """Withdraw the user's songs not sent yet (`recommended`): `skipped`, with `error`
        saying so; the rows stay as history. Songs already on the player (sent, or a
        push being settled) are left alone: the Web API cannot take them back."""
        now = time.time() if now is None else now
        return self._execute(
            "UPDATE queue SET state = 'skipped', updated_at = ?, error = ?"
            " WHERE user = ? AND state = 'recommended'",
            [now, CLEARED, user],
        ).rowcount

    def waiting(self, user: str) -> int:
        """Songs queued for the user and not yet played, skipped or failed."""
        marks = ",".join("?" * len(WAITING))
        return self._rows(
            f"SELECT count(*) AS n FROM queue WHERE user = ? AND state IN ({marks})",
            [user, *WAITING],
        )[0]["n"]

    def last_sent(self, user: str) -> dict | None:
        """For feedback when Spotify cannot say what plays: the song last seen playing,
        else the newest song sent. Not the newest sent first: with the queue topped up,
        that one usually still waits behind the song playing. Songs that left the player
        unseen (mark_gone) were never seen playing: they rank as sent."""
        rows = self._rows(
            "SELECT * FROM queue WHERE user = ? AND state IN ('sent', 'played')"
            " ORDER BY (state = 'played' AND error IS NULL) DESC, updated_at DESC, id DESC"
            " LIMIT 1",
            [user],
        )
        return rows[0] if rows else None

    def last(self, user: str) -> dict | None:
        rows = self._rows("SELECT * FROM queue WHERE user = ? ORDER BY id DESC LIMIT 1", [user])
        return rows[0] if rows else None

    def counts(self) -> dict[str, int]:
        rows = self._rows("SELECT state, count(*) AS n FROM queue GROUP BY state", [])
        return {row["state"]: row["n"] for row in rows}

    def mark_played(self, uri: str) -> int:
        """The player is on `uri`: that song and the sent ones before it are played."""
        rows = self._rows(
            "SELECT id FROM queue WHERE uri = ? AND state = 'sent' ORDER BY id DESC LIMIT 1",
            [uri],
        )
        if not rows:
            return 0
        now = time.time()
        run_id, t_stream = stream_stamp(self.db, now)  # the moment it was seen playing
        try:
            with self.db.conn:
                cursor = self.db.conn.execute(
                    "UPDATE queue SET state = 'played', updated_at = ? WHERE state = 'sent'"
                    " AND id <= ?",
                    [now, rows[0]["id"]],
                )
                self.db.conn.execute(
                    "UPDATE queue SET played_run_id = ?, played_t_stream = ? WHERE id = ?",
                    [run_id, t_stream, rows[0]["id"]],
                )
                return cursor.rowcount
        except sqlite3.Error as exc:
            raise StoreError(f"cannot update the song queue: {exc}") from exc

    def sent_before(self, before: float) -> list[dict]:
        """Songs pushed to the player before `before` (unix time) and not seen playing."""
        return self._rows(
            "SELECT * FROM queue WHERE state = 'sent' AND updated_at < ? ORDER BY id", [before]
        )

    def mark_gone(self, ids: list[int]) -> int:
        """Sent songs the player no longer has: `played`, as far as anyone can tell.

        updated_at (when it was sent) is kept and `error` says it was never seen
        playing: last_sent ranks these with the sent songs, not the ones seen playing."""
        if not ids:
            return 0
        marks = ",".join("?" * len(ids))
        return self._execute(
            "UPDATE queue SET state = 'played', error = 'gone from the player unseen'"
            f" WHERE state = 'sent' AND id IN ({marks})",
            ids,
        ).rowcount

    def _rows(self, sql: str, params: list[Any]) -> list[dict]:
        try:
            cursor = self.db.execute(sql, params)
            columns = [c[0] for c in cursor.description]
            return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the song queue: {exc}") from exc
