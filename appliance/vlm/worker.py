"""The VLM worker: a thread with a queue of one, so the frame loop never waits.

The frame loop asks `wants()` (a few comparisons) and, when a request is due, `offer()`s
a copy of the face crop or frame (a lock and an assignment); the newest offer replaces
one not yet taken. Requests are due every `interval_s` and, with `on_change`, when the
smoothed emotion changes, never closer than `min_gap_s`. Failures back off (5, 10, 20 s
...); three in a row open the circuit breaker for a cool-down that doubles up to an hour,
after which one trial request decides (half-open). Replies go to status and SQLite;
images are never stored.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

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


class VlmWorker(threading.Thread):
    def __init__(
        self,
        settings: VlmConfig,
        state_dir: str,
        client: VlmClient,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name="vlm", daemon=True)
        self.settings = settings
        self.state_dir = state_dir
        self.client = client
        self.clock = clock
        self.breaker = "closed"
        self.last: dict[str, Any] | None = None
        self.last_error: str | None = None
        self.requests = 0
        self.failures = 0  # consecutive
        self._cooldown = BREAKER_COOLDOWN_S[0]
        self._next_due = float("-inf")
        self._not_before = float("-inf")
        self._last_emotion: str | None = None
        self._job: VlmJob | None = None
        self._lock = threading.Lock()
        self._busy = False
        self._wake = threading.Event()
        self._stop_event = threading.Event()

    # ------------------------------------------------------------ frame-loop side

    def wants(self, now: float, emotion: str | None) -> bool:
        """Is a request due? Cheap: called on the frame loop for every frame."""
        if emotion is None or now < self._not_before:
            return False
        changed = self.settings.on_change and emotion != self._last_emotion
        return now >= self._next_due or changed

    def offer(self, image: np.ndarray, context: dict[str, Any], now: float) -> None:
        """Hand over a copy of the image to send; the newest offer wins."""
        job = VlmJob(np.ascontiguousarray(image).copy(), dict(context))
        with self._lock:
            self._job = job
        self._last_emotion = context.get("emotion")
        self._next_due = now + self.settings.interval_s
        self._not_before = now + self.settings.min_gap_s
        self._wake.set()

    # ------------------------------------------------------------ the thread

    def stop(self) -> None:
        self._stop_event.set()
        self._wake.set()
        if self.is_alive() and not self._busy:
            self.join(timeout=1.0)
        # A request in flight may hang until its timeout: the thread is a daemon, so
        # the process exits without waiting for it.

    def run(self) -> None:
        while not self._stop_event.is_set():
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                job, self._job = self._job, None
            if job is None or self._stop_event.is_set():
                continue
            self._busy = True
            try:
                self._handle(job)
            except Exception:
                log.exception("VLM request failed unexpectedly")  # keep the thread alive
            finally:
                self._busy = False
        self.client.close()

    def _handle(self, job: VlmJob) -> None:
        self.requests += 1
        try:
            reply = self.client.describe(job.image, job.context)
        except VlmError as exc:
            self._failed(str(exc))
            return
        self.failures, self.breaker, self.last_error = 0, "closed", None
        self._cooldown = BREAKER_COOLDOWN_S[0]
        # stored before it is published: whoever sees `last` finds the row in SQLite too
        self._store(job, reply.text, reply.latency_ms, reply.model)
        self.last = {
            "text": reply.text,
            "latency_ms": round(reply.latency_ms, 1),
            "emotion": job.context.get("emotion"),
            "at": time.time(),
        }
        log.info("VLM (%.0f ms, %s): %s", reply.latency_ms, self.last["emotion"], reply.text)

    def _failed(self, error: str) -> None:
        self.failures += 1
        self.last_error = error
        now = self.clock()
        if self.breaker == "half-open" or self.failures >= BREAKER_FAILURES:
            wait = self._cooldown
            self._cooldown = min(BREAKER_COOLDOWN_S[1], self._cooldown * 2)
            if self.breaker != "open":
                log.warning("VLM circuit breaker open for %.0f s: %s", wait, error)
            self.breaker = "open"
        else:
            wait = min(self.settings.interval_s, RETRY_BASE_S * 2 ** (self.failures - 1))
            log.warning("VLM request failed (%s); retrying in %.0f s", error, wait)
        self._not_before = now + wait
        self._next_due = now + wait  # retry as soon as allowed

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

    def tick(self, view: Any) -> None:
        if self.breaker == "open" and self.clock() >= self._not_before:
            self.breaker = "half-open"  # the next request is the trial

    def snapshot(self) -> dict[str, Any]:
        return {
            "vlm": {
                "endpoint": self.settings.shown_endpoint,  # status.json is world-readable
                "model": self.settings.model,
                "breaker": self.breaker,
                "requests": self.requests,
                "last": self.last,
                "error": self.last_error,
            }
        }
