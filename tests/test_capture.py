"""Capture layer: real files through real OpenCV; fake camera modules only for hardware."""

from __future__ import annotations

import itertools
import logging
import os
import sys
import threading
import time
import types
from concurrent.futures import CancelledError, Future
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import pytest

import appliance.capture as capture
from appliance import sources
from appliance.capture import CaptureError, Frame, SourceConfigError, open_source
from appliance.capture.base import ensure_bgr
from appliance.capture.files import ImageFolderSource, VideoFileSource
from appliance.capture.latest import LatestFrameGrabber
from appliance.capture.picamera import PiCameraSource, find_pi_camera
from appliance.capture.realsense import (
    RealSenseRecordingSource,
    RealSenseSource,
    realsense_available,
)
from appliance.capture.stream import StreamSource
from appliance.capture.v4l2 import V4L2Source
from appliance.common.redact import redact
from appliance.config.schema import CameraConfig, section_keys

W, H = 64, 48
FPS = 10.0
N_FRAMES = 8
TOL = 12  # codec error on a flat square is a few grey levels; steps are 10 apart


def _frame_image(i: int) -> np.ndarray:
    """A frame whose index is readable back: a large square of grey 10*i + 20."""
    img = np.zeros((H, W, 3), np.uint8)
    img[8:40, 16:48] = 10 * i + 20
    return img


