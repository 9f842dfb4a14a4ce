"""The daemon's status snapshot: a small JSON file replaced atomically in runtime_dir.

`emotion-appliance status` (over SSH, from monitoring) only reads this file, so it never
disturbs the daemon. Exit codes follow the Nagios plugin convention.
"""

from __future__ import annotations

import json
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
        return json.loads(status_path(runtime_dir).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return {"state": "unreadable", "last_error": f"status file unreadable: {exc}"}


def stale_after(status_interval_s: float) -> float:
    """Seconds after which a running daemon's snapshot means it hung or stopped."""
    return max(10.0, 5 * status_interval_s)


def assess(snapshot: dict[str, Any] | None, stale_after_s: float) -> tuple[int, str]:
    """Nagios-style verdict and a one-line reason."""
    if snapshot is None:
        return UNKNOWN, "no daemon status (is the service running?)"
    state = snapshot.get("state", "unknown")
    if state == "unreadable":
        return UNKNOWN, str(snapshot.get("last_error"))
    age = time.time() - float(snapshot.get("updated_at", 0))
    if state in ("running", "starting") and age > stale_after_s:
        return UNKNOWN, f"status is {age:.0f} s old: daemon hung or stopped"
    if state == "running":
        if snapshot.get("storage_error"):
            return CRITICAL, f"storage failing: {snapshot['storage_error']}"
        if snapshot.get("camera_error"):
            return WARNING, f"camera: {snapshot['camera_error']}"
        if snapshot.get("music_error"):
            return CRITICAL, f"music storage failing: {snapshot['music_error']}"
        if snapshot.get("spotify") in ("login needed", "error"):
            return WARNING, f"Spotify {snapshot['spotify']}: {snapshot.get('spotify_error')}"
        if (snapshot.get("vlm") or {}).get("breaker") == "open":
            return WARNING, f"VLM circuit breaker open: {snapshot['vlm'].get('error')}"
        if snapshot.get("throttled_now"):
            return WARNING, f"Pi {', '.join(snapshot['throttled_now'])} (check the power supply)"
        if snapshot.get("va_error"):
            return WARNING, f"{snapshot['va_error']} (VA from emotion probabilities)"
        return OK, "running"
    if state in ("finished", "stopped"):
        return WARNING, f"daemon {state}"
    if state == "error":
        return CRITICAL, f"daemon failed: {snapshot.get('last_error')}"
    return WARNING, f"daemon {state}"


def format_status(snapshot: dict[str, Any] | None, code: int, reason: str) -> str:
    """Human summary for `emotion-appliance status`; first line is the Nagios line."""
    lines = [f"EMOTION-APPLIANCE {STATE_NAMES[code]} - {reason}"]
    if not snapshot or snapshot.get("state") == "unreadable":
        return "\n".join(lines)
    uptime = time.time() - float(snapshot.get("started_at", time.time()))
    emotion = snapshot.get("emotion") or "no face"
    lines += [
        f"uptime      {_duration(uptime)}  (pid {snapshot.get('pid')}, v{snapshot.get('version')})",
        f"camera      {snapshot.get('source')}  {snapshot.get('fps', 0):.1f} fps, "
        f"{snapshot.get('frames', 0)} frames, faces in {100 * snapshot.get('face_rate', 0):.0f}%",
        f"emotion     {emotion}  (confidence {snapshot.get('confidence', 0):.2f})",
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
    temp = snapshot.get("cpu_temp_c")
    text = f"cpu         {temp:.1f} °C" if temp is not None else "cpu         -"
    if "throttled_hex" in snapshot:
        now = ", ".join(snapshot.get("throttled_now") or []) or "no"
        past = ", ".join(snapshot.get("throttled_since_boot") or []) or "none"
        text += f"; throttled now: {now}; since boot: {past} ({snapshot['throttled_hex']})"
    return [text]


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m{rest % 60:02d}s"
