"""Turns the smoothed affect stream into queued songs. Runs on the publisher thread.

It reads the affect samples the board picks (one per `storage.sample_hz` period of
stream time), so moods follow the stream's own clock: a recording processed faster than
real time gets the same songs as watching it live. A song is queued when the listener's
mood changes, or when fewer than `queue_low` songs are waiting, and never more often
than every `min_interval_s` of stream time: a mood change inside that interval is kept
pending and served once the interval has passed, not dropped. Without a face (valence
None) nothing changes: looking away does not change the music.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from appliance.config.schema import MusicConfig
from appliance.music.catalog import load_moods
from appliance.music.moods import MoodTracker
from appliance.music.outbox import Outbox
from appliance.music.recommender import Recommender
from appliance.store.database import StoreError, open_database

log = logging.getLogger(__name__)


class MusicDirector:
    def __init__(
        self,
        state_dir: str,
        settings: MusicConfig,
        *,
        on_queued: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state_dir = state_dir
        self.settings = settings
        self.on_queued = on_queued
        self.clock = clock
        self.state = "starting"
        self.paused = False  # music off: moods still follow the face, no song is queued
        self.mood: str | None = None
        self.last_song: dict | None = None
        self.queue_depth = 0
        self.error: str | None = None
        self._db = None
        self._tracker: MoodTracker | None = None
        self._recommender: Recommender | None = None
        self._last_queued = float("-inf")
        self._queued_mood: str | None = None  # mood of the last song queued
        self._change_pending = False  # the mood changed and no song for it is queued yet
        self._retry_at = 0.0

    def _open(self) -> bool:
        if self._db is not None:
            return True
        if self.clock() < self._retry_at:
            return False
        db = None
        try:
            db = open_database(self.state_dir)
            # refitting the moods reads and writes: a `catalog import` running beside the
            # daemon can leave it "database is locked", a plain sqlite3 error
            moods = load_moods(db, k=self.settings.moods, save=True)
        except (StoreError, sqlite3.Error) as exc:
            if db is not None:
                db.conn.close()
            self._fail(exc)
            return False
        if moods is None:
            self.state = "no catalog (emotion-appliance catalog import CSV)"
            self._retry_at = self.clock() + 60.0  # look again later: an import may come
            db.conn.close()
            return False
        self._db = db  # only a fully opened store counts: update() relies on the tracker
        self._tracker = MoodTracker(moods, self.settings.mood_hold_s, self.settings.mood_margin)
        self._recommender = Recommender(db, moods, self.settings)
        self.state = "ready"
        return True

    def update(
        self, t: float, valence: float | None, arousal: float | None, *, run_id: str | None = None
    ) -> None:
        """One smoothed sample at stream time t (seconds) of run `run_id`: each mood change
        and queued song is stored with both, on the samples' clock."""
        if valence is None or arousal is None:
            return
        if not self._open():
            return
        assert self._tracker is not None and self._recommender is not None
        now = t
        if now < self._last_queued:  # the stream restarted (a looped file, a new camera)
            self._last_queued = float("-inf")
        previous = self.mood
        self.mood = self._tracker.update(now, valence, arousal)
        try:
            outbox = Outbox(self._db)
            self.queue_depth = outbox.waiting(self.settings.user)
            if self.mood != previous:
                record_mood_change(self._db, run_id, now, self.mood, previous, valence, arousal)
            if previous is not None and self.mood != previous:
                log.info("mood: %s -> %s", previous, self.mood)
                # back to the mood of the last queued song: that song still fits
                self._change_pending = self.mood != self._queued_mood
            low = self.queue_depth < self.settings.queue_low
            wanted = (self._change_pending or low) and not self.paused
            if wanted and now - self._last_queued >= self.settings.min_interval_s:
                picks = self._recommender.recommend(
                    valence, arousal, user=self.settings.user, mood=self.mood
                )
                if picks:
                    outbox.add(picks[0], self.settings.user, run_id=run_id, t_stream=now)
                    self.last_song = picks[0].to_json()
                    self.queue_depth += 1
                    self._last_queued = now
                    self._queued_mood, self._change_pending = self.mood, False
                    log.info("queued %s - %s (%s)", picks[0].artist, picks[0].name, self.mood)
                    self.on_queued()
            self.error = None
        except (StoreError, sqlite3.Error) as exc:
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        if self.error != str(exc):
            log.error("music: %s", exc)
        self.error = str(exc)
        self.state = "storage error"
        if self._db is not None:
            self._db.conn.close()
        self._db = None
        self._retry_at = self.clock() + 30.0

    def snapshot(self) -> dict[str, Any]:
        return {
            "music": "off" if self.paused else self.state,
            "mood": self.mood,
            "last_song": self.last_song,
            "queue_depth": self.queue_depth,
            "music_error": self.error,
        }

    def close(self) -> None:
        if self._db is not None:
            self._db.conn.close()
            self._db = None


def record_mood_change(
    db,
    run_id: str | None,
    t_stream: float,
    mood: str,
    previous: str | None,
    valence: float | None = None,
    arousal: float | None = None,
) -> None:
    """Log a decision of the director (the run's first mood: previous None), for the
    report to draw as it was decided. A failure is a StoreError, as for the queue."""
    try:
        with db.conn:
            db.conn.execute(
                "INSERT INTO mood_changes (run_id, t_stream, t_wall, mood, previous, valence,"
                " arousal) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [run_id, t_stream, time.time(), mood, previous, valence, arousal],
            )
    except sqlite3.Error as exc:
        raise StoreError(f"cannot log the mood change: {exc}") from exc
