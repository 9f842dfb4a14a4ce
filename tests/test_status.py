"""The status snapshot file and the Nagios-style verdict `emotion-appliance status` prints."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time

import pytest
from support import ROOT

from appliance.common.process import identity
from appliance.service import status as status_module
from appliance.service.status import (
    CRITICAL,
    MAX_STATUS_BYTES,
    OK,
    STATUS_FILE,
    UNKNOWN,
    WARNING,
    assess,
    format_status,
    read_status,
    render,
    status_path,
    write_status,
)

STALE_S = 10.0
PID = os.getpid()  # a live process: the snapshot's writer must exist to be "running"


def snapshot(**changes) -> dict:
    """What the publisher writes for a healthy running daemon (this test process plays
    the daemon: its pid, start time and boot id)."""
    now = time.time()
    snap = {
        "state": "running",
        "version": "0.1.0",
        **identity(),
        "source": "camera v4l2:0",
        "started_at": now - 3725,
        "updated_at": now,
        "frames": 1234,
        "fps": 14.87,
        "face_rate": 0.8123,
        "camera_error": None,
        "storage_error": None,
        "last_error": None,
        "emotion": "happy",
        "confidence": 0.8712,
        "detector": "blazeface_short_range",
        "emotion_model": "fer_baseline",
        "va_model": "va_mobilenetv3_int8",
        "va_source": "model",
        "va_error": None,
        "valence": 0.6123,
        "arousal": -0.0412,
        "runtime": "tflite_runtime",
    }
    snap.update(changes)
    return snap


def test_write_then_read_round_trip(tmp_path):
    runtime_dir = tmp_path / "run" / "emotion-appliance"
    snap = snapshot()
    write_status(runtime_dir, snap)
    assert status_path(runtime_dir) == runtime_dir / STATUS_FILE
    assert read_status(runtime_dir) == snap


def test_status_file_is_world_readable(tmp_path):
    write_status(tmp_path, snapshot())
    assert stat.S_IMODE((tmp_path / STATUS_FILE).stat().st_mode) == 0o644


def test_write_is_atomic_while_rewritten_concurrently(tmp_path):
    write_status(tmp_path, snapshot(frames=0))
    padding = "x" * 64_000  # large enough that a non-atomic write would be seen half done
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for i in range(200):
                write_status(tmp_path, snapshot(frames=i + 1, padding=padding[: 1000 + 300 * i]))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    reads = 0
    last = 0
    while thread.is_alive() or reads == 0:
        text = (tmp_path / STATUS_FILE).read_text(encoding="utf-8")
        data = json.loads(text)  # never half a file
        assert data["frames"] >= last  # never an older snapshot after a newer one
        last = data["frames"]
        reads += 1
    thread.join()
    assert not errors
    assert read_status(tmp_path)["frames"] == 200
    assert [p.name for p in tmp_path.iterdir()] == [STATUS_FILE]  # no .status.* left over


def test_failed_write_leaves_no_temp_file_and_keeps_old_status(tmp_path):
    write_status(tmp_path, snapshot(frames=1))
    with pytest.raises(TypeError):
        write_status(tmp_path, snapshot(frames=2, bad=object()))  # not JSON-serialisable
    assert read_status(tmp_path)["frames"] == 1
    assert [p.name for p in tmp_path.iterdir()] == [STATUS_FILE]


def test_read_status_absent_is_none(tmp_path):
    assert read_status(tmp_path) is None
    assert read_status(tmp_path / "never-created") is None


@pytest.mark.parametrize("content", [b"{not json", b"", b"\xff\xfe\x00garbage"])
def test_read_status_garbage_is_unreadable(tmp_path, content):
    (tmp_path / STATUS_FILE).write_bytes(content)
    snap = read_status(tmp_path)
    assert snap["state"] == "unreadable"
    assert "status file unreadable" in snap["last_error"]
    assert assess(snap, STALE_S)[0] == UNKNOWN


@pytest.mark.parametrize(
    ("changes", "code", "words"),
    [
        ({}, OK, "running"),
        ({"age": 3600}, UNKNOWN, "old"),
        ({"updated_at": 0}, UNKNOWN, "old"),
        ({"storage_error": "disk I/O error"}, CRITICAL, "disk I/O error"),
        ({"camera_error": "camera unplugged"}, WARNING, "camera unplugged"),
        ({"va_error": "VA model unusable: gone"}, WARNING, "VA from emotion probabilities"),
        ({"detector_error": "BlazeFace unusable: sha256"}, WARNING, "faces found with Haar"),
        ({"spotify": "login needed", "spotify_error": "revoked"}, WARNING, "revoked"),
        ({"spotify": "offline", "spotify_error": "unreachable"}, OK, "running"),
        ({"music_error": "disk I/O error"}, CRITICAL, "music storage"),
        ({"camera_error": "unplugged", "storage_error": "full"}, CRITICAL, "storage"),
        # the worst wins: music storage failing is CRITICAL even with the camera gone too
        ({"camera_error": "gone", "music_error": "disk I/O error"}, CRITICAL, "music storage"),
        ({"va_error": "VA model unusable", "music_error": "full"}, CRITICAL, "music storage"),
        ({"state": "finished"}, WARNING, "finished"),
        ({"state": "stopped"}, WARNING, "stopped"),
        ({"state": "starting"}, WARNING, "starting"),
        ({"state": "error", "last_error": "model missing"}, CRITICAL, "model missing"),
        ({"state": "failed", "last_error": "model missing"}, CRITICAL, "failed: model missing"),
        ({"state": "stopping"}, WARNING, "daemon stopping"),
    ],
)
def test_assess(changes, code, words):
    changes = dict(changes)
    age = changes.pop("age", 0)  # snapshots are built at run time: freshness is relative
    snap = snapshot(**changes)
    snap["updated_at"] = changes.get("updated_at", time.time() - age)
    got, reason = assess(snap, STALE_S)
    assert got == code
    assert words in reason


def test_assess_without_snapshot_or_unreadable():
    assert assess(None, STALE_S) == (UNKNOWN, "no daemon status (is the service running?)")
    unreadable = {"state": "unreadable", "last_error": "status file unreadable: x"}
    assert assess(unreadable, STALE_S) == (UNKNOWN, "status file unreadable: x")


def test_assess_stale_boundary():
    assert assess(snapshot(updated_at=time.time() - STALE_S + 2), STALE_S)[0] == OK
    assert assess(snapshot(updated_at=time.time() - STALE_S - 2), STALE_S)[0] == UNKNOWN


@pytest.mark.parametrize(
    ("code", "name"),
    [(OK, "OK"), (WARNING, "WARNING"), (CRITICAL, "CRITICAL"), (UNKNOWN, "UNKNOWN")],
)
def test_format_status_first_line_is_the_nagios_line(code, name):
    text = format_status(snapshot(), code, "some reason")
    first, *rest = text.splitlines()
    assert first == f"EMOTION-APPLIANCE {name} - some reason"
    assert len(rest) == 9  # music, VLM and MQTT off: one line each


def test_format_status_details():
    snap = snapshot()
    text = format_status(snap, *assess(snap, STALE_S))
    assert text.startswith("EMOTION-APPLIANCE OK - running\n")
    assert "uptime      1h02m05s" in text or "uptime      1h02m06s" in text
    assert f"pid {PID}, v0.1.0" in text
    assert "camera v4l2:0  14.9 fps, 1234 frames, faces in 81%" in text
    assert "emotion     happy  (confidence 0.87)" in text
    assert "valence     +0.61  arousal -0.04  (from model)" in text
    assert "blazeface_short_range + fer_baseline + va_mobilenetv3_int8 on tflite_runtime" in text
    assert "last error  -" in text


def test_format_status_no_face_and_minimal_snapshot():
    text = format_status(snapshot(emotion=None), OK, "running")
    assert "emotion     no face" in text
    text = format_status(snapshot(valence=None, arousal=None, va_model=None), OK, "running")
    assert "valence     -  arousal -" in text and "fer_baseline on" in text
    minimal = {"state": "starting", "updated_at": time.time()}
    text = format_status(minimal, *assess(minimal, STALE_S))
    assert text.splitlines()[0] == "EMOTION-APPLIANCE WARNING - daemon starting"


def test_format_status_without_snapshot_is_one_line():
    code, reason = assess(None, STALE_S)
    text = format_status(None, code, reason)
    assert text.startswith("EMOTION-APPLIANCE UNKNOWN - ")
    assert "\n" not in text
    unreadable = {"state": "unreadable", "last_error": "status file unreadable: boom"}
    assert format_status(unreadable, *assess(unreadable, STALE_S)) == (
        "EMOTION-APPLIANCE UNKNOWN - status file unreadable: boom"
    )


def test_format_status_music_lines():
    snap = snapshot(
        music="ready",
        mood="calm",
        queue_depth=2,
        last_song={"artist": "Nina", "name": "Feeling Good", "uri": "spotify:track:x"},
        spotify="online",
        spotify_error=None,
        songs_sent=5,
        now_playing={"artist": "Nina", "name": "Feeling Good", "uri": "spotify:track:x"},
        buttons="ready",
    )
    text = format_status(snap, OK, "running")
    assert "music       ready, mood calm, 2 waiting; last queued: Nina - Feeling Good" in text
    assert "spotify     online, 5 sent; playing Nina - Feeling Good" in text
    assert "buttons     ready" in text
    local = format_status(snapshot(music="ready", spotify="local only"), OK, "running")
    assert "spotify     local only, 0 sent" in local


def test_pi_health_from_sysfs_files(tmp_path):
    from appliance.hardware.pi_health import read_health

    (tmp_path / "temp").write_text("54230\n")
    (tmp_path / "throttled").write_text("50005\n")  # under-voltage now + since boot
    health = read_health(tmp_path / "temp", tmp_path / "throttled")
    assert health["cpu_temp_c"] == 54.2
    assert health["throttled_now"] == ["under-voltage", "throttled"]
    assert health["throttled_since_boot"] == ["under-voltage", "throttled"]
    assert read_health(tmp_path / "nope", tmp_path / "nope") == {}
    snap = snapshot(**health)
    code, reason = assess(snap, STALE_S)
    assert code == WARNING and "under-voltage" in reason
    text = format_status(snap, code, reason)
    assert "cpu         54.2 °C; throttled now: under-voltage, throttled" in text


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[]", "a JSON list"),
        ('"running"', "a JSON str"),
        ("42", "a JSON int"),
        ("null", "a JSON NoneType"),
    ],
)
def test_a_status_file_that_is_not_an_object_is_unreadable(tmp_path, text, words):
    (tmp_path / STATUS_FILE).write_text(text)
    snap = read_status(tmp_path)
    assert snap["state"] == "unreadable" and words in snap["last_error"]
    assert render(snap, STALE_S)[0] == UNKNOWN


@pytest.mark.parametrize("updated_at", ["x", None, True, [1], float("nan")])
def test_a_malformed_updated_at_is_unknown(updated_at):
    code, text = render(snapshot(updated_at=updated_at), STALE_S)
    assert code == UNKNOWN
    assert text.startswith("EMOTION-APPLIANCE UNKNOWN - status file malformed: updated_at")


def test_odd_values_are_shown_as_dashes_not_a_traceback():
    snap = snapshot(fps=None, confidence="high", face_rate=None, started_at="x")
    snap["cpu_temp_c"] = "hot"
    code, text = render(snap, STALE_S)
    assert code == OK
    assert f"-  (pid {PID}" in text and "- fps" in text and "faces in -%" in text
    assert "(confidence -)" in text and "cpu         -" in text


def test_any_other_wrong_shape_is_unknown_with_the_reason():
    """A last line of defence: whatever slips past the checks is UNKNOWN, not exit 1."""
    code, text = render(snapshot(music="ready", last_song="not a dict"), STALE_S)
    assert code == UNKNOWN
    assert text.startswith("EMOTION-APPLIANCE UNKNOWN - status file malformed: AttributeError")
    code, text = render(snapshot(throttled_now=5), STALE_S, as_json=True)
    assert code == UNKNOWN and json.loads(text)["code"] == UNKNOWN


@pytest.mark.parametrize("updated_at", ["x", None, [1]])
def test_doctor_treats_a_malformed_snapshot_as_no_running_daemon(tmp_path, updated_at):
    """doctor reads the same file: a hand-edited updated_at must not crash it."""
    from appliance.config import load_config
    from appliance.service.doctor import running_daemon
    from appliance.service.status import write_status

    config = load_config(
        None, [f"service.runtime_dir={tmp_path}"], default_path=tmp_path / "none.toml"
    )
    write_status(tmp_path, snapshot(updated_at=updated_at))
    assert running_daemon(config) is None
    write_status(tmp_path, snapshot(updated_at=time.time()))
    assert running_daemon(config)["pid"] == PID


# ------------------------------------------------------------------ a dead daemon, liveness


def gone_pid() -> int:
    """The pid of a process that has exited and been reaped: nothing runs under it."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not os.path.exists(f"/proc/{child.pid}")
    return child.pid


