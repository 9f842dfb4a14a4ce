"""The daemon's status snapshot: a small JSON file replaced atomically in runtime_dir.

`emotion-appliance status` (over SSH, from monitoring) only reads this file, so it never
disturbs the daemon. Exit codes follow the Nagios plugin convention.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

STATUS_FILE = "status.json"

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATE_NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}


def status_path(runtime_dir: str | Path) -> Path:
    return Path(runtime_dir) / STATUS_FILE


def write_status(runtime_dir: str | Path, snapshot: dict[str, Any]) -> None:
    """Write atomically (temp file + rename) so a reader never sees half a file."""
    directory = Path(runtime_dir)
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".status.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(snapshot, fh, sort_keys=True)
        os.chmod(tmp, 0o644)
        os.replace(tmp, directory / STATUS_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_status(runtime_dir: str | Path) -> dict[str, Any] | None:
    """The last snapshot, or None when there is none (no daemon has run)."""
    try:
        snapshot = json.loads(status_path(runtime_dir).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return {"state": "unreadable", "last_error": f"status file unreadable: {exc}"}
    if not isinstance(snapshot, dict):
        kind = type(snapshot).__name__
        return {"state": "unreadable", "last_error": f"status file unreadable: a JSON {kind}"}
    return snapshot


def stale_after(status_interval_s: float) -> float:
    """Seconds after which a running daemon's snapshot means it hung or stopped."""
    return max(10.0, 5 * status_interval_s)


def snapshot_age(snapshot: dict[str, Any]) -> float | None:
    """Seconds since the snapshot was written; None when its `updated_at` is not a
    number (a hand-edited or foreign file), so callers cannot trip over it."""
    updated_at = _real(snapshot.get("updated_at", 0))
    return None if updated_at is None else time.time() - updated_at


def assess(snapshot: dict[str, Any] | None, stale_after_s: float) -> tuple[int, str]:
    """Nagios-style verdict and a one-line reason."""
    if snapshot is None:
        return UNKNOWN, "no daemon status (is the service running?)"
    state = snapshot.get("state", "unknown")
    if state == "unreadable":
        return UNKNOWN, str(snapshot.get("last_error"))
    age = snapshot_age(snapshot)
    if age is None:
        return UNKNOWN, f"status file malformed: updated_at {snapshot.get('updated_at')!r}"
    if state in ("running", "starting") and age > stale_after_s:
        return UNKNOWN, f"status is {age:.0f} s old: daemon hung or stopped"
    if state == "running":
        problems = _problems(snapshot)
        # the worst wins: a CRITICAL further down the list beats a WARNING before it
        return max(problems, key=lambda p: p[0]) if problems else (OK, "running")
    if state in ("finished", "stopped"):
        return WARNING, f"daemon {state}"
    if state == "error":
        return CRITICAL, f"daemon failed: {snapshot.get('last_error')}"
    return WARNING, f"daemon {state}"


def _problems(snapshot: dict[str, Any]) -> list[tuple[int, str]]:
    """A running daemon's problems, each (code, reason), in the order they are shown."""
    found: list[tuple[int, str]] = []
    if snapshot.get("storage_error"):
        found.append((CRITICAL, f"storage failing: {snapshot['storage_error']}"))
    if snapshot.get("music_error"):
        found.append((CRITICAL, f"music storage failing: {snapshot['music_error']}"))
    if snapshot.get("camera_error"):
        found.append((WARNING, f"camera: {snapshot['camera_error']}"))
    if snapshot.get("spotify") in ("login needed", "error"):
        found.append((WARNING, f"Spotify {snapshot['spotify']}: {snapshot.get('spotify_error')}"))
    vlm = snapshot.get("vlm")
    if isinstance(vlm, dict) and vlm.get("breaker") == "open":
        found.append((WARNING, f"VLM circuit breaker open: {vlm.get('error')}"))
    if snapshot.get("throttled_now"):
        throttled = ", ".join(map(str, snapshot["throttled_now"]))
        found.append((WARNING, f"Pi {throttled} (check the power supply)"))
    if snapshot.get("va_error"):
        found.append((WARNING, f"{snapshot['va_error']} (VA from emotion probabilities)"))
    if snapshot.get("detector_error"):
        found.append((WARNING, f"{snapshot['detector_error']} (faces found with Haar)"))
    return found


