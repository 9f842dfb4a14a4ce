"""Camera and recording sources, chosen from one user-facing spec string.

The kinds of source (their spec forms, checks and openers) are plugins in one registry,
`appliance.sources`; this package holds the backends they build. A backend module is
imported only when a source of its kind is built.
"""

from __future__ import annotations

from appliance.sources import SOURCE_SPECS_HELP, Wanted, match_kind

from .base import CaptureError, Frame, FrameSource, SourceConfigError

__all__ = [
    "SOURCE_SPECS_HELP",
    "CaptureError",
    "Frame",
    "FrameSource",
    "SourceConfigError",
    "open_source",
]


def open_source(
    spec: str,
    *,
    width: int = 640,
    height: int = 480,
    fps: float = 15,
    loop: bool = False,
    realtime: bool = False,
) -> FrameSource:
    """Build (but do not open) the source a spec names; see SOURCE_SPECS_HELP.

    width/height/fps are requested from cameras; fps also paces image folders.
    loop and realtime (play at the frame rate, as a live camera delivers) apply to files
    and folders. A spec that is no known form raises
    SourceConfigError; a file or folder path that does not exist (yet: a USB stick
    mounted late) raises plain CaptureError, a runtime failure.
    """
    text = spec.strip()
    kind, problem = match_kind(text)
    if kind is None or problem is not None:
        raise SourceConfigError(f"capture source {problem}; accepted forms:\n{SOURCE_SPECS_HELP}")
    return kind.build(text, Wanted(width, height, fps, loop, realtime))
