"""The `emotion-appliance` command as users run it: real processes, real files."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from support import FIXTURE_FACES, ROOT, cli_settings, load_tool, requires_models, run_cli

from appliance import __version__

make_face_clip = load_tool("make_face_clip")


cli = run_cli


@pytest.fixture
def dirs(tmp_path):
    """An empty config (never the machine's /etc one) and state/runtime dirs in tmp_path."""
    return cli_settings(tmp_path)


@pytest.fixture(scope="module")
def small_clip(tmp_path_factory):
    clip = tmp_path_factory.mktemp("clip") / "faces.mp4"
    faces = make_face_clip.list_faces(FIXTURE_FACES)[::5]  # 7 faces, one per class
    make_face_clip.compose(faces, clip, frames_per_face=8, seed=5)
    return clip


def test_version():
    result = cli("--version")
    assert result.returncode == 0 and __version__ in result.stdout


def test_config_check_reports_every_problem_with_file_and_key(tmp_path):
    bad = tmp_path / "config.toml"
    bad.write_text('[camera]\nfps = 500\nfsp = 1\n[models]\nthreads = "two"\n[nope]\n')
    result = cli("config", "check", str(bad))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 4
    assert all(line.startswith(f"{bad}: ") for line in lines)
    assert any("[camera] fps" in line and "1..120" in line for line in lines)
    assert any("[camera] fsp: unknown key" in line for line in lines)
    assert any("[models] threads" in line for line in lines)
    assert any("[nope]: unknown section" in line for line in lines)


def test_config_check_ok_and_example_is_valid():
    example = ROOT / "appliance" / "config" / "example.toml"
    result = cli("config", "check", str(example))
    assert result.returncode == 0 and "ok" in result.stdout


def test_bad_override_exits_2_before_doing_anything(dirs):
    result = cli("run", "--source", "demo", *dirs, "--set", "camera.fps=fast")
    assert result.returncode == 2
    assert "--set camera.fps=fast" in result.stderr


def test_status_without_daemon_is_unknown(dirs):
    result = cli("status", *dirs)
    assert result.returncode == 3
    assert result.stdout.startswith("EMOTION-APPLIANCE UNKNOWN")


@requires_models
def test_run_writes_events_status_and_samples(tmp_path, dirs, small_clip):
    result = cli("run", "--source", str(small_clip), "--events", "-", "--max-frames", "40", *dirs)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["frame"] for e in events] == list(range(40))
    first_face = next(e for e in events if e["faces"])
    assert set(first_face) == {"frame", "t", "faces", "smoothed", "latency_ms"}
    face = first_face["faces"][0]
    assert set(face) == {"box", "score", "emotion", "probs", "valence", "arousal",
                         "distance_m", "relief_m", "live"}  # fmt: skip
    assert face["distance_m"] is None and face["live"] is None  # no depth in a video
    assert len(face["box"]) == 4 and 0 <= face["score"] <= 1
    assert -1 <= face["valence"] <= 1 and -1 <= face["arousal"] <= 1
    assert face["emotion"] == max(face["probs"], key=face["probs"].get)
    assert set(first_face["smoothed"]) == {"emotion", "confidence", "valence", "arousal"}
    assert set(first_face["latency_ms"]) >= {"detect", "classify", "va", "total"}
    reported = [e["smoothed"] for e in events if e["smoothed"]["emotion"]]
    assert reported and all(-1 <= s["valence"] <= 1 for s in reported)
    assert events[-1]["t"] == pytest.approx(39 / 15, abs=1e-3)  # media time, not wall time
    assert sum(bool(e["faces"]) for e in events) >= 36

    status = cli("status", "--json", *dirs)
    report = json.loads(status.stdout)
    assert report["status"]["state"] == "finished" and report["status"]["frames"] == 40
    assert status.returncode == 1  # finished daemon: WARNING for monitoring
    assert report["status"]["va_source"] == "model"
    assert report["status"]["va_model"] == "va_mobilenetv3_int8"

    db = sqlite3.connect(tmp_path / "state" / "appliance.db")
    rows = db.execute("SELECT t_stream, emotion FROM affect_samples ORDER BY id").fetchall()
    assert [round(r[0]) for r in rows] == [0, 1, 2]  # 1 Hz of stream time
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@requires_models
@pytest.mark.parametrize(
    ("va", "source", "error"),
    [
        ("", "disabled in config", False),
        ("no_such_va_model", "VA model unusable", True),
    ],
)
def test_without_a_va_model_va_comes_from_emotion_probabilities(
    tmp_path, dirs, small_clip, va, source, error
):
    result = cli(
        "run", "--source", str(small_clip), "--events", "-", "--max-frames", "20",
        "--set", f"models.va={va}", *dirs,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    from appliance.affect.va import ProbabilityVA

    face = next(e for e in map(json.loads, result.stdout.splitlines()) if e["faces"])["faces"][0]
    expected = ProbabilityVA(list(face["probs"]))(list(face["probs"].values()))
    assert (face["valence"], face["arousal"]) == pytest.approx(expected, abs=2e-3)
    snapshot = json.loads(cli("status", "--json", *dirs).stdout)["status"]
    assert (
        snapshot["va_source"].startswith("emotion probabilities")
        and source in (snapshot["va_source"])
    )
    assert snapshot["va_model"] is None
    assert bool(snapshot["va_error"]) is error


@requires_models
def test_run_on_image_folder_prints_changes(dirs):
    result = cli("run", "--source", str(FIXTURE_FACES / "happy"), *dirs)
    assert result.returncode == 0, result.stderr
    assert "5 frames" in result.stdout


@requires_models
def test_sigterm_stops_a_looping_run_cleanly(tmp_path, dirs, small_clip):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "appliance",
            "run",
            "--source",
            str(small_clip),
            "--loop",
            "--events",
            str(tmp_path / "events.jsonl"),
            *dirs,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            lines = (
                (tmp_path / "events.jsonl").read_text().splitlines()
                if (tmp_path / "events.jsonl").exists()
                else []
            )
            if len(lines) > 100:  # past the end of the 56-frame clip: it loops
                break
            time.sleep(0.1)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=3)
        assert time.monotonic() - sent < 3
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, proc.stderr.read()
    events = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    times = [e["t"] for e in events]
    assert times == sorted(times)  # looping keeps time moving forward
    status = json.loads(cli("status", "--json", *dirs).stdout)["status"]
    assert status["state"] == "stopped"


