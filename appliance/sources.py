"""The camera/source spec strings users type, documented and checked once.

Kept apart from `appliance.capture` (which loads OpenCV) so `--help`, `status` and
`config check` answer instantly on a Pi.
"""

from __future__ import annotations

import difflib
import re

SOURCE_SPECS_HELP = """\
auto           Pi camera if present, else Intel RealSense, else /dev/video0
picamera       Raspberry Pi CSI camera (needs python3-picamera2 from apt)
realsense      Intel RealSense colour stream (needs pyrealsense2)
v4l2:N         USB/V4L2 camera number N, e.g. v4l2:0
/dev/videoN    the same, by device path (any /dev/... path works)
rtsp://...     a network camera (RTSP, or http(s):// MJPEG/HLS), reconnected when it drops
demo           the bundled demo clip (appliance/data/demo_faces.mp4)
PATH/TO/DIR    a folder of .jpg/.jpeg/.png/.bmp images, played in name order
PATH/TO/FILE   a video file (anything OpenCV/FFmpeg can decode)"""

STREAM_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://")
SOURCE_KEYWORDS = ("auto", "picamera", "realsense", "demo")
V4L2_SPEC = re.compile(r"v4l2:(\d+)")

_URL_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*://")
# user ":" password "@" host...: the password runs to the LAST "@" (it may hold "@", "/",
# ":"), because a leaked password is worse than a host hidden in the rare URL whose path
# holds an "@". urlsplit would stop the netloc at the first "/" and miss "a/b@cam".
_USERINFO = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@?#]*):.*@(?P<tail>[^@]*)", re.I | re.S)


# Query parameters that carry credentials in IP-camera URLs (Foscam's usr=&pwd=, Axis's
# and others' token=/key=/auth=, cheap P2P cameras' loginpas=), alone or after a prefix
# and "_" or "-" (auth_token, user_password, api-key): their values are hidden like a
# URL password. "monkey=" or "keyframe=" are not credentials and stay.
_SECRET_QUERY = re.compile(
    r"(?P<name>[?&;](?:[\w-]*[_-])?(?:pwd|pass|passwd|password|token|secret|auth|sig"
    r"|signature|key|apikey|loginpas)=)[^&#;]*",
    re.I,
)


def redact(spec: str) -> str:
    """The spec without a URL password or credential query values, for logs, status.json
    and history rows."""
    m = _USERINFO.fullmatch(spec)
    shown = f"{m['head']}:***@{m['tail']}" if m else spec
    if _URL_SCHEME.match(shown.lower()):
        shown = _SECRET_QUERY.sub(r"\g<name>***", shown)
    return shown


def looks_like_path(text: str) -> bool:
    """A spec with a separator, a dot or a leading ~ names a file or folder, perhaps one
    not there yet (a USB stick mounted late); a bare word is meant as a keyword."""
    return any(c in text for c in "/\\.") or text.startswith("~")


def spec_problem(spec: str) -> str | None:
    """Why `spec` can never name a source, or None. It checks the form only (no devices,
    no files), so every command and `config check` agree whatever directory they run
    in. Path-like text is a file or folder, there or not; a bare word must be a keyword
    (a file in the working directory is written ./NAME: under systemd that directory is
    the runtime dir, not where the user typed the name)."""
    text = spec.strip()
    key = text.lower()
    if not text:
        return 'is empty; use "auto" for the first camera found'
    keyword_like = not (looks_like_path(text) or key.startswith("v4l2:"))
    if keyword_like and key not in SOURCE_KEYWORDS:
        near = difflib.get_close_matches(key, SOURCE_KEYWORDS, n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        return (
            f"{text!r} is not a source keyword ({hint}a file or folder is written as a"
            f" path, e.g. ./{text})"
        )
    if key.startswith("v4l2:") and not V4L2_SPEC.fullmatch(key):
        return f"{text!r} is not v4l2:N (N a camera number, e.g. v4l2:0)"
    if _URL_SCHEME.match(key) and not key.startswith(STREAM_SCHEMES):
        schemes = ", ".join(STREAM_SCHEMES)
        return f"{redact(text)!r}: unsupported URL scheme; network cameras use {schemes}"
    return None
