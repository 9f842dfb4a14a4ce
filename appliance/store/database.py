"""The appliance's SQLite database: WAL mode, versioned migrations from day one.

Only derived numbers are stored (smoothed emotion samples, later songs and feedback);
never images. Each migration runs once, in order, inside a transaction, and bumps
PRAGMA user_version, so an old database upgrades itself on the next start.
"""

from __future__ import annotations

import logging
import sqlite3
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
)


class StoreError(RuntimeError):
    """The database cannot be opened or written (read-only, disk full, corrupt)."""


def schema_version(db: sqlite_utils.Database) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite_utils.Database) -> int:
    """Apply pending migrations; returns the resulting schema version."""
    current = schema_version(db)
    latest = MIGRATIONS[-1][0]
    if current > latest:
        raise StoreError(
            f"database schema v{current} is newer than this software (v{latest}); upgrade it"
        )
    for version, sql in MIGRATIONS:
        if version <= current:
            continue
        with db.conn:  # one transaction per migration
            db.conn.executescript(f"BEGIN; {sql}; PRAGMA user_version = {version}; COMMIT;")
        log.info("database migrated to schema v%d", version)
    return schema_version(db)


def open_database(state_dir: str | Path) -> sqlite_utils.Database:
    """Open (creating if needed) state_dir/appliance.db, in WAL mode, migrated."""
    path = Path(state_dir) / DB_NAME
    conn = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=5.0, check_same_thread=False)
        db = sqlite_utils.Database(conn)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across app crashes
        db.execute("PRAGMA busy_timeout = 5000")
        migrate(db)
    except (OSError, sqlite3.Error, StoreError) as exc:
        if conn is not None:
            conn.close()
        raise StoreError(f"cannot open {path}: {exc}") from exc
    return db