def _decoded_index(image: np.ndarray) -> int:
    value = float(image[16:32, 24:40].mean())
    return round((value - 20) / 10)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MJPG/AVI clip (MJPG encodes in every opencv-python build; avc1 does not)."""
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (W, H))
    assert writer.isOpened()
    for i in range(N_FRAMES):
        writer.write(_frame_image(i))
    writer.release()
    return path


# ---------------------------------------------------------------- video files


def test_video_every_frame_in_order_with_media_time(video: Path) -> None:
    with VideoFileSource(video) as src:
        frames = list(src)
        assert src.read() is None  # stays ended
    assert len(frames) == N_FRAMES
    for i, f in enumerate(frames):
        assert f.index == i
        assert f.t == pytest.approx(i / FPS)
        assert f.image.shape == (H, W, 3) and f.image.dtype == np.uint8
        assert abs(float(f.image[16:32, 24:40].mean()) - (10 * i + 20)) < TOL
    assert not VideoFileSource(video).live


def test_video_loop_keeps_counting(video: Path) -> None:
    src = VideoFileSource(video, loop=True)
    src.open()
    try:
        frames = [src.read() for _ in range(2 * N_FRAMES + 3)]
    finally:
        src.close()
    assert all(f is not None for f in frames)
    assert [f.index for f in frames] == list(range(2 * N_FRAMES + 3))
    ts = [f.t for f in frames]
    assert all(b > a for a, b in itertools.pairwise(ts))
    assert ts[N_FRAMES] == pytest.approx(N_FRAMES / FPS)  # offset by one clip duration
    assert ts[-1] == pytest.approx((2 * N_FRAMES + 2) / FPS)
    assert [_decoded_index(f.image) for f in frames[N_FRAMES : N_FRAMES + 3]] == [0, 1, 2]


def test_video_missing_and_corrupt(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(CaptureError, match=r"nope\.mp4"):
        VideoFileSource(missing).open()
    corrupt = tmp_path / "junk.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    with pytest.raises(CaptureError, match=r"junk\.mp4"):
        VideoFileSource(corrupt).open()


def test_read_before_open_raises(video: Path) -> None:
    with pytest.raises(CaptureError, match="not open"):
        VideoFileSource(video).read()


# ---------------------------------------------------------------- image folders


def _write_images(folder: Path) -> None:
    cv2.imwrite(str(folder / "b.png"), _frame_image(1))
    cv2.imwrite(str(folder / "a.JPG"), _frame_image(0))
    cv2.imwrite(str(folder / "c.bmp"), _frame_image(3)[:, :, 0])  # grayscale
    (folder / "bb.jpeg").write_bytes(b"not really a jpeg")  # sorts between b and c
    (folder / "notes.txt").write_text("ignored")


def test_image_folder_order_gray_and_skip(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write_images(tmp_path)
    with caplog.at_level(logging.WARNING), ImageFolderSource(tmp_path, fps=5) as src:
        frames = list(src)
    assert [_decoded_index(f.image) for f in frames] == [0, 1, 3]
    assert [f.index for f in frames] == [0, 1, 3]  # the unreadable bb.jpeg leaves a gap
    assert [f.t for f in frames] == pytest.approx([0.0, 0.2, 0.6])
    gray = frames[2].image
    assert gray.shape == (H, W, 3)
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])
    assert "bb.jpeg" in caplog.text
    assert not src.live


def test_image_folder_loop(tmp_path: Path) -> None:
    _write_images(tmp_path)
    src = ImageFolderSource(tmp_path, fps=4, loop=True)
    src.open()
    frames = [src.read() for _ in range(7)]
    src.close()
    assert [f.index for f in frames] == [0, 1, 3, 4, 5, 7, 8]
    assert [f.t for f in frames] == pytest.approx([i / 4 for i in (0, 1, 3, 4, 5, 7, 8)])


def test_image_folder_errors(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(CaptureError, match="no images"):
        ImageFolderSource(tmp_path, fps=5).open()
    with pytest.raises(CaptureError, match="not found"):
        ImageFolderSource(tmp_path / "missing", fps=5).open()
    (tmp_path / "x.png").write_bytes(b"garbage")
    src = ImageFolderSource(tmp_path, fps=5)
    src.open()
    with pytest.raises(CaptureError, match="could be read"):
        src.read()


# ---------------------------------------------------------------- LatestFrameGrabber


def _counter_grab(delay: float = 0.0):
    """A fake camera: frame n is a 2x2 image filled with n % 256."""
    n = [0]

    def grab() -> np.ndarray:
        if delay:
            time.sleep(delay)
        n[0] += 1
        return np.full((2, 2, 3), n[0] % 256, np.uint8)

    return grab


def test_grabber_keeps_only_newest() -> None:
    g = LatestFrameGrabber(_counter_grab(0.0005), "fake")
    g.start()
    try:
        got = []
        for _ in range(4):
            got.append(g.get(timeout=2.0))
            time.sleep(0.03)  # slow consumer
    finally:
        g.stop()
    idx = [f.index for f in got]
    assert all(b > a for a, b in itertools.pairwise(idx))
    assert max(b - a for a, b in itertools.pairwise(idx)) > 1  # frames were dropped
    for f in got:  # the image is the one grabbed for that index
        assert f.image[0, 0, 0] == (f.index + 1) % 256
    ts = [f.t for f in got]
    assert all(b > a for a, b in itertools.pairwise(ts))
    assert not g.running


def test_grabber_never_returns_same_frame_twice() -> None:
    frames = [np.zeros((2, 2, 3), np.uint8)]

    def grab() -> np.ndarray | None:
        return frames.pop() if frames else None

    g = LatestFrameGrabber(grab, "one-shot")
    g.start()
    try:
        assert g.get(timeout=2.0).index == 0
        with pytest.raises(CaptureError, match=r"no frame from one-shot for 0\.1 s"):
            g.get(timeout=0.1)
    finally:
        g.stop()


def test_grabber_timeout_and_error() -> None:
    g = LatestFrameGrabber(lambda: None, "idle cam")
    g.start()
    with pytest.raises(CaptureError, match=r"no frame from idle cam for 0\.05 s"):
        g.get(timeout=0.05)
    g.stop()

    def broken() -> np.ndarray:
        raise OSError("sensor on fire")

    g = LatestFrameGrabber(broken, "broken cam")
    g.start()
    with pytest.raises(CaptureError, match="sensor on fire") as info:
        g.get(timeout=2.0)
    assert isinstance(info.value.__cause__, OSError)
    g.stop()


def test_grabber_stop_wakes_waiter() -> None:
    g = LatestFrameGrabber(lambda: None, "idle")
    g.start()
    errors: list[Exception] = []

    def consumer() -> None:
        try:
            g.get(timeout=5.0)
        except CaptureError as exc:
            errors.append(exc)

    t = threading.Thread(target=consumer)
    t.start()
    time.sleep(0.05)
    g.stop()
    t.join(1.0)
    assert not t.is_alive()
    assert errors and "closed" in str(errors[0])


def test_grabber_releases_the_device_once_and_only_after_the_last_grab() -> None:
    events: list[str] = []

    def grab() -> np.ndarray:
        events.append("grab")
        time.sleep(0.01)
        events.append("grabbed")
        return np.zeros((2, 2, 3), np.uint8)

    g = LatestFrameGrabber(grab, "cam", release=lambda: events.append("release"))
    g.start()
    g.get(timeout=2.0)
    assert g.stop() is True
    assert g.stop() is True  # twice is fine
    assert events.count("release") == 1 and events[-1] == "release"
    assert events[-2] == "grabbed"

    never_started = LatestFrameGrabber(grab, "cam", release=lambda: events.append("freed"))
    never_started.stop()
    assert events[-1] == "freed"


def test_grabber_that_failed_has_released_before_close() -> None:
    released = threading.Event()

    def broken() -> np.ndarray:
        raise OSError("gone")

    g = LatestFrameGrabber(broken, "cam", release=released.set)
    g.start()
    with pytest.raises(CaptureError, match="gone"):
        g.get(timeout=2.0)
    assert released.wait(2.0)  # the device is free for a reopen at once


def test_ensure_bgr() -> None:
    assert ensure_bgr(np.zeros((3, 4), np.uint8)).shape == (3, 4, 3)
    bgra = np.arange(2 * 2 * 4, dtype=np.uint8).reshape(2, 2, 4)
    out = ensure_bgr(bgra)
    assert out.shape == (2, 2, 3) and out.flags.c_contiguous
    assert np.array_equal(out, bgra[..., :3])
    with pytest.raises(CaptureError):
        ensure_bgr(np.zeros((2, 2, 3), np.float32))


# ---------------------------------------------------------------- V4L2


def test_v4l2_missing_device() -> None:
    src = V4L2Source(99)
    assert src.live
    with pytest.raises(CaptureError, match=r"camera /dev/video99 not found or busy"):
        src.open()
    src.close()  # safe after a failed open


class _StalledCapture:
    """Stands in for cv2.VideoCapture on a webcam that stopped sending (not unplugged):
    read() blocks, as cv2 does in select() with the GIL released, until `unblock` is set.
    release() during a read would free buffers the driver is writing into."""

    def __init__(self) -> None:
        self.reading = threading.Event()
        self.unblock = threading.Event()
        self.released = threading.Event()
        self.in_read = 0
        self.released_during_read = False

    def isOpened(self) -> bool:
        return True

    def set(self, prop: int, value: float) -> bool:
        return True

    def get(self, prop: int) -> float:
        return 0.0

    def read(self) -> tuple[bool, np.ndarray | None]:
        self.in_read += 1
        self.reading.set()
        self.unblock.wait(10.0)
        self.in_read -= 1
        return False, None

    def release(self) -> None:
        self.released_during_read |= self.in_read > 0
        self.released.set()


def test_v4l2_never_releases_a_camera_while_a_read_is_blocked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cap = _StalledCapture()
    monkeypatch.setattr(cv2, "VideoCapture", lambda *args: cap)
    src = V4L2Source(0)
    src.open()
    assert cap.reading.wait(2.0)
    with pytest.raises(CaptureError, match="no frame"):
        src.read(timeout=0.1)
    started = time.monotonic()
    src.close()
    took = time.monotonic() - started
    assert took < src.join_timeout + 0.5  # a short, bounded wait for systemd's stop timeout
    assert not cap.released.is_set()  # the grab thread still owns the device ...
    cap.unblock.set()
    assert cap.released.wait(2.0)  # ... and frees it once cv2 returns
    assert not cap.released_during_read


def test_v4l2_bounds_opencv_select_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenCV waits 10 s (seconds: cap_v4l.cpp sets tv_sec) per read of a stalled webcam
    unless told otherwise, before its first V4L2 open; an admin's own value wins."""
    from appliance.capture.v4l2 import V4L_SELECT_TIMEOUT_ENV

    monkeypatch.setenv(V4L_SELECT_TIMEOUT_ENV, "x")  # restored after the test
    monkeypatch.delenv(V4L_SELECT_TIMEOUT_ENV)
    with pytest.raises(CaptureError):
        V4L2Source(99).open()
    assert os.environ[V4L_SELECT_TIMEOUT_ENV] == "2"
    monkeypatch.setenv(V4L_SELECT_TIMEOUT_ENV, "7")
    with pytest.raises(CaptureError):
        V4L2Source(99).open()
    assert os.environ[V4L_SELECT_TIMEOUT_ENV] == "7"


