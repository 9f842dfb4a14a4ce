"""Intel RealSense (e.g. D435) colour stream through pyrealsense2.

pyrealsense2 is an optional dependency (the `pi` extra), imported only when the source
is opened so machines without it still run the rest of the appliance.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from .base import CaptureError, SourceConfigError
from .latest import LiveSource

log = logging.getLogger(__name__)

MISSING_MSG = (
    "pyrealsense2 is not installed: `pip install pyrealsense2` on x86_64 (the appliance's"
    " `pi` extra does this); PyPI has no ARM wheels, so on a Raspberry Pi build librealsense"
    " with its Python bindings, or read the D435's colour stream as a plain UVC camera"
    " with camera.source = v4l2:N"
)
NO_DEVICE_MSG = "no Intel RealSense camera found (is the D435 on a USB3 port?)"


def realsense_available() -> bool:
    """True only if pyrealsense2 imports and sees at least one device; never raises."""
    try:
        import pyrealsense2 as rs

        return len(rs.context().query_devices()) > 0
    except Exception as exc:  # any failure means "not usable", never a crash
        log.debug("pyrealsense2 not available: %s", exc)
        return False


class RealSenseSource(LiveSource):
    """The RealSense colour sensor as BGR frames, grabbed on a background thread."""

    wait_timeout_ms: int = 5000  # wait_for_frames raises RuntimeError after this

    def __init__(self, width: int = 640, height: int = 480, fps: float = 15) -> None:
        super().__init__("realsense")
        self.width = width
        self.height = height
        self.fps = fps
        self._pipeline: Any = None

    def describe(self) -> str:
        return "Intel RealSense camera"

    def open(self) -> None:
        if self._pipeline is not None:
            return
        try:
            import pyrealsense2 as rs
        except ImportError as exc:
            raise SourceConfigError(f"{MISSING_MSG} ({exc})") from exc
        try:
            devices = rs.context().query_devices()
        except Exception as exc:
            raise CaptureError(f"{NO_DEVICE_MSG}: {exc}") from exc
        if len(devices) == 0:
            raise CaptureError(NO_DEVICE_MSG)
        pipeline = rs.pipeline()
        config = rs.config()
        config.enable_stream(
            rs.stream.color, self.width, self.height, rs.format.bgr8, int(self.fps)
        )
        try:
            pipeline.start(config)
        except Exception as exc:  # e.g. "Couldn't resolve requests" for an unsupported mode
            raise CaptureError(
                f"cannot start RealSense colour stream {self.width}x{self.height} @ {self.fps}"
                f" fps ({exc}); try 640x480 at 15 or 30 fps"
            ) from exc
        log.info("opened RealSense colour %dx%d @ %g fps", self.width, self.height, self.fps)
        self._pipeline = pipeline
        timeout_ms = self.wait_timeout_ms

        def grab() -> np.ndarray | None:
            frames = pipeline.wait_for_frames(timeout_ms)
            color = frames.get_color_frame()
            if not color:
                return None
            # copy(): the frame's buffer returns to librealsense's pool once released.
            return np.asanyarray(color.get_data()).copy()

        # stopped by the grab thread as it exits: wait_for_frames must not race stop()
        self._start_grabber(grab, release=pipeline.stop)

    def close(self) -> None:
        super().close()
        self._pipeline = None
