"""The appliance's SQLite database: WAL mode, versioned migrations from day one.

Only derived numbers are stored (smoothed emotion samples, later songs and feedback);
never images. Pending migrations run once, in order, inside one write transaction that
also bumps PRAGMA user_version, so an old database upgrades itself on the next start and
two processes opening a new database at once (daemon and CLI) do not both migrate it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import sqlite_utils

log = logging.getLogger(__name__)

DB_NAME = "appliance.db"

# (version, SQL). Append only: never edit a migration that has shipped.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE affect_samples (
            id INTEGER PRIMARY KEY,
            t_wall REAL NOT NULL,          -- unix time of the sample
            t_stream REAL NOT NULL,        -- capture time in the stream
            emotion TEXT,                  -- reported label, NULL = no face
            confidence REAL NOT NULL,
            face_presence REAL NOT NULL,
            probs TEXT NOT NULL,           -- JSON {label: p}
            faces INTEGER NOT NULL,
            source TEXT NOT NULL
        );
        CREATE INDEX affect_samples_t ON affect_samples (t_wall);
        """,
    ),
    (
        2,
        """
        ALTER TABLE affect_samples ADD COLUMN valence REAL;  -- smoothed, NULL = no face
        ALTER TABLE affect_samples ADD COLUMN arousal REAL;
        """,
    ),
    (
        3,
        """
        CREATE TABLE tracks (
            uri TEXT PRIMARY KEY,          -- spotify:track:<id>
            name TEXT NOT NULL,
            artist TEXT NOT NULL,          -- display form, all artists
            main_artist TEXT NOT NULL,     -- first artist: history is kept per artist
            album TEXT,
            genre TEXT,
            popularity INTEGER,
            valence REAL NOT NULL,         -- Spotify audio features, 0..1, from the catalog
            energy REAL NOT NULL,
            mood TEXT,                     -- k-means cluster name
            imported_at REAL NOT NULL
        );
        CREATE INDEX tracks_mood ON tracks (mood);
        CREATE TABLE moods (
            name TEXT PRIMARY KEY,
            valence REAL NOT NULL,         -- centroid
            energy REAL NOT NULL,
            tracks INTEGER NOT NULL,
            fitted_at REAL NOT NULL
        );
        CREATE TABLE queue (               -- the outbox: local first, synced to Spotify
            id INTEGER PRIMARY KEY,
            user TEXT NOT NULL,
            uri TEXT NOT NULL,
            name TEXT,
            artist TEXT,
            mood TEXT,
            score REAL,
            state TEXT NOT NULL CHECK (state IN
                ('recommended', 'sending', 'sent', 'played', 'skipped', 'failed')),
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL DEFAULT 0,
            error TEXT
        );
        CREATE INDEX queue_state ON queue (state, next_attempt_at);
        CREATE INDEX queue_user ON queue (user, created_at);
        CREATE TABLE feedback (
            id INTEGER PRIMARY KEY,
            user TEXT NOT NULL,
            uri TEXT NOT NULL,
            artist TEXT,                   -- main artist of the track
            action TEXT NOT NULL CHECK (action IN ('like', 'skip')),
            t REAL NOT NULL,
            source TEXT NOT NULL           -- gpio, cli, ...
        );
        CREATE INDEX feedback_user ON feedback (user, t);
        """,
    ),
    (
        4,
        """
        CREATE TABLE vlm_notes (           -- remote VLM context; never the image
            id INTEGER PRIMARY KEY,
            t_wall REAL NOT NULL,
            emotion TEXT,                  -- the smoothed emotion it annotated
            valence REAL,
            arousal REAL,
            reply TEXT NOT NULL,           -- trimmed to vlm.max_reply_chars
            latency_ms REAL NOT NULL,
            model TEXT
        );
        CREATE INDEX vlm_notes_t ON vlm_notes (t_wall);
        """,
    ),
    (
        5,
        """
        -- One clock for the whole history: every event of a daemon run carries that run's
        -- id and its stream time (the samples' t_stream), so the report places songs,
        -- moods and notes where the samples are. NULL: written before v5 (or outside a run).
        ALTER TABLE affect_samples ADD COLUMN run_id TEXT;
        -- partial: on a month of old history (millions of rows, all NULL) it is built in
        -- one read of the table at the first start, not a write of every row
        CREATE INDEX affect_samples_run ON affect_samples (run_id, t_stream)
            WHERE run_id IS NOT NULL;
        CREATE TABLE runs (                -- one row per daemon run, kept up by each flush
            run_id TEXT PRIMARY KEY,
            source TEXT NOT NULL,
            started_at REAL NOT NULL,      -- unix time of its first sample
            t_stream0 REAL NOT NULL,       -- stream time of its first sample
            last_wall REAL NOT NULL,       -- of its newest stored sample
            last_stream REAL NOT NULL,
            samples INTEGER NOT NULL
        );
        CREATE TABLE mood_changes (        -- what the music director decided, when
            id INTEGER PRIMARY KEY,
            run_id TEXT,
            t_stream REAL NOT NULL,
            t_wall REAL NOT NULL,
            mood TEXT NOT NULL,
            previous TEXT,                 -- NULL: the run's first mood
            valence REAL,
            arousal REAL
        );
        CREATE INDEX mood_changes_run ON mood_changes (run_id, t_stream);
        ALTER TABLE queue ADD COLUMN run_id TEXT;           -- queued in this run,
        ALTER TABLE queue ADD COLUMN t_stream REAL;         -- at this stream time
        ALTER TABLE queue ADD COLUMN played_run_id TEXT;    -- seen playing in this run,
        ALTER TABLE queue ADD COLUMN played_t_stream REAL;  -- at this stream time
        CREATE INDEX queue_run ON queue (run_id, t_stream);
        ALTER TABLE feedback ADD COLUMN run_id TEXT;
        ALTER TABLE feedback ADD COLUMN t_stream REAL;
        ALTER TABLE vlm_notes ADD COLUMN run_id TEXT;
        ALTER TABLE vlm_notes ADD COLUMN t_stream REAL;     -- of the frame it describes
        """,
    ),
    (
        6,
        """
        -- metres to the followed face, from a depth camera (a RealSense); NULL: no depth
        ALTER TABLE affect_samples ADD COLUMN distance_m REAL;
        """,
    ),
)


