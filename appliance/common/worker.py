"""The one lifecycle of every background thread (after gpiozero's GPIOThread).

A Worker is a daemon thread with a stop event, a wake event and a join with a deadline
that is logged loudly when it is missed. Its owner (the daemon's `Crew`) starts workers
in order and stops them in reverse within one budget, the unit's stop timeout.

Workers follow one rule for shared state: one writer per piece of state. Other threads
only post to a worker (a queue, an offer, a wake); the worker alone changes its own
state and publishes it as one immutable snapshot, swapped in a single assignment, so a
reader never pairs one round's state with another round's error.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)


class Worker(threading.Thread):
    """Subclasses implement `work()` (loop until `stopping`, sleep with `pause()`), and
    may override `finish()` (runs on the thread after `work`, also after a crash) and
    `stop_grace_s` (how long a stop may take: a join past it is reported and the thread
    abandoned; it is a daemon thread, so the process still exits)."""

    stop_grace_s: float = 1.0

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.stopping = threading.Event()
        self._wake = threading.Event()

    # ------------------------------------------------------------ other threads

    def wake(self) -> None:
        """Cut the current pause short (new work was posted)."""
        self._wake.set()

    def request_stop(self) -> None:
        """Ask the thread to end; returns at once."""
        self.stopping.set()
        self._wake.set()

    def stop(self, timeout: float | None = None) -> bool:
        """Ask the thread to end and wait up to `timeout` (default `stop_grace_s`);
        False, logged at ERROR, when it did not end in time."""
        self.request_stop()
        return self.join_by(self.stop_grace_s if timeout is None else timeout)

    def join_by(self, timeout: float) -> bool:
        if self.ident is None:  # never started
            return True
        self.join(max(0.0, timeout))
        if self.is_alive():
            log.error(
                "%s thread did not stop within %.1f s: abandoned (%s)",
                self.name,
                timeout,
                self.busy_with() or "no detail",
            )
            return False
        return True

    def busy_with(self) -> str:
        """What the thread is doing, for the log line of a missed stop deadline."""
        return ""

    # ------------------------------------------------------------ the thread

    def pause(self, timeout: float) -> bool:
        """Sleep up to `timeout`, woken early by `wake()` or a stop; True while the
        worker should go on."""
        if not self.stopping.is_set():
            self._wake.wait(max(0.0, timeout))
        self._wake.clear()
        return not self.stopping.is_set()

    def run(self) -> None:
        try:
            self.work()
        except Exception:
            log.exception("%s thread failed", self.name)
        finally:
            try:
                self.finish()
            except Exception:
                log.exception("%s thread failed while finishing", self.name)

    def work(self) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """Release what the thread holds (connections, files)."""


class Crew:
    """Starts workers in order and stops them in reverse within one time budget
    (Frigate's ordered stop): all but the first are asked to stop at once and joined
    newest first, each within its own `stop_grace_s` or what is left of the budget when
    that is less; then the first one started (the publisher, which writes the final
    samples and status) is asked, and gets all that is left."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.workers: list[Worker] = []

    def start(self, workers: Sequence[Worker]) -> None:
        for worker in workers:
            worker.start()
            self.workers.append(worker)

    def stop(self, budget_s: float, *, reserve_s: float = 0.0) -> list[str]:
        """Stop every started worker, newest first, by `budget_s` from now; the names of
        those that missed their deadline. `reserve_s` is kept back for the caller (a
        final status written after the crew)."""
        deadline = self.clock() + budget_s - reserve_s
        for worker in self.workers[1:]:
            worker.request_stop()  # all but the first begin winding down at once
        missed = []
        for index, worker in reversed(list(enumerate(self.workers))):
            left = deadline - self.clock()
            last = index == 0
            timeout = left if last else min(worker.stop_grace_s, left)
            if last:
                # the first started (the publisher) is asked last: its final status then
                # sees every other worker stopped
                worker.request_stop()
            if not worker.join_by(timeout):
                missed.append(worker.name)
        self.workers.clear()
        return missed
