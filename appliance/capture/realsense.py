"""Intel RealSense (e.g. D435) through pyrealsense2: colour, and depth aligned to it.

Two sources share one conversion (`FrameConverter`): each frameset becomes a BGR8 image
and, when the stream has depth, a depth map aligned to that image by `rs.align` (Z16
scaled to metres by the depth units the device, or the recording, reports), carried as
`Frame.depth`.

- `RealSenseSource`: a live camera (`realsense`, or `realsense:SERIAL` for one camera of
  several), grabbed on a background thread like every live source (only the newest frame
  is kept; a failure is reopened with the daemon's backoff). The first SETTLE_FRAMES
  framesets after a start are dropped while auto-exposure settles.
- `RealSenseRecordingSource`: a recording (`realsense:PATH.bag|.db3`: librealsense 2.59
  records rosbag2 `.db3`, older versions `.bag`), played without librealsense's own
  pacing, every frame in order; `t` is the colour frame's media time. With `realtime` it
  is paced at its own rate by the same Pacer as other files (late frames dropped), with
  `loop` it starts over with time moving on; otherwise it ends like a video file.

pyrealsense2 is an optional dependency (the `pi` and, on x86_64, `dev` extras), imported
only when one of these sources is opened, so machines without it run everything else.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .base import CaptureError, Frame, SourceConfigError, ensure_bgr
from .files import Pacer, RecordedSource
from .latest import LiveSource

log = logging.getLogger(__name__)

MISSING_MSG = (
    "pyrealsense2 is not installed: `pip install pyrealsense2` on x86_64 (the appliance's"
    " `pi` extra does this); PyPI has no ARM wheels, so on a Raspberry Pi build librealsense"
    " with its Python bindings (README: Sources), or read the D435's colour stream as a"
    " plain UVC camera with camera.source = v4l2:N (no depth)"
)
NO_DEVICE_MSG = "no Intel RealSense camera found (is the D435 on a USB3 port?)"
SETTLE_FRAMES = 10  # framesets dropped after a camera starts: auto-exposure settles
DEFAULT_DEPTH_UNITS_M = 0.001  # the D400 series' default, for a recording that lacks it
DEFAULT_FPS = 30.0
POLL_MS = 100  # a recording's frames are awaited in slices this long
STALL_S = 10.0  # a recording that neither delivers nor ends in this long is broken


def import_realsense() -> Any:
    """pyrealsense2, or SourceConfigError (retrying cannot install it) saying how."""
    try:
        import pyrealsense2 as rs
    except ImportError as exc:
        raise SourceConfigError(f"{MISSING_MSG} ({exc})") from exc
    return rs


def realsense_available() -> bool:
    """True only if pyrealsense2 imports and sees at least one device; never raises."""
    try:
        import pyrealsense2 as rs

        return len(rs.context().query_devices()) > 0
    except Exception as exc:  # any failure means "not usable", never a crash
        log.debug("pyrealsense2 not available: %s", exc)
        return False


# ------------------------------------------------------------------ framesets to frames


def _format_name(profile: Any) -> str:
    """'bgr8', 'rgb8', 'z16', ... whatever the binding's enum prints as."""
    return str(profile.format()).rsplit(".", 1)[-1].lower()


def color_to_bgr(color: Any) -> np.ndarray:
    """A colour frame as a new H x W x 3 BGR8 array (a copy: the frame's buffer goes
    back to librealsense's pool once released). Recordings of a D435 usually hold RGB8."""
    data = np.asanyarray(color.get_data())
    name = _format_name(color.get_profile())
    if name == "bgr8":
        image = data
    elif name == "rgb8":
        image = data[..., ::-1]
    elif name == "bgra8":
        image = data[..., :3]
    elif name == "rgba8":
        image = data[..., 2::-1]
    elif name in ("yuyv", "uyvy"):
        import cv2

        code = cv2.COLOR_YUV2BGR_YUYV if name == "yuyv" else cv2.COLOR_YUV2BGR_UYVY
        packed = np.ascontiguousarray(data, dtype=np.uint8)
        return cv2.cvtColor(packed.reshape(color.get_height(), color.get_width(), 2), code)
    elif name in ("y8", "raw8"):
        image = data
    else:
        raise CaptureError(f"unsupported RealSense colour format {name!r}; use BGR8 or RGB8")
    return ensure_bgr(np.array(image, dtype=np.uint8, copy=True))


