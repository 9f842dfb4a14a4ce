"""Everything slow the daemon does, done off the frame loop on one background thread.

The frame loop only hands its latest result to `Board.post` (a lock and a few
assignments). The publisher wakes on its own clock to write the status snapshot and
the rate-limited SQLite samples, so a slow SD card or a full disk never stalls frames.

Samples are committed in batches every FLUSH_INTERVAL_S, not one commit a second: each
commit rewrites whole pages of the WAL (kilobytes for a few hundred bytes of samples),
wear an SD card does not need. A clean stop writes what is buffered; a power cut loses
at most the last FLUSH_INTERVAL_S of samples, acceptable for a history (nothing else
depends on them). Status goes to tmpfs and keeps its own, faster cadence.

On stop the status says "stopping" at once (the signal handler sets `Board.stopping`
and wakes this thread), then the buffer gets one last write that may wait for a held
write lock (another process importing the catalog) up to `final_wait_s`, and only then
the final state: "stopped", "finished" or "failed", with any problem still present
(samples that could not be written are counted and logged at ERROR).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import sqlite_utils

from appliance import __version__
from appliance.common import process
from appliance.common.worker import Worker
from appliance.hardware.pi_health import read_health
from appliance.pipeline import FrameResult
from appliance.service.status import write_status
from appliance.store.database import StoreError, open_database
from appliance.store.retention import Retention, prune_history
from appliance.store.samples import RunClock, sample_row, write_samples

log = logging.getLogger(__name__)

STORE_RETRY_S = 30.0
MAX_BACKLOG = 3600  # samples kept in memory while the disk is failing
# One SQLite commit per this many seconds: ~15x fewer WAL writes than one a second, while
# a power cut loses at most this much history and a failing disk shows in status within
# it. A constant, not a key: the trade-off does not differ between installations.
FLUSH_INTERVAL_S = 15.0
HANDOFF_INTERVAL_S = 1.0  # companions (the music director) get new samples this often
PRUNE_PERIOD_S = 86400.0  # old history is deleted at start and then once a day
PRUNE_BACKLOG_S = 1.0  # between batches of a large backlog: status and watchdog go on
# After a failed prune (typically "database is locked" while `catalog import` writes):
# only the prune waits; samples keep their own schedule and report a real disk fault.
PRUNE_RETRY_S = 3600.0
# How long a prune waits for a write lock: briefly, it retries later anyway, and while it
# waits this thread writes no status and cannot begin a stop.
PRUNE_BUSY_S = 0.5
BUSY_S = 5.0  # every other write's wait for a lock (as open_database sets it)


# The final flush may wait this long for a write lock another process holds; the daemon
# passes what is left of its stop budget instead.
FINAL_WAIT_S = 8.0


@dataclass(frozen=True)
class BoardView:
    """A consistent copy of the board, taken under its lock."""

    state: str
    frames: int
    frames_with_face: int
    latest: FrameResult | None
    camera_error: str | None
    last_error: str | None


@dataclass
class Board:
    """The latest state of the frame loop, shared with the publisher under a lock.

    `stopping` is a plain flag a signal handler may set (no lock: the handler runs on
    the main thread, which may hold the lock at that moment); `final_state` is set by
    the daemon when the loop has ended ("stopped", "finished" or "failed")."""

    info: dict[str, Any]
    state: str = "starting"
    stopping: bool = False
    final_state: str | None = None
    frames: int = 0
    frames_with_face: int = 0
    latest: FrameResult | None = None
    camera_error: str | None = None
    last_error: str | None = None
    sample_period_s: float = 1.0
    # this run's id and stream clock: every stored event of the run carries both
    run: RunClock = field(default_factory=RunClock)
    samples: deque = field(default_factory=lambda: deque(maxlen=MAX_BACKLOG))
    _next_sample_t: float = float("-inf")
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def post(self, result: FrameResult) -> None:
        """Called once per frame; picks samples by *stream* time so a recording processed
        faster than real time still gets one sample per period of its own timeline."""
        with self._lock:
            self.latest = result
            self.frames += 1
            self.frames_with_face += bool(result.faces)
            self.state = "running"
            self.camera_error = None
            self.run.advance(result.t)
            if result.t >= self._next_sample_t or result.t < self._next_sample_t - 2 * (
                self.sample_period_s
            ):
                self._next_sample_t = result.t + self.sample_period_s
                self.samples.append(
                    sample_row(
                        result.smoothed,
                        len(result.faces),
                        self.info.get("source", ""),
                        time.time(),
                        self.run.run_id,
                        distance_m=result.faces[0].distance_m if result.faces else None,
                    )
                )

    def take_samples(self) -> list[dict]:
        with self._lock:
            rows = list(self.samples)
            self.samples.clear()
            return rows

    def set(self, **changes: Any) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(self, key, value)

    def read(self) -> BoardView:
        with self._lock:
            return BoardView(
                self.state,
                self.frames,
                self.frames_with_face,
                self.latest,
                self.camera_error,
                self.last_error,
            )


class Companion(Protocol):
    """Something slow that follows the frame loop (the music side, the VLM worker, the
    systemd heartbeat): its snapshot merged into status. A companion with a
    `tick(view)` method is ticked each status period on the publisher thread; one with
    a `samples(rows)` method also gets each batch of affect samples the board picked."""

    def snapshot(self) -> dict[str, Any]: ...


class Publisher(Worker):
    """Writes status every status_interval_s, hands the samples the board picked (one per
    sample period of stream time) to companions every HANDOFF_INTERVAL_S and commits
    them to SQLite every flush_interval_s and on stop (one last try whatever the retry
    wait of a failed disk; what still cannot be written is logged as lost), until
    stopped. Companions tick at least every COMPANION_MAX_S whatever the status
    interval: the systemd watchdog (WatchdogSec=30) is pinged from a tick. History older
    than `retention` is deleted at start and once a day, here because this thread
    already owns the writes."""

    COMPANION_MAX_S = 5.0
    stop_grace_s = FINAL_WAIT_S + 2.0  # the last worker stopped: it gets what is left

    def __init__(
        self,
        board: Board,
        *,
        state_dir: str,
        runtime_dir: str,
        status_interval_s: float,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        store_retry_s: float = STORE_RETRY_S,
        companions: Sequence[Companion] = (),
        retention: Retention | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__("publisher")
        self.clock = clock
        self.board = board
        self.state_dir = state_dir
        self.runtime_dir = runtime_dir
        self.flush_period = flush_interval_s
        self.handoff_period = min(HANDOFF_INTERVAL_S, flush_interval_s)
        self.store_retry_s = store_retry_s
        self.status_period = status_interval_s
        self.companion_period = min(status_interval_s, self.COMPANION_MAX_S)
        self.companions = tuple(companions)
        self.retention = retention or Retention()  # 30 days, as storage.history_days
        self.started_at = time.time()
        self.storage_error: str | None = None
        self.samples_written = 0
        self.samples_lost = 0  # dropped from a full backlog, or unwritable at stop
        self.final_wait_s = FINAL_WAIT_S
        self._done = False  # the final flush is over: status shows the final state
        self._identity = process.identity()
        self._db = None
        self._db_retry_at = 0.0
        self._pending: list[dict] = []
        self._next_prune = clock() if self.retention.enabled else float("inf")
        self._pruned: dict[str, int] = {}
        self._prune_warned: str | None = None
        self._fps = 0.0
        self._fps_mark: tuple[float, int] = (clock(), 0)
        self._status_warned = False
        self._last_bug = ""
        self.last_status: dict[str, Any] | None = None  # the last snapshot written

    def busy_with(self) -> str:
        pending = len(self._pending) + len(self.board.samples)
        return f"{pending} samples not yet written; {self.storage_error or 'storage ok'}"

    def work(self) -> None:
        next_handoff = next_status = next_tick = self.clock()
        next_flush = next_handoff + self.flush_period
        announced_stop = False
        while not self.stopping.is_set():
            now = self.clock()
            if self.board.stopping and not announced_stop:
                announced_stop, next_status = True, now  # "stopping" at once
            if now >= next_handoff:
                self._guarded(self._take_samples)
                next_handoff = now + self.handoff_period
            if now >= next_flush:
                self._guarded(self._flush_samples)
                next_flush = now + self.flush_period
            if now >= next_tick:
                self._guarded(self._tick_companions)
                next_tick = now + self.companion_period
            if now >= next_status:
                self._guarded(self._write_status)
                next_status = now + self.status_period
            if now >= self._next_prune:
                self._next_prune = now + PRUNE_PERIOD_S  # a bug in the step must not spin
                self._guarded(self._prune_history)
            soonest = min(next_handoff, next_flush, next_status, next_tick, self._next_prune)
            self.pause(max(0.01, soonest - self.clock()))

    def finish(self) -> None:
        """On stop (and after a crash of the loop): "stopping", the last write, then the
        final state."""
        self._guarded(self._write_status)
        self._guarded(self._final_flush)
        self._done = True
        self._guarded(self._write_status)
        if self._db is not None:
            self._db.conn.close()
            self._db = None

    def _guarded(self, step: Callable[[], None]) -> None:
        """A bug in one step must not silently end status and storage for the whole run:
        log it (once per distinct message) and keep ticking."""
        try:
            step()
        except Exception as exc:
            if str(exc) != self._last_bug:
                log.exception("publisher %s failed", step.__name__)
                self._last_bug = str(exc)

    def _tick_companions(self) -> None:
        view = self.board.read()
        for companion in self.companions:
            if hasattr(companion, "tick"):
                self._guarded(lambda c=companion: c.tick(view))

    def _take_samples(self) -> None:
        """Move the board's new samples to the companions and the write buffer."""
        taken = self.board.take_samples()
        for companion in self.companions:
            if taken and hasattr(companion, "samples"):
                self._guarded(lambda c=companion: c.samples(taken))
        self._pending.extend(taken)
        if len(self._pending) > MAX_BACKLOG:
            self.samples_lost += len(self._pending) - MAX_BACKLOG
            del self._pending[:-MAX_BACKLOG]

    def _flush_samples(self, busy_timeout_s: float | None = None) -> None:
        """Commit everything buffered, in one transaction; `busy_timeout_s` bounds the
        wait for a write lock another process holds (the connection's default else)."""
        self._take_samples()
        if not self._pending:
            return
        try:
            db = self._database()
            if db is None:
                return
            if busy_timeout_s is not None:
                _set_busy_timeout(db, busy_timeout_s)
            write_samples(db, self._pending)
            self.samples_written += len(self._pending)
            self._pending.clear()
            self._storage_ok()
        except StoreError as exc:
            self._storage_failed(exc)

    def _final_flush(self) -> None:
        """On stop: one last try to write the buffer, even within the retry wait of a
        failed disk (it may be back), waiting up to `final_wait_s` for a held write
        lock; what is still unwritten is lost, and said so."""
        self._db_retry_at = float("-inf")
        try:
            self._flush_samples(busy_timeout_s=self.final_wait_s)
        finally:
            if self._pending:
                self.samples_lost += len(self._pending)
                if not self.storage_error:
                    self.storage_error = "the last samples could not be written"
                log.error(
                    "stopping with %d affect samples not written (%s): they are lost",
                    len(self._pending),
                    self.storage_error,
                )

    def _prune_history(self) -> None:
        """Delete history older than the retention: one batch per call, the next batch of
        a large backlog a moment later, and INFO once the pass is done. A failed prune is
        a WARNING and a later retry, not a storage fault: it is most often a write lock
        held by another process (`catalog import`), and a failing disk shows in the
        sample flush anyway."""
        try:
            db = self._database()
            if db is None:
                self._next_prune = self._db_retry_at
                return
            _set_busy_timeout(db, PRUNE_BUSY_S)
            try:
                pruned = prune_history(db, self.retention, time.time())
            finally:
                _set_busy_timeout(db, BUSY_S)
        except StoreError as exc:
            if self._prune_warned != str(exc):
                log.warning("%s; retrying in %.0f s", exc, PRUNE_RETRY_S)
                self._prune_warned = str(exc)
            self._next_prune = self.clock() + PRUNE_RETRY_S
            return
        self._prune_warned = None
        if not self._pending:
            self._storage_ok()
        for key in ("samples", "notes", "moods", "runs", "songs"):
            self._pruned[key] = self._pruned.get(key, 0) + getattr(pruned, key)
        if not pruned.done:
            self._next_prune = self.clock() + PRUNE_BACKLOG_S
            return
        r, n = self.retention, self._pruned
        log.info(
            "pruned history: %d affect samples, %d VLM replies, %d mood changes and %d runs "
            "older than %g days, %d finished songs older than %g days",
            n["samples"],
            n["notes"],
            n["moods"],
            n["runs"],
            r.history_days,
            n["songs"],
            r.song_days,
        )
        self._pruned = {}

    def _database(self) -> sqlite_utils.Database | None:
        """The database, opened on first use; None while a failed one waits to retry."""
        if self._db is None:
            if self.clock() < self._db_retry_at:
                return None
            self._db = open_database(self.state_dir)
        return self._db

    def _storage_ok(self) -> None:
        if self.storage_error:
            log.info("storage recovered")
        self.storage_error = None

    def _storage_failed(self, exc: StoreError) -> None:
        """Log a new error once, drop the connection and retry in store_retry_s."""
        if self.storage_error != str(exc):
            log.error("%s; samples kept in memory, retrying every %.0f s", exc, self.store_retry_s)
        self.storage_error = str(exc)
        if self._db is not None:
            self._db.conn.close()
        self._db = None
        self._db_retry_at = self.clock() + self.store_retry_s

    def shown_state(self, view: BoardView) -> str:
        """starting/running until a stop is asked for, "stopping" until the last write
        is over, then the final state the daemon set."""
        final = self.board.final_state
        if self._done:
            return final or "stopped"
        if final or self.board.stopping:
            return "stopping"
        return view.state

    def snapshot(self) -> dict[str, Any]:
        view = self.board.read()
        now = self.clock()
        mark_t, mark_frames = self._fps_mark
        if now - mark_t >= 0.5:
            self._fps = (view.frames - mark_frames) / (now - mark_t)
            self._fps_mark = (now, view.frames)
        snap: dict[str, Any] = {
            **self.board.info,
            "version": __version__,
            **self._identity,  # pid, process_start, boot_id: `status` tells a dead pid
            "state": self.shown_state(view),
            "started_at": self.started_at,
            "updated_at": time.time(),
            "updated_monotonic": time.monotonic(),
            "frames": view.frames,
            "fps": round(self._fps, 2),
            "face_rate": round(view.frames_with_face / view.frames, 4) if view.frames else 0.0,
            "camera_error": view.camera_error,
            "storage_error": self.storage_error,
            "last_error": view.last_error or self.storage_error or view.camera_error,
            "samples_written": self.samples_written,
            "samples_lost": self.samples_lost,
            **read_health(),
        }
        if (latest := view.latest) is not None:
            snap.update(
                emotion=latest.smoothed.emotion,
                confidence=latest.smoothed.confidence,
                face_presence=latest.smoothed.face_presence,
                probs=latest.smoothed.probs,
                valence=latest.smoothed.valence,
                arousal=latest.smoothed.arousal,
                faces=len(latest.faces),
                stream_t=latest.t,
                # from a depth camera, of the face followed; None without depth
                distance_m=latest.faces[0].distance_m if latest.faces else None,
                live=latest.faces[0].live if latest.faces else None,
            )
        for companion in self.companions:
            try:
                snap.update(companion.snapshot())
            except Exception:
                log.exception("status of %s failed", type(companion).__name__)
        return snap

    def _write_status(self) -> None:
        try:
            snapshot = self.snapshot()
            # published for other threads (the MQTT link) in one assignment, never
            # changed after: a reader sees one whole round, even when the file fails
            self.last_status = snapshot
            write_status(self.runtime_dir, snapshot)
            self._status_warned = False
        except OSError as exc:
            if not self._status_warned:
                log.warning("cannot write status to %s: %s", self.runtime_dir, exc)
                self._status_warned = True


def _set_busy_timeout(db: sqlite_utils.Database, seconds: float) -> None:
    """How long this connection's next writes wait for another writer's lock."""
    try:
        db.execute(f"PRAGMA busy_timeout = {max(0, int(seconds * 1000))}")
    except sqlite3.Error as exc:
        raise StoreError(f"cannot set the busy timeout: {exc}") from exc
