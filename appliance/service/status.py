"""The daemon's status snapshot: a small JSON file replaced atomically in runtime_dir.

`emotion-appliance status` (over SSH, from monitoring) only reads this file, so it never
disturbs the daemon. Exit codes follow the Nagios plugin convention.
"""

from __future__ import annotations

import json
import math
import os
import stat
import time
from pathlib import Path
from typing import Any

from appliance.common.files import atomic_write
from appliance.common.process import boot_id, still_running
from appliance.common.redact import redact_text
from appliance.common.text import printable

STATUS_FILE = "status.json"

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATE_NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}

# states in which the daemon process should exist; its snapshot must stay fresh
LIVE_STATES = ("starting", "running", "waiting for camera", "stopping")
FINAL_STATES = ("stopped", "finished")
# "error" is what versions before "failed" wrote; a status file can outlive an upgrade
FAILED_STATES = ("failed", "error")

# The status file is a few kB; anything much larger is not the daemon's, and reading it
# whole (or a FIFO, or /dev/zero behind a symlink) would hang or exhaust a monitoring run.
MAX_STATUS_BYTES = 1 << 20
# A snapshot dated further ahead than this cannot be judged fresh or stale.
FUTURE_SLACK_S = 5.0


def status_path(runtime_dir: str | Path) -> Path:
    return Path(runtime_dir) / STATUS_FILE