class FrameConverter:
    """Framesets to (BGR image, depth in metres aligned to it, or None).

    Alignment is `rs.align` to the colour stream. A stream that reports no depth units
    (a recording made without them) is read in the D400 default of 1 mm and aligned
    here, from the streams' intrinsics and extrinsics (no lens distortion), as are all
    frames once rs.align has refused one; one without intrinsics is taken as aligned
    already (resized to the colour image if need be). Each of these is logged once."""

    def __init__(self, rs: Any, name: str) -> None:
        self.rs = rs
        self.name = name
        self._align: Any = None
        self._warned: set[str] = set()

    def _warn_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    def __call__(self, frames: Any) -> tuple[np.ndarray, np.ndarray | None] | None:
        color = frames.get_color_frame()
        if not color:
            return None
        image = color_to_bgr(color)
        depth = frames.get_depth_frame()
        if not depth:
            return image, None
        return image, self._depth(frames, depth, color, image.shape[:2])

    def _depth(self, frames: Any, depth: Any, color: Any, shape: tuple[int, int]) -> np.ndarray:
        d_profile = depth.get_profile().as_video_stream_profile()
        c_profile = color.get_profile().as_video_stream_profile()
        d_intr, c_intr = d_profile.get_intrinsics(), c_profile.get_intrinsics()
        reported = float(depth.get_units() or 0.0)
        units = reported if reported > 0 else DEFAULT_DEPTH_UNITS_M
        if reported <= 0:
            self._warn_once("units", "%s: no depth units; assuming %g m", self.name, units)
        if min(d_intr.fx, d_intr.fy, c_intr.fx, c_intr.fy) <= 0:  # nothing to project with
            self._warn_once("intrinsics", "%s: no intrinsics; depth taken as aligned", self.name)
            return resize_nearest(_metres(depth, units), shape)
        if reported > 0 and "align" not in self._warned:  # rs.align needs the units
            try:
                if self._align is None:
                    self._align = self.rs.align(self.rs.stream.color)
                aligned = self._align.process(frames).get_depth_frame()
                z16 = np.asanyarray(aligned.get_data())
                if z16.shape == shape:
                    return z16.astype(np.float32) * np.float32(units)
                why = f"rs.align gave {z16.shape[1]}x{z16.shape[0]} depth"
            except RuntimeError as exc:
                why = f"rs.align failed: {exc}"
            self._warn_once("align", "%s: %s; aligning depth without it", self.name, why)
        try:
            extrinsics = d_profile.get_extrinsics_to(c_profile)
            rotation, translation = extrinsics.rotation, extrinsics.translation
        except RuntimeError:  # none recorded: the two cameras taken as one
            rotation, translation = (1, 0, 0, 0, 1, 0, 0, 0, 1), (0, 0, 0)
        return align_depth(_metres(depth, units), d_intr, c_intr, rotation, translation, shape)


def _metres(depth: Any, units: float) -> np.ndarray:
    return np.asanyarray(depth.get_data()).astype(np.float32) * np.float32(units)