@pytest.mark.parametrize("state", ["starting", "running", "stopping"])
def test_a_killed_daemon_is_critical_at_once_not_healthy_until_stale(state):
    """SIGKILL or the OOM killer leave a fresh snapshot saying "running": status must
    not call that OK for the next stale_after seconds."""
    pid = gone_pid()
    code, reason = assess(snapshot(state=state, pid=pid), STALE_S)
    assert code == CRITICAL
    assert "daemon died" in reason and f"pid {pid}" in reason


def test_a_reused_pid_is_not_the_daemon():
    """After a crash the pid may belong to another process: the start time tells."""
    me = identity()
    snap = snapshot(process_start=me["process_start"] + 1)
    assert snap["pid"] == PID  # alive, but started at another time
    code, reason = assess(snap, STALE_S)
    assert code == CRITICAL and "daemon died" in reason and f"pid {PID}" in reason


def test_liveness_that_cannot_be_told_falls_back_to_staleness():
    """A snapshot without process_start (an older daemon) whose pid lives: the age rules."""
    snap = snapshot()
    del snap["process_start"], snap["boot_id"]
    assert assess(snap, STALE_S) == (OK, "running")
    snap["updated_at"] = time.time() - 3600
    code, reason = assess(snap, STALE_S)
    assert code == UNKNOWN and "old" in reason


