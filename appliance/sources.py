"""The source kinds: one registry of plugins behind the camera/source spec strings users type.

Each kind is a small plugin (after Frigate's detector plugins): the spec forms it takes,
each with a one-line help; whether a spec is written in its form (`claims`); why a spec
of its form can never work (`check`); and the opener (`build`), with the settings it
needs beside it. Everything else is derived from the registry, in registry order:

- SOURCE_SPECS_HELP: the accepted forms, for `run --help` and error messages;
- SOURCE_SETTING_DOC: the doc of the `camera.source` setting (schema, example.toml and
  the README's configuration table);
- spec_problem(): the check `config check` and the daemon run;
- appliance.capture.open_source(): the opener;
- sources_markdown(): the README's table of sources.

Standard library only: a plugin imports its backend (OpenCV, numpy, picamera2,
pyrealsense2) when it builds a source, so `--help`, `status` and `config check` answer
instantly on a Pi.
"""

from __future__ import annotations

import difflib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from appliance.common.redact import URL_SCHEME, redact

if TYPE_CHECKING:
    from appliance.capture.base import FrameSource

__all__ = [
    "KINDS",
    "SOURCE_KEYWORDS",
    "SOURCE_SETTING_DOC",
    "SOURCE_SPECS_HELP",
    "SourceKind",
    "Wanted",
    "looks_like_path",
    "match_kind",
    "redact",  # re-exported: the rule itself lives in appliance.common.redact
    "register",
    "sources_markdown",
    "spec_problem",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Wanted:
    """What is asked of a source: cameras are asked for width x height at fps, fps also
    paces image folders, loop replays files and folders forever, and realtime plays them
    at their frame rate (late frames dropped), as a live camera delivers."""

    width: int = 640
    height: int = 480
    fps: float = 15
    loop: bool = False
    realtime: bool = False


class SourceKind:
    """One kind of source. A plugin subclasses it, sets `name`, `forms` ((form, one-line
    help) pairs) and `doc` (the README's note), and `keywords` if it is named by a bare
    word; overrides `claims` if it is not, `check` if its form can be malformed, and
    always `build`. Registered with @register, in the order specs are matched."""

    name: ClassVar[str]
    forms: ClassVar[tuple[tuple[str, str], ...]]
    doc: ClassVar[str]
    keywords: ClassVar[tuple[str, ...]] = ()

    def claims(self, text: str) -> bool:
        """Whether `text` (stripped, not empty) is written in this kind's form."""
        return text.lower() in self.keywords

    def check(self, text: str) -> str | None:
        """Why `text`, which this kind claims, can never name a source; None if it may.
        The form only: no devices, no files."""
        return None

    def build(self, text: str, wanted: Wanted) -> FrameSource:
        """The source `text` names, built but not opened. Backends are imported here."""
        raise NotImplementedError


KINDS: dict[str, SourceKind] = {}


def register(cls: type[SourceKind]) -> type[SourceKind]:
    """Add a plugin to the registry; the first kind that claims a spec takes it."""
    if cls.name in KINDS:
        raise ValueError(f"source kind {cls.name!r} is registered twice")
    KINDS[cls.name] = cls()
    return cls


def _size_and_rate(wanted: Wanted) -> tuple[int, int, float]:
    return wanted.width, wanted.height, wanted.fps


# ------------------------------------------------------------------ auto


@register
class Auto(SourceKind):
    name = "auto"
    keywords = ("auto",)
    forms = (("auto", "Pi camera if present, else Intel RealSense, else /dev/video0"),)
    doc = (
        "Pi camera if picamera2 imports and lists a Pi (CSI) camera (USB webcams that"
        " libcamera also lists are left to V4L2), else an Intel RealSense, else `/dev/video0`"
    )

    def build(self, text: str, wanted: Wanted) -> FrameSource:
        """Prefer the Pi camera, then RealSense, then the first V4L2 device."""
        from appliance.capture import picamera, realsense

        num = picamera.find_pi_camera()  # not USB webcams: libcamera lists those too
        if num is not None:
            log.info("auto: using Raspberry Pi camera number %d", num)
            return picamera.PiCameraSource(*_size_and_rate(wanted), camera_num=num)
        if realsense.realsense_available():
            log.info("auto: using the Intel RealSense camera")
            return realsense.RealSenseSource(*_size_and_rate(wanted))
        log.info("auto: no Pi camera or RealSense found; using /dev/video0")
        from appliance.capture.v4l2 import V4L2Source

        return V4L2Source(0, *_size_and_rate(wanted))


# ------------------------------------------------------------------ Raspberry Pi camera


@register
class PiCamera(SourceKind):
    name = "picamera"
    keywords = ("picamera",)
    forms = (("picamera", "Raspberry Pi CSI camera (needs python3-picamera2 from apt)"),)
    doc = (
        "Raspberry Pi CSI camera via picamera2 (`sudo apt install python3-picamera2`; make"
        " the venv with `--system-site-packages`)"
    )

    def build(self, text: str, wanted: Wanted) -> FrameSource:
        from appliance.capture.picamera import PiCameraSource

        return PiCameraSource(*_size_and_rate(wanted))


# ------------------------------------------------------------------ Intel RealSense


REALSENSE_RECORDINGS = (".bag", ".db3")  # librealsense 2.59 records .db3 (rosbag2)
REALSENSE_SERIAL = re.compile(r"[0-9A-Za-z]+")


def realsense_target(text: str) -> tuple[str, str]:
    """("camera", SERIAL or "") or ("recording", PATH) for a spec of the realsense kind."""
    _, _, rest = text.strip().partition(":")
    rest = rest.strip()
    if rest.lower().endswith(REALSENSE_RECORDINGS) or looks_like_path(rest):
        return "recording", rest
    return "camera", rest


@register
class RealSense(SourceKind):
    name = "realsense"
    keywords = ("realsense",)
    forms = (
        ("realsense", "Intel RealSense camera: colour, and depth aligned to it (pyrealsense2)"),
        ("realsense:SERIAL", "the RealSense camera with this serial number"),
        ("realsense:FILE", "a RealSense recording (.db3 or .bag), with its depth"),
    )
    doc = (
        "Intel RealSense D435 via pyrealsense2: BGR colour, and depth aligned to it (distance"
        " per face, `detection.max_distance_m`, the flat-face check); `realsense:SERIAL` picks"
        " one of several cameras, `realsense:PATH.db3` (or `.bag`) plays a recording"
        " (`--realtime` at its own rate, else as fast as it goes). `pip install .[pi]` on"
        " x86_64; PyPI has no ARM wheels: on a Pi build librealsense with its Python bindings"
        " (below), or read the D435's colour stream as a UVC camera with `v4l2:N` (no depth)"
    )

    def claims(self, text: str) -> bool:
        key = text.lower()
        return key == "realsense" or key.startswith("realsense:")

    def check(self, text: str) -> str | None:
        if text.lower() == "realsense":
            return None
        what, rest = realsense_target(text)
        if what == "recording":
            if not rest.lower().endswith(REALSENSE_RECORDINGS):
                return f"{text!r}: a RealSense recording is a .db3 or .bag file"
            return None
        if not REALSENSE_SERIAL.fullmatch(rest):
            return (
                f"{text!r} is not realsense:SERIAL (letters and digits, e.g. realsense:"
                "843112070123) nor realsense:PATH.db3 / .bag"
            )
        return None

    def build(self, text: str, wanted: Wanted) -> FrameSource:
        from appliance.capture import realsense

        what, rest = realsense_target(text) if ":" in text else ("camera", "")
        if what == "recording":
            return realsense.RealSenseRecordingSource(
                Path(rest).expanduser(), loop=wanted.loop, realtime=wanted.realtime
            )
        return realsense.RealSenseSource(*_size_and_rate(wanted), serial=rest or None)


# ------------------------------------------------------------------ V4L2 (USB webcams)

V4L2_SPEC = re.compile(r"v4l2:(\d+)")


@register
class V4L2(SourceKind):
    name = "v4l2"
    forms = (
        ("v4l2:N", "USB/V4L2 camera number N, e.g. v4l2:0"),
        ("/dev/videoN", "the same, by device path (any /dev/... path works)"),
    )
    doc = "a USB/V4L2 webcam through OpenCV"

    def claims(self, text: str) -> bool:
        return text.lower().startswith("v4l2:") or text.startswith("/dev/")

    def check(self, text: str) -> str | None:
        key = text.lower()
        if key.startswith("v4l2:") and not V4L2_SPEC.fullmatch(key):
            return f"{text!r} is not v4l2:N (N a camera number, e.g. v4l2:0)"
        return None

    def build(self, text: str, wanted: Wanted) -> FrameSource:
        from appliance.capture.v4l2 import V4L2Source

        m = V4L2_SPEC.fullmatch(text.lower())
        return V4L2Source(int(m.group(1)) if m else text, *_size_and_rate(wanted))


# ------------------------------------------------------------------ network cameras

STREAM_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://")


@register
class Stream(SourceKind):
    name = "stream"
    forms = (
        ("rtsp://...", "a network camera over RTSP (or rtsps://), reconnected when it drops"),
        ("http(s)://...", "the same, as MJPEG or HLS over HTTP(S)"),
    )
    doc = (
        "a network camera (RTSP, MJPEG over HTTP, HLS) through OpenCV's FFmpeg; reconnected"
        " when it drops; a password in the URL, or a credential in its query (`pwd=`,"
        " `token=`, `key=`, `auth=`…), is shown as `***` in logs, status and history"
    )

    def claims(self, text: str) -> bool:
        return URL_SCHEME.match(text.lower()) is not None

    def check(self, text: str) -> str | None:
        if text.lower().startswith(STREAM_SCHEMES):
            return None
        schemes = ", ".join(STREAM_SCHEMES)
        return f"{redact(text)!r}: unsupported URL scheme; network cameras use {schemes}"

    def build(self, text: str, wanted: Wanted) -> FrameSource:
        from appliance.capture.stream import StreamSource

        return StreamSource(text)


# ------------------------------------------------------------------ the demo clip

DEMO_CLIP = Path(__file__).parent / "data" / "demo_faces.mp4"


@register
class Demo(SourceKind):
    name = "demo"
    keywords = ("demo",)
    forms = (("demo", "the bundled demo clip (appliance/data/demo_faces.mp4)"),)
    doc = "the bundled demo clip"

    def build(self, text: str, wanted: Wanted) -> FrameSource:
        from appliance.capture.base import SourceConfigError
        from appliance.capture.files import VideoFileSource

        if not DEMO_CLIP.is_file():
            raise SourceConfigError(
                f"the demo clip is missing ({DEMO_CLIP}); reinstall the package or pass a"
                " camera, video file or image folder instead"
            )
        return VideoFileSource(DEMO_CLIP, loop=wanted.loop, realtime=wanted.realtime)


# ------------------------------------------------------------------ files and folders

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def looks_like_path(text: str) -> bool:
    """A spec with a separator, a dot or a leading ~ names a file or folder, perhaps one
    not there yet (a USB stick mounted late); a bare word is meant as a keyword."""
    return any(c in text for c in "/\\.") or text.startswith("~")


@register
class Recording(SourceKind):
    """Any path: a folder of images or a video file, told apart when built (a file or
    folder that is not there yet is a run-time CaptureError, not a configuration one)."""

    name = "recording"
    forms = (
        ("PATH/TO/DIR", f"a folder of {'/'.join(IMAGE_EXTENSIONS)} images, played in name order"),
        ("PATH/TO/FILE", "a video file (anything OpenCV/FFmpeg can decode)"),
    )
    doc = (
        f"a folder of images (`{'/'.join(IMAGE_EXTENSIONS)}`) in name order, `t` = index /"
        " `camera.fps`; or a video file, every frame in order, `t` = media time"
    )

    def claims(self, text: str) -> bool:
        return looks_like_path(text)

    def build(self, text: str, wanted: Wanted) -> FrameSource:
        from appliance.capture.base import CaptureError
        from appliance.capture.files import ImageFolderSource, VideoFileSource

        path = Path(text).expanduser()
        if path.is_dir():
            return ImageFolderSource(path, wanted.fps, loop=wanted.loop, realtime=wanted.realtime)
        if path.is_file():
            return VideoFileSource(path, loop=wanted.loop, realtime=wanted.realtime)
        raise CaptureError(
            f"unknown capture source {redact(text)!r} (not a known camera, nor an existing"
            f" file or folder); accepted forms:\n{SOURCE_SPECS_HELP}"
        )


# ------------------------------------------------------------------ derived from the registry


def match_kind(spec: str) -> tuple[SourceKind | None, str | None]:
    """The kind `spec` is written as (the first that claims it), and why it can never
    name a source (None when it may). The form only (no devices, no files), so every
    command and `config check` agree whatever directory they run in. Path-like text is a
    file or folder, there or not; a bare word must be a keyword (a file in the working
    directory is written ./NAME: under systemd that directory is the runtime dir, not
    where the user typed the name)."""
    text = spec.strip()
    if not text:
        return None, 'is empty; use "auto" for the first camera found'
    for kind in KINDS.values():
        if kind.claims(text):
            return kind, kind.check(text)
    near = difflib.get_close_matches(text.lower(), SOURCE_KEYWORDS, n=1)
    hint = f"did you mean {near[0]!r}? " if near else ""
    return None, (
        f"{text!r} is not a source keyword ({hint}a file or folder is written as a path,"
        f" e.g. ./{text})"
    )


def spec_problem(spec: str) -> str | None:
    """Why `spec` can never name a source, or None; see match_kind."""
    return match_kind(spec)[1]


def sources_markdown() -> str:
    """The README's table of sources, one row per kind."""
    rows = ["| `--source` / `camera.source` | what |", "|---|---|"]
    for kind in KINDS.values():
        forms = ", ".join(f"`{form}`" for form, _ in kind.forms)
        rows.append(f"| {forms} | {kind.doc} |")
    return "\n".join(rows) + "\n"


SOURCE_KEYWORDS = tuple(word for kind in KINDS.values() for word in kind.keywords)
SOURCE_SPECS_HELP = "\n".join(
    f"{form:<14} {line}" for kind in KINDS.values() for form, line in kind.forms
)
_ALL_FORMS = [form for kind in KINDS.values() for form, _ in kind.forms]
SOURCE_SETTING_DOC = (
    f"Frame source: {', '.join(_ALL_FORMS[:-1])} or {_ALL_FORMS[-1]}"
    " (`emotion-appliance run --help` says what each one is)."
)