# ---------------------------------------------------------------- picamera2


CSI_ID = "/base/soc/i2c0mux/i2c@1/imx708@1a"
USB_ID = "/base/axi/pcie@120000/rp1/usb@200000-1:1.0-046d:0825"  # a UVC webcam via libcamera


class _FakePicamera2:
    """Stands in for picamera2.Picamera2, job semantics included: capture_array() queues a
    job that the next frame completes, waiting for it forever when `wait` is None and
    raising TimeoutError after `wait` s otherwise; stop() is a job queued behind pending
    ones (here: it gives up after STOP_HANG_S and notes ("stop hung",)); and
    cancel_all_and_flush() cancels every pending job. While `stalled` (a loose ribbon) no
    frame comes. Frames are 4-channel [B, G, R, 255] like XRGB8888."""

    STOP_HANG_S = 3.0
    cameras: list[dict] = [{"Model": "imx708", "Num": 0, "Id": CSI_ID}]  # noqa: RUF012
    instances: list[_FakePicamera2] = []  # noqa: RUF012

    def __init__(self, camera_num: int = 0) -> None:
        self.camera_num = camera_num
        self.calls: list[tuple] = []
        self.waits: list[object] = []
        self.size = (0, 0)
        self.stalled = False
        self._jobs: list[Future] = []
        self._lock = threading.Lock()
        _FakePicamera2.instances.append(self)

    @staticmethod
    def global_camera_info() -> list[dict]:
        return _FakePicamera2.cameras

    def create_video_configuration(self, main: dict, controls: dict) -> dict:
        self.calls.append(("config", main, controls))
        self.size = main["size"]
        return {"main": main, "controls": controls}

    def configure(self, config: dict) -> None:
        self.calls.append(("configure",))

    def start(self) -> None:
        self.calls.append(("start",))

    def capture_array(self, name: str = "main", wait: float | bool | None = None) -> np.ndarray:
        self.waits.append(wait)
        job: Future = Future()
        job.set_running_or_notify_cancel()
        if self.stalled:
            with self._lock:
                self._jobs.append(job)
        else:
            time.sleep(0.002)
            w, h = self.size
            img = np.empty((h, w, 4), np.uint8)
            img[...] = (10, 20, 30, 255)
            job.set_result(img)
        return job.result(timeout=None if wait in (None, True) else wait)

    def cancel_all_and_flush(self) -> None:
        self.calls.append(("cancel",))
        with self._lock:
            jobs, self._jobs = self._jobs, []
        for job in jobs:
            job.set_exception(CancelledError())

    def stop(self) -> None:
        self.calls.append(("stop",))
        deadline = time.monotonic() + self.STOP_HANG_S
        while self._jobs and time.monotonic() < deadline:
            time.sleep(0.01)
        if self._jobs:
            self.calls.append(("stop hung",))

    def close(self) -> None:
        self.calls.append(("close",))