def resize_nearest(z: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if z.shape == shape:
        return z
    rows = (np.arange(shape[0]) * z.shape[0] / shape[0]).astype(int)
    cols = (np.arange(shape[1]) * z.shape[1] / shape[1]).astype(int)
    return z[rows][:, cols]


def align_depth(
    z: np.ndarray,
    d_intr: Any,
    c_intr: Any,
    rotation: Any,
    translation: Any,
    shape: tuple[int, int],
) -> np.ndarray:
    """Depth (metres, depth camera's pixels) re-projected into the colour camera's pixels
    as rs.align does: each depth pixel's corners are carried to the colour image and the
    rectangle between them takes its depth, the nearer where two land on one pixel.
    `rotation` is librealsense's column-major 3x3, depth to colour."""
    v, u = np.nonzero(z > 0)
    zs = z[v, u].astype(np.float64)
    r = np.asarray(rotation, np.float64).reshape(3, 3).T  # column-major -> row-major
    t = np.asarray(translation, np.float64).reshape(3, 1)

    def corner(du: np.ndarray, dv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = (du - d_intr.ppx) / d_intr.fx * zs
        y = (dv - d_intr.ppy) / d_intr.fy * zs
        p = r @ np.vstack([x, y, zs]) + t
        with np.errstate(divide="ignore", invalid="ignore"):
            cu = p[0] / p[2] * c_intr.fx + c_intr.ppx
            cv = p[1] / p[2] * c_intr.fy + c_intr.ppy
        return np.floor(cu + 0.5), np.floor(cv + 0.5)

    u0, v0 = corner(u - 0.5, v - 0.5)
    u1, v1 = corner(u + 0.5, v + 0.5)
    height, width = shape
    ok = np.isfinite(u0 + v0 + u1 + v1) & (u0 >= 0) & (v0 >= 0) & (u1 < width) & (v1 < height)
    u0, v0, u1, v1, zs = u0[ok].astype(int), v0[ok].astype(int), u1[ok], v1[ok], zs[ok]
    out = np.full(height * width, np.inf)
    span = int(min(8, max(0, (u1 - u0).max(initial=0), (v1 - v0).max(initial=0))))
    for dy in range(span + 1):
        for dx in range(span + 1):
            hit = (u0 + dx <= u1) & (v0 + dy <= v1)
            np.minimum.at(out, (v0[hit] + dy) * width + u0[hit] + dx, zs[hit])
    out[np.isinf(out)] = 0.0
    return out.reshape(height, width).astype(np.float32)


# ------------------------------------------------------------------ a live camera


class _DepthBeside:
    """Depth maps waiting beside the images a LatestFrameGrabber hands out.

    The grabber numbers the images its grab returns (0, 1, ...: each one it keeps);
    the grab counts the same way, so a frame's depth is the one filed under its index.
    Older entries are dropped as newer frames are read (the grabber drops their images).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._depth: dict[int, np.ndarray | None] = {}

    def file(self, image: np.ndarray, depth: np.ndarray | None) -> np.ndarray:
        with self._lock:
            self._depth[self._count] = depth
            self._count += 1
            for stale in [i for i in self._depth if i < self._count - 16]:
                del self._depth[stale]
        return image

    def attach(self, frame: Frame) -> Frame:
        with self._lock:
            depth = self._depth.pop(frame.index, None)
            for older in [i for i in self._depth if i < frame.index]:
                del self._depth[older]
        return frame if depth is None else replace(frame, depth=depth)


class RealSenseSource(LiveSource):
    """A RealSense camera: BGR colour and aligned depth, grabbed on a background thread."""

    wait_timeout_ms: int = 5000  # wait_for_frames raises RuntimeError after this
    settle_frames: int = SETTLE_FRAMES

    def __init__(
        self, width: int = 640, height: int = 480, fps: float = 15, serial: str | None = None
    ) -> None:
        super().__init__(f"realsense:{serial}" if serial else "realsense")
        self.width = width
        self.height = height
        self.fps = fps
        self.serial = serial
        self.has_depth = False
        self._pipeline: Any = None
        self._beside: _DepthBeside | None = None

    def describe(self) -> str:
        return f"Intel RealSense camera {self.serial}" if self.serial else "Intel RealSense camera"

    def _find_device(self, rs: Any) -> None:
        try:
            devices = rs.context().query_devices()
        except Exception as exc:
            raise CaptureError(f"{NO_DEVICE_MSG}: {exc}") from exc
        if len(devices) == 0:
            raise CaptureError(NO_DEVICE_MSG)
        if self.serial is None:
            return
        serials = []
        for device in devices:
            try:
                serials.append(str(device.get_info(rs.camera_info.serial_number)))
            except Exception:  # a device that cannot say: not the one asked for
                continue
        if self.serial not in serials:
            found = ", ".join(serials) or "none readable"
            raise CaptureError(f"no RealSense camera with serial {self.serial} (found: {found})")

    def _config(self, rs: Any, depth: bool) -> Any:
        config = rs.config()
        if self.serial is not None:
            config.enable_device(self.serial)
        config.enable_stream(
            rs.stream.color, self.width, self.height, rs.format.bgr8, int(self.fps)
        )
        if depth:  # at the resolution the device prefers: rs.align maps it to colour
            config.enable_stream(rs.stream.depth, rs.format.z16, int(self.fps))
        return config

    def open(self) -> None:
        if self._pipeline is not None:
            return
        rs = import_realsense()
        self._find_device(rs)
        pipeline = rs.pipeline()
        try:
            pipeline.start(self._config(rs, depth=True))
            self.has_depth = True
        except Exception as exc:  # no depth in that mode: colour alone, as before
            log.warning("RealSense depth stream unavailable (%s); colour only", exc)
            try:
                pipeline.start(self._config(rs, depth=False))
            except Exception as exc2:  # e.g. "Couldn't resolve requests": unsupported mode
                raise CaptureError(
                    f"cannot start RealSense colour stream {self.width}x{self.height} @"
                    f" {self.fps} fps ({exc2}); try 640x480 at 15 or 30 fps"
                ) from exc2
            self.has_depth = False
        log.info(
            "opened %s: colour %dx%d @ %g fps%s",
            self.describe(), self.width, self.height, self.fps,
            ", depth aligned to it" if self.has_depth else " (no depth)",
        )  # fmt: skip
        self._pipeline = pipeline
        timeout_ms = self.wait_timeout_ms
        convert = FrameConverter(rs, self.describe())
        beside = self._beside = _DepthBeside()
        settle = [self.settle_frames]

        def grab() -> np.ndarray | None:
            frames = pipeline.wait_for_frames(timeout_ms)
            if settle[0] > 0:  # auto-exposure is still finding its level
                settle[0] -= 1
                return None
            pair = convert(frames)
            return None if pair is None else beside.file(*pair)

        # stopped by the grab thread as it exits: wait_for_frames must not race stop()
        self._start_grabber(grab, release=pipeline.stop)

    def read(self, timeout: float | None = None) -> Frame | None:
        frame = super().read(timeout)
        beside = self._beside
        return frame if frame is None or beside is None else beside.attach(frame)

    def close(self) -> None:
        super().close()
        self._pipeline = None
        self._beside = None


# ------------------------------------------------------------------ a recording


class RealSenseRecordingSource(RecordedSource):
    """Every colour frame of a RealSense recording (.bag or .db3), in order, with depth.

    `Frame.t` is the colour frame's time since the recording's first frame (from its
    timestamps; a timestamp that does not move on counts one frame period); when looping,
    times and indexes keep increasing across passes. Playback runs without librealsense's
    real-time mode, so no frame is dropped however slow the pipeline; `realtime` paces it
    at the recording's own rate instead (a frame whose successor is due is dropped)."""

    def __init__(
        self,
        path: str | Path,
        loop: bool = False,
        realtime: bool = False,
        *,
        pacer: Pacer | None = None,
    ) -> None:
        super().__init__(f"realsense:{path}", path, loop, realtime, pacer)
        self.has_depth = False
        self._rs: Any = None
        self._pipeline: Any = None
        self._playback: Any = None
        self._convert: FrameConverter | None = None
        self._index = 0  # frames returned so far, across passes
        self._pass_frames = 0
        self._offset = 0.0  # media time of the start of the current pass
        self._first_ts: float | None = None  # ms, the current pass's first colour frame
        self._last_t = -math.inf

    def describe(self) -> str:
        return f"RealSense recording {self.path}" + self.playback_modes()

    def open(self) -> None:
        if self._pipeline is not None:
            return
        if not self.path.is_file():
            raise CaptureError(f"RealSense recording not found: {self.path}")
        self._rs = import_realsense()
        self._convert = FrameConverter(self._rs, f"recording {self.path}")
        self._start()
        self._index = self._pass_frames = 0
        self._offset = 0.0
        self._last_t = -math.inf
        if self.pacer is not None:
            self.pacer.reset()

    def _start(self) -> None:
        """Start a pass over the file, and check that it has a colour stream."""
        rs = self._rs
        pipeline = rs.pipeline()
        config = rs.config()
        try:
            config.enable_device_from_file(str(self.path), repeat_playback=False)
            # Not in real time from its first frame (every frame, at the pipeline's pace):
            # switched after start(), a recording written faster than its frame rate (a
            # synthetic one) loses its first frames. The device resolved here is the one
            # start() plays (the context keeps one playback device per file).
            ahead = config.resolve(rs.pipeline_wrapper(pipeline)).get_device().as_playback()
            ahead.set_real_time(False)
            profile = pipeline.start(config)
            playback = profile.get_device().as_playback()
            playback.set_real_time(False)
            streams = {_stream_name(s): s for s in profile.get_streams()}
        except RuntimeError as exc:
            raise CaptureError(f"cannot play RealSense recording {self.path}: {exc}") from exc
        if "color" not in streams:
            pipeline.stop()
            found = ", ".join(sorted(streams)) or "none"
            raise CaptureError(
                f"RealSense recording {self.path} has no colour stream (streams: {found})"
            )
        fps = float(streams["color"].fps() or 0)
        self.fps = fps if fps > 0 else DEFAULT_FPS
        self.has_depth = "depth" in streams
        self._pipeline, self._playback = pipeline, playback
        self._pass_frames = 0
        self._first_ts = None

    def _stop(self) -> None:
        pipeline, self._pipeline, self._playback = self._pipeline, None, None
        if pipeline is not None:
            try:
                pipeline.stop()
            except RuntimeError as exc:
                log.debug("stopping the playback of %s: %s", self.path, exc)

    def _next_frameset(self, timeout: float | None) -> Any:
        """The next frameset, or None once the playback has stopped at the end; a
        CaptureError after `timeout` s (at most STALL_S) with neither."""
        wait = STALL_S if timeout is None else min(max(timeout, POLL_MS / 1000), STALL_S)
        deadline = time.monotonic() + wait
        while True:
            ok, frames = self._pipeline.try_wait_for_frames(POLL_MS)
            if ok:
                return frames
            stopped = self._playback.current_status() == self._rs.playback_status.stopped
            if stopped and self._pass_frames > 0:
                # at its end: what the pipeline's syncer still holds comes out now. (Before
                # the pass's first frame, a short file may be read through already while
                # its frames are still on their way: they are waited for.)
                ok, frames = self._pipeline.try_wait_for_frames(POLL_MS)
                return frames if ok else None
            if time.monotonic() > deadline:
                why = "it has none" if stopped else "and it has not ended (a damaged file?)"
                raise CaptureError(
                    f"RealSense recording {self.path}: no frame for {wait:g} s; {why}"
                )

    def read(self, timeout: float | None = None) -> Frame | None:
        """Next frame, or None at the end (never, when looping). A recording that gives
        no frame for `timeout` s (STALL_S if None) and has not ended is a CaptureError:
        the frame loop must see a stop request."""
        if self._convert is None:
            raise CaptureError(f"{self.describe()} is not open; call open() first")
        while True:
            try:
                frames = None if self._pipeline is None else self._next_frameset(timeout)
                if frames is None and self.loop and self._pass_frames > 0:
                    self._stop()
                    self._offset = self._last_t + 1.0 / self.fps
                    self._start()
                    frames = self._next_frameset(timeout)
                if frames is None:
                    self._stop()
                    return None
                pair = self._convert(frames)
                stamp = frames.get_color_frame().get_timestamp() if pair else 0.0
            except RuntimeError as exc:  # librealsense's errors reading the file
                raise CaptureError(f"RealSense recording {self.path}: {exc}") from exc
            if pair is None:
                continue  # a frameset without colour: nothing to show
            t = self._media_time(float(stamp))
            self._pass_frames += 1
            if self.pacer is not None:
                if self.pacer.late(t + 1.0 / self.fps):
                    continue  # the next frame is due already: this one is dropped
                self.pacer.wait(t)
            image, depth = pair
            frame = Frame(image=image, t=t, index=self._index, depth=depth)
            self._index += 1
            return frame

    def _media_time(self, stamp_ms: float) -> float:
        if self._first_ts is None:
            self._first_ts = stamp_ms
        t = self._offset + (stamp_ms - self._first_ts) / 1000.0
        if not math.isfinite(t) or t <= self._last_t:
            t = self._last_t + 1.0 / self.fps if math.isfinite(self._last_t) else self._offset
        self._last_t = t
        return t

    def close(self) -> None:
        self._stop()
        self._convert = None


def _stream_name(profile: Any) -> str:
    return str(profile.stream_type()).rsplit(".", 1)[-1].lower()
