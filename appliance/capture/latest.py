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

from .base import CaptureError, Frame, FrameSource, ensure_bgr

log = logging.getLogger(__name__)

GrabFn = Callable[[], "np.ndarray | None"]


class LatestFrameGrabber:
    """Run `grab()` on a daemon thread, keeping only the newest frame.

    `grab` returns an image, or None when nothing is available yet (the thread then
    backs off for `idle_sleep` s). If `grab` raises, the thread stops and the error
    is re-raised from `get()` as CaptureError.
    """

    def __init__(self, grab: GrabFn, desc: str, *, idle_sleep: float = 0.005) -> None:
        self._grab = grab
        self.desc = desc
        self._idle_sleep = idle_sleep
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._last_returned = -1
        self._error: BaseException | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the grab thread (once)."""
        with self._cond:
            if self._thread is not None:
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name=f"grab:{self.desc}", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        index = 0
        while True:
            with self._cond:
                if self._stopping:
                    return
            try:
                image = self._grab()
                if image is not None:
                    image = ensure_bgr(image)
            except Exception as exc:  # surfaced to the consumer via get()
                log.warning("grab from %s failed: %s", self.desc, exc)
                with self._cond:
                    self._error = exc
                    self._cond.notify_all()
                return
            if image is None:
                time.sleep(self._idle_sleep)
                continue
            frame = Frame(image=image, t=time.monotonic(), index=index)
            index += 1
            with self._cond:
                self._latest = frame  # overwrite: older frames are simply dropped
                self._cond.notify_all()

    def get(self, timeout: float) -> Frame:
        """Block until a frame newer than the last one returned arrives; return it.

        Raises CaptureError on timeout, if grab failed, or if the grabber was stopped.
        """

        def ready() -> bool:
            fresh = self._latest is not None and self._latest.index > self._last_returned
            return fresh or self._error is not None or self._stopping

        with self._cond:
            self._cond.wait_for(ready, timeout=timeout)
            if self._stopping:
                raise CaptureError(f"{self.desc} is closed")
            latest = self._latest
            if latest is not None and latest.index > self._last_returned:
                self._last_returned = latest.index
                return latest
            if self._error is not None:
                raise CaptureError(f"{self.desc}: {self._error}") from self._error
            raise CaptureError(f"no frame from {self.desc} for {timeout:g} s")

    def stop(self, join_timeout: float = 5.0) -> None:
        """Ask the thread to finish and join it; safe to call twice.

        Call before releasing the device so grab() never runs on a closed handle.
        """
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(join_timeout)
            if thread.is_alive():
                log.warning("grab thread for %s did not stop within %g s", self.desc, join_timeout)

    @property
    def running(self) -> bool:
        """True while the grab thread is alive."""
        return self._thread is not None and self._thread.is_alive()


class LiveSource(FrameSource):
    """Shared read()/close() plumbing for camera backends built on LatestFrameGrabber.

    `read(None)` waits `default_timeout` s rather than forever, so a camera that dies
    mid-stream turns into a CaptureError the daemon can report instead of a silent hang.
    """

    live = True
    default_timeout: float = 5.0
    join_timeout: float = 5.0

    def __init__(self, spec: str) -> None:
        super().__init__(spec)
        self._grabber: LatestFrameGrabber | None = None

    def _start_grabber(self, grab: GrabFn) -> None:
        self._grabber = LatestFrameGrabber(grab, self.describe())
        self._grabber.start()

    def _stop_grabber(self) -> None:
        if self._grabber is not None:
            self._grabber.stop(self.join_timeout)
            self._grabber = None

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

        self._start_grabber(grab)

    def close(self) -> None:
        self._stop_grabber()  # before release: cap.read() must not race cap.release()
        if self._cap is not None:
            self._cap.release()
            self._cap = None
