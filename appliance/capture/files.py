"""Recordings as frame sources: replay a video or a folder of stills with media-time stamps.

Media time (not wall clock) makes a replay deterministic: smoothing and mood decisions
come out the same however fast the machine processes the frames. With `realtime` a
recording is played at its own frame rate instead, as a live camera delivers it: a frame
is not handed out before its time, and one whose successor is already due is dropped
(a camera that keeps only the newest frame drops it under a slow pipeline), so status,
songs and the timeline move at the pace they would live. Stamps stay media time.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from appliance import sources

from .base import CaptureError, Frame, FrameSource, ensure_bgr

log = logging.getLogger(__name__)

DEFAULT_FPS = 30.0
# declared beside the source plugin, whose help lists them
IMAGE_EXTENSIONS = frozenset(sources.IMAGE_EXTENSIONS)
# The longest a real-time read waits for its frame (a file claiming a tiny frame rate):
# the frame loop must notice a stop. Media time then runs on from there.
MAX_FRAME_WAIT_S = 1.0


class Pacer:
    """Media time at the speed of `clock`: the first frame anchors media time to the
    clock; `wait(t)` sleeps until media time t is due, `late(t)` says whether it is due
    already (the frame before it is then dropped). Clock and sleep are injectable."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.clock = clock
        self.sleep = sleep
        self._origin: float | None = None  # clock() at media time 0

    def reset(self) -> None:
        self._origin = None

    def late(self, t: float) -> bool:
        return self._origin is not None and self.clock() >= self._origin + t

    def wait(self, t: float) -> None:
        now = self.clock()
        if self._origin is None:
            self._origin = now - t
        delay = self._origin + t - now
        if delay > MAX_FRAME_WAIT_S:
            self._origin -= delay - MAX_FRAME_WAIT_S  # later frames keep the new pace
            delay = MAX_FRAME_WAIT_S
        if delay > 0:
            self.sleep(delay)


class RecordedSource(FrameSource):
    """What plays a recording (a file or a folder) shares: its path, looping, and either
    every frame as fast as the pipeline takes them or, with `realtime`, the recording's
    own pace (a `Pacer`)."""

    live = False

    def __init__(
        self, name: str, path: str | Path, loop: bool, realtime: bool, pacer: Pacer | None
    ) -> None:
        super().__init__(name)
        self.path = Path(path)
        self.loop = loop
        self.pacer = (pacer or Pacer()) if realtime else None
        self.fps = DEFAULT_FPS

    def playback_modes(self) -> str:
        """' (looping, real time)' for the source's description, or ''."""
        modes = [n for n, on in (("looping", self.loop), ("real time", self.pacer)) if on]
        return f" ({', '.join(modes)})" if modes else ""


