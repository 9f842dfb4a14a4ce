"""The publisher thread: status and samples off the frame loop, and surviving bad disks."""

from __future__ import annotations

import json
import logging
import sqlite3
import time

from appliance.affect.smoothing import AffectState
from appliance.pipeline import FrameResult
from appliance.service import publisher as publisher_module
from appliance.service.publisher import Board, Publisher
from appliance.service.status import CRITICAL, OK, assess, read_status
from appliance.store.database import StoreError, open_database
from appliance.store.retention import Retention
from appliance.store.samples import sample_row, write_samples


def result(index: int, t: float) -> FrameResult:
    state = AffectState(
        t=t, emotion="happy", confidence=0.8, face_presence=1.0, probs={"happy": 0.8, "sad": 0.2}
    )
    return FrameResult(index=index, t=t, faces=[], smoothed=state, latency_ms={"total": 1.0})


def wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def make(
    tmp_path,
    state_dir,
    *,
    status_interval_s: float = 0.05,
    flush_interval_s: float | None = 0.05,
    **kw,
) -> tuple[Board, Publisher]:
    """A board and a publisher on tmp dirs; flush_interval_s None keeps the publisher's
    own default."""
    if flush_interval_s is not None:
        kw["flush_interval_s"] = flush_interval_s
    board = Board(info={"source": "test"}, sample_period_s=1.0)
    publisher = Publisher(
        board,
        state_dir=str(state_dir),
        runtime_dir=str(tmp_path / "run"),
        status_interval_s=status_interval_s,
        **kw,
    )
    return board, publisher


def samples(state_dir) -> list[tuple]:
    db = sqlite3.connect(state_dir / "appliance.db")
    try:
        return db.execute("SELECT t_stream, emotion FROM affect_samples ORDER BY id").fetchall()
    finally:
        db.close()


def test_samples_follow_stream_time_and_status_is_published(tmp_path):
    board, publisher = make(tmp_path, tmp_path / "state")
    publisher.start()
    try:
        for i in range(75):  # 5 s of stream at 15 fps, posted as fast as possible
            board.post(result(i, i / 15))
        assert wait_for(lambda: publisher.samples_written == 5)
        assert wait_for(lambda: (read_status(tmp_path / "run") or {}).get("frames") == 75)
        status = read_status(tmp_path / "run")
        assert status["emotion"] == "happy" and status["state"] == "running"
        assert assess(status, 10)[0] == OK
    finally:
        publisher.stop()
    assert [round(t) for t, _ in samples(tmp_path / "state")] == [0, 1, 2, 3, 4]
    assert read_status(tmp_path / "run")["state"] == "stopped"  # a stopped publisher says so


def test_failing_disk_is_critical_keeps_samples_and_recovers(tmp_path):
    blocked = tmp_path / "state"
    blocked.write_text("a file where the state directory should be")
    board, publisher = make(tmp_path, blocked, store_retry_s=0.1)
    publisher.start()
    try:
        for i in range(45):
            board.post(result(i, i / 15))
        assert wait_for(lambda: (read_status(tmp_path / "run") or {}).get("storage_error"))
        code, reason = assess(read_status(tmp_path / "run"), 10)
        assert code == CRITICAL and "storage" in reason
        assert publisher.is_alive()  # the run goes on
        blocked.unlink()  # the disk comes back
        assert wait_for(lambda: publisher.samples_written == 3)
        assert wait_for(lambda: not read_status(tmp_path / "run")["storage_error"])
    finally:
        publisher.stop()
    assert [round(t) for t, _ in samples(blocked)] == [0, 1, 2]  # nothing lost meanwhile


def test_a_bug_in_one_step_does_not_stop_status(tmp_path, caplog):
    board, publisher = make(tmp_path, tmp_path / "state")
    calls = []

    def broken() -> None:
        calls.append(1)
        raise ValueError("boom")

    publisher._flush_samples = broken  # a step that always fails
    publisher.start()
    try:
        board.post(result(0, 0.0))
        assert wait_for(lambda: len(calls) >= 3)
        assert wait_for(lambda: (read_status(tmp_path / "run") or {}).get("frames") == 1)
    finally:
        publisher.stop()
    failures = [r for r in caplog.records if "broken failed" in r.getMessage()]
    assert len(failures) == 1  # logged once, not once per tick


