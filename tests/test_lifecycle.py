"""One worker lifecycle, one backoff, one atomic write; and a daemon stop that loses
nothing and a status that does not lie (issue 20). Behaviour only: public interfaces,
injected clocks, events instead of wall-clock windows."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from support import FIXTURE_FACES, ROOT, requires_models

from appliance.affect.smoothing import AffectState
from appliance.common import process
from appliance.common.backoff import Backoff
from appliance.common.files import atomic_write, replace_together
from appliance.common.worker import Crew, Worker
from appliance.config import load_config
from appliance.pipeline import FrameResult
from appliance.service.daemon import Daemon
from appliance.service.status import CRITICAL, assess, read_status

# ------------------------------------------------------------------------ building blocks


class Looper(Worker):
    def __init__(self, name: str, log: list[str], *, stuck: threading.Event | None = None):
        super().__init__(name)
        self.log = log
        self.stuck = stuck

    def work(self) -> None:
        self.log.append(f"start {self.name}")
        while self.pause(10.0):
            pass
        if self.stuck is not None:
            self.stuck.wait(30)  # a driver call that does not return

    def finish(self) -> None:
        self.log.append(f"finish {self.name}")

    def busy_with(self) -> str:
        return "stuck in a driver call" if self.stuck is not None else ""


def test_crew_starts_in_order_and_stops_in_reverse():
    log: list[str] = []
    a, b, c = Looper("a", log), Looper("b", log), Looper("c", log)
    crew = Crew()
    crew.start([a, b, c])
    while len(log) < 3:
        time.sleep(0.001)
    assert crew.stop(5.0) == []
    assert log[:3] == ["start a", "start b", "start c"]
    assert not any(w.is_alive() for w in (a, b, c))
    assert set(log[3:]) == {"finish a", "finish b", "finish c"}


def test_a_worker_that_misses_its_stop_deadline_is_reported_and_abandoned(caplog):
    log: list[str] = []
    release = threading.Event()
    stuck = Looper("camera", log, stuck=release)
    stuck.stop_grace_s = 0.05
    last = Looper("publisher", log)
    crew = Crew()
    crew.start([last, stuck])
    with caplog.at_level(logging.ERROR):
        missed = crew.stop(1.0)
    release.set()
    assert missed == ["camera"]
    assert "camera thread did not stop within 0.1 s: abandoned (stuck in a driver call)" in (
        caplog.text
    )
    assert not last.is_alive() and "finish publisher" in log  # the others still stopped


def test_a_worker_that_crashes_still_finishes(caplog):
    log: list[str] = []

    class Crashing(Looper):
        def work(self) -> None:
            raise RuntimeError("bug")

    worker = Crashing("bad", log)
    with caplog.at_level(logging.ERROR):
        worker.start()
        assert worker.stop(2.0)
    assert log == ["finish bad"] and "bad thread failed" in caplog.text


def test_backoff_grows_caps_resets_and_never_overflows():
    backoff = Backoff(1.0, 300.0)
    assert [backoff.next() for _ in range(11)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    backoff.reset()
    assert backoff.next() == 1.0
    backoff.failures = 10**7  # ~3.5 days offline at the old 2.0 ** failures overflowed
    assert backoff.next() == 300.0


@pytest.mark.parametrize("retry_after", [999999999.0, math.inf, math.nan, -5.0])
def test_backoff_honours_a_floor_up_to_its_ceiling_only(retry_after):
    backoff = Backoff(1.0, 300.0, ceiling=3600.0)
    delay = backoff.next(at_least=retry_after)
    assert 1.0 <= delay <= 3600.0
    if math.isfinite(retry_after) and retry_after > 0:
        assert delay == 3600.0
    assert Backoff(1.0, 300.0).next(at_least=42.0) == 42.0


def test_atomic_write_creates_with_its_mode_and_leaves_no_temp(tmp_path):
    target = tmp_path / "token.json"
    atomic_write(target, "secret", mode=0o600)
    assert target.read_text() == "secret" and (target.stat().st_mode & 0o777) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["token.json"]


def test_replace_together_changes_nothing_when_staging_fails(tmp_path, monkeypatch):
    model, card = tmp_path / "m.tflite", tmp_path / "m.json"
    model.write_text("old model")
    card.write_text("old card")
    real_fdopen = os.fdopen
    calls = []

    def failing_fdopen(fd, *args, **kwargs):
        calls.append(fd)
        if len(calls) == 2:
            os.close(fd)
            raise OSError(28, "No space left on device")
        return real_fdopen(fd, *args, **kwargs)

    monkeypatch.setattr(os, "fdopen", failing_fdopen)
    with pytest.raises(OSError, match="No space"):
        replace_together([(model, b"new model"), (card, "new card")])
    assert (model.read_text(), card.read_text()) == ("old model", "old card")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.tflite"]


def test_process_identity_tells_a_dead_or_reused_pid():
    me = process.identity()
    if me["process_start"] is None:
        pytest.skip("no /proc here")
    assert process.still_running(me) is True
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert process.still_running({**me, "pid": child.pid}) is False  # gone
    reused = {**me, "process_start": me["process_start"] + 1}  # same pid, other process
    assert process.still_running(reused) is False
    assert process.still_running({**me, "boot_id": "another-boot"}) is False
    assert process.still_running({"pid": "x"}) is None  # cannot tell


# ------------------------------------------------------------------------ the daemon


class FakePipeline:
    """Stands in for the models where they are not the point: one smoothed emotion per
    frame, instantly; `gate` (an Event) holds a frame until the test releases it."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.gate = gate
        self.entered = threading.Event()

    def describe(self) -> dict:
        return {"detector": "fake", "emotion_model": "fake", "labels": ["happy"]}

    def reset(self) -> None:
        pass

    def process(self, frame) -> FrameResult:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(30)
        state = AffectState(
            t=frame.t, emotion="happy", confidence=0.9, face_presence=1.0, probs={"happy": 0.9}
        )
        return FrameResult(frame.index, frame.t, [], state, {"total": 0.1})


