"""The VLM worker: a thread with a queue of one, so the frame loop never waits.

The frame loop asks `wants()` (a few comparisons) and, when a request is due, `offer()`s
a copy of the face crop or frame (a lock and an assignment); the newest offer replaces
one not yet taken. Requests are due every `interval_s` and, with `on_change`, when the
smoothed emotion changes, never closer than `min_gap_s`. Failures back off (5, 10, 20 s
... up to interval_s); three in a row open the circuit breaker for a cool-down that
doubles up to an hour, after which one trial request decides (half-open). Replies go to
status and SQLite; images are never stored.

One writer per piece of state: the frame loop owns its offer schedule (when the next
offer is due); this thread alone owns the breaker, the backoff and the counters, and
publishes them as one immutable `VlmStatus`. An offer taken while the retry wait or an
open breaker forbids a request (it was made while a failing request was in flight) is
dropped, not sent.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from appliance.common.backoff import Backoff
from appliance.common.worker import Worker
from appliance.config.schema import VlmConfig
from appliance.store.database import StoreError, open_database
from appliance.vlm.client import VlmClient, VlmError

log = logging.getLogger(__name__)

BREAKER_FAILURES = 3
BREAKER_COOLDOWN_S = (60.0, 3600.0)  # first, longest
RETRY_BASE_S = 5.0


@dataclass(frozen=True)
class VlmJob:
    image: np.ndarray
    context: dict[str, Any]  # emotion, confidence, valence, arousal
    # (run id, stream time) of the frame, stored with the note (never sent)
    stamp: tuple[str | None, float | None] = (None, None)


@dataclass(frozen=True)
class VlmStatus:
    """What the worker thread last decided, published as one object."""

    breaker: str = "closed"  # closed, open (cooling down until retry_at) or half-open
    failures: int = 0  # in a row
    requests: int = 0
    retry_at: float = float("-inf")  # clock(): no request before this
    last: dict[str, Any] | None = None
    error: str | None = None
    in_flight: bool = False


class VlmWorker(Worker):
    stop_grace_s = 1.0  # a request in flight is abandoned (daemon thread) past this

    def __init__(
        self,
        settings: VlmConfig,
        state_dir: str,
        client: VlmClient,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__("vlm")
        self.settings = settings
        self.state_dir = state_dir
        self.client = client
        self.clock = clock
        self.status = VlmStatus()
        self._retry = Backoff(min(RETRY_BASE_S, settings.interval_s), settings.interval_s)
        self._cooldown = Backoff(*BREAKER_COOLDOWN_S)
        # frame-loop side: written by the frame loop only
        self._next_due = float("-inf")
        self._gap_until = float("-inf")
        self._last_emotion: str | None = None
        # the hand-over: the newest offer, under a lock
        self._job: VlmJob | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------ frame-loop side

    def wants(self, now: float, emotion: str | None) -> bool:
        """Is a request due? Cheap: called on the frame loop for every frame."""
        status = self.status  # one read: a consistent view of the worker's decisions
        if emotion is None or now < self._gap_until or now < status.retry_at:
            return False
        if status.failures:
            return True  # retry as soon as the wait allows
        changed = self.settings.on_change and emotion != self._last_emotion
        return now >= self._next_due or changed

    def offer(
        self,
        image: np.ndarray,
        context: dict[str, Any],
        now: float,
        *,
        stamp: tuple[str | None, float | None] = (None, None),
    ) -> None:
        """Hand over a copy of the image to send; the newest offer wins. `stamp`: the
        run id and stream time of the frame, which the stored note carries."""
        job = VlmJob(np.ascontiguousarray(image).copy(), dict(context), stamp)
        with self._lock:
            self._job = job
        self._last_emotion = context.get("emotion")
        self._next_due = now + self.settings.interval_s
        self._gap_until = now + self.settings.min_gap_s
        self.wake()

    # ------------------------------------------------------------ the thread

    def busy_with(self) -> str:
        return "a request in flight" if self.status.in_flight else ""

    def work(self) -> None:
        while self.pause(3600.0):
            self.handle_pending()

    def finish(self) -> None:
        self.client.close()

    def handle_pending(self) -> bool:
        """Send the pending offer if the breaker and the retry wait allow it (on this
        thread; tests call it directly with an injected clock). True when a request was
        made."""
        with self._lock:
            job, self._job = self._job, None
        if job is None or self.stopping.is_set():
            return False
        now = self.clock()
        status = self.status
        if now < status.retry_at:
            log.debug("VLM offer dropped: no request before the retry wait ends")
            return False
        trial = status.breaker == "open"  # cooled down: this request decides
        self.status = replace(
            status,
            breaker="half-open" if trial else status.breaker,
            requests=status.requests + 1,
            in_flight=True,
        )
        try:
            reply = self.client.describe(job.image, job.context)
        except VlmError as exc:
            self._failed(str(exc))
            return True
        except Exception as exc:  # a bug: counted like a failure, the thread goes on
            log.exception("VLM request failed unexpectedly")
            self._failed(f"{type(exc).__name__}: {exc}")
            return True
        self._retry.reset()
        self._cooldown.reset()
        # stored before it is published: whoever sees `last` finds the row in SQLite too
        self._store(job, reply.text, reply.latency_ms, reply.model)
        last = {
            "text": reply.text,
            "latency_ms": round(reply.latency_ms, 1),
            "emotion": job.context.get("emotion"),
            "at": time.time(),
        }
        self.status = replace(
            self.status,
            breaker="closed",
            failures=0,
            retry_at=float("-inf"),
            last=last,
            error=None,
            in_flight=False,
        )
        log.info("VLM (%.0f ms, %s): %s", reply.latency_ms, last["emotion"], reply.text)
        return True

    def _failed(self, error: str) -> None:
        status = self.status
        failures = status.failures + 1
        if status.breaker == "half-open" or failures >= BREAKER_FAILURES:
            wait = self._cooldown.next()
            if status.breaker != "open":
                log.warning("VLM circuit breaker open for %.0f s: %s", wait, error)
            breaker = "open"
        else:
            wait = self._retry.next()
            breaker = status.breaker
            log.warning("VLM request failed (%s); retrying in %.0f s", error, wait)
        self.status = replace(
            status,
            breaker=breaker,
            failures=failures,
            retry_at=self.clock() + wait,
            error=error,
            in_flight=False,
        )

    def _store(self, job: VlmJob, text: str, latency_ms: float, model: str) -> None:
        try:
            db = open_database(self.state_dir)
        except StoreError as exc:
            log.error("VLM note not stored: %s", exc)
            return
        try:
            with db.conn:
                db["vlm_notes"].insert(
                    {
                        "t_wall": time.time(),
                        "run_id": job.stamp[0],
                        "t_stream": job.stamp[1],
                        "emotion": job.context.get("emotion"),
                        "valence": job.context.get("valence"),
                        "arousal": job.context.get("arousal"),
                        "reply": text,
                        "latency_ms": round(latency_ms, 1),
                        "model": model,
                    }
                )
        except sqlite3.Error as exc:
            log.error("VLM note not stored: %s", exc)
        finally:
            db.conn.close()

    # ------------------------------------------------------------ status

    def snapshot(self) -> dict[str, Any]:
        status = self.status
        breaker = status.breaker
        if breaker == "open" and self.clock() >= status.retry_at:
            breaker = "half-open"  # cooled down: the next request is the trial
        return {
            "vlm": {
                "endpoint": self.settings.shown_endpoint,  # status.json is world-readable
                "model": self.settings.model,
                "breaker": breaker,
                "requests": status.requests,
                "last": status.last,
                "error": status.error,
            }
        }
