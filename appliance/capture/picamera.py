"""Raspberry Pi CSI camera (libcamera) through picamera2.

picamera2 ships with Raspberry Pi OS via apt, not pip, so it is imported only when
this source is opened: the rest of the appliance runs (and tests) without it.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from .base import CaptureError, SourceConfigError
from .latest import LiveSource

log = logging.getLogger(__name__)

MISSING_MSG = (
    "picamera2 is not installed (or not visible to this Python): install it with"
    " `sudo apt install python3-picamera2` and run the appliance from a venv created with"
    " `python3 -m venv --system-site-packages`"
)
NO_CAMERA_MSG = (
    "no Raspberry Pi camera detected (check the ribbon cable and `rpicam-hello --list-cameras`)"
)


def pi_cameras(cameras: list[Any]) -> list[dict[str, Any]]:
    """The CSI (Pi) cameras among Picamera2.global_camera_info() entries.

    libcamera also lists USB (UVC) webcams, whose Id has "/usb" in it (picamera2 sorts
    them last by that test); those belong to the V4L2 source, not to this one.
    """
    return [
        cam for cam in cameras if isinstance(cam, dict) and "/usb" not in str(cam.get("Id", ""))
    ]


def find_pi_camera() -> int | None:
    """The camera number (for Picamera2(num)) of the first Pi camera, or None; never raises."""
    try:
        from picamera2 import Picamera2

        found = pi_cameras(Picamera2.global_camera_info())
    except Exception as exc:  # any failure means "not usable", never a crash
        log.debug("picamera2 not available: %s", exc)
        return None
    return int(found[0].get("Num", 0)) if found else None


class PiCameraSource(LiveSource):
    """A Pi camera (the first one unless `camera_num` is given), streaming BGR frames on a
    background grab thread."""

    capture_timeout: float = 2.0  # one frame at the slowest allowed rate (1 fps), and then some

    def __init__(
        self, width: int = 640, height: int = 480, fps: float = 15, camera_num: int | None = None
    ) -> None:
        super().__init__("picamera")
        self.width = width
        self.height = height
        self.fps = fps
        self.camera_num = camera_num
        self._cam: Any = None

    def describe(self) -> str:
        return "Raspberry Pi camera"

    def open(self) -> None:
        if self._cam is not None:
            return
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise SourceConfigError(f"{MISSING_MSG} ({exc})") from exc
        try:
            cameras = Picamera2.global_camera_info()
        except Exception as exc:
            raise CaptureError(f"{NO_CAMERA_MSG}: {exc}") from exc
        ours = pi_cameras(cameras)
        if self.camera_num is not None:
            ours = [cam for cam in ours if cam.get("Num") == self.camera_num]
        if not ours:
            usb = " (libcamera sees only USB cameras: use v4l2:N for those)" if cameras else ""
            raise CaptureError(NO_CAMERA_MSG + usb)
        info = ours[0]
        cam = None
        try:
            cam = Picamera2(int(info.get("Num", 0)))
            # Picamera2 manual, "Image formats": "RGB888 - 24 bits per pixel, ordered [B, G, R]",
            # i.e. capture_array() already yields OpenCV's BGR order; no cvtColor needed.
            config = cam.create_video_configuration(
                main={"size": (self.width, self.height), "format": "RGB888"},
                controls={"FrameRate": float(self.fps)},
            )
            cam.configure(config)
            cam.start()
        except Exception as exc:
            if cam is not None:
                _quietly_close(cam)
            raise CaptureError(
                f"cannot start the Raspberry Pi camera ({exc}); is another program"
                " (e.g. rpicam-hello) using it?"
            ) from exc
        log.info(
            "opened Pi camera %s (number %s) at %dx%d @ %g fps",
            info.get("Model", "?"),
            info.get("Num", 0),
            self.width,
            self.height,
            self.fps,
        )
        self._cam = cam
        timeout = self.capture_timeout

        def grab() -> np.ndarray:
            # A number, not the default None (= wait forever): a stalled sensor or a loose
            # ribbon must end the grab, not hang this thread and every later job behind it.
            try:
                image = cam.capture_array("main", wait=timeout)
            except TimeoutError as exc:  # concurrent.futures' TimeoutError since 3.11
                raise CaptureError(
                    f"no frame within {timeout:g} s (check the ribbon cable)"
                ) from exc
            if image.ndim == 3 and image.shape[2] == 4:
                image = image[:, :, :3]  # XRGB8888-style padding byte
            return image

        self._start_grabber(grab, release=lambda: _quietly_close(cam))

    def _interrupt_grab(self) -> None:
        # picamera2 documents cancel_all_and_flush() for tidying up after a timed-out
        # operation "so that the camera can be closed": the blocked capture_array()
        # raises CancelledError at once instead of running out its wait.
        if self._cam is not None:
            self._cam.cancel_all_and_flush()

    def close(self) -> None:
        super().close()
        self._cam = None


def _quietly_close(cam: Any) -> None:
    """Stop and close a Picamera2, logging (not raising) teardown errors.

    Pending jobs are cancelled first: stop() is itself a job queued behind them, so a
    capture that timed out on a stalled camera would otherwise make stop() wait forever.
    """
    for step in ("cancel_all_and_flush", "stop", "close"):
        try:
            getattr(cam, step)()
        except Exception as exc:
            log.warning("picamera2 %s() failed: %s", step, exc)