def test_a_final_state_with_a_dead_pid_is_no_death():
    """A daemon that stopped cleanly has exited, of course: that is "stopped"."""
    for state, code in (("stopped", WARNING), ("finished", WARNING), ("failed", CRITICAL)):
        got, reason = assess(snapshot(state=state, pid=gone_pid(), last_error="x"), STALE_S)
        assert got == code and "died" not in reason, state


# ------------------------------------------------------------------------------- staleness


@pytest.mark.parametrize("updated_at", [time.time() + 7200, 1e308])
def test_a_snapshot_dated_in_the_future_is_unknown_not_fresh_forever(updated_at):
    snap = snapshot(updated_at=updated_at)
    del snap["boot_id"]  # wall clock only
    code, reason = assess(snap, STALE_S)
    assert code == UNKNOWN
    assert "in the future" in reason


def test_a_few_seconds_ahead_is_clock_noise_not_the_future():
    assert assess(snapshot(updated_at=time.time() + 2), STALE_S) == (OK, "running")


def test_the_monotonic_clock_decides_on_the_same_boot():
    """A Pi without RTC steps its wall clock by hours at the first NTP sync: the daemon
    is neither hung (clock jumped forward) nor from the future (clock set back)."""
    for wall_jump in (-7200, +7200):
        snap = snapshot(updated_at=time.time() + wall_jump, updated_monotonic=time.monotonic())
        assert assess(snap, STALE_S) == (OK, "running"), wall_jump
    hung = snapshot(updated_at=time.time(), updated_monotonic=time.monotonic() - 3600)
    code, reason = assess(hung, STALE_S)
    assert code == UNKNOWN and "3600 s old" in reason