@pytest.fixture
def fake_picamera2(monkeypatch: pytest.MonkeyPatch) -> type[_FakePicamera2]:
    module = types.ModuleType("picamera2")
    module.Picamera2 = _FakePicamera2  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "picamera2", module)
    monkeypatch.setattr(_FakePicamera2, "cameras", [{"Model": "imx708", "Num": 0, "Id": CSI_ID}])
    monkeypatch.setattr(_FakePicamera2, "instances", [])
    return _FakePicamera2


def test_picamera_missing_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)
    with pytest.raises(SourceConfigError, match="picamera2") as info:  # not retried
        PiCameraSource().open()
    assert "sudo apt install python3-picamera2" in str(info.value)
    assert "--system-site-packages" in str(info.value)
    assert find_pi_camera() is None


def test_picamera_no_camera(fake_picamera2, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fake_picamera2, "cameras", [])
    with pytest.raises(CaptureError, match="no Raspberry Pi camera detected"):
        PiCameraSource().open()
    assert find_pi_camera() is None


def test_picamera_end_to_end(fake_picamera2) -> None:
    assert find_pi_camera() == 0
    src = PiCameraSource(32, 24, 12)
    assert src.live
    with src:
        frames = [src.read(timeout=2.0) for _ in range(3)]
    cam = fake_picamera2.instances[0]
    assert cam.calls[0] == ("config", {"size": (32, 24), "format": "RGB888"}, {"FrameRate": 12.0})
    assert cam.calls[-3:] == [("cancel",), ("stop",), ("close",)]
    assert ("stop hung",) not in cam.calls
    for f in frames:
        assert isinstance(f, Frame)
        assert f.image.shape == (24, 32, 3) and f.image.dtype == np.uint8
        assert tuple(f.image[0, 0]) == (10, 20, 30)
    assert [f.index for f in frames] == sorted({f.index for f in frames})
    src.close()  # twice is fine


def test_picamera_stalled_sensor_is_a_grab_error_and_close_does_not_hang(
    fake_picamera2, monkeypatch: pytest.MonkeyPatch
) -> None:
    """picamera2 waits forever when capture_array() gets no `wait`, and stop() queues
    behind that job: the grab thread, then close(), then the daemon's loop would hang."""
    monkeypatch.setattr(PiCameraSource, "capture_timeout", 0.2)
    src = PiCameraSource(32, 24, 12)
    src.open()
    cam = fake_picamera2.instances[0]
    assert src.read(timeout=2.0) is not None
    cam.stalled = True  # the ribbon comes loose
    with pytest.raises(CaptureError, match=r"within 0\.2 s \(check the ribbon cable\)"):
        for _ in range(100):
            src.read(timeout=2.0)
    assert all(isinstance(w, float) for w in cam.waits)  # never "wait forever"
    started = time.monotonic()
    src.close()
    assert time.monotonic() - started < 1.0
    assert ("stop hung",) not in cam.calls
    assert cam.calls[-3:] == [("cancel",), ("stop",), ("close",)]


