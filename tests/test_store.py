"""The SQLite store: real files, WAL, migrations, and the errors a full or odd disk gives."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
import sqlite_utils

from appliance.affect.smoothing import AffectState
from appliance.config import load_config
from appliance.store import retention
from appliance.store.database import (
    DB_NAME,
    MIGRATIONS,
    SchemaError,
    StoreError,
    open_database,
    schema_version,
)
from appliance.store.retention import Retention, prune_history
from appliance.store.samples import recent_samples, sample_row, write_samples

LATEST = MIGRATIONS[-1][0]


def raw(path: Path) -> sqlite3.Connection:
    """A plain sqlite3 connection, to look at the file without the code under test."""
    return sqlite3.connect(str(path))


def state(t: float, emotion: str | None = "happy") -> AffectState:
    return AffectState(
        t=t,
        emotion=emotion,
        confidence=0.8125,
        face_presence=0.9375 if emotion else 0.125,
        probs={"angry": 0.0625, "happy": 0.8125, "sad": 0.125},
        valence=0.5 if emotion else None,
        arousal=0.25 if emotion else None,
    )


def test_open_creates_database_in_wal_mode_at_latest_version(tmp_path):
    state_dir = tmp_path / "state" / "nested"
    db = open_database(state_dir)
    try:
        assert (state_dir / DB_NAME).is_file()
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert schema_version(db) == LATEST
        assert "affect_samples" in db.table_names()
    finally:
        db.conn.close()
    conn = raw(state_dir / DB_NAME)
    try:  # WAL is a property of the file, not only of the connection that set it
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST
    finally:
        conn.close()


def test_reopening_is_idempotent_and_keeps_data(tmp_path):
    db = open_database(tmp_path)
    write_samples(db, [sample_row(state(1.0), 1, "demo", 1000.0)])
    db.conn.close()
    for _ in range(2):
        db = open_database(tmp_path)
        try:
            assert schema_version(db) == LATEST
            assert db["affect_samples"].count == 1
            indexes = [i.name for i in db["affect_samples"].indexes]
            assert indexes.count("affect_samples_t") == 1
        finally:
            db.conn.close()


def test_database_from_the_future_is_refused(tmp_path):
    conn = raw(tmp_path / DB_NAME)
    conn.execute(f"PRAGMA user_version = {LATEST + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError) as info:
        open_database(tmp_path)
    message = str(info.value)
    assert f"v{LATEST + 1}" in message
    assert "newer than this software" in message
    assert f"v{LATEST}" in message


def test_corrupt_database_file_gives_store_error(tmp_path):
    (tmp_path / DB_NAME).write_bytes(b"this is not an SQLite database, just text\n" * 100)
    with pytest.raises(StoreError, match=DB_NAME):
        open_database(tmp_path)


def test_state_dir_that_is_a_regular_file_gives_store_error(tmp_path):
    not_a_dir = tmp_path / "state"
    not_a_dir.write_text("I am a file")
    with pytest.raises(StoreError, match="cannot open"):
        open_database(not_a_dir)
    with pytest.raises(StoreError, match="cannot open"):
        open_database(not_a_dir / "below")


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory permissions"
)
def test_unwritable_state_dir_gives_store_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(StoreError, match="cannot open"):
            open_database(locked)
        with pytest.raises(StoreError, match="cannot open"):
            open_database(locked / "sub")
    finally:
        locked.chmod(0o700)


def test_sample_row_from_affect_state():
    row = sample_row(state(12.5), faces=2, source="camera v4l2:0", t_wall=1700000000.25)
    assert row == {
        "t_wall": 1700000000.25,
        "t_stream": 12.5,
        "emotion": "happy",
        "confidence": 0.8125,
        "face_presence": 0.9375,
        "probs": json.dumps({"angry": 0.0625, "happy": 0.8125, "sad": 0.125}),
        "valence": 0.5,
        "arousal": 0.25,
        "faces": 2,
        "source": "camera v4l2:0",
    }
    assert sample_row(state(1.0, None), 0, "demo", 0.0)["emotion"] is None
    assert sample_row(state(1.0, None), 0, "demo", 0.0)["valence"] is None


def test_a_v1_database_is_migrated_keeping_its_rows(tmp_path):
    """A database written by the first release (no VA columns) upgrades in place."""
    conn = raw(tmp_path / DB_NAME)
    conn.executescript(MIGRATIONS[0][1] + "; PRAGMA user_version = 1;")
    conn.execute(
        "INSERT INTO affect_samples (t_wall, t_stream, emotion, confidence, face_presence,"
        " probs, faces, source) VALUES (1, 2, 'sad', 0.5, 1.0, '{}', 1, 'demo')"
    )
    conn.commit()
    conn.close()
    db = open_database(tmp_path)
    try:
        assert schema_version(db) == LATEST
        rows = recent_samples(db)
        assert rows[0]["emotion"] == "sad" and rows[0]["valence"] is None
        write_samples(db, [sample_row(state(3.0), 1, "demo", 4.0)])
        assert recent_samples(db)[-1]["valence"] == 0.5
    finally:
        db.conn.close()


def test_write_and_read_back_samples(tmp_path):
    db = open_database(tmp_path)
    try:
        rows = [
            sample_row(state(float(i), None if i % 3 == 0 else "happy"), i % 2, "demo", 100.0 + i)
            for i in range(10)
        ]
        write_samples(db, rows[:4])
        write_samples(db, rows[4:])
        write_samples(db, [])  # nothing to do, no error
        back = recent_samples(db, limit=5)
        assert [r["t_stream"] for r in back] == [5.0, 6.0, 7.0, 8.0, 9.0]  # oldest first
        for got, sent in zip(back, rows[5:], strict=True):
            assert {k: got[k] for k in sent} == sent
            assert json.loads(got["probs"]) == state(0).probs
        assert back[1]["emotion"] is None  # t 6: no face
        assert len(recent_samples(db)) == 10
    finally:
        db.conn.close()
    # visible to another connection (committed), read without the code under test
    conn = raw(tmp_path / DB_NAME)
    try:
        assert conn.execute("SELECT count(*) FROM affect_samples").fetchone()[0] == 10
    finally:
        conn.close()


def test_recent_samples_of_empty_database(tmp_path):
    db = open_database(tmp_path)
    try:
        assert recent_samples(db) == []
    finally:
        db.conn.close()


def test_write_to_read_only_database_gives_store_error(tmp_path):
    open_database(tmp_path).conn.close()
    uri = f"file:{tmp_path / DB_NAME}?mode=ro"
    db = sqlite_utils.Database(sqlite3.connect(uri, uri=True))
    try:
        with pytest.raises(StoreError, match="cannot write affect samples"):
            write_samples(db, [sample_row(state(1.0), 1, "demo", 1.0)])
    finally:
        db.conn.close()


def test_concurrent_first_opens_migrate_once(tmp_path):
    """The daemon and a CLI command creating the database at the same moment: before,
    both read user_version 0 and both migrated ("table affect_samples already exists")."""
    import threading

    for trial in range(8):
        state_dir = tmp_path / f"fresh{trial}"
        barrier = threading.Barrier(6)
        errors: list[BaseException] = []

        def opener(
            state_dir: Path = state_dir,
            barrier: threading.Barrier = barrier,
            errors: list[BaseException] = errors,
        ) -> None:
            barrier.wait()
            try:
                open_database(state_dir).conn.close()
            except BaseException as exc:  # reported by the assert below
                errors.append(exc)

        threads = [threading.Thread(target=opener) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        conn = raw(state_dir / DB_NAME)
        try:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            conn.close()


def test_a_failing_migration_leaves_the_database_as_it_was(tmp_path, monkeypatch):
    """All pending migrations are one transaction: no half-made schema to trip over."""
    from appliance.store import database

    bad = (*MIGRATIONS, (LATEST + 1, "CREATE TABLE extra (x);\nCREATE TABLE extra (x);"))
    monkeypatch.setattr(database, "MIGRATIONS", bad)
    with pytest.raises(StoreError, match="already exists"):
        open_database(tmp_path)
    conn = raw(tmp_path / DB_NAME)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
        tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        assert tables == []
    finally:
        conn.close()
    monkeypatch.setattr(database, "MIGRATIONS", MIGRATIONS)
    db = open_database(tmp_path)
    try:
        assert schema_version(db) == LATEST
    finally:
        db.conn.close()


def test_write_samples_is_one_transaction_beyond_a_chunk(tmp_path):
    """sqlite-utils 4 commits insert_all per chunk of 100 rows unless a transaction is
    open: a failure in the second chunk must not leave the first stored."""
    db = open_database(tmp_path)
    try:
        rows = [sample_row(state(float(i)), 1, "demo", 1000.0 + i) for i in range(150)]
        rows[120]["confidence"] = None  # NOT NULL: the second chunk fails
        with pytest.raises(StoreError):
            write_samples(db, rows)
        assert db["affect_samples"].count == 0 and not db.conn.in_transaction
    finally:
        db.conn.close()


# --------------------------------------------------------------------------- retention

DAY = 86400.0
NOW = 1_750_000_000.0


def settings(*overrides: str):
    return load_config(None, overrides, default_path="/nonexistent/config.toml")


def song(user: str, uri: str, state: str, days_ago: float) -> dict:
    t = NOW - days_ago * DAY
    return {"user": user, "uri": uri, "state": state, "created_at": t, "updated_at": t}


def test_prune_removes_old_history_and_keeps_recent(tmp_path):
    db = open_database(tmp_path)
    try:
        ages = [45.0, 31.0, 29.0, 1.0, 0.0]  # days
        write_samples(
            db, [sample_row(state(i), 1, "demo", NOW - a * DAY) for i, a in enumerate(ages)]
        )
        db["vlm_notes"].insert_all(
            {"t_wall": NOW - a * DAY, "reply": "r", "latency_ms": 1.0} for a in ages
        )
        db["mood_changes"].insert_all(
            {"run_id": f"run{i}", "t_stream": 0.0, "t_wall": NOW - a * DAY, "mood": "calm"}
            for i, a in enumerate(ages)
        )
        db["runs"].insert_all(
            {
                "run_id": f"run{i}",
                "source": "demo",
                "started_at": NOW - a * DAY - 60,
                "t_stream0": 0.0,
                "last_wall": NOW - a * DAY,
                "last_stream": 60.0,
                "samples": 60,
            }
            for i, a in enumerate(ages)
        )
        pruned = prune_history(db, Retention(30.0, 30.0), NOW)
        assert (pruned.samples, pruned.notes, pruned.moods, pruned.runs) == (2, 2, 2, 2)
        assert pruned.done
        kept = [round((NOW - t) / DAY) for (t,) in db.execute("SELECT t_wall FROM affect_samples")]
        assert kept == [29, 1, 0]
        assert db["vlm_notes"].count == 3
        assert [r for (r,) in db.execute("SELECT run_id FROM runs ORDER BY run_id")] == [
            "run2",
            "run3",
            "run4",
        ]
        assert db["mood_changes"].count == 3
        assert prune_history(db, Retention(30.0, 30.0), NOW).total == 0  # nothing left to do
    finally:
        db.conn.close()


def test_history_days_zero_keeps_everything(tmp_path):
    db = open_database(tmp_path)
    try:
        write_samples(db, [sample_row(state(0), 1, "demo", NOW - 3650 * DAY)])
        db["queue"].insert(song("ann", "spotify:track:a", "played", 3650.0))
        db["queue"].insert(song("ann", "spotify:track:b", "played", 3000.0))
        retention = Retention.from_config(settings("storage.history_days=0"))
        assert not retention.enabled
        assert prune_history(db, retention, NOW).total == 0
        assert db["affect_samples"].count == 1 and db["queue"].count == 2
    finally:
        db.conn.close()


def test_prune_removes_only_old_finished_songs_and_keeps_feedback(tmp_path):
    """Waiting songs are the outbox; each user's newest row tells a button press which
    song it means; likes and skips are the recommender's taste history."""
    db = open_database(tmp_path)
    try:
        db["queue"].insert_all(
            [
                song("ann", "spotify:track:old-played", "played", 60.0),
                song("ann", "spotify:track:old-skipped", "skipped", 50.0),
                song("ann", "spotify:track:old-failed", "failed", 40.0),
                song("ann", "spotify:track:old-waiting", "recommended", 40.0),
                song("ann", "spotify:track:old-sent", "sent", 39.0),
                song("ann", "spotify:track:recent", "played", 2.0),
                song("bob", "spotify:track:bob-only", "played", 90.0),  # bob's newest
            ]
        )
        db["feedback"].insert(
            {
                "user": "ann",
                "uri": "spotify:track:old-played",
                "action": "like",
                "t": NOW - 60 * DAY,
                "source": "gpio",
            }
        )
        pruned = prune_history(db, Retention(30.0, 30.0), NOW)
        assert pruned.songs == 3
        left = {uri.split(":")[-1] for (uri,) in db.execute("SELECT uri FROM queue")}
        assert left == {"old-waiting", "old-sent", "recent", "bob-only"}
        assert db["feedback"].count == 1
    finally:
        db.conn.close()