class VideoFileSource(RecordedSource):
    """Every frame of a video file, in order; optionally looped forever.

    `Frame.t` is frame_index / fps (the container's fps, or 30 if it reports none);
    when looping, timestamps and indexes keep increasing across restarts.
    """

    def __init__(
        self,
        path: str | Path,
        loop: bool = False,
        realtime: bool = False,
        *,
        pacer: Pacer | None = None,
    ) -> None:
        super().__init__(str(path), path, loop, realtime, pacer)
        self._cap: cv2.VideoCapture | None = None
        self._pending: np.ndarray | None = None  # first frame, decoded by open() to validate
        self._index = 0  # frames returned so far, across loops
        self._pass_frames = 0  # frames returned in the current pass over the file
        self._offset = 0.0  # media time of the start of the current pass

    def describe(self) -> str:
        return f"video {self.path}" + self.playback_modes()

    def _open_capture(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise CaptureError(f"cannot decode video {self.path}: OpenCV could not open it")
        return cap

    def open(self) -> None:
        if self._cap is not None:
            return
        if not self.path.is_file():
            raise CaptureError(f"video file not found: {self.path}")
        cap = self._open_capture()
        ok, first = cap.read()
        if not ok or first is None:
            cap.release()
            raise CaptureError(f"cannot decode video {self.path}: no readable frames")
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and math.isfinite(fps) and fps > 0 else DEFAULT_FPS
        if self.fps != fps:
            log.info("%s reports fps=%r; assuming %g", self.path, fps, self.fps)
        self._cap = cap
        self._pending = first
        self._index = 0
        self._pass_frames = 0
        self._offset = 0.0
        if self.pacer is not None:
            self.pacer.reset()

    def _next_image(self) -> np.ndarray | None:
        assert self._cap is not None
        if self._pending is not None:
            image, self._pending = self._pending, None
            return image
        ok, image = self._cap.read()
        return image if ok and image is not None else None

    def read(self, timeout: float | None = None) -> Frame | None:
        """Next frame, or None at the end (never, when looping). `timeout` is unused.
        In real time, waits until the frame is due and skips frames already overtaken."""
        if self._cap is None:
            raise CaptureError(f"{self.describe()} is not open; call open() first")
        while True:
            image = self._next_image()
            if image is None and self.loop and self._pass_frames > 0:
                # Reopen rather than seek: seeking to 0 is unreliable for some codecs.
                self._cap.release()
                self._cap = self._open_capture()
                self._offset += self._pass_frames / self.fps
                self._pass_frames = 0
                image = self._next_image()
            if image is None:
                return None
            t = self._offset + self._pass_frames / self.fps
            self._pass_frames += 1
            if self.pacer is not None:
                if self.pacer.late(t + 1 / self.fps):
                    continue  # the next frame is due already: this one is dropped
                self.pacer.wait(t)
            frame = Frame(image=ensure_bgr(image), t=t, index=self._index)
            self._index += 1
            return frame

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._pending = None


class ImageFolderSource(RecordedSource):
    """Each image in a folder (sorted by file name) as one frame at a fixed frame rate.

    Frame i of the listing gets index i and t = i / fps, so a skipped (unreadable)
    image leaves a gap instead of shifting the timing of the rest.
    """

    def __init__(
        self,
        path: str | Path,
        fps: float,
        loop: bool = False,
        realtime: bool = False,
        *,
        pacer: Pacer | None = None,
    ) -> None:
        if fps <= 0:
            raise CaptureError(f"image folder fps must be positive, got {fps}")
        super().__init__(str(path), path, loop, realtime, pacer)
        self.fps = float(fps)
        self._files: list[Path] | None = None
        self._pos = 0  # position in the endless (if looping) sequence of listing entries
        self._pass_ok = 0  # images decoded (or skipped in real time) this pass

    def describe(self) -> str:
        return f"images {self.path} @ {self.fps:g} fps" + self.playback_modes()

    def open(self) -> None:
        if not self.path.is_dir():
            raise CaptureError(f"image folder not found: {self.path}")
        files = sorted(
            (
                p
                for p in self.path.iterdir()
                if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
            ),
            key=lambda p: p.name,
        )
        if not files:
            exts = " ".join(sorted(IMAGE_EXTENSIONS))
            raise CaptureError(f"no images ({exts}) in folder {self.path}")
        self._files = files
        self._pos = 0
        self._pass_ok = 0
        if self.pacer is not None:
            self.pacer.reset()

    def read(self, timeout: float | None = None) -> Frame | None:
        """Next readable image, or None at the end (never, when looping). `timeout` is unused."""
        if self._files is None:
            raise CaptureError(f"{self.describe()} is not open; call open() first")
        n = len(self._files)
        while True:
            if self._pos > 0 and self._pos % n == 0:
                if self._pass_ok == 0:
                    raise CaptureError(f"none of the {n} images in {self.path} could be read")
                if not self.loop:
                    return None
                self._pass_ok = 0
            i = self._pos
            self._pos += 1
            if self.pacer is not None and self.pacer.late((i + 1) / self.fps):
                self._pass_ok += 1  # skipped unread (the next one is due already), not bad
                continue
            path = self._files[i % n]
            # IMREAD_COLOR turns grayscale/16-bit/alpha images into 8-bit 3-channel BGR.
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                log.warning("skipping unreadable image %s", path)
                continue
            self._pass_ok += 1
            if self.pacer is not None:
                self.pacer.wait(i / self.fps)
            return Frame(image=ensure_bgr(image), t=i / self.fps, index=i)

    def close(self) -> None:
        self._files = None