def test_another_boots_monotonic_clock_is_ignored():
    """Monotonic time restarts at each boot: only the wall clock compares across boots."""
    snap = snapshot(state="stopped", boot_id="another-boot", updated_monotonic=1e9)
    assert assess(snap, STALE_S) == (WARNING, "daemon stopped")


def test_doctor_does_not_trust_a_snapshot_from_the_future(tmp_path):
    from appliance.config import load_config
    from appliance.service.doctor import running_daemon

    config = load_config(
        None, [f"service.runtime_dir={tmp_path}"], default_path=tmp_path / "none.toml"
    )
    snap = snapshot(updated_at=time.time() + 7200)
    del snap["boot_id"]
    write_status(tmp_path, snap)
    assert running_daemon(config) is None
    write_status(tmp_path, snapshot(pid=gone_pid()))  # fresh, but its process is gone
    assert running_daemon(config) is None


# ------------------------------------------------------------------ final and failed states


@pytest.mark.parametrize("state", ["stopped", "finished"])
def test_a_stopped_daemon_keeps_its_storage_failure(state):
    code, reason = assess(snapshot(state=state, storage_error="disk full"), STALE_S)
    assert code == CRITICAL
    assert reason.startswith("storage failing: disk full") and f"daemon {state}" in reason
    code, reason = assess(snapshot(state=state, music_error="disk I/O error"), STALE_S)
    assert code == CRITICAL and "music storage failing" in reason
    # a WARNING problem is no worse than "stopped": the stop is what is said
    assert assess(snapshot(state=state, camera_error="gone"), STALE_S) == (
        WARNING,
        f"daemon {state}",
    )


