"""The local song catalog: tracks with Spotify valence/energy, imported from CSV.

Spotify's Web API no longer serves audio features to new apps, so a song's valence and
energy come from the catalog file (e.g. the public Spotify Tracks dataset), never from
Spotify. Importing is idempotent (tracks are keyed by URI) and refits the mood clusters,
all in one transaction: an import that fails or is cut short leaves the previous catalog.
"""

from __future__ import annotations

import csv
import logging
import math
import re
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
import sqlite_utils

from appliance.music.moods import Mood, MoodMap
from appliance.store.database import StoreError, write_transaction

log = logging.getLogger(__name__)

SPOTIFY_COLUMNS = {"track_id", "artists", "track_name", "valence", "energy"}
MINIMAL_COLUMNS = {"uri", "name", "artist", "valence", "energy"}
TRACK_ID = re.compile(r"^[0-9A-Za-z]{22}$")
TRACK_URI = re.compile(r"^spotify:track:[0-9A-Za-z]{22}$")
# A catalog line is a few hundred characters. The csv module reads a whole line before
# looking at it, so a stream without newlines (/dev/zero, a binary file) grew memory
# without bound; a longer line ends the import instead.
MAX_LINE_CHARS = 1 << 20


class CatalogError(ValueError):
    """The catalog file cannot be read at all (missing, not CSV, unknown columns)."""


@dataclass
class ImportReport:
    rows: int = 0
    added: int = 0
    updated: int = 0
    duplicates: int = 0  # the same track again later in the file (e.g. another genre)
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)

    def summary(self, path: Path | str) -> str:
        return (
            f"{path}: {self.rows} rows, {self.added} tracks added, {self.updated} updated, "
            f"{self.duplicates} repeated in the file, {len(self.skipped)} skipped"
        )


def _unit(value: str, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} {value!r} is not a number") from None
    if not math.isfinite(number) or not 0.0 <= number <= 1.0:
        raise ValueError(f"{name} {value!r} is outside 0..1")
    return number


def _popularity(value: str | None) -> int | None:
    if not (value or "").strip():
        return None
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"popularity {value!r} is not a number") from None
    if not math.isfinite(number):  # int(inf) would be an OverflowError, not a bad row
        raise ValueError(f"popularity {value!r} is not a finite number")
    return int(number)


def _text(row: dict, key: str) -> str:
    value = (row.get(key) or "").strip()
    if not value:
        raise ValueError(f"empty {key}")
    return value


def parse_row(row: dict, spotify_layout: bool, now: float) -> dict:
    """One CSV row -> a tracks row; ValueError names what is wrong."""
    if spotify_layout:
        track_id = _text(row, "track_id")
        if not TRACK_ID.match(track_id):
            raise ValueError(f"track_id {track_id!r} is not a Spotify id")
        artists = [a.strip() for a in _text(row, "artists").split(";") if a.strip()]
        if not artists:
            raise ValueError(f"artists {row['artists']!r} names no artist")
        uri, name = f"spotify:track:{track_id}", _text(row, "track_name")
        artist, main_artist = ", ".join(artists), artists[0]
        album, genre = (row.get("album_name") or "").strip(), (row.get("track_genre") or "").strip()
        popularity = _popularity(row.get("popularity"))
    else:
        uri = _text(row, "uri")
        if not TRACK_URI.match(uri):
            raise ValueError(f"uri {uri!r} is not spotify:track:<22-character id>")
        name, artist = _text(row, "name"), _text(row, "artist")
        main_artist, album, genre, popularity = artist, "", "", None
    return {
        "uri": uri,
        "name": name,
        "artist": artist,
        "main_artist": main_artist,
        "album": album or None,
        "genre": genre or None,
        "popularity": popularity,
        "valence": _unit(row.get("valence"), "valence"),
        "energy": _unit(row.get("energy"), "energy"),
        "imported_at": now,
    }


def _lines(fh: TextIO, path: Path) -> Iterator[str]:
    """The file's lines, each read with a bounded buffer (see MAX_LINE_CHARS)."""
    number = 0
    while line := fh.readline(MAX_LINE_CHARS + 1):
        number += 1
        if len(line) > MAX_LINE_CHARS:
            raise CatalogError(
                f"{path}: line {number} is longer than {MAX_LINE_CHARS} characters: not a"
                " catalog CSV"
            )
        yield line