@pytest.fixture
def folder(tmp_path) -> Path:
    """12 frames at camera.fps 4: 3 s of stream, so 3 samples at 1 Hz."""
    path = tmp_path / "frames"
    path.mkdir()
    for i in range(12):
        cv2.imwrite(str(path / f"{i:03d}.png"), np.full((48, 64, 3), 40 + i, np.uint8))
    return path


def settings(tmp_path, *extra: str):
    return load_config(
        None,
        [
            f"storage.state_dir={tmp_path / 'state'}",
            f"service.runtime_dir={tmp_path / 'run'}",
            "service.status_interval_s=0.1",
            "camera.fps=4",
            "music.enabled=false",
            *extra,
        ],
    )


def sample_count(state_dir: Path) -> int:
    db = sqlite3.connect(state_dir / "appliance.db")
    try:
        return db.execute("SELECT count(*) FROM affect_samples").fetchone()[0]
    finally:
        db.close()


def hold_write_lock(state_dir: Path) -> sqlite3.Connection:
    """Another process's writer (as `catalog import` is) holding SQLite's lock."""
    from appliance.store.database import open_database

    open_database(state_dir).conn.close()  # created and migrated
    conn = sqlite3.connect(
        state_dir / "appliance.db", isolation_level=None, timeout=0.1, check_same_thread=False
    )
    conn.execute("BEGIN IMMEDIATE")
    return conn


def test_a_stop_during_a_held_write_lock_waits_for_it_and_loses_nothing(tmp_path, folder):
    config = settings(tmp_path)
    lock = hold_write_lock(tmp_path / "state")
    released = threading.Timer(1.0, lock.rollback)  # the import finishes a second later
    released.start()
    try:
        daemon = Daemon(config, source=str(folder), pipeline=FakePipeline())
        assert daemon.run() == 0
    finally:
        released.cancel()
        lock.close()
    assert sample_count(tmp_path / "state") == 3
    status = read_status(tmp_path / "run")
    assert status["state"] == "finished" and not status["storage_error"]