def test_unknown_source_is_a_clear_error(dirs):
    result = cli("run", "--source", "/no/such/camera.mp4", *dirs)
    assert result.returncode == 1
    assert "/no/such/camera.mp4" in result.stderr
    assert "Traceback" not in result.stderr


def test_unwritable_events_path_is_a_clear_error(tmp_path, dirs):
    result = cli("run", "--source", "demo", "--events", str(tmp_path / "no" / "dir.jsonl"), *dirs)
    assert result.returncode == 1
    assert "cannot write events" in result.stderr and "Traceback" not in result.stderr


def test_missing_models_are_a_clear_error(tmp_path, dirs):
    """Exit 2, like a config error: the unit's RestartPreventExitStatus=2 keeps systemd
    from reloading Python, OpenCV and TFLite every 15 s for a file that is not coming."""
    result = cli("run", "--source", "demo", *dirs, "--set", f"models.dir={tmp_path}")
    assert result.returncode == 2
    assert "model card not found" in result.stderr and "Traceback" not in result.stderr


def test_readme_documents_every_config_key():
    from appliance.config import Config

    readme = (ROOT / "README.md").read_text()
    for section, cls in Config.sections().items():
        for name in cls.__dataclass_fields__:
            assert f"`{section}.{name}`" in readme, f"{section}.{name}"
    update_docs = load_tool("update_docs")
    assert update_docs.main(["--check"]) == 0, "run python tools/update_docs.py"


def test_python_m_and_console_script_agree():
    assert os.access(ROOT / "appliance" / "__main__.py", os.R_OK)
    result = cli("--help")
    assert result.returncode == 0 and "run" in result.stdout and "status" in result.stdout


def test_verbose_logging_keeps_spotipy_secrets_out_of_the_journal():
    """spotipy's DEBUG lines carry the Basic-auth header and tokens."""
    import logging

    from appliance import cli

    spotipy_log = logging.getLogger("spotipy")
    saved = spotipy_log.level
    try:
        cli._setup_logging(None, verbose=True)
        assert not spotipy_log.isEnabledFor(logging.DEBUG)
        assert spotipy_log.isEnabledFor(logging.INFO)
    finally:
        spotipy_log.setLevel(saved)


