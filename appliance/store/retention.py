"""Keeping the history bounded, so a year of 1 Hz samples cannot fill the SD card.

At the default 1 Hz the affect samples grow by about 86,000 rows (20 MB) a day; on a
full disk every write fails, the Spotify token included. What is pruned and why:

- affect_samples, vlm_notes and mood_changes: a history for reports, read back by
  nobody else, so rows older than `storage.history_days` go; so does a run (its row in
  `runs`) whose newest sample is older, as nothing of it is left to place on a timeline.
- queue rows in a finished state (played, skipped, failed), older than the same horizon
  but never younger than `music.no_repeat_hours` (the recommender reads queue rows of
  that window to avoid repeats, and report.py only shows songs within the samples that
  are kept). Waiting rows (recommended, sending, sent) are never touched: they are the
  outbox. Each user's newest row stays too: feedback falls back on it to know which song
  a button press means when Spotify is offline.
- feedback (likes and skips) is kept whole: a row per button press, a few KB a year,
  and the recommender's taste history (decayed by `music.history_half_life_days`, never
  cut off).

Deleted pages are reused by later inserts; the file does not shrink (no VACUUM, which
would need as much free space again and hold the write lock for minutes on a Pi).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlite_utils

from appliance.store.database import StoreError, write_transaction

if TYPE_CHECKING:
    from appliance.config.schema import Config

DAY_S = 86400.0
# Rows per table per transaction. A database that kept years of history (before there
# was pruning) is emptied over several short transactions, each a few seconds on an SD
# card, instead of one that stalls the publisher thread past the systemd watchdog and
# grows the WAL by the size of the whole database.
PRUNE_BATCH = 20_000
FINISHED_SONGS = ("played", "skipped", "failed")


def _delete_oldest(table: str, key: str, time_column: str) -> str:
    """At most LIMIT rows of `table` older than the cutoff, oldest first."""
    return (
        f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table}"
        f" WHERE {time_column} < ? ORDER BY {time_column} LIMIT ?)"
    )


# Pruned's field -> its statement: the history kept for `storage.history_days`.
_DELETE_HISTORY = {
    "samples": _delete_oldest("affect_samples", "id", "t_wall"),
    "notes": _delete_oldest("vlm_notes", "id", "t_wall"),
    "moods": _delete_oldest("mood_changes", "id", "t_wall"),
    "runs": _delete_oldest("runs", "run_id", "last_wall"),  # its newest sample's time
}
_DELETE_SONGS = (
    "DELETE FROM queue WHERE id IN (SELECT id FROM queue"
    f" WHERE state IN ({', '.join(repr(s) for s in FINISHED_SONGS)}) AND updated_at < ?"
    " AND id NOT IN (SELECT max(id) FROM queue GROUP BY user) LIMIT ?)"
)


@dataclass(frozen=True)
class Retention:
    """How many days of history are kept; 0 = forever."""

    history_days: float = 30.0  # affect samples and VLM replies
    song_days: float = 30.0  # finished queue rows

    @classmethod
    def from_config(cls, config: Config) -> Retention:
        """Songs stay at least as long as the no-repeat window reads them."""
        days = float(config.storage.history_days)
        if days == 0:
            return cls(0.0, 0.0)
        return cls(days, max(days, config.music.no_repeat_hours / 24.0))

    @property
    def enabled(self) -> bool:
        return self.history_days > 0 or self.song_days > 0


@dataclass(frozen=True)
class Pruned:
    """Rows removed by one prune_history call; `done` is False when a table had more
    old rows than one batch: call again."""

    samples: int = 0
    notes: int = 0
    songs: int = 0
    moods: int = 0
    runs: int = 0
    done: bool = True

    @property
    def total(self) -> int:
        return self.samples + self.notes + self.songs + self.moods + self.runs


def prune_history(
    db: sqlite_utils.Database, retention: Retention, now: float, *, batch: int = PRUNE_BATCH
) -> Pruned:
    """Delete history older than the retention, at most `batch` rows per table, in one
    transaction (all tables or none); StoreError when the disk says no."""
    counts = {"samples": 0, "notes": 0, "songs": 0, "moods": 0, "runs": 0}
    try:
        with write_transaction(db):
            if retention.history_days > 0:
                cutoff = now - retention.history_days * DAY_S
                for field, statement in _DELETE_HISTORY.items():
                    counts[field] = db.execute(statement, [cutoff, batch]).rowcount
            if retention.song_days > 0:
                cutoff = now - retention.song_days * DAY_S
                counts["songs"] = db.execute(_DELETE_SONGS, [cutoff, batch]).rowcount
    except sqlite3.Error as exc:
        raise StoreError(f"cannot prune old history: {exc}") from exc
    return Pruned(**counts, done=max(counts.values()) < batch)