def test_final_status_is_written_on_stop(tmp_path):
    board, publisher = make(tmp_path, tmp_path / "state")
    publisher.start()
    board.post(result(0, 0.0))
    board.set(state="stopped")
    publisher.stop()
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "stopped" and status["frames"] == 1


class Counter:
    def __init__(self) -> None:
        self.ticks = 0

    def tick(self, view) -> None:
        self.ticks += 1

    def snapshot(self) -> dict:
        return {}


def test_companions_tick_on_their_own_clock_whatever_the_status_interval(tmp_path):
    """The systemd watchdog is pinged from a companion tick: a 45 s status interval
    must not starve a 30 s watchdog."""
    counter = Counter()
    _, publisher = make(
        tmp_path, tmp_path / "state", status_interval_s=45.0, flush_interval_s=None,
        companions=[counter],
    )  # fmt: skip
    assert publisher.companion_period == Publisher.COMPANION_MAX_S <= 10.0
    publisher.companion_period = 0.05  # the same loop, faster, to keep the test short
    publisher.start()
    try:
        assert wait_for(lambda: counter.ticks >= 5, timeout=5.0)
    finally:
        publisher.stop()


def seed_history(state_dir, ages_days: list[float]) -> None:
    """Samples at t_stream 0, 1, 2... written the given number of days ago."""
    now = time.time()
    rows = [
        sample_row(result(i, float(i)).smoothed, 1, "test", now - age * 86400)
        for i, age in enumerate(ages_days)
    ]
    db = open_database(state_dir)
    try:
        write_samples(db, rows)
    finally:
        db.conn.close()


def test_history_older_than_the_retention_is_pruned_at_start(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="appliance.service.publisher")
    seed_history(tmp_path / "state", [400.0, 31.0, 29.0, 0.0])
    _, publisher = make(tmp_path, tmp_path / "state", retention=Retention(30.0, 30.0))

    def logged() -> bool:
        return any("pruned history: 2 affect samples" in r.getMessage() for r in caplog.records)

    publisher.start()
    try:
        assert wait_for(lambda: len(samples(tmp_path / "state")) == 2)
        assert wait_for(logged)
    finally:
        publisher.stop()
    assert [t for t, _ in samples(tmp_path / "state")] == [2.0, 3.0]  # the recent ones


def test_history_days_zero_keeps_all_history(tmp_path):
    seed_history(tmp_path / "state", [400.0, 31.0, 0.0])
    board, publisher = make(tmp_path, tmp_path / "state", retention=Retention(0.0, 0.0))
    publisher.start()
    try:
        board.post(result(0, 0.0))
        assert wait_for(lambda: publisher.samples_written == 1)
    finally:
        publisher.stop()
    assert len(samples(tmp_path / "state")) == 4