def test_picamera_close_cancels_a_capture_in_progress(
    fake_picamera2, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(PiCameraSource, "capture_timeout", 30.0)
    src = PiCameraSource(32, 24, 12)
    src.open()
    cam = fake_picamera2.instances[0]
    assert src.read(timeout=2.0) is not None
    cam.stalled = True
    time.sleep(0.05)  # the grab thread is now waiting on a job no frame will complete
    grabber = src._grabber
    started = time.monotonic()
    src.close()
    assert time.monotonic() - started < 0.5  # not the 30 s wait, not the join timeout
    assert not grabber.running
    assert cam.calls[-3:] == [("cancel",), ("stop",), ("close",)]
    assert ("stop hung",) not in cam.calls


def test_picamera_ignores_usb_cameras_libcamera_lists(
    fake_picamera2, monkeypatch: pytest.MonkeyPatch
) -> None:
    from appliance.capture import realsense as realsense_mod

    monkeypatch.setattr(realsense_mod, "realsense_available", lambda: False)
    usb = {"Model": "uvcvideo", "Num": 0, "Id": USB_ID}
    monkeypatch.setattr(fake_picamera2, "cameras", [usb])  # a webcam and no Pi camera
    assert find_pi_camera() is None
    src = open_source("auto")
    assert isinstance(src, V4L2Source) and src.device == 0
    with pytest.raises(CaptureError, match=r"only USB cameras: use v4l2:N"):
        PiCameraSource().open()
    # picamera2 lists Pi cameras first; "Num" is what Picamera2() takes
    csi = {"Model": "imx708", "Num": 1, "Id": CSI_ID}
    monkeypatch.setattr(fake_picamera2, "cameras", [csi, usb])
    src = open_source("auto")
    assert isinstance(src, PiCameraSource) and src.camera_num == 1
    with src:
        assert src.read(timeout=2.0) is not None
    assert [cam.camera_num for cam in fake_picamera2.instances] == [1]


def test_find_pi_camera_never_raises(fake_picamera2, monkeypatch) -> None:
    def boom() -> list:
        raise RuntimeError("libcamera exploded")

    monkeypatch.setattr(fake_picamera2, "global_camera_info", staticmethod(boom))
    assert find_pi_camera() is None


# ---------------------------------------------------------------- pyrealsense2 (fake)
# The live camera's own logic against a fake module; tests/test_realsense.py plays real
# recordings through the real library.


def _fake_rs(
    devices: list, image: np.ndarray | None = None, *, depth: bool = False, depth_fails=False
) -> types.ModuleType:
    """A pyrealsense2 whose camera numbers its framesets: colour filled with n % 256 and
    (with `depth`) a depth map of n mm, so a frame's depth can be matched to its image."""
    rs = types.ModuleType("pyrealsense2")

    class _Device:
        def __init__(self, serial: str) -> None:
            self.serial = serial

        def get_info(self, what: str) -> str:
            return self.serial

    class _Context:
        def query_devices(self) -> list:
            return [_Device(d) for d in devices]

    class _Profile:
        def format(self) -> str:
            return "format.bgr8"

        def as_video_stream_profile(self) -> _Profile:
            return self

        def get_intrinsics(self) -> types.SimpleNamespace:
            return types.SimpleNamespace(fx=30.0, fy=30.0, ppx=16.0, ppy=12.0)

    class _Color:
        def __init__(self, n: int) -> None:
            self.n = n

        def get_data(self) -> np.ndarray:
            return image if image is not None else np.full((24, 32, 3), self.n % 256, np.uint8)

        def get_profile(self) -> _Profile:
            return _Profile()

    class _Depth:
        def __init__(self, n: int) -> None:
            self.n = n

        def get_units(self) -> float:
            return 0.001

        def get_profile(self) -> _Profile:
            return _Profile()

        def get_data(self) -> np.ndarray:
            return np.full((24, 32), self.n, np.uint16)

    class _Frames:
        def __init__(self, n: int, with_depth: bool) -> None:
            self.n, self.with_depth = n, with_depth

        def get_color_frame(self) -> _Color:
            return _Color(self.n)

        def get_depth_frame(self) -> _Depth | None:
            return _Depth(self.n) if self.with_depth else None

    class _Align:
        def __init__(self, to: str) -> None:
            assert to == "color"

        def process(self, frames: _Frames) -> _Frames:
            return frames  # the fake's depth is the colour's size already

    class _Pipeline:
        stopped = False
        configs: ClassVar[list] = []

        def start(self, config) -> None:
            _Pipeline.configs.append(config)
            if depth_fails and any(args[0] == "depth" for args in config.streams):
                raise RuntimeError("Couldn't resolve requests")
            self.depth = any(args[0] == "depth" for args in config.streams)
            self.n = 0

        def wait_for_frames(self, timeout_ms: int) -> _Frames:
            time.sleep(0.002)
            self.n += 1
            return _Frames(self.n, depth and self.depth)

        def stop(self) -> None:
            _Pipeline.stopped = True

    class _Config:
        def __init__(self) -> None:
            self.streams: list[tuple] = []
            self.device: str | None = None

        def enable_stream(self, *args) -> None:
            self.streams.append(args)

        def enable_device(self, serial: str) -> None:
            self.device = serial

    rs.context = _Context  # type: ignore[attr-defined]
    rs.pipeline = _Pipeline  # type: ignore[attr-defined]
    rs.config = _Config  # type: ignore[attr-defined]
    rs.align = _Align  # type: ignore[attr-defined]
    rs.stream = types.SimpleNamespace(color="color", depth="depth")  # type: ignore[attr-defined]
    rs.format = types.SimpleNamespace(bgr8="bgr8", z16="z16")  # type: ignore[attr-defined]
    rs.camera_info = types.SimpleNamespace(serial_number="serial")  # type: ignore[attr-defined]
    return rs


@pytest.fixture
def quick_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RealSenseSource, "settle_frames", 3)