def write_status(runtime_dir: str | Path, snapshot: dict[str, Any]) -> None:
    """Replace the file atomically so a reader never sees half of it. Not fsynced: it is
    rewritten every few seconds on tmpfs and means nothing after a reboot. The daemon
    creates runtime_dir when systemd has not; readers never create it. NaN and inf are
    written as null: they are not JSON, and jq or a monitoring plugin would choke.
    The file is world-readable: every text in it passes the one redaction rule (a URL's
    password or credential query, quoted back by a server in an error, shows as ***)."""
    directory = Path(runtime_dir)
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_redacted(_finite(snapshot)), sort_keys=True, allow_nan=False)
    atomic_write(directory / STATUS_FILE, text, mode=0o644, durable=False)


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {key: _redacted(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(item) for item in value]
    return value


def read_status(runtime_dir: str | Path) -> dict[str, Any] | None:
    """The last snapshot, or None when there is none (no daemon has run). Anything that
    is not a small JSON object in a regular file is an "unreadable" snapshot, returned
    at once: monitoring must get an answer, not hang on a FIFO or read /dev/zero."""
    path = status_path(runtime_dir)
    try:
        data = _read_capped(path, MAX_STATUS_BYTES)
        snapshot = json.loads(data.decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSON errors are ValueErrors
        return _unreadable(str(exc))
    except RecursionError:
        return _unreadable("JSON nested too deeply")
    if not isinstance(snapshot, dict):
        return _unreadable(f"a JSON {type(snapshot).__name__}")
    return snapshot


def _unreadable(reason: str) -> dict[str, Any]:
    return {"state": "unreadable", "last_error": f"status file unreadable: {reason}"}


def _read_capped(path: Path, limit: int) -> bytes:
    """The file's bytes, without blocking (O_NONBLOCK: opening a FIFO waits for a writer
    otherwise) and without reading past `limit`. ValueError for a FIFO, device or folder
    in the file's place, or a file over the limit."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{path} is {_file_kind(info.st_mode)}, not a regular file")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(65536, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise ValueError(f"{path} is larger than {limit // 1024} KiB")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a plain file"


def stale_after(status_interval_s: float) -> float:
    """Seconds after which a running daemon's snapshot means it hung or stopped."""
    return max(10.0, 5 * status_interval_s)


def snapshot_age(snapshot: dict[str, Any]) -> float | None:
    """Seconds since the snapshot was written, negative when it is dated in the future;
    None when its `updated_at` is not a number (a hand-edited or foreign file), so
    callers cannot trip over it.

    On the boot that wrote it the monotonic clock decides: a Pi without an RTC steps its
    wall clock by hours when NTP first syncs, which made a live daemon look hung, or a
    dead one fresh for hours. Another boot's (or an older version's) snapshot has only
    the wall clock."""
    updated_at = _real(snapshot.get("updated_at", 0))
    if updated_at is None:
        return None
    updated_monotonic = _real(snapshot.get("updated_monotonic"))
    written_on = snapshot.get("boot_id")
    if updated_monotonic is not None and isinstance(written_on, str) and written_on == boot_id():
        return time.monotonic() - updated_monotonic
    return time.time() - updated_at


def is_fresh(snapshot: dict[str, Any], stale_after_s: float) -> bool:
    """Written within stale_after_s, and not dated in the future beyond a little slack."""
    age = snapshot_age(snapshot)
    return age is not None and -FUTURE_SLACK_S <= age <= stale_after_s


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
    live = state in LIVE_STATES
    if live and still_running(snapshot) is False:
        # killed (SIGKILL, OOM, power cut of a container): no final snapshot was written,
        # and a fresh-looking file must not say "running" for the next stale_after_s
        return CRITICAL, f"daemon died (pid {snapshot.get('pid')}; its status said {state})"
    if age < -FUTURE_SLACK_S:
        return UNKNOWN, (
            f"status file dated {_seconds(-age)} in the future (clock set back, or not "
            "the daemon's file): cannot tell whether the daemon is alive"
        )
    if live and age > stale_after_s:
        return UNKNOWN, f"status is {_seconds(age)} old: daemon hung or stopped"
    if state in FAILED_STATES:
        return CRITICAL, f"daemon failed: {snapshot.get('last_error')}"
    if state == "running":
        base = (OK, "running")
    elif state == "waiting for camera":  # the camera's error is the reason, said once
        base = (WARNING, f"waiting for camera: {snapshot.get('camera_error')}")
        snapshot = {**snapshot, "camera_error": None}
    elif live or state in FINAL_STATES:
        base = (WARNING, f"daemon {state}")
    else:
        return UNKNOWN, f"status file malformed: unknown state {state!r}"
    # the worst wins: a CRITICAL further down the list beats a WARNING before it, and a
    # problem a stopped daemon left behind (storage failing) is still there to fix
    code, reason = max([base, *_problems(snapshot)], key=lambda p: p[0])
    if code > base[0] and base[0] != OK:
        reason = f"{reason} (daemon {state})"
    return code, reason


def _problems(snapshot: dict[str, Any]) -> list[tuple[int, str]]:
    """The problems the snapshot reports, each (code, reason), in the order they are
    shown; a stopped daemon keeps those it stopped with."""
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
    mqtt = snapshot.get("mqtt")  # the link cannot connect or log in (it keeps retrying)
    if isinstance(mqtt, dict) and mqtt.get("error") and mqtt.get("state") != "connected":
        found.append((WARNING, f"MQTT link down: {mqtt['error']}"))
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
    shape_errors = (TypeError, ValueError, AttributeError, KeyError, IndexError, RecursionError)
    try:
        code, reason = assess(snapshot, stale_after_s)
        text = format_status(snapshot, code, reason)
    except shape_errors as exc:
        code, reason = UNKNOWN, f"status file malformed: {type(exc).__name__}: {exc}"
        text = format_status(None, code, reason)
    if as_json:
        # strict JSON for scripts: NaN and Infinity (which json.loads accepts) become null
        try:
            text = json.dumps(
                {"code": code, "reason": reason, "status": _finite(snapshot)},
                sort_keys=True,
                allow_nan=False,
            )
        except shape_errors as exc:
            reason = f"status file malformed: {type(exc).__name__}: {exc}"
            code, text = UNKNOWN, json.dumps({"code": UNKNOWN, "reason": reason, "status": None})
    return code, text


def _finite(value: Any) -> Any:
    """value with every NaN and infinity, however deep, replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def format_status(snapshot: dict[str, Any] | None, code: int, reason: str) -> str:
    """Human summary for `emotion-appliance status`; first line is the Nagios line.

    Much of it came from outside (a VLM reply, Spotify track and artist names, errors
    servers sent): every line goes through the one sanitiser, so an escape sequence in
    a song title cannot retitle or clear the operator's terminal."""
    lines = [f"EMOTION-APPLIANCE {STATE_NAMES[code]} - {reason}"]
    if not snapshot or snapshot.get("state") == "unreadable":
        return "\n".join(map(printable, lines))
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
        _mqtt_line(snapshot),
        *_pi_line(snapshot),
        f"last error  {snapshot.get('last_error') or '-'}",
    ]
    return "\n".join(map(printable, lines))


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
    twice = snapshot.get("songs_maybe_twice") or 0
    again = f" ({twice} may have played twice)" if twice else ""
    lines.append(f"spotify     {spotify}{detail}, {snapshot.get('songs_sent', 0)} sent{again}{now}")
    lines.append(f"buttons     {snapshot.get('buttons', '-')}")
    return lines


def _mqtt_line(snapshot: dict[str, Any]) -> str:
    link = snapshot.get("mqtt")
    if not isinstance(link, dict):
        return "mqtt        off (nothing leaves the device)"
    error = f"; error: {link['error']}" if link.get("error") else ""
    return (
        f"mqtt        {link.get('state')} {link.get('broker')} as {link.get('client_id')}, "
        f"{link.get('states', 0)} states, {link.get('events', 0)} events, "
        f"{link.get('commands', 0)} commands{error}"
    )


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


def _seconds(value: float) -> str:
    """A span for a reason line: whole seconds, or short scientific notation for the
    absurd values of a hand-made file (1e308)."""
    return f"{value:.0f} s" if value < 1e12 else f"{value:.1e} s"


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m{rest % 60:02d}s"