class Listener(Counter):
    """A companion that also takes the affect samples, like the music director."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict] = []

    def samples(self, rows: list[dict]) -> None:
        self.rows.extend(rows)


def test_samples_are_committed_in_batches_and_flushed_on_stop(tmp_path, monkeypatch):
    """One commit per FLUSH_INTERVAL_S, not one a second (SD-card wear), while status and
    the companions stay as fresh as before; a clean stop writes what is buffered."""
    commits: list[int] = []

    def counting(db, rows: list[dict]) -> None:
        commits.append(len(rows))
        write_samples(db, rows)

    monkeypatch.setattr(publisher_module, "write_samples", counting)
    listener = Listener()
    board, publisher = make(
        tmp_path, tmp_path / "state", flush_interval_s=None, companions=[listener]
    )
    assert 10.0 <= publisher.flush_period <= 30.0
    publisher.start()
    try:
        for i in range(45):  # 3 s of stream: 3 samples
            board.post(result(i, i / 15))
        assert wait_for(lambda: len(listener.rows) == 3)  # handed off within a second
        assert wait_for(lambda: (read_status(tmp_path / "run") or {}).get("frames") == 45)
        time.sleep(1.5)  # past the old one-second commit period
        assert commits == [] and publisher.samples_written == 0
    finally:
        publisher.stop()
    assert commits == [3]  # everything buffered, in one transaction
    assert [round(t) for t, _ in samples(tmp_path / "state")] == [0, 1, 2]
    assert read_status(tmp_path / "run")["samples_written"] == 3


def locked_prune(calls: list[int]):
    """prune_history as it fails while `catalog import` holds the write lock."""

    def prune(db, retention, now):
        calls.append(1)
        raise StoreError("cannot prune old history: database is locked")

    return prune


def test_a_failed_prune_is_a_warning_not_a_storage_outage(tmp_path, monkeypatch, caplog):
    """A prune that loses the write lock once used to close the database, set status
    CRITICAL and block writes for STORE_RETRY_S: a stop in that window threw away the
    buffered samples. Now only the prune waits; the samples are written."""
    calls: list[int] = []
    monkeypatch.setattr(publisher_module, "prune_history", locked_prune(calls))
    board, publisher = make(tmp_path, tmp_path / "state")  # default 30 s retry gate
    publisher.start()
    try:
        assert wait_for(lambda: calls)
        for i in range(45):  # 3 s of stream: 3 samples
            board.post(result(i, i / 15))
        assert wait_for(lambda: (read_status(tmp_path / "run") or {}).get("frames") == 45)
        assert not read_status(tmp_path / "run")["storage_error"]
    finally:
        publisher.stop()
    assert [round(t) for t, _ in samples(tmp_path / "state")] == [0, 1, 2]
    status = read_status(tmp_path / "run")
    assert status["storage_error"] is None and status["samples_written"] == 3
    assert assess(status, 10)[0] != CRITICAL
    warnings = [r for r in caplog.records if "database is locked" in r.getMessage()]
    assert [r.levelno for r in warnings] == [logging.WARNING]


def test_a_failing_prune_warns_once_and_retries_later(tmp_path, monkeypatch, caplog):
    calls: list[int] = []
    monkeypatch.setattr(publisher_module, "prune_history", locked_prune(calls))
    monkeypatch.setattr(publisher_module, "PRUNE_RETRY_S", 0.05)  # an hour, shortened
    _, publisher = make(tmp_path, tmp_path / "state")
    publisher.start()
    try:
        assert wait_for(lambda: len(calls) >= 3)
    finally:
        publisher.stop()
    warnings = [r for r in caplog.records if "database is locked" in r.getMessage()]
    assert len(warnings) == 1  # once per distinct message, not once per retry
    assert publisher.storage_error is None


def test_stop_writes_samples_held_back_by_a_failed_flush(tmp_path):
    """After a failed flush the database waits STORE_RETRY_S before the next try; a stop
    in that window once dropped the buffer unwritten. The final flush tries anyway."""
    blocked = tmp_path / "state"
    blocked.write_text("a file where the state directory should be")
    board, publisher = make(tmp_path, blocked, retention=Retention(0.0, 0.0))
    publisher.start()
    try:
        for i in range(45):
            board.post(result(i, i / 15))
        assert wait_for(lambda: (read_status(tmp_path / "run") or {}).get("storage_error"))
        blocked.unlink()  # the disk is back, well inside the 30 s retry gate
    finally:
        publisher.stop()
    assert [round(t) for t, _ in samples(blocked)] == [0, 1, 2]
    assert read_status(tmp_path / "run")["storage_error"] is None


def test_samples_that_cannot_be_written_on_stop_are_reported_lost(tmp_path, caplog):
    blocked = tmp_path / "state"
    blocked.write_text("a file where the state directory should be")
    board, publisher = make(tmp_path, blocked, retention=Retention(0.0, 0.0))
    publisher.start()
    try:
        for i in range(45):
            board.post(result(i, i / 15))
        assert wait_for(lambda: (read_status(tmp_path / "run") or {}).get("storage_error"))
    finally:
        publisher.stop()  # the disk still fails
    lost = [r for r in caplog.records if r.levelno == logging.ERROR and "lost" in r.getMessage()]
    assert len(lost) == 1 and "3 affect samples" in lost[0].getMessage()