def test_songs_outlive_a_short_history_within_the_no_repeat_window():
    config = settings("storage.history_days=7", "music.no_repeat_hours=720")
    assert Retention.from_config(config) == Retention(7.0, 30.0)
    assert Retention.from_config(settings()) == Retention(30.0, 30.0)


def test_a_large_backlog_is_pruned_in_batches(tmp_path):
    db = open_database(tmp_path)
    try:
        write_samples(db, [sample_row(state(i), 1, "demo", NOW - 40 * DAY + i) for i in range(25)])
        write_samples(db, [sample_row(state(0), 1, "demo", NOW)])
        first = prune_history(db, Retention(30.0, 30.0), NOW, batch=10)
        assert (first.samples, first.done) == (10, False)
        assert prune_history(db, Retention(30.0, 30.0), NOW, batch=10).samples == 10
        last = prune_history(db, Retention(30.0, 30.0), NOW, batch=10)
        assert (last.samples, last.done) == (5, True)
        assert db["affect_samples"].count == 1
    finally:
        db.conn.close()


def test_prune_finds_old_rows_through_an_index(tmp_path):
    """No table scan of a year of samples once a day: the t_wall indexes answer."""
    db = open_database(tmp_path)
    try:
        history = retention._DELETE_HISTORY
        for sql in (history["samples"], history["notes"], retention._DELETE_SONGS):
            plan = [row[-1] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", [NOW, 10])]
            assert not any(step.startswith("SCAN") and "INDEX" not in step for step in plan), plan
        plan = " ".join(
            r[-1] for r in db.execute(f"EXPLAIN QUERY PLAN {history['samples']}", [NOW, 10])
        )
        assert "INDEX affect_samples_t" in plan
    finally:
        db.conn.close()


def test_prune_on_a_read_only_database_gives_store_error(tmp_path):
    db = open_database(tmp_path)
    write_samples(db, [sample_row(state(0), 1, "demo", NOW - 40 * DAY)])
    db.conn.close()
    conn = sqlite3.connect(f"file:{tmp_path / DB_NAME}?mode=ro", uri=True)
    try:
        with pytest.raises(StoreError, match="prune"):
            prune_history(sqlite_utils.Database(conn), Retention(30.0, 30.0), NOW)
    finally:
        conn.close()


# ------------------------------------------------------------------------ read-only opens


def old_database(state_dir: Path, version: int) -> Path:
    """A database as release `version` left it (its migrations only)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    conn = raw(state_dir / DB_NAME)
    for number, sql in MIGRATIONS[:version]:
        conn.executescript(sql + f"; PRAGMA user_version = {number};")
    conn.commit()
    conn.close()
    return state_dir / DB_NAME


def test_a_read_only_open_of_a_missing_database_creates_nothing(tmp_path):
    state_dir = tmp_path / "state"
    with pytest.raises(StoreError) as info:
        open_database(state_dir, readonly=True)
    message = str(info.value)
    assert str(state_dir / DB_NAME) in message
    assert "the daemon creates it on its first run" in message
    assert not state_dir.exists()
    state_dir.mkdir()
    with pytest.raises(StoreError, match="first run"):
        open_database(state_dir, readonly=True)
    assert list(state_dir.iterdir()) == []


def test_a_read_only_open_reads_and_never_writes(tmp_path):
    db = open_database(tmp_path)
    write_samples(db, [sample_row(state(1.0), 1, "demo", 1000.0)])
    db.conn.close()
    ro = open_database(tmp_path, readonly=True)
    try:
        assert schema_version(ro) == LATEST
        assert ro["affect_samples"].count == 1
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            ro.execute("DELETE FROM affect_samples")
    finally:
        ro.conn.close()
    assert recent_samples(open_database(tmp_path))[0]["emotion"] == "happy"


@pytest.mark.parametrize("version", [0, 1, 2, LATEST - 1])
def test_a_read_only_open_never_migrates_an_older_schema(tmp_path, version):
    path = old_database(tmp_path, version)
    before = path.read_bytes()
    with pytest.raises(SchemaError) as info:
        open_database(tmp_path, readonly=True)
    assert (info.value.found, info.value.expected) == (version, LATEST)
    message = str(info.value)
    assert str(path) in message and "the daemon" in message
    if version:
        assert f"v{version}" in message and f"v{LATEST}" in message
        assert "never migrate" in message
    assert path.read_bytes() == before  # not one byte changed
    conn = raw(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == version
    finally:
        conn.close()


def test_a_read_only_open_reports_a_newer_schema(tmp_path):
    path = old_database(tmp_path, LATEST)
    conn = raw(path)
    conn.execute(f"PRAGMA user_version = {LATEST + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaError, match="newer than this software") as info:
        open_database(tmp_path, readonly=True)
    assert info.value.found == LATEST + 1


def test_a_read_only_open_of_garbage_is_a_store_error(tmp_path):
    (tmp_path / DB_NAME).write_bytes(b"this is not an SQLite database, just text\n" * 100)
    with pytest.raises(StoreError, match=DB_NAME):
        open_database(tmp_path, readonly=True)