def test_status_with_a_bad_config_or_arguments_is_unknown_not_critical(tmp_path, dirs):
    """Nagios reads exit 2 as CRITICAL (the appliance failing); a monitoring check that
    cannot run is UNKNOWN (3). Other subcommands keep exit 2 for configuration errors."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[camera]\nfps = 500\nfsp = 1\n")
    result = cli("status", "--config", str(bad))
    assert result.returncode == 3
    assert result.stdout.startswith("EMOTION-APPLIANCE UNKNOWN - configuration error: ")
    assert "(and 1 more, on stderr)" in result.stdout and "fsp" in result.stderr
    result = cli("status", *dirs, "--set", "service.status_interval_s=soon", "--json")
    assert result.returncode == 3 and json.loads(result.stdout)["code"] == 3
    for args in (["status", "--bogus"], ["--config", "status", "status", "--json", "extra"]):
        result = cli(*args)
        assert result.returncode == 3, args
        assert "bad arguments" in result.stdout and "usage:" in result.stderr
    assert cli("config", "show", "--bogus").returncode == 2
    assert cli("config", "show", "--config", str(bad)).returncode == 2


def test_status_with_a_wrong_shaped_status_file_is_unknown(dirs, tmp_path):
    (tmp_path / "run").mkdir()
    for text in ("[]", json.dumps({"state": "running", "updated_at": "x"})):
        (tmp_path / "run" / "status.json").write_text(text)
        result = cli("status", *dirs)
        assert result.returncode == 3, text
        assert result.stdout.startswith("EMOTION-APPLIANCE UNKNOWN - status file ")
        assert "Traceback" not in result.stderr


def test_set_before_and_after_the_subcommand_both_apply(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("")
    result = cli(
        "--config", str(config), "--set", "music.moods=5",
        "config", "show", "--set", "camera.fps=7",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "moods = 5" in result.stdout and "fps = 7" in result.stdout


def test_recommend_count_must_be_positive(tmp_path, dirs):
    """-n -1 sliced the ranking to every song but the last."""
    rows = [f"spotify:track:{i:022d},Song {i},Artist,0.{i},0.{9 - i}" for i in range(1, 9)]
    (tmp_path / "t.csv").write_text("\n".join(["uri,name,artist,valence,energy", *rows]))
    assert cli("catalog", "import", str(tmp_path / "t.csv"), *dirs).returncode == 0
    result = cli("recommend", "--valence", "0", "--arousal", "0", "-n", "-1", "--json", *dirs)
    assert result.returncode == 2 and "-n must be at least 1" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("fps", ["inf", "nan", "0", "-2", "fast"])
def test_analyze_fps_must_be_a_finite_positive_number(tmp_path, dirs, fps):
    """--fps inf divided by zero, --fps nan raised a bare ValueError, mid-analysis."""
    result = cli("analyze", str(tmp_path / "session.mp4"), "--fps", fps,
                 "--out", str(tmp_path / "out"), *dirs)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "--fps" in result.stderr and "positive number" in result.stderr
    assert "Traceback" not in result.stderr


def test_bench_refuses_a_live_camera_before_opening_it(dirs):
    """bench decodes its source up front: a camera would fill memory forever."""
    result = cli("bench", "--source", "v4l2:0", *dirs)
    assert result.returncode == 1
    assert "live camera" in result.stderr and "video file" in result.stderr
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------- a reader that left


def into_closed_pipe(*args: str) -> tuple[int, str]:
    """Run the command with its stdout going to a reader that has already gone, as
    `emotion-appliance status | head -1` is once head has its line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    proc.stdout.close()  # before the child writes: its first write or flush gets EPIPE
    try:
        stderr = proc.stderr.read()
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, stderr


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["status"], 3),  # Nagios UNKNOWN (no daemon), kept although nobody reads it
        (["status", "--json"], 3),
        (["status", "--bogus"], 3),
        (["config", "show"], 1),
        (["config", "check"], 1),
        (["--version"], 1),
    ],
)
def test_a_closed_pipe_ends_quietly(dirs, args, code):
    words = args if args == ["--version"] else [*args, *dirs]
    returncode, stderr = into_closed_pipe(*words)
    assert returncode == code, stderr
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr
    assert "Exception ignored" not in stderr


# ------------------------------------------------------------------- config the CLI refuses


def test_a_toml_nested_5000_deep_is_a_config_error_not_a_traceback(tmp_path, dirs):
    deep = tmp_path / "deep.toml"
    deep.write_text("[camera]\nsource = " + "[" * 5000 + "]" * 5000 + "\n")
    result = cli("config", "check", str(deep))
    assert result.returncode == 2
    assert result.stderr.startswith(f"{deep}: ") and "nested too deeply" in result.stderr
    assert "Traceback" not in result.stderr
    result = cli("status", "--config", str(deep))
    assert result.returncode == 3 and "configuration error" in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("key", ["storage.state_dir", "service.runtime_dir"])
@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_folder_key_is_a_config_error(tmp_path, key, value):
    """ "" is the working directory: the database and status landed wherever the
    command ran."""
    config = tmp_path / "config.toml"
    section, name = key.split(".")
    config.write_text(f'[{section}]\n{name} = "{value}"\n')
    result = cli("config", "check", str(config))
    assert result.returncode == 2
    assert f"{config}: [{section}] {name}: expected a folder path" in result.stderr
    result = cli("catalog", "stats", "--config", str(config))
    assert result.returncode == 2 and f"[{section}] {name}" in result.stderr
    assert not (ROOT / "appliance.db").exists() and not (ROOT / "status.json").exists()


def test_opencvs_own_warnings_stay_out_of_the_log(tmp_path):
    """A missing camera made OpenCV print two `[ WARN ... can't open camera by index`
    lines per attempt; its log is kept at ERROR (our own line says it once)."""
    result = cli(
        "doctor", "--set", "camera.source=v4l2:57", "--set",
        f"storage.state_dir={tmp_path / 's'}", "--set", f"service.runtime_dir={tmp_path / 'r'}",
    )  # fmt: skip
    assert "camera" in result.stdout and "[ WARN" not in result.stderr