def test_a_failed_start_snapshot_is_critical_with_the_reason():
    """What the daemon writes when it cannot start: few fields besides the error."""
    snap = {"state": "failed", "last_error": "camera.source: picamera2 is not installed",
            **identity(), "updated_at": time.time()}  # fmt: skip
    code, text = render(snap, STALE_S)
    assert code == CRITICAL
    first = text.splitlines()[0]
    assert first == (
        "EMOTION-APPLIANCE CRITICAL - daemon failed: camera.source: picamera2 is not installed"
    )
    code, text = render(snap, STALE_S, as_json=True)
    assert code == CRITICAL and json.loads(text)["reason"].startswith("daemon failed: ")


def test_a_stopping_daemon_is_a_warning_unless_it_died():
    assert assess(snapshot(state="stopping"), STALE_S) == (WARNING, "daemon stopping")
    assert assess(snapshot(state="stopping", pid=gone_pid()), STALE_S)[0] == CRITICAL


def test_an_unknown_state_is_unknown():
    code, reason = assess(snapshot(state="dancing"), STALE_S)
    assert code == UNKNOWN and "'dancing'" in reason


# ----------------------------------------------------------------- reading it safely


def read_in_child(runtime_dir, timeout: float = 20) -> subprocess.CompletedProcess:
    """`status --json` in a child limited to 1 GiB of memory and `timeout` seconds: a
    reader that slurps /dev/zero or waits on a FIFO must fail the test, not the machine."""
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "from appliance.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    config = runtime_dir.parent / "empty.toml"
    config.write_text("")
    args = ["status", "--json", "--config", str(config),
            "--set", f"service.runtime_dir={runtime_dir}"]  # fmt: skip
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "huge", "folder"])
def test_status_file_that_is_no_small_file_is_unknown_quickly(tmp_path, kind):
    run = tmp_path / "run"
    run.mkdir()
    path = run / STATUS_FILE
    if kind == "fifo":
        os.mkfifo(path)  # no writer: a blocking open would wait forever
    elif kind == "dev-zero":
        path.symlink_to("/dev/zero")  # endless: reading it whole exhausts memory
    elif kind == "huge":
        path.write_text(json.dumps({**snapshot(), "padding": "x" * MAX_STATUS_BYTES}))
    else:
        path.mkdir()
    started = time.monotonic()
    result = read_in_child(run)
    assert time.monotonic() - started < 15
    assert result.returncode == UNKNOWN, result.stderr
    report = json.loads(result.stdout)
    assert report["code"] == UNKNOWN and report["reason"].startswith("status file unreadable")
    assert "Traceback" not in result.stderr


