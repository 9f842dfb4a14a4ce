"""USB webcams (and anything else exposed as /dev/videoN) through OpenCV's V4L2 backend."""

from __future__ import annotations

import logging
import os
import re
import sys

import cv2

from .base import CaptureError
from .latest import OpenCVLiveSource

log = logging.getLogger(__name__)

_DEV_VIDEO = re.compile(r"/dev/video(\d+)")

# A stalled (not unplugged) webcam keeps cv2 read() in select() for this many seconds
# (OpenCV's cap_v4l.cpp: tv_sec, default 10), longer than close() waits for the grab
# thread and than systemd's stop timeout. OpenCV reads it once per process, at its
# first select(), so it is set before the first V4L2 open; an administrator's own value
# wins.
V4L_SELECT_TIMEOUT_ENV = "OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT"
V4L_SELECT_TIMEOUT_S = 2


class V4L2Source(OpenCVLiveSource):
    """A V4L2 camera, grabbed on a background thread so reads always get the newest frame.

    `device` is an index (0 -> /dev/video0), "/dev/videoN", or another device path
    such as a stable /dev/v4l/by-id/... link.
    """

    def __init__(self, device: int | str = 0, width: int = 640, height: int = 480, fps: float = 15):
        if isinstance(device, str):
            m = _DEV_VIDEO.fullmatch(device)
            if m:
                device = int(m.group(1))
            elif device.isdigit():
                device = int(device)
        self.device: int | str = device
        self.device_path = f"/dev/video{device}" if isinstance(device, int) else device
        super().__init__(self.device_path)
        self.width = width
        self.height = height
        self.fps = fps

    def describe(self) -> str:
        return f"camera {self.device_path}"

    def open(self) -> None:
        if self._cap is not None:
            return
        os.environ.setdefault(V4L_SELECT_TIMEOUT_ENV, str(V4L_SELECT_TIMEOUT_S))
        api = getattr(cv2, "CAP_V4L2", None)
        if api is not None and sys.platform.startswith("linux"):
            cap = cv2.VideoCapture(self.device, api)
        else:
            cap = cv2.VideoCapture(self.device)
        if not cap.isOpened():
            cap.release()
            raise CaptureError(
                f"camera {self.device_path} not found or busy: check `ls /dev/video*`, that this"
                " user is in the 'video' group, and that no other program is using the camera"
            )
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        cap.set(cv2.CAP_PROP_FPS, self.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # drivers that honour it add less latency
        log.info(
            "opened %s at %dx%d @ %g fps (asked %dx%d @ %g)",
            self.device_path,
            int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            cap.get(cv2.CAP_PROP_FPS),
            self.width,
            self.height,
            self.fps,
        )
        self._start_capture(cap)