def test_realsense_missing_module(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "pyrealsense2", None)
    with pytest.raises(SourceConfigError, match="pyrealsense2") as info:  # not retried
        RealSenseSource().open()
    assert "pip install pyrealsense2" in str(info.value)
    assert realsense_available() is False
    recording = tmp_path / "clip.db3"
    recording.write_bytes(b"not read")
    with pytest.raises(SourceConfigError, match="pyrealsense2"):  # exit 2, as for the camera
        open_source(f"realsense:{recording}").open()


def test_realsense_no_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyrealsense2", _fake_rs([]))
    with pytest.raises(CaptureError, match=r"no Intel RealSense camera found \(is the D435"):
        RealSenseSource().open()
    assert realsense_available() is False


def test_realsense_end_to_end(monkeypatch: pytest.MonkeyPatch, quick_settle) -> None:
    image = np.full((24, 32, 3), 7, np.uint8)
    rs = _fake_rs(["d435"], image)
    monkeypatch.setitem(sys.modules, "pyrealsense2", rs)
    assert realsense_available() is True
    src = RealSenseSource(32, 24, 15)
    with src:
        frame = src.read(timeout=2.0)
        (config,) = rs.pipeline.configs
        assert config.streams == [("color", 32, 24, "bgr8", 15), ("depth", "z16", 15)]
        assert config.device is None
    assert frame is not None and frame.image.shape == (24, 32, 3)
    assert frame.image is not image  # copied out of the librealsense buffer
    assert frame.depth is None  # a camera that sends no depth frames
    assert rs.pipeline.stopped


def test_realsense_depth_rides_with_its_own_image_after_auto_exposure_settles(
    monkeypatch: pytest.MonkeyPatch, quick_settle
) -> None:
    monkeypatch.setitem(sys.modules, "pyrealsense2", _fake_rs(["d435"], depth=True))
    with RealSenseSource(32, 24, 15) as src:
        frames = [src.read(timeout=2.0) for _ in range(5)]
    numbers = [int(f.image[0, 0, 0]) for f in frames]
    assert numbers[0] > 3  # the first three framesets were dropped while exposure settled
    assert numbers == sorted(set(numbers))  # newer each time (older ones may be skipped)
    for frame, n in zip(frames, numbers, strict=True):
        assert frame.depth is not None and frame.depth.dtype == np.float32
        assert frame.depth.shape == (24, 32)
        assert frame.depth[0, 0] == pytest.approx(n * 0.001)  # its own frameset's depth


def test_realsense_picks_a_camera_by_serial(monkeypatch: pytest.MonkeyPatch, quick_settle):
    rs = _fake_rs(["111", "222"])
    monkeypatch.setitem(sys.modules, "pyrealsense2", rs)
    with pytest.raises(CaptureError, match=r"no RealSense camera with serial 333 \(found: 111"):
        open_source("realsense:333").open()  # a runtime error: it may be plugged in later
    src = open_source("realsense:222")
    assert isinstance(src, RealSenseSource) and src.describe().endswith("222")
    with src:
        assert src.read(timeout=2.0) is not None
    assert rs.pipeline.configs[-1].device == "222"


def test_realsense_without_a_depth_mode_runs_on_colour(
    monkeypatch: pytest.MonkeyPatch, quick_settle, caplog: pytest.LogCaptureFixture
) -> None:
    rs = _fake_rs(["d435"], depth=True, depth_fails=True)
    monkeypatch.setitem(sys.modules, "pyrealsense2", rs)
    with caplog.at_level(logging.WARNING), RealSenseSource(32, 24, 15) as src:
        frame = src.read(timeout=2.0)
        assert not src.has_depth
    assert frame is not None and frame.depth is None
    assert [len(c.streams) for c in rs.pipeline.configs] == [2, 1]
    assert "depth stream unavailable" in caplog.text


def test_realsense_specs_that_never_work_are_config_errors() -> None:
    for spec in ("realsense:", "realsense:./clip.mp4", "realsense:12-34", "realsense:a b"):
        with pytest.raises(SourceConfigError, match="accepted forms"):
            open_source(spec)
    assert "realsense:SERIAL" in capture.SOURCE_SPECS_HELP
    assert "realsense:FILE" in capture.SOURCE_SPECS_HELP