def test_a_deeply_nested_status_file_is_unreadable_not_a_traceback(tmp_path):
    (tmp_path / STATUS_FILE).write_text("[" * 100_000 + "]" * 100_000)
    snap = read_status(tmp_path)
    assert snap["state"] == "unreadable" and "nested" in snap["last_error"]


def strict_json(text: str):
    def refuse(name: str):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_status_json_is_valid_json_even_with_nan_and_infinity(tmp_path):
    """json.loads accepts NaN/Infinity in the file; json.dumps would pass them on, and
    jq or a monitoring plugin refuses the output."""
    text = json.dumps(snapshot(fps=float("nan"), confidence=float("inf"),
                               vlm={"latency": [float("-inf"), 1.0]}))  # fmt: skip
    assert "NaN" in text
    (tmp_path / STATUS_FILE).write_text(text)
    code, out = render(read_status(tmp_path), STALE_S, as_json=True)
    report = strict_json(out)
    assert code == OK and report["status"]["fps"] is None
    assert report["status"]["confidence"] is None
    assert report["status"]["vlm"]["latency"] == [None, 1.0]
    code, out = render(snapshot(updated_at=float("nan")), STALE_S, as_json=True)
    assert code == UNKNOWN and strict_json(out)["status"]["updated_at"] is None


def test_write_status_goes_through_the_shared_atomic_write(tmp_path, monkeypatch):
    """One copy of temp-file-and-rename (appliance.common.files), not fsynced: the file is
    rewritten every few seconds on tmpfs."""
    calls = []
    real = status_module.atomic_write

    def spy(path, data, **kwargs):
        calls.append((path, kwargs))
        real(path, data, **kwargs)

    monkeypatch.setattr(status_module, "atomic_write", spy)
    runtime_dir = tmp_path / "not" / "yet"
    write_status(runtime_dir, snapshot(fps=float("nan")))
    assert calls == [(runtime_dir / STATUS_FILE, {"mode": 0o644, "durable": False})]
    assert stat.S_IMODE((runtime_dir / STATUS_FILE).stat().st_mode) == 0o644
    strict_json((runtime_dir / STATUS_FILE).read_text())  # NaN written as null


def test_reading_creates_nothing(tmp_path):
    runtime_dir = tmp_path / "run"
    assert read_status(runtime_dir) is None
    assert render(read_status(runtime_dir), STALE_S)[0] == UNKNOWN
    assert not runtime_dir.exists()


def test_text_from_peers_is_printed_harmless():
    """ESC sequences in a VLM reply or a Spotify track name were printed raw: seen,
    `\\x1b]0;OWNED\\x07\\x1b[2J` retitled and cleared the operator's terminal."""
    evil = "\x1b]0;OWNED\x07\x1b[2J"
    snap = {
        "state": "running",
        "updated_at": time.time(),
        "music": "ready",
        "last_song": {"artist": f"Band{evil}", "name": "Song\x9b2J"},
        "now_playing": {"artist": "A", "name": f"B{evil}"},
        "spotify": "online",
        "vlm": {"model": "m", "breaker": "closed", "last": {"text": f"hi{evil}"}},
        "last_error": f"server said {evil}",
    }
    _, text = render(snap, 10)
    assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text
    assert "\\x1b]0;OWNED\\x07" in text  # shown, not dropped
    _, as_json = render(snap, 10, as_json=True)
    assert "\x1b" not in as_json and json.loads(as_json)["status"]["last_error"].endswith(evil)


def test_the_mqtt_link_and_songs_maybe_twice_show_in_plain_status():
    snap = {
        **snapshot(),
        "mqtt": {"state": "connected", "broker": "mqtt://hub:1883", "client_id": "pi-1",
                 "states": 12, "events": 0, "commands": 2, "error": None},
        "music": "ready", "spotify": "online", "songs_sent": 5, "songs_maybe_twice": 1,
    }  # fmt: skip
    text = format_status(snap, *assess(snap, STALE_S))
    assert "mqtt        connected mqtt://hub:1883 as pi-1, 12 states" in text
    assert "5 sent (1 may have played twice)" in text
    assert "mqtt        off" in format_status(snapshot(), 0, "running")