def read_catalog_csv(path: Path) -> tuple[list[tuple[int, dict]], ImportReport]:
    """Parse a catalog CSV: (line, track row) for good rows, bad rows in the report."""
    report = ImportReport()
    now = time.time()
    tracks: list[tuple[int, dict]] = []
    try:
        # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark, which would
        # otherwise stick to the first column name
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(_lines(fh, path))
            # "uri, name, artist": the rows are looked up by the stripped names too
            reader.fieldnames = [(h or "").strip() for h in reader.fieldnames or ()]
            header = {h for h in reader.fieldnames if h}
            if header >= SPOTIFY_COLUMNS:
                spotify_layout = True
            elif header >= MINIMAL_COLUMNS:
                spotify_layout = False
            else:
                raise CatalogError(
                    f"{path}: unknown columns; expected the Spotify Tracks dataset "
                    f"({', '.join(sorted(SPOTIFY_COLUMNS))}, ...) or a minimal CSV "
                    f"({', '.join(sorted(MINIMAL_COLUMNS))})"
                )
            for row in reader:
                report.rows += 1
                line = reader.line_num
                if None in row:
                    report.skipped.append((line, "more fields than the header"))
                    continue
                try:
                    tracks.append((line, parse_row(row, spotify_layout, now)))
                except ValueError as exc:
                    report.skipped.append((line, str(exc)))
                except (ArithmeticError, LookupError, TypeError) as exc:
                    # a value parse_row did not foresee: one bad row, not a failed import
                    report.skipped.append((line, f"unreadable row ({type(exc).__name__}: {exc})"))
    except FileNotFoundError as exc:
        raise CatalogError(f"{path}: no such file") from exc
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CatalogError(f"{path}: unreadable CSV ({exc})") from exc
    return tracks, report


def import_catalog(
    db: sqlite_utils.Database, path: Path, *, k: int = 4, seed: int = 0
) -> ImportReport:
    """Add or update the file's tracks (keyed by URI), then refit the moods."""
    tracks, report = read_catalog_csv(Path(path))
    for line, reason in report.skipped:  # the CLI prints them; the count is in summary()
        log.debug("%s:%d: skipped (%s)", path, line, reason)
    by_uri: dict[str, dict] = {}
    for _, track in tracks:
        report.duplicates += track["uri"] in by_uri
        by_uri[track["uri"]] = track
    try:
        with write_transaction(db):
            existing = {
                row[0]
                for row in db.execute("SELECT uri FROM tracks").fetchall()
                if row[0] in by_uri
            }
            if by_uri:
                db["tracks"].upsert_all(list(by_uri.values()), pk="uri")
                total = db.execute("SELECT count(*) FROM tracks").fetchone()[0]
                if total >= k:
                    fit_moods(db, k=k, seed=seed)
                else:  # kept: a later import may complete the catalog
                    log.warning("%d tracks: %d moods need at least %d; no moods yet", total, k, k)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot write the catalog: {exc}") from exc
    report.added = len(by_uri) - len(existing)
    report.updated = len(existing)
    return report


def _fit(db: sqlite_utils.Database, k: int, seed: int) -> tuple[list, MoodMap, list[str]]:
    """k-means over every track's (valence, energy): (rows, moods, each row's mood)."""
    rows = db.execute("SELECT uri, valence, energy FROM tracks ORDER BY uri").fetchall()
    if len(rows) < k:
        raise StoreError(f"the catalog has {len(rows)} tracks; {k} moods need at least {k}")
    points = np.array([(r[1], r[2]) for r in rows], dtype=np.float64)
    moods = MoodMap.fit(points, k=k, seed=seed)
    return rows, moods, moods.assign(points)


def fit_moods(db: sqlite_utils.Database, *, k: int = 4, seed: int = 0) -> MoodMap:
    """Fit the moods and store the centroids and every track's mood, in one transaction."""
    with write_transaction(db):
        rows, moods, names = _fit(db, k, seed)
        now = time.time()
        db.execute("DELETE FROM moods")
        db["moods"].insert_all(
            {
                "name": m.name,
                "valence": m.valence,
                "energy": m.energy,
                "tracks": names.count(m.name),
                "fitted_at": now,
            }
            for m in moods.moods
        )
        db.conn.executemany(
            "UPDATE tracks SET mood = ? WHERE uri = ?",
            [(name, row[0]) for name, row in zip(names, rows, strict=True)],
        )
    log.info("fitted %d moods over %d tracks: %s", k, len(rows), ", ".join(moods.names))
    return moods


def load_moods(
    db: sqlite_utils.Database, *, k: int, seed: int = 0, save: bool = False
) -> MoodMap | None:
    """The stored moods; None without a catalog. When k differs from the stored moods'
    (a config change, or `--set music.moods=5` on one command) they are refitted: saved
    only with save=True, by the daemon that owns them, so a read-only command never
    renames the moods under a running daemon. save=True also refits when a track has no
    mood (a database an older version left half-imported)."""
    rows = db.execute("SELECT name, valence, energy FROM moods ORDER BY name").fetchall()
    unassigned = save and db.execute("SELECT 1 FROM tracks WHERE mood IS NULL LIMIT 1").fetchone()
    if len(rows) == k and not unassigned:
        return MoodMap(tuple(Mood(*row) for row in rows))
    if db.execute("SELECT count(*) FROM tracks").fetchone()[0] < k:
        return None
    if save:
        return fit_moods(db, k=k, seed=seed)
    return _fit(db, k, seed)[1]


def catalog_stats(db: sqlite_utils.Database) -> dict:
    """Counts per mood and the centroids, for `catalog stats`."""
    total = db.execute("SELECT count(*) FROM tracks").fetchone()[0]
    moods = [
        {"mood": name, "valence": round(v, 3), "energy": round(e, 3), "tracks": n}
        for name, v, e, n in db.execute(
            "SELECT name, valence, energy, tracks FROM moods ORDER BY name"
        ).fetchall()
    ]
    return {"tracks": total, "moods": moods}
