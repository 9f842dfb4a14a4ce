"""What every camera backend hands the pipeline: timestamped BGR frames."""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


class CaptureError(RuntimeError):
    """A source cannot be opened or read; the message says what is missing and how to fix it."""


class SourceConfigError(CaptureError):
    """The source cannot work as configured (an unknown spec, a library not installed).

    Retrying or restarting cannot fix it, so the daemon stops with the configuration-error
    status instead of reconnecting forever.
    """


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured image.

    `t` is the capture time in seconds: media time for files (so replays smooth
    identically whatever the processing speed), `time.monotonic()` for live cameras.
    `depth` is the depth map aligned to `image` (H x W float32 metres, 0 where the
    camera measured nothing) when the source has one (a RealSense), else None.
    """

    image: np.ndarray  # H x W x 3, uint8, BGR
    t: float
    index: int
    depth: np.ndarray | None = None


class FrameSource(abc.ABC):
    """A camera or recording. Use as a context manager or call open()/close().

    Live sources grab on their own thread and keep only the newest frame;
    file sources yield every frame in order and then end (`read` returns None).
    """

    live: bool = False

    def __init__(self, spec: str) -> None:
        self.spec = spec

    @abc.abstractmethod
    def open(self) -> None:
        """Acquire the device/file; raise CaptureError with a fix hint on failure."""

    @abc.abstractmethod
    def read(self, timeout: float | None = None) -> Frame | None:
        """Next frame; None at end of stream. Live sources raise CaptureError after `timeout`."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the device; safe to call twice."""

    def describe(self) -> str:
        """Short human description for status and logs."""
        return self.spec

    def __enter__(self) -> FrameSource:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.read()) is not None:
            yield frame


def ensure_bgr(image: np.ndarray) -> np.ndarray:
    """Coerce what a backend hands us into the H x W x 3 uint8 BGR every stage expects.

    Grayscale (H x W or H x W x 1) is replicated into three channels; a 4th
    (alpha/padding) channel is dropped, keeping the first three bytes as B, G, R.
    """
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim != 3 or image.shape[2] != 3:
        raise CaptureError(f"unsupported frame shape {image.shape}; expected H x W x 3 BGR")
    if image.dtype != np.uint8:
        raise CaptureError(f"unsupported frame dtype {image.dtype}; expected uint8")
    return np.ascontiguousarray(image)
