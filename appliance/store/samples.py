"""Writing smoothed affect samples: rate-limited, and never on the frame loop's time.

Every stored event of a daemon run (samples, mood changes, songs queued and played,
likes and skips, VLM notes) carries the run's id and a time on the run's own stream
clock: the samples' `t_stream` (media time for files, the monotonic clock for cameras).
The report draws them all on that one clock. `RunClock` is the run's id and where its
stream clock stands; `stream_stamp` gives any writer the (run id, stream time) of now.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
import sqlite3
import time
from collections.abc import Callable

import sqlite_utils

from appliance.affect.smoothing import AffectState
from appliance.store.database import StoreError, write_transaction

log = logging.getLogger(__name__)

# A run whose newest stored sample is older than this is over (or not storing) as far as
# another process can tell: the publisher commits every 15 s (FLUSH_INTERVAL_S).
LIVE_RUN_S = 40.0


def new_run_id(now: float | None = None) -> str:
    """'20261121-080000-3f9a': the local start time (ids sort by start) and 16 random
    bits (two runs started within one second stay apart)."""
    stamp = dt.datetime.fromtimestamp(time.time() if now is None else now)
    return f"{stamp:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


class RunClock:
    """One daemon run: its id, and where its stream clock stands.

    The frame loop calls `advance(t)` with each frame's stream time (one tuple
    assignment under the board's lock: nothing slow); any other thread asks `stamp()`
    for (run id, stream time now): the last frame's stream time plus the monotonic time
    since. For a live camera that is its own clock (t is monotonic time); for a file
    played at its pace, media time; a file processed faster than real time gets the last
    frame's time (plus the moment since)."""

    def __init__(
        self, run_id: str | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.run_id = run_id or new_run_id()
        self._clock = clock
        self._last: tuple[float, float] | None = None  # (stream time, clock()) of a frame

    def advance(self, t_stream: float) -> None:
        self._last = (t_stream, self._clock())

    def stamp(self) -> tuple[str, float | None]:
        last = self._last
        if last is None:
            return self.run_id, None  # no frame yet
        t_stream, at = last
        return self.run_id, t_stream + max(0.0, self._clock() - at)


_live: RunClock | None = None  # the run of this process (the daemon sets it)


def set_live_run(clock: RunClock | None) -> None:
    """The daemon names its run here for the writers it does not construct itself (the
    buttons, the Spotify sync); None when the run is over."""
    global _live
    _live = clock


def stream_stamp(
    db: sqlite_utils.Database, now: float | None = None
) -> tuple[str | None, float | None]:
    """(run id, stream time) of this moment, for an event stored outside the frame loop:
    the run of this process when it is a daemon's, else (`emotion-appliance like` over
    SSH) the run whose newest stored sample is at most LIVE_RUN_S old, its stream time
    moved on by the wall time since that sample; (None, None) when no run is going."""
    if _live is not None:
        run_id, t_stream = _live.stamp()
        if t_stream is not None:
            return run_id, t_stream
    now = time.time() if now is None else now
    try:
        row = db.execute(
            "SELECT run_id, t_wall, t_stream FROM affect_samples ORDER BY id DESC LIMIT 1"
        ).fetchone()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the newest sample: {exc}") from exc
    if row is None or row[0] is None or not 0 <= now - row[1] <= LIVE_RUN_S:
        return None, None
    return row[0], row[2] + (now - row[1])


def sample_row(
    state: AffectState,
    faces: int,
    source: str,
    t_wall: float,
    run_id: str | None = None,
    *,
    distance_m: float | None = None,
) -> dict:
    row = {
        "t_wall": t_wall,
        "t_stream": state.t,
        "emotion": state.emotion,
        "confidence": state.confidence,
        "face_presence": state.face_presence,
        "probs": json.dumps(state.probs, sort_keys=True),
        "valence": state.valence,
        "arousal": state.arousal,
        "faces": faces,
        "source": source,
    }
    if run_id is not None:  # the daemon's rows; NULL in the table otherwise
        row["run_id"] = run_id
    if distance_m is not None:  # a depth camera's distance to the followed face
        row["distance_m"] = distance_m
    return row


def write_samples(db: sqlite_utils.Database, rows: list[dict]) -> None:
    """Insert rows, and keep their runs' rows up to date, in one transaction;
    StoreError when the disk says no."""
    if not rows:
        return
    try:
        with write_transaction(db):
            db["affect_samples"].insert_all(rows)
            _record_runs(db, rows)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot write affect samples: {exc}") from exc


def _record_runs(db: sqlite_utils.Database, rows: list[dict]) -> None:
    runs: dict[str, list[dict]] = {}
    for row in rows:
        if row.get("run_id"):
            runs.setdefault(row["run_id"], []).append(row)
    for run_id, mine in runs.items():
        first, last = mine[0], mine[-1]
        db.execute(
            "INSERT INTO runs (run_id, source, started_at, t_stream0, last_wall, last_stream,"
            " samples) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id) DO UPDATE SET"
            " last_wall = excluded.last_wall, last_stream = excluded.last_stream,"
            " samples = samples + excluded.samples",
            [run_id, first["source"], first["t_wall"], first["t_stream"], last["t_wall"],
             last["t_stream"], len(mine)],
        )  # fmt: skip


def recent_samples(db: sqlite_utils.Database, limit: int = 100) -> list[dict]:
    rows = db.execute("SELECT * FROM affect_samples ORDER BY id DESC LIMIT ?", [limit]).fetchall()
    columns = [c[0] for c in db.execute("SELECT * FROM affect_samples LIMIT 0").description]
    return [dict(zip(columns, row, strict=True)) for row in reversed(rows)]