def test_a_lock_held_past_the_stop_budget_is_logged_as_lost_and_exits_1(tmp_path, folder, caplog):
    """The stop gave up after 5 s (SQLite's busy timeout) while the unit allowed 15:
    status kept saying "running" and the lost samples were never reported."""
    config = settings(tmp_path)
    lock = hold_write_lock(tmp_path / "state")
    try:
        daemon = Daemon(config, source=str(folder), pipeline=FakePipeline(), stop_budget_s=3.0)
        with caplog.at_level(logging.ERROR):
            code = daemon.run()
    finally:
        lock.close()
    assert code == 1
    assert "stopping with 3 affect samples not written" in caplog.text
    status = read_status(tmp_path / "run")
    assert status["state"] == "finished" and status["storage_error"]
    assert status["samples_lost"] == 3
    assert assess(status, 10)[0] == CRITICAL  # the problem is still the reported one


def test_status_says_stopping_at_once_then_stopped(tmp_path, folder):
    gate = threading.Event()
    pipeline = FakePipeline(gate)
    daemon = Daemon(settings(tmp_path), source=str(folder), loop=True, pipeline=pipeline)
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(daemon.run()))
    runner.start()
    try:
        assert pipeline.entered.wait(10)  # a frame is in the pipeline, held there
        daemon.stop()  # what the signal handler calls
        deadline = time.monotonic() + 10
        while (read_status(tmp_path / "run") or {}).get("state") != "stopping":
            assert time.monotonic() < deadline, read_status(tmp_path / "run")
            time.sleep(0.01)
    finally:
        gate.set()
        runner.join(30)
    assert codes == [0]
    assert read_status(tmp_path / "run")["state"] == "stopped"


def test_a_failed_start_leaves_a_failed_status_with_the_reason(tmp_path):
    config = settings(tmp_path)
    runtime = tmp_path / "run"
    runtime.mkdir()
    (runtime / "status.json").write_text(json.dumps({"state": "stopped", "updated_at": 1}))
    missing = tmp_path / "nonexistent.mp4"
    from appliance.capture import CaptureError

    with pytest.raises(CaptureError):
        Daemon(config, source=str(missing), pipeline=FakePipeline()).run()
    status = read_status(runtime)
    assert status["state"] == "failed" and "nonexistent.mp4" in status["last_error"]
    assert status["pid"] == os.getpid()


def test_a_storage_failure_is_exit_1_and_stays_the_reported_problem(tmp_path, folder):
    (tmp_path / "state").write_text("a file where the state folder should be")
    daemon = Daemon(settings(tmp_path), source=str(folder), pipeline=FakePipeline())
    assert daemon.run() == 1
    status = read_status(tmp_path / "run")
    assert status["state"] == "finished" and status["storage_error"]
    assert assess(status, 10)[0] == CRITICAL


# ------------------------------------------------------------------------ real processes


def cli_command(tmp_path, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "appliance", "--config", str(tmp_path / "none.toml"),
        "--set", f"storage.state_dir={tmp_path / 'state'}",
        "--set", f"service.runtime_dir={tmp_path / 'run'}",
        "--set", "service.status_interval_s=0.2", "--set", "music.enabled=false",
        "run", *args,
    ]  # fmt: skip