def _real(value: Any) -> float | None:
    """value as a finite float; None for null, text, booleans, lists and NaN."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def render(
    snapshot: dict[str, Any] | None, stale_after_s: float, *, as_json: bool = False
) -> tuple[int, str]:
    """The exit code and the text `emotion-appliance status` prints. A snapshot of the
    wrong shape (edited by hand, written by another version) is UNKNOWN with the reason:
    a traceback would exit 1, which monitoring reads as WARNING."""
    try:
        code, reason = assess(snapshot, stale_after_s)
        text = format_status(snapshot, code, reason)
    except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
        code, reason = UNKNOWN, f"status file malformed: {type(exc).__name__}: {exc}"
        text = format_status(None, code, reason)
    if as_json:
        text = json.dumps({"code": code, "reason": reason, "status": snapshot}, sort_keys=True)
    return code, text


def format_status(snapshot: dict[str, Any] | None, code: int, reason: str) -> str:
    """Human summary for `emotion-appliance status`; first line is the Nagios line."""
    lines = [f"EMOTION-APPLIANCE {STATE_NAMES[code]} - {reason}"]
    if not snapshot or snapshot.get("state") == "unreadable":
        return "\n".join(lines)
    started = _real(snapshot.get("started_at"))
    uptime = "-" if started is None else _duration(time.time() - started)
    emotion = snapshot.get("emotion") or "no face"
    face_rate = _real(snapshot.get("face_rate", 0))
    lines += [
        f"uptime      {uptime}  (pid {snapshot.get('pid')}, v{snapshot.get('version')})",
        f"camera      {snapshot.get('source')}  {_fixed(snapshot.get('fps', 0), 1)} fps, "
        f"{snapshot.get('frames', 0)} frames, faces in "
        f"{'-' if face_rate is None else f'{100 * face_rate:.0f}'}%",
        f"emotion     {emotion}  (confidence {_fixed(snapshot.get('confidence', 0), 2)})",
        f"valence     {_signed(snapshot.get('valence'))}  arousal "
        f"{_signed(snapshot.get('arousal'))}  (from {snapshot.get('va_source') or '-'})",
        f"models      {snapshot.get('detector')} + {snapshot.get('emotion_model')}"
        f"{' + ' + snapshot['va_model'] if snapshot.get('va_model') else ''} "
        f"on {snapshot.get('runtime')}",
        *_music_lines(snapshot),
        _vlm_line(snapshot),
        *_pi_line(snapshot),
        f"last error  {snapshot.get('last_error') or '-'}",
    ]
    return "\n".join(lines)


def _music_lines(snapshot: dict[str, Any]) -> list[str]:
    if "music" not in snapshot:
        return ["music       off"]
    song = snapshot.get("last_song") or {}
    last = f"{song.get('artist')} - {song.get('name')}" if song else "-"
    lines = [
        f"music       {snapshot['music']}, mood {snapshot.get('mood') or '-'}, "
        f"{snapshot.get('queue_depth', 0)} waiting; last queued: {last}"
    ]
    spotify = snapshot.get("spotify") or "-"
    detail = f" ({snapshot['spotify_error']})" if snapshot.get("spotify_error") else ""
    playing = snapshot.get("now_playing") or {}
    now = f"; playing {playing.get('artist')} - {playing.get('name')}" if playing else ""
    lines.append(f"spotify     {spotify}{detail}, {snapshot.get('songs_sent', 0)} sent{now}")
    lines.append(f"buttons     {snapshot.get('buttons', '-')}")
    return lines


def _vlm_line(snapshot: dict[str, Any]) -> str:
    vlm = snapshot.get("vlm")
    if not vlm:
        return "vlm         off (nothing leaves the device)"
    last = vlm.get("last") or {}
    said = f'"{last.get("text")}" ({last.get("latency_ms")} ms, on {last.get("emotion")})'
    error = f"; error: {vlm['error']}" if vlm.get("error") else ""
    return (
        f"vlm         {vlm.get('model')} breaker {vlm.get('breaker')}, "
        f"{vlm.get('requests', 0)} requests; last {said if last else '-'}{error}"
    )


def _pi_line(snapshot: dict[str, Any]) -> list[str]:
    if "cpu_temp_c" not in snapshot and "throttled_hex" not in snapshot:
        return []
    temp = _real(snapshot.get("cpu_temp_c"))
    text = f"cpu         {temp:.1f} °C" if temp is not None else "cpu         -"
    if "throttled_hex" in snapshot:
        now = ", ".join(snapshot.get("throttled_now") or []) or "no"
        past = ", ".join(snapshot.get("throttled_since_boot") or []) or "none"
        text += f"; throttled now: {now}; since boot: {past} ({snapshot['throttled_hex']})"
    return [text]


def _signed(value: Any) -> str:
    number = _real(value)
    return "-" if number is None else f"{number:+.2f}"


def _fixed(value: Any, digits: int) -> str:
    number = _real(value)
    return "-" if number is None else f"{number:.{digits}f}"


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m{rest % 60:02d}s"
