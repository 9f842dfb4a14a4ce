"""The status snapshot file and the Nagios-style verdict `emotion-appliance status` prints."""

from __future__ import annotations

import json
import stat
import threading
import time

import pytest

from appliance.service.status import (
    CRITICAL,
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


def snapshot(**changes) -> dict:
    """What the publisher writes for a healthy running daemon."""
    now = time.time()
    snap = {
        "state": "running",
        "version": "0.1.0",
        "pid": 4242,
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
    assert len(rest) == 8  # music off and VLM off: one line each


def test_format_status_details():
    snap = snapshot()
    text = format_status(snap, *assess(snap, STALE_S))
    assert text.startswith("EMOTION-APPLIANCE OK - running\n")
    assert "uptime      1h02m05s" in text or "uptime      1h02m06s" in text
    assert "pid 4242, v0.1.0" in text
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
    assert "-  (pid 4242" in text and "- fps" in text and "faces in -%" in text
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
    assert running_daemon(config)["pid"] == 4242