@requires_models
def test_sighup_stops_cleanly_with_samples_and_final_status(tmp_path):
    """An SSH session closing on a manual run sends SIGHUP: it killed the daemon with no
    flush (0 samples written, status left "running")."""
    (tmp_path / "none.toml").write_text("")
    proc = subprocess.Popen(
        cli_command(tmp_path, "--source", str(FIXTURE_FACES / "happy"), "--loop", "--quiet"),
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while (read_status(tmp_path / "run") or {}).get("frames", 0) < 10:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
        proc.send_signal(signal.SIGHUP)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert read_status(tmp_path / "run")["state"] == "stopped"
    assert sample_count(tmp_path / "state") >= 1


@requires_models
def test_events_into_a_reader_that_goes_away_end_the_run_cleanly(tmp_path):
    """`run --events - | head -n 1` ended with a BrokenPipeError traceback and left
    status.json saying "running"."""
    (tmp_path / "none.toml").write_text("")
    proc = subprocess.Popen(
        cli_command(tmp_path, "--source", str(FIXTURE_FACES / "happy"), "--loop", "--events", "-"),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        first = proc.stdout.readline()
        proc.stdout.close()  # what `head -n 1` does after its line
        stderr = proc.stderr.read()
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert json.loads(first)["frame"] == 0
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr
    assert read_status(tmp_path / "run")["state"] == "stopped"


# ------------------------------------------------------------------------ a model that kills


CRASHING_MODEL = ROOT / "tests" / "fixtures" / "models" / "crashes_at_load.tflite"


def runtime_installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


@pytest.mark.parametrize(
    "runtime",
    [
        None,  # the default runtime: ai-edge-litert refuses this file cleanly
        pytest.param(
            "tflite_runtime",  # 2.14 (armv7l's) dies of it: SIGBUS
            marks=pytest.mark.skipif(
                not runtime_installed("tflite_runtime"), reason="tflite-runtime not installed"
            ),
        ),
    ],
)
def test_a_model_that_crashes_the_runtime_is_a_model_error_not_a_crash_loop(tmp_path, runtime):
    """A structurally broken .tflite whose card sha256 matches crashed tflite-runtime with
    SIGSEGV/SIGBUS at load: under systemd a restart every 15 s, forever. The first load
    of an unknown model now happens in a child, and the start ends with exit 2 whatever
    the runtime does with the file (dies, or refuses it)."""
    import hashlib
    import os
    import shutil

    models = tmp_path / "models"
    shutil.copytree(ROOT / "models", models, ignore=shutil.ignore_patterns("*.tflite"))
    for name in ("emotion_cnn_int8", "va_mobilenetv3_int8"):
        shutil.copy(ROOT / "models" / f"{name}.tflite", models)
    shutil.copy(CRASHING_MODEL, models / "broken.tflite")
    card = json.loads((models / "emotion_cnn_int8.json").read_text())
    digest = hashlib.sha256(CRASHING_MODEL.read_bytes()).hexdigest()
    card.update(file="broken.tflite", sha256=digest)
    (models / "broken.json").write_text(json.dumps(card))
    (tmp_path / "none.toml").write_text("")
    (tmp_path / "state").mkdir()
    command = cli_command(tmp_path, "--source", str(FIXTURE_FACES / "happy"), "--quiet")
    settings_ = ["--set", f"models.dir={models}", "--set", "detection.haar_fallback=true"]
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    if runtime:
        env["APPLIANCE_TFLITE_RUNTIME"] = runtime
    result = subprocess.run(
        [*command[:3], *settings_, *command[3:], "--set", "models.emotion=broken"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False, env=env,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "broken.tflite" in result.stderr and "Traceback" not in result.stderr
    if runtime == "tflite_runtime":
        assert "crashed (SIG" in result.stderr
    status = read_status(tmp_path / "run")
    assert status["state"] == "failed" and "broken.tflite" in status["last_error"]
    from appliance.vision.model_guard import loaded_before

    assert digest not in loaded_before(tmp_path / "state")


def test_a_probe_killed_by_a_signal_is_reported_as_a_crash(tmp_path, monkeypatch):
    from appliance.vision import model_guard
    from appliance.vision.model_card import load_card
    from appliance.vision.runtime import ModelError

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    killed = subprocess.CompletedProcess([], -signal.SIGSEGV, "", "")
    monkeypatch.setattr(model_guard.subprocess, "run", lambda *a, **k: killed)
    card = load_card(ROOT / "models" / "emotion_cnn_int8.json")
    with pytest.raises(ModelError, match=r"crashed \(SIGSEGV\)"):
        model_guard.check_loads(card, tmp_path)
    assert card.sha256 not in model_guard.loaded_before(tmp_path)


def test_a_model_that_loaded_once_is_not_probed_again(tmp_path, monkeypatch):
    from appliance.vision import model_guard
    from appliance.vision.model_card import load_card

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    card = load_card(ROOT / "models" / "emotion_cnn_int8.json")
    assert card.sha256 not in model_guard.loaded_before(tmp_path)
    model_guard.check_loads(card, tmp_path)
    assert card.sha256 in model_guard.loaded_before(tmp_path)

    def no_child(*args, **kwargs):
        raise AssertionError("probed again")

    monkeypatch.setattr(model_guard.subprocess, "run", no_child)
    model_guard.check_loads(card, tmp_path)  # remembered: loaded directly