class StoreError(RuntimeError):
    """The database cannot be opened or written (read-only, disk full, corrupt)."""


class SchemaError(StoreError):
    """A read-only open found another schema version than this software's; `found` and
    `expected` let a caller (doctor) say what to do about it."""

    def __init__(self, message: str, *, found: int, expected: int) -> None:
        super().__init__(message)
        self.found = found
        self.expected = expected


def schema_version(db: sqlite_utils.Database) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


@contextlib.contextmanager
def write_transaction(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """All of the block's writes or none: BEGIN IMMEDIATE ... COMMIT, ROLLBACK on error.

    `with db.conn:` is no transaction with sqlite-utils 4 (execute() and each insert_all
    chunk commit on their own); inside this block they join it (savepoints). IMMEDIATE
    takes the write lock up front, waiting busy_timeout for it: a deferred transaction
    that read first fails at once with "database is locked" when another connection
    wrote meanwhile. Nested use becomes a savepoint."""
    if db.conn.in_transaction:
        with db.atomic():
            yield db
        return
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.rollback()
        raise
    try:
        db.conn.execute("COMMIT")
    except BaseException:
        db.rollback()
        raise


def _statements(sql: str) -> Iterator[str]:
    """A migration script one statement at a time: executescript() would commit the
    surrounding transaction first."""
    buffer = ""
    for line in sql.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer
            buffer = ""
    if buffer.strip():
        raise StoreError(f"incomplete SQL statement in a migration: {buffer.strip()!r}")


def migrate(db: sqlite_utils.Database) -> int:
    """Apply pending migrations; returns the resulting schema version.

    user_version is read again inside the write transaction: a process that waited for
    the lock while another migrated finds nothing left to do."""
    latest = MIGRATIONS[-1][0]
    if schema_version(db) == latest:
        return latest  # the usual start: no write lock needed
    with write_transaction(db):
        current = schema_version(db)
        if current > latest:
            raise StoreError(
                f"database schema v{current} is newer than this software (v{latest}); upgrade it"
            )
        for version, sql in MIGRATIONS:
            if version <= current:
                continue
            for statement in _statements(sql):
                db.conn.execute(statement)
            db.conn.execute(f"PRAGMA user_version = {version}")
            log.info("database migrated to schema v%d", version)
    return schema_version(db)


def _enable_wal(conn: sqlite3.Connection, wait_s: float = 5.0) -> None:
    """Switch a new database to WAL (the mode is stored in the file). The switch needs
    an exclusive lock and SQLite reports BUSY at once instead of waiting busy_timeout,
    so a daemon and a CLI creating the database together retry here for a while."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL").fetchall()
            return
        except sqlite3.OperationalError as exc:
            busy = getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY
            if not busy or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


def open_database(state_dir: str | Path, *, readonly: bool = False) -> sqlite_utils.Database:
    """Open (creating if needed) state_dir/appliance.db, in WAL mode, migrated.

    readonly=True is for the commands that only look (status, doctor, recommend, report,
    catalog stats): they run as other users and beside the daemon, so they never create
    the folder or the file, never switch the journal mode and never migrate. A database
    at another schema version is refused (an older one may lack the tables a command
    reads) with a SchemaError naming both versions."""
    if readonly:
        return _open_readonly(Path(state_dir) / DB_NAME)
    path = Path(state_dir) / DB_NAME
    conn = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=5.0, check_same_thread=False)
        db = sqlite_utils.Database(conn)
        _enable_wal(conn)
        db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across app crashes
        db.execute("PRAGMA busy_timeout = 5000")
        migrate(db)
    except (OSError, sqlite3.Error, StoreError) as exc:
        if conn is not None:
            conn.close()
        raise StoreError(f"cannot open {path}: {exc}") from exc
    return db


def _open_readonly(path: Path) -> sqlite_utils.Database:
    """state_dir/appliance.db opened with SQLite's mode=ro, at this software's schema."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise StoreError(
            f"cannot open {path}: no database yet (the daemon creates it on its first run; "
            "so does emotion-appliance catalog import)"
        ) from None
    except OSError as exc:
        raise StoreError(f"cannot open {path}: {exc.strerror or exc}") from exc
    uri = "file:" + urllib.parse.quote(str(path.absolute())) + "?mode=ro"
    conn = None
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=5.0, check_same_thread=False)
        db = sqlite_utils.Database(conn)
        db.execute("PRAGMA busy_timeout = 5000")
        found = schema_version(db)
    except sqlite3.Error as exc:
        if conn is not None:
            conn.close()
        raise StoreError(f"cannot open {path}: {exc}") from exc
    expected = MIGRATIONS[-1][0]
    if found == expected:
        return db
    conn.close()
    if found > expected:
        why = f"database schema v{found} is newer than this software (v{expected}); upgrade it"
    elif found == 0:
        why = "the database has no tables yet (schema v0); the daemon sets it up when it starts"
    else:
        why = (
            f"database schema v{found} is older than this software's v{expected}; the daemon "
            "upgrades it when it next starts (read-only commands never migrate)"
        )
    raise SchemaError(f"cannot open {path}: {why}", found=found, expected=expected)
