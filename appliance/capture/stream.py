"""Network cameras: RTSP, HTTP MJPEG and HLS streams through OpenCV's FFmpeg backend.

IP cameras and phone camera apps serve these; a stream that drops (Wi-Fi, power) turns
into a CaptureError and the daemon reconnects with backoff like any live camera.
"""

from __future__ import annotations

import logging

import cv2

from appliance.common.redact import redact

from .base import CaptureError
from .latest import OpenCVLiveSource

log = logging.getLogger(__name__)

OPEN_TIMEOUT_MS = 5000
READ_TIMEOUT_MS = 5000


class StreamSource(OpenCVLiveSource):
    def __init__(self, url: str) -> None:
        super().__init__(redact(url))
        self.url = url

    def describe(self) -> str:
        return f"stream {redact(self.url)}"

    def open(self) -> None:
        if self._grabber is not None:
            return
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            OPEN_TIMEOUT_MS,
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            READ_TIMEOUT_MS,
        ]
        cap = cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            raise CaptureError(f"{self.describe()} unreachable or not a video stream")
        log.info("opened %s", self.describe())
        self._start_capture(cap)
