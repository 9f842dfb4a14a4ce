"""The frame loop's two stages, one after the other or overlapped across frames.

A Pipeline runs in two stages: `detect` (the face finder, whose tracking state belongs
to the frame loop) and `finish` (emotion CNN, VA model, smoothing, whose state belongs to
the finishing side), then the result is delivered (posted to the board, written as an
event). With one core they run in order on the frame loop's thread, exactly as
`Pipeline.process`. With two or more (`CorePlan.overlap`) one Worker finishes and
delivers frame t while the loop detects frame t+1, through a hand-off of one slot:

- at most one frame in flight: the loop hands frame t+1 over only once the worker is done
  with frame t, so nothing queues and a result is at most one stage behind;
- results are delivered in frame order, by the one worker, as soon as they are ready
  (not when the next frame arrives), so the latency from capture to smoothed state is
  detect + finish + at most the rest of the previous frame's finish (the hand-off wait),
  which is shorter than one frame interval whenever the loop keeps up with the camera;
- a stop lets the frame in flight finish and be delivered (`settle`), then the worker
  ends like any other (`Crew.stop`); an error in the worker is raised on the frame loop
  at its next hand-off or settle, as it would have been raised there without overlap.

Only the C parts of the stages (TFLite invokes, OpenCV, numpy) run at the same time: they
release the GIL, and they are most of the time of each stage.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from appliance.capture.base import Frame
from appliance.common.worker import Worker

log = logging.getLogger(__name__)

Deliver = Callable[[Frame, Any], None]


class FinishWorker(Worker):
    """Finishes and delivers one frame at a time, handed over by the frame loop."""

    stop_grace_s = 2.0

    def __init__(self, finish: Callable[[Any], Any], deliver: Deliver) -> None:
        super().__init__("frames:finish")
        self._finish = finish
        self._deliver = deliver
        self._cond = threading.Condition()
        self._job: tuple[Frame, Any] | None = None  # the frame in flight, None when idle
        self._error: BaseException | None = None
        self.delivered = 0

    # ------------------------------------------------------------ the frame loop

    def hand(self, frame: Frame, job: Any) -> None:
        """Give the worker the next frame and its first stage's output, after waiting
        until it is done with the one before (at most one in flight). Raises the worker's
        error, if it had one."""
        with self._cond:
            self._cond.wait_for(self._idle)
            self._raise_error()
            if self.stopping.is_set() or not self.is_alive():
                raise RuntimeError(f"{self.name} thread is not running")
            self._job = (frame, job)
            self._cond.notify_all()

    def settle(self, timeout: float | None = None) -> bool:
        """Wait until the frame in flight, if any, is delivered; False when `timeout`
        passed first. Raises the worker's error, if it had one."""
        with self._cond:
            done = self._cond.wait_for(self._idle, timeout)
            self._raise_error()
            return done

    def in_flight(self) -> bool:
        with self._cond:
            return self._job is not None

    def _idle(self) -> bool:
        return self._job is None or self._error is not None or not self.is_alive()

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"{self.name} thread failed: {error}") from error

    # ------------------------------------------------------------ other threads

    def request_stop(self) -> None:
        super().request_stop()
        with self._cond:
            self._cond.notify_all()

    def busy_with(self) -> str:
        return "finishing a frame" if self._job is not None else ""

    # ------------------------------------------------------------ the thread

    def work(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._job is not None or self.stopping.is_set())
                job = self._job
            if job is None:
                return  # stopped with nothing in flight
            frame, detection = job
            try:
                result = self._finish(detection)
                self._deliver(frame, result)
                self.delivered += 1
            except Exception as exc:  # raised again on the frame loop
                log.debug("%s failed", self.name, exc_info=True)
                with self._cond:
                    self._error = exc
                    self._job = None
                    self._cond.notify_all()
                return
            with self._cond:
                self._job = None
                self._cond.notify_all()

    def finish(self) -> None:
        with self._cond:  # wake a loop waiting on a worker that has ended
            self._cond.notify_all()


class FrameStages:
    """Runs a pipeline's stages for the frame loop: `submit(frame)` for every frame, then
    `settle()` before the loop ends. Overlapped (with a FinishWorker, which the owner
    starts and stops with its crew: `worker`) when `overlap` and the pipeline has the two
    stages; else `pipeline.process` and `deliver` on the calling thread."""

    def __init__(self, pipeline: Any, deliver: Deliver, *, overlap: bool) -> None:
        self.pipeline = pipeline
        self.deliver = deliver
        staged = hasattr(pipeline, "detect") and hasattr(pipeline, "finish")
        self.worker = FinishWorker(pipeline.finish, deliver) if overlap and staged else None

    @property
    def overlap(self) -> bool:
        return self.worker is not None

    def submit(self, frame: Frame) -> None:
        if self.worker is None:
            self.deliver(frame, self.pipeline.process(frame))
            return
        detection = self.pipeline.detect(frame)  # while the worker finishes the last one
        self.worker.hand(frame, detection)

    def settle(self, timeout: float | None = None) -> bool:
        """The frame in flight delivered (True), or `timeout` passed first (False)."""
        return True if self.worker is None else self.worker.settle(timeout)
