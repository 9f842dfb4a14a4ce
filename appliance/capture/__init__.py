"""Camera and recording sources, chosen from one user-facing spec string."""

from __future__ import annotations

import logging
from pathlib import Path

from appliance.sources import (
    SOURCE_SPECS_HELP,
    STREAM_SCHEMES,
    V4L2_SPEC,
    looks_like_path,
    redact,
    spec_problem,
)

from . import picamera as _picamera
from . import realsense as _realsense
from .base import CaptureError, Frame, FrameSource, SourceConfigError
from .files import ImageFolderSource, VideoFileSource
from .picamera import PiCameraSource
from .realsense import RealSenseSource
from .stream import StreamSource
from .v4l2 import V4L2Source

__all__ = [
    "SOURCE_SPECS_HELP",
    "CaptureError",
    "Frame",
    "FrameSource",
    "SourceConfigError",
    "open_source",
]

log = logging.getLogger(__name__)

DEMO_CLIP = Path(__file__).parent.parent / "data" / "demo_faces.mp4"


def open_source(
    spec: str, *, width: int = 640, height: int = 480, fps: float = 15, loop: bool = False
) -> FrameSource:
    """Build (but do not open) the source a spec names; see SOURCE_SPECS_HELP.

    width/height/fps are requested from cameras; fps also paces image folders.
    loop applies to files and folders. A spec that is no known form raises
    SourceConfigError; a file or folder path that does not exist (yet: a USB stick
    mounted late) raises plain CaptureError, a runtime failure.
    """
    text = spec.strip()
    key = text.lower()
    if problem := spec_problem(text):
        raise SourceConfigError(f"capture source {problem}; accepted forms:\n{SOURCE_SPECS_HELP}")
    if key == "auto":
        return _auto(width, height, fps)
    if key == "picamera":
        return PiCameraSource(width, height, fps)
    if key == "realsense":
        return RealSenseSource(width, height, fps)
    if m := V4L2_SPEC.fullmatch(key):
        return V4L2Source(int(m.group(1)), width, height, fps)
    if text.startswith("/dev/"):
        return V4L2Source(text, width, height, fps)
    if key.startswith(STREAM_SCHEMES):
        return StreamSource(text)
    if key == "demo":
        if not DEMO_CLIP.is_file():
            raise SourceConfigError(
                f"the demo clip is missing ({DEMO_CLIP}); reinstall the package or pass a"
                " camera, video file or image folder instead"
            )
        return VideoFileSource(DEMO_CLIP, loop=loop)
    if text:
        path = Path(text).expanduser()
        if path.is_dir():
            return ImageFolderSource(path, fps, loop=loop)
        if path.is_file():
            return VideoFileSource(path, loop=loop)
    raise (CaptureError if looks_like_path(text) else SourceConfigError)(
        f"unknown capture source {redact(text)!r} (not a known camera, nor an existing file"
        f" or folder); accepted forms:\n{SOURCE_SPECS_HELP}"
    )


def _auto(width: int, height: int, fps: float) -> FrameSource:
    """Prefer the Pi camera, then RealSense, then the first V4L2 device."""
    num = _picamera.find_pi_camera()  # not USB webcams: libcamera lists those too
    if num is not None:
        log.info("auto: using Raspberry Pi camera number %d", num)
        return PiCameraSource(width, height, fps, camera_num=num)
    if _realsense.realsense_available():
        log.info("auto: using the Intel RealSense camera")
        return RealSenseSource(width, height, fps)
    log.info("auto: no Pi camera or RealSense found; using /dev/video0")
    return V4L2Source(0, width, height, fps)