def test_depth_alignment_without_rs_align() -> None:
    """The fallback for recordings rs.align cannot take, done as rs.align does it: each
    depth pixel covers the colour pixels between its corners' projections (so, rounding
    up, a near object grows by a pixel right and down: nearer wins where two land); a
    camera 10 cm aside moves the picture by its disparity."""
    from appliance.capture.realsense import align_depth, resize_nearest

    intr = types.SimpleNamespace(fx=100.0, fy=100.0, ppx=31.5, ppy=23.5)
    z = np.full((48, 64), 2.0, np.float32)
    z[10:20, 30:40] = 1.0
    same = align_depth(z, intr, intr, (1, 0, 0, 0, 1, 0, 0, 0, 1), (0, 0, 0), (48, 64))
    assert np.all(same[10:20, 30:40] == 1.0) and 100 <= (same == 1.0).sum() <= 12 * 12
    assert np.all(same[same != 1.0] == 2.0)  # every pixel covered
    moved = align_depth(z, intr, intr, (1, 0, 0, 0, 1, 0, 0, 0, 1), (0.1, 0, 0), (48, 64))
    assert np.all(moved[10:20, 40:50] == 1.0)  # 100 px * 0.1 m / 1 m = 10 px to the right
    assert np.all(moved[30, 10:54][moved[30, 10:54] > 0] == 2.0)  # the wall: 5 px
    assert resize_nearest(z, (24, 32)).shape == (24, 32)
    assert resize_nearest(z, (24, 32))[5, 15] == 1.0


def test_only_depth_sources_fill_frame_depth(video: Path) -> None:
    with VideoFileSource(video) as src:
        assert all(frame.depth is None for frame in src)
    assert Frame(np.zeros((2, 2, 3), np.uint8), 0.0, 0).depth is None


# ---------------------------------------------------------------- open_source


def test_open_source_specs(tmp_path: Path, video: Path) -> None:
    src = open_source("v4l2:3")
    assert isinstance(src, V4L2Source) and src.device == 3 and src.device_path == "/dev/video3"
    src = open_source("/dev/video2", width=320, height=240, fps=5)
    assert isinstance(src, V4L2Source) and src.device == 2
    assert (src.width, src.height, src.fps) == (320, 240, 5)
    assert isinstance(open_source("picamera"), PiCameraSource)
    assert isinstance(open_source("realsense"), RealSenseSource)
    folder = open_source(str(tmp_path), fps=7, loop=True)
    assert isinstance(folder, ImageFolderSource) and folder.fps == 7 and folder.loop
    clip = open_source(str(video))
    assert isinstance(clip, VideoFileSource) and clip.path == video and not clip.loop
    with pytest.raises(CaptureError, match=r"v4l2:N"):
        open_source("garbage-that-is-not-a-path")
    with pytest.raises(CaptureError, match="accepted forms"):
        open_source("")


def test_open_source_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    from appliance.capture import picamera as picamera_mod
    from appliance.capture import realsense as realsense_mod

    monkeypatch.setattr(picamera_mod, "find_pi_camera", lambda: 0)
    monkeypatch.setattr(realsense_mod, "realsense_available", lambda: True)
    assert isinstance(open_source("auto"), PiCameraSource)
    monkeypatch.setattr(picamera_mod, "find_pi_camera", lambda: None)
    assert isinstance(open_source("auto"), RealSenseSource)
    monkeypatch.setattr(realsense_mod, "realsense_available", lambda: False)
    src = open_source("auto")
    assert isinstance(src, V4L2Source) and src.device == 0


