"""Keep only the newest frame from a live camera, so a slow pipeline never works on stale images.

Cameras deliver at their own pace; if the consumer (face detection + emotion model on a Pi)
is slower, a queue would grow and latency with it. A single slot overwritten by a grab
thread gives constant latency: the consumer always gets the most recent frame.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import numpy as np

from appliance.common.worker import Worker

from .base import CaptureError, Frame, FrameSource, ensure_bgr

log = logging.getLogger(__name__)

GrabFn = Callable[[], "np.ndarray | None"]


class LatestFrameGrabber(Worker):
    """A worker thread that runs `grab()` over and over, keeping only the newest frame.

    `grab` returns an image, or None when nothing is available yet (the thread then
    pauses `idle_sleep` s). If `grab` raises, the thread stops and the error is re-raised
    from `get()` as CaptureError.

    `release` frees the device. The thread calls it as it finishes, so it never runs
    while a grab is inside the driver: freeing a handle under a blocked read (a stalled
    webcam, cv2 without the GIL) can crash the process, and `stop()` cannot wait longer
    for a stuck driver than the service manager allows for shutdown.
    """

    stop_grace_s = 1.0

    def __init__(
        self,
        grab: GrabFn,
        desc: str,
        *,
        idle_sleep: float = 0.005,
        release: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(f"grab:{desc}")
        self._grab = grab
        self.desc = desc
        self._idle_sleep = idle_sleep
        self._release = release
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._last_returned = -1
        self._error: BaseException | None = None

    # ------------------------------------------------------------ the thread

    def work(self) -> None:
        index = 0
        while not self.stopping.is_set():
            try:
                image = self._grab()
                if image is not None:
                    image = ensure_bgr(image)
            except Exception as exc:  # surfaced to the consumer via get()
                with self._cond:
                    if self.stopping.is_set():
                        return  # the grab was interrupted on purpose (close)
                    self._error = exc
                    self._cond.notify_all()
                log.warning("grab from %s failed: %s", self.desc, exc)
                return
            if image is None:
                self.pause(self._idle_sleep)
                continue
            frame = Frame(image=image, t=time.monotonic(), index=index)
            index += 1
            with self._cond:
                self._latest = frame  # overwrite: older frames are simply dropped
                self._cond.notify_all()

    def finish(self) -> None:
        self._release_device()

    def _release_device(self) -> None:
        """Run `release` once, whichever of the thread or stop() gets here first."""
        with self._cond:
            release, self._release = self._release, None
        if release is not None:
            try:
                release()
            except Exception as exc:
                log.warning("releasing %s failed: %s", self.desc, exc)

    # ------------------------------------------------------------ other threads

    def get(self, timeout: float) -> Frame:
        """Block until a frame newer than the last one returned arrives; return it.

        Raises CaptureError on timeout, if grab failed, or if the grabber was stopped.
        """

        def ready() -> bool:
            fresh = self._latest is not None and self._latest.index > self._last_returned
            return fresh or self._error is not None or self.stopping.is_set()

        with self._cond:
            self._cond.wait_for(ready, timeout=timeout)
            if self.stopping.is_set():
                raise CaptureError(f"{self.desc} is closed")
            latest = self._latest
            if latest is not None and latest.index > self._last_returned:
                self._last_returned = latest.index
                return latest
            if self._error is not None:
                raise CaptureError(f"{self.desc}: {self._error}") from self._error
            raise CaptureError(f"no frame from {self.desc} for {timeout:g} s")

    def request_stop(self) -> None:
        """Tell the thread to finish after its current grab, and wake waiting readers."""
        super().request_stop()
        with self._cond:
            self._cond.notify_all()

    def join_by(self, timeout: float) -> bool:
        """Wait up to `timeout` s for the thread to end; True once it has (and released).

        A thread still inside grab() after that is left to finish on its own (logged):
        it releases the device when the driver returns, never while it is in use.
        """
        if self.ident is None:  # never started: nothing can be using the device
            self._release_device()
            return True
        if self is threading.current_thread():  # stopped from within a grab or release
            return False
        return super().join_by(timeout)

    def busy_with(self) -> str:
        return "still in a grab; it releases the device when the driver returns"

    @property
    def running(self) -> bool:
        """True while the grab thread is alive."""
        return self.is_alive()


class LiveSource(FrameSource):
    """Shared read()/close() plumbing for camera backends built on LatestFrameGrabber.

    `read(None)` waits `default_timeout` s rather than forever, so a camera that dies
    mid-stream turns into a CaptureError the daemon can report instead of a silent hang.
    close() waits at most `join_timeout` s for the grab thread (systemd's stop timeout
    is short); a grab still blocked in the driver then releases the device itself.
    """

    live = True
    default_timeout: float = 5.0
    join_timeout: float = 1.0

    def __init__(self, spec: str) -> None:
        super().__init__(spec)
        self._grabber: LatestFrameGrabber | None = None

    def _start_grabber(self, grab: GrabFn, release: Callable[[], None]) -> None:
        """Grab on a background thread; `release` frees the device once no grab runs."""
        self._grabber = LatestFrameGrabber(grab, self.describe(), release=release)
        self._grabber.start()

    def _interrupt_grab(self) -> None:
        """Unblock a grab in progress, if the backend can; called by close() after the
        stop request, before the join."""

    def close(self) -> None:
        grabber, self._grabber = self._grabber, None
        if grabber is None:
            return
        grabber.request_stop()
        if grabber.running:  # else the thread has ended, and released the device
            try:
                self._interrupt_grab()
            except Exception as exc:
                log.warning("interrupting the grab from %s failed: %s", self.describe(), exc)
        grabber.join_by(self.join_timeout)

    def read(self, timeout: float | None = None) -> Frame | None:
        if self._grabber is None:
            raise CaptureError(f"{self.describe()} is not open; call open() first")
        return self._grabber.get(self.default_timeout if timeout is None else timeout)


class OpenCVLiveSource(LiveSource):
    """A LiveSource reading a cv2.VideoCapture (V4L2 webcams, network streams)."""

    def __init__(self, spec: str) -> None:
        super().__init__(spec)
        self._cap = None

    def _start_capture(self, cap) -> None:
        """Own an opened cv2.VideoCapture and grab from it on the background thread."""
        self._cap = cap

        def grab() -> np.ndarray | None:
            ok, image = cap.read()
            return image if ok else None

        # released by the grab thread as it exits: cap.read() must not race cap.release()
        self._start_grabber(grab, release=cap.release)

    def close(self) -> None:
        super().close()
        self._cap = None
