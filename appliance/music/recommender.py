"""Song choice: 70% how well a track fits the listener's mood, 30% their history.

    score = 0.7 * fit + 0.3 * history

fit = 0.5 * [track in the listener's mood cluster] + 0.5 * (1 - distance / sqrt 2), the
distance taken on the valence/energy plane (see moods.va_to_plane), so the cluster
decides first and closeness orders the songs within it.

history = 0.5 + 0.5 * tanh(track + 0.5 * artist), where track and artist sum the user's
likes (+1) and skips (-1) of that track or its main artist, each halved every
`history_half_life_days`. With no history it is 0.5 for every track, so only fit counts.

A track recommended to the same user within `no_repeat_hours` is not offered again
(unless nothing else is left).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import sqlite_utils

from appliance.config.schema import MusicConfig
from appliance.music.moods import MoodMap, va_to_plane

MOOD_WEIGHT, HISTORY_WEIGHT = 0.7, 0.3
ACTION_VALUE = {"like": 1.0, "skip": -1.0}


@dataclass(frozen=True)
class Recommendation:
    uri: str
    name: str
    artist: str
    valence: float
    energy: float
    mood: str
    score: float

    def to_json(self) -> dict:
        return asdict(self)


def history_scores(
    db: sqlite_utils.Database, user: str, now: float, half_life_days: float
) -> tuple[dict[str, float], dict[str, float]]:
    """Decayed like/skip sums per track URI and per main artist for one user."""
    per_track: dict[str, float] = {}
    per_artist: dict[str, float] = {}
    half_life_s = half_life_days * 86400.0
    for uri, artist, action, t in db.execute(
        "SELECT uri, artist, action, t FROM feedback WHERE user = ?", [user]
    ).fetchall():
        weight = ACTION_VALUE.get(action, 0.0) * 0.5 ** (max(0.0, now - t) / half_life_s)
        per_track[uri] = per_track.get(uri, 0.0) + weight
        if artist:
            per_artist[artist] = per_artist.get(artist, 0.0) + weight
    return per_track, per_artist


class Recommender:
    """Ranks the whole catalog (a few thousand rows: vectorised, milliseconds)."""

    def __init__(self, db: sqlite_utils.Database, moods: MoodMap, settings: MusicConfig) -> None:
        self.db = db
        self.moods = moods
        self.settings = settings

    def recommend(
        self,
        valence: float,
        arousal: float,
        *,
        user: str,
        n: int = 1,
        mood: str | None = None,
        now: float | None = None,
    ) -> list[Recommendation]:
        """The n best tracks for a listener at (valence, arousal) in [-1, 1], best first."""
        now = time.time() if now is None else now
        rows = self.db.execute(
            "SELECT uri, name, artist, main_artist, valence, energy, "
            "coalesce(popularity, 0) FROM tracks"
        ).fetchall()
        if not rows:
            return []
        point = np.array(va_to_plane(valence, arousal))
        mood = mood or self.moods.nearest(*point)
        features = np.array([(r[4], r[5]) for r in rows], dtype=np.float64)
        distance = np.sqrt(((features - point) ** 2).sum(axis=1))
        # each track's mood under self.moods, not the stored column: a read-only command
        # may rank with moods fitted in memory (another k), and the daemon's moods stay
        # its own while a `catalog import` refits the stored ones beside it
        track_moods = self.moods.assign(features)
        same_mood = np.array([m == mood for m in track_moods], dtype=np.float64)
        fit = 0.5 * same_mood + 0.5 * (1.0 - distance / math.sqrt(2.0))
        per_track, per_artist = history_scores(
            self.db, user, now, self.settings.history_half_life_days
        )
        raw = np.array([per_track.get(r[0], 0.0) + 0.5 * per_artist.get(r[3], 0.0) for r in rows])
        history = 0.5 + 0.5 * np.tanh(raw)
        score = MOOD_WEIGHT * fit + HISTORY_WEIGHT * history
        recent = self._recent(user, now)
        waiting = self._waiting()
        fresh = np.array([r[0] not in recent and r[0] not in waiting for r in rows])
        if not fresh.any():
            # everything was played lately: repeats beat silence, but never a song still
            # waiting to play (a second copy in Spotify's queue, and two rows of one
            # song the sync could not tell apart)
            fresh = np.array([r[0] not in waiting for r in rows])
        popularity = np.array([r[6] for r in rows], dtype=np.float64)
        order = np.lexsort((np.array([r[0] for r in rows]), -popularity, -score))
        picks = [i for i in order if fresh[i]][:n]
        return [
            Recommendation(
                uri=rows[i][0],
                name=rows[i][1],
                artist=rows[i][2],
                valence=round(float(rows[i][4]), 4),
                energy=round(float(rows[i][5]), 4),
                mood=track_moods[i],
                score=round(float(score[i]), 4),
            )
            for i in picks
        ]

    def _waiting(self) -> set[str]:
        """Songs queued and not yet played, skipped or failed, whoever they are for."""
        return {
            row[0]
            for row in self.db.execute(
                "SELECT uri FROM queue WHERE state IN ('recommended', 'sending', 'sent')"
            ).fetchall()
        }

    def _recent(self, user: str, now: float) -> set[str]:
        since = now - self.settings.no_repeat_hours * 3600.0
        return {
            row[0]
            for row in self.db.execute(
                "SELECT uri FROM queue WHERE user = ? AND created_at >= ?", [user, since]
            ).fetchall()
        }