def test_open_source_demo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, video: Path) -> None:
    monkeypatch.setattr(sources, "DEMO_CLIP", tmp_path / "demo_faces.mp4")
    with pytest.raises(CaptureError, match="demo clip is missing"):
        open_source("demo")
    monkeypatch.setattr(sources, "DEMO_CLIP", video)
    src = open_source("demo", loop=True)
    assert isinstance(src, VideoFileSource) and src.loop


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("rtsp://admin:secret@cam:554/s", "rtsp://admin:***@cam:554/s"),
        ("rtsp://admin:p@ss@cam/s", "rtsp://admin:***@cam/s"),  # "@" in the password
        ("rtsp://admin:a/b@cam/s", "rtsp://admin:***@cam/s"),  # "/" in the password
        ("rtsp://admin:a/b@c:d@cam/s?x=1", "rtsp://admin:***@cam/s?x=1"),
        ("RTSPS://:only-a-password@cam", "RTSPS://:***@cam"),
        ("http://cam.local:8080/video", "http://cam.local:8080/video"),  # nothing to hide
        ("http://cam/snapshots@2x/live", "http://cam/snapshots@2x/live"),  # "@" in a path
        ("/dev/video0", "/dev/video0"),
        (  # Foscam-style credentials in the query
            "http://cam/cgi-bin/CGIStream.cgi?cmd=GetMJStream&usr=admin&pwd=s3cret",
            "http://cam/cgi-bin/CGIStream.cgi?cmd=GetMJStream&usr=admin&pwd=***",
        ),
        ("rtsp://cam/live?Token=abc&channel=1", "rtsp://cam/live?Token=***&channel=1"),
        ("rtsp://u:p@cam/live?key=k#frag", "rtsp://u:***@cam/live?key=***#frag"),
        ("http://cam/video?keyframes=1", "http://cam/video?keyframes=1"),  # not a secret
        ("clips/a?pwd=x.mp4", "clips/a?pwd=x.mp4"),  # a file name, not a URL
    ],
)
def test_redact_hides_the_whole_password(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_stream_source_never_shows_its_password() -> None:
    src = StreamSource("rtsp://admin:p@ss/w@cam/live")
    for text in (src.spec, src.describe()):
        assert "p@ss" not in text and "ss/w" not in text and "cam/live" in text
    with pytest.raises(SourceConfigError) as info:
        open_source("rtp://admin:hunter2@cam/live")  # a scheme OpenCV is not given
    assert "hunter2" not in str(info.value) and "unsupported URL scheme" in str(info.value)


def test_open_source_rejects_forms_that_never_work() -> None:
    for spec in ("", "  ", "v4l2:x", "ftp://cam/live", "not-a-camera-nor-a-path", "picamra"):
        with pytest.raises(SourceConfigError, match="accepted forms"):
            open_source(spec)
    for path in ("/media/usb/clip.mp4", "clips/", "clip.mp4", "~/faces"):  # may yet appear
        with pytest.raises(CaptureError, match="accepted forms") as info:
            open_source(path)
        assert not isinstance(info.value, SourceConfigError)


def test_specs_help_mentions_every_form() -> None:
    for form in ("auto", "picamera", "realsense", "v4l2:N", "/dev/videoN", "demo"):
        assert form in capture.SOURCE_SPECS_HELP


# ---------------------------------------------------------------- the source kinds' registry


def test_help_check_and_opener_agree_on_every_kind(
    tmp_path: Path, video: Path, fake_picamera2, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One registry yields the help, the check and the opener: every kind is in the help,
    its sample specs pass the check, and open_source builds them with that kind's own
    opener. A kind added without samples here fails the first assert."""
    samples: dict[str, list[tuple[str, type]]] = {
        "auto": [("auto", PiCameraSource), (" AUTO ", PiCameraSource)],
        "picamera": [("picamera", PiCameraSource)],
        "realsense": [
            ("RealSense", RealSenseSource),
            ("realsense:843112070123", RealSenseSource),
            ("realsense:rec/desk.db3", RealSenseRecordingSource),
            ("realsense:~/old.BAG", RealSenseRecordingSource),
        ],
        "v4l2": [("v4l2:1", V4L2Source), ("/dev/video2", V4L2Source)],
        "stream": [
            ("rtsp://u:pw@cam/live", StreamSource),
            ("RTSPS://cam/live", StreamSource),
            ("http://cam:8080/video", StreamSource),
            ("https://cam/hls.m3u8", StreamSource),
        ],
        "demo": [("demo", VideoFileSource)],
        "recording": [(str(tmp_path), ImageFolderSource), (str(video), VideoFileSource)],
    }
    assert list(samples) == list(sources.KINDS)
    (camera_source,) = [k for k in section_keys(CameraConfig) if k.name == "source"]
    assert camera_source.doc == sources.SOURCE_SETTING_DOC
    built_by: list[str] = []
    for kind in sources.KINDS.values():
        real_build = type(kind).build

        def spy(self, text, wanted, real_build=real_build):
            built_by.append(self.name)
            return real_build(self, text, wanted)

        monkeypatch.setattr(type(kind), "build", spy)
    for name, kind in sources.KINDS.items():
        for form, line in kind.forms:
            assert f"{form:<14} {line}" in capture.SOURCE_SPECS_HELP.splitlines()
            assert form in sources.SOURCE_SETTING_DOC
            assert f"`{form}`" in sources.sources_markdown()
        for word in kind.keywords:
            assert word in sources.SOURCE_KEYWORDS and word in capture.SOURCE_SPECS_HELP
        for spec, cls in samples[name]:
            assert sources.spec_problem(spec) is None, spec
            assert sources.match_kind(spec) == (kind, None), spec
            built_by.clear()
            source = open_source(spec, width=320, height=240, fps=5)
            assert built_by == [name], spec
            assert type(source) is cls, spec
            if source.live and cls is not StreamSource:
                assert (source.width, source.height, source.fps) == (320, 240, 5)


def test_bare_words_are_only_the_registered_keywords() -> None:
    assert sources.SOURCE_KEYWORDS == ("auto", "picamera", "realsense", "demo")
    for word in ("webcam", "usb", "camera0"):
        kind, problem = sources.match_kind(word)
        assert kind is None and problem is not None and "not a source keyword" in problem


def test_registry_and_checks_import_without_heavy_modules() -> None:
    """`--help`, `status` and `config check` must answer instantly on a Pi: the registry,
    its checks and the redaction rule import no camera library, nor OpenCV or numpy."""
    import subprocess

    heavy = ("cv2", "numpy", "picamera2", "pyrealsense2", "appliance.capture")
    code = (
        "import sys, appliance.sources, appliance.common.redact, appliance.config;"
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=root
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_sources_reexports_the_one_redaction_rule() -> None:
    from appliance.common import redact as redact_module

    assert sources.redact is redact_module.redact
