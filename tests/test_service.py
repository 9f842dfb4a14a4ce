"""The appliance as a service: systemd unit, notify protocol and watchdog, doctor, and
faults (camera unplugged, disk full, bad config), each with a real process."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import re
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from mjpeg_server import MjpegCamera
from support import FIXTURE_FACES, ROOT, assert_unit_verifies, cli_settings, requires_models

from appliance.capture import CaptureError, FrameSource
from appliance.capture.base import Frame
from appliance.service.notify import Notifier

UNIT = ROOT / "systemd" / "emotion-appliance.service"


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


# --------------------------------------------------------------------------- unit file


def test_unit_declares_what_the_appliance_relies_on():
    s = unit_settings()
    assert s["Type"] == ["notify"] and s["Restart"] == ["on-failure"]
    assert int(s["WatchdogSec"][0]) > 0
    assert s["RestartPreventExitStatus"] == ["2"]  # config errors: fail once, no storm
    # An unattended box never gives up restarting (a flaky camera or a libcamera crash
    # would leave it dead until power-cycled), but not in a tight loop either.
    assert s["StartLimitIntervalSec"] == ["0"] and "StartLimitBurst" not in s
    assert 10 <= int(s["RestartSec"][0]) <= 30
    unit_section = UNIT.read_text().split("[Service]")[0]
    assert "StartLimitIntervalSec=0" in unit_section.splitlines()  # a [Unit] setting
    # A call outside @system-service fails with EPERM instead of SIGSYS killing the daemon
    assert s["SystemCallErrorNumber"] == ["EPERM"]
    # The frame loop needs no network (Spotify and the VLM retry on their own): an
    # offline boot must not wait for NetworkManager-wait-online's timeout.
    for key in ("Wants", "After", "Requires"):
        assert not any("network-online.target" in v for v in s.get(key, [])), key
    assert set(s["SupplementaryGroups"][0].split()) == {"video", "gpio", "i2c"}
    for key in ("StateDirectory", "RuntimeDirectory", "ConfigurationDirectory"):
        assert s[key] == ["emotion-appliance"]
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert s[key] == ["yes"]
    assert s["ProtectSystem"] == ["strict"]
    assert set(s["RestrictAddressFamilies"][0].split()) >= {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert s["User"] == ["emotion-appliance"]
    assert s["RuntimeDirectoryPreserve"] == ["yes"]  # status can report a failed daemon
    # lgpio (gpiozero's Pi 5/Bookworm backend) needs a writable working directory
    assert s["WorkingDirectory"] == ["/run/emotion-appliance"]
    assert "LG_WD=/run/emotion-appliance" in s["Environment"]


def test_unit_stop_timeout_outlasts_a_stalled_camera_at_shutdown():
    """Killed mid-shutdown, the daemon would skip the final status and history flush.
    From the stop request the frame loop (one read), the source's close(), the VLM and
    Spotify workers (each up to its stop_grace_s) and then the publisher's last write
    share STOP_BUDGET_S; the publisher must keep seconds of it to wait for a write lock
    (a `catalog import`), and the interpreter's exit must fit in what the unit allows."""
    from appliance.capture.latest import LiveSource
    from appliance.capture.picamera import PiCameraSource
    from appliance.capture.realsense import RealSenseSource
    from appliance.capture.stream import StreamSource
    from appliance.capture.v4l2 import V4L2Source
    from appliance.music.sync import SyncWorker
    from appliance.service import daemon
    from appliance.vlm.worker import VlmWorker

    assert float(unit_settings()["TimeoutStopSec"][0]) == daemon.STOP_TIMEOUT_S
    assert daemon.STOP_TIMEOUT_S - daemon.STOP_BUDGET_S >= 2.0  # the interpreter's exit
    live: list[type[LiveSource]] = [PiCameraSource, RealSenseSource, StreamSource, V4L2Source]
    before_publisher = (
        daemon.READ_TIMEOUT_S
        + max(cls.join_timeout for cls in live)
        + VlmWorker.stop_grace_s
        + SyncWorker.stop_grace_s
        + daemon.FINAL_STATUS_S
    )
    assert daemon.STOP_BUDGET_S - before_publisher >= 5.0  # SQLite's usual busy timeout


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze absent")
def test_systemd_analyze_verify(tmp_path):
    # verify checks that ExecStart exists: point it at this checkout's interpreter.
    text = UNIT.read_text().replace(
        "/opt/emotion-appliance/venv/bin/emotion-appliance", sys.executable
    )
    assert_unit_verifies(tmp_path, "emotion-appliance.service", text)


# --------------------------------------------------------------------------- notify


@pytest.fixture
def notify_socket(tmp_path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    yield sock, path
    sock.close()


def drain(sock: socket.socket, seconds: float, until=None) -> list[str]:
    """The messages of `seconds`, or of up to 60 s until `until(messages)` holds: a
    loaded machine may start the daemon late, so a test waits for what it checks."""
    messages = []
    deadline = time.monotonic() + (60.0 if until else seconds)
    while time.monotonic() < deadline and not (until and until(messages)):
        with contextlib.suppress(TimeoutError):
            messages.append(sock.recv(4096).decode())
    return messages


def watchdogs_and(count: int, prefix: str):
    """A `drain` condition: `count` watchdog pings and a message starting with `prefix`."""
    return lambda got: (
        sum(m == "WATCHDOG=1" for m in got) >= count and any(m.startswith(prefix) for m in got)
    )


def test_notifier_speaks_the_protocol_on_a_real_socket(notify_socket):
    sock, path = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "4000000"},
                        use_library=False)  # fmt: skip
    assert notifier.watchdog_s == 4.0
    notifier.ready("starting up")
    notifier.status("running,\n 12 fps")
    notifier.watchdog()
    notifier.stopping()
    assert drain(sock, 0.5) == [
        "READY=1\nSTATUS=starting up",
        "STATUS=running, 12 fps",
        "WATCHDOG=1",
        "STOPPING=1",
    ]


def test_notifier_outside_systemd_is_silent_and_watchdog_pid_is_respected():
    assert not Notifier({}).send("READY=1")
    other = Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"})
    assert other.watchdog_s is None  # the watchdog is meant for another process


def daemon_env(notify_path: Path, watchdog_usec: int = 4_000_000) -> dict[str, str]:
    env = dict(os.environ)
    env.update(NOTIFY_SOCKET=str(notify_path), WATCHDOG_USEC=str(watchdog_usec))
    return env


def dirs(tmp_path) -> list[str]:
    return cli_settings(
        tmp_path,
        "service.status_interval_s=0.2",
        "music.enabled=false",
        "models.va=",  # VA from probabilities: these tests are about the service
    )


def start(args: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "appliance", "run", "--quiet", *args],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def status(args: list[str]) -> tuple[int, dict]:
    out = subprocess.run(
        [sys.executable, "-m", "appliance", "status", "--json", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    report = json.loads(out.stdout)
    return out.returncode, report.get("status") or {}


@requires_models
def test_ready_status_watchdog_and_stopping_from_a_real_daemon(tmp_path, notify_socket):
    sock, path = notify_socket
    proc = start(["--source", "demo", "--loop", *dirs(tmp_path)], daemon_env(path))
    try:
        messages = drain(sock, 60.0, until=watchdogs_and(5, "STATUS=running"))
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        proc.wait(timeout=15)  # the unit's TimeoutStopSec
        stopped_in = time.monotonic() - sent
        messages += drain(sock, 0.3)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, proc.stderr.read()
    assert stopped_in < 10.0  # well inside TimeoutStopSec=15, on a loaded machine too
    ready = [m for m in messages if m.startswith("READY=1")]
    assert len(ready) == 1 and "frames" in ready[0]
    assert sum(m == "WATCHDOG=1" for m in messages) >= 5
    assert any(m.startswith("STATUS=running") for m in messages)
    assert messages[-1] == "STOPPING=1" or "STOPPING=1" in messages


@requires_models
def test_a_camera_missing_at_boot_is_a_started_service_not_a_failed_start(tmp_path, notify_socket):
    """Without READY, systemd would kill the daemon after TimeoutStartSec and restart
    it over and over while it waits for the camera."""
    sock, path = notify_socket
    proc = start(["--source", "http://127.0.0.1:9/absent.mjpg", *dirs(tmp_path)],
                 daemon_env(path))  # fmt: skip
    try:
        messages = drain(sock, 60.0, until=watchdogs_and(3, "READY=1"))
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    ready = [m for m in messages if m.startswith("READY=1")]
    assert len(ready) == 1 and "camera error" in ready[0] and "0 frames" in ready[0]
    assert sum(m == "WATCHDOG=1" for m in messages) >= 3  # the retrying loop is alive


@requires_models
def test_a_stuck_frame_loop_stops_the_watchdog_pings(tmp_path, monkeypatch):
    """The frame loop blocks for good: its --events go to a reader that stalled, so the
    loop hangs in write(). The pings must stop (systemd then restarts the service)
    although the publisher thread runs on.

    The watchdog reads an injected clock, not wall-clock windows: real time until the
    loop is stuck, then frozen at that moment and moved on only by the test, which waits
    for publisher ticks, not for time. A loaded machine cannot make a ping late or early."""
    from functools import partial

    from appliance.config import load_config
    from appliance.service import daemon as daemon_module
    from appliance.service.notify import ServiceHeartbeat

    lock = threading.Lock()
    clock = {"frozen_at": 0.0, "moved": 0.0, "era": 0, "ticks": [0], "seen": 0}

    def now() -> float:  # read once per tick, by the publisher thread's ServiceHeartbeat
        with lock:
            clock["ticks"][clock["era"]] += 1
            clock["seen"] = clock["era"]
            if clock["era"] == 0:
                return time.monotonic()
            return clock["frozen_at"] + clock["moved"]

    def next_era(moved: float) -> None:
        with lock:
            if clock["era"] == 0:
                clock["frozen_at"] = time.monotonic()
            clock["moved"] = moved
            clock["era"] += 1
            clock["ticks"].append(0)

    def wait_ticks(count: int) -> None:  # publisher ticks in the current era
        era, deadline = clock["era"], time.monotonic() + 60  # a bound, not a measurement
        while clock["ticks"][era] < count:
            assert time.monotonic() < deadline, f"the publisher stopped ticking: {clock}"
            time.sleep(0.02)

    sent: list[tuple[int, str]] = []  # (the clock era its tick saw, message)

    class Recorded(Notifier):  # the socket itself: test_notifier_speaks_the_protocol_...
        def send(self, message: str) -> bool:
            sent.append((clock["seen"], message))
            return True

    class StalledReader:
        """--events to a consumer that stopped reading: the fourth write never returns."""

        def __init__(self) -> None:
            self.lines = 0
            self.stuck, self.release = threading.Event(), threading.Event()

        def write(self, text: str) -> int:
            self.lines += 1
            if self.lines > 3:
                next_era(0.0)  # time stands still from the moment the loop is stuck ...
                self.stuck.set()
                self.release.wait()
            return len(text)

        def flush(self) -> None:
            pass

    monkeypatch.setattr(daemon_module, "ServiceHeartbeat", partial(ServiceHeartbeat, clock=now))
    config = load_config(None, [
        f"storage.state_dir={tmp_path / 'state'}", f"service.runtime_dir={tmp_path / 'run'}",
        "service.status_interval_s=0.1", "music.enabled=false", "models.va=",
    ])  # fmt: skip
    notifier = Recorded({"WATCHDOG_USEC": "4000000"})  # WatchdogSec=4: stale after 2 s
    reader = StalledReader()
    daemon = daemon_module.Daemon(config, source="demo", loop=True, events=reader,
                                  notifier=notifier)  # fmt: skip
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(daemon.run()), daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 120  # a bound for a broken run, not a measurement
        while not reader.stuck.wait(0.05):
            assert runner.is_alive(), f"the run ended before its fourth frame: exit {codes}"
            assert time.monotonic() < deadline, "the frame loop never reached its fourth frame"
        wait_ticks(2)
        next_era(1.5)  # ... moves on, still under half of WatchdogSec: pings go on ...
        wait_ticks(3)
        next_era(10.0)  # ... then far past it (and past ServiceHeartbeat.STATUS_EVERY_S)
        wait_ticks(3)
    finally:
        daemon.stop()
        reader.release.set()
        runner.join(timeout=30)
    assert not runner.is_alive() and codes == [0]
    running, stuck, stalling, late = ([m for e, m in sent if e == era] for era in range(4))
    assert any(m.startswith("READY=1") for m in running + stuck)
    assert "WATCHDOG=1" in stuck and "WATCHDOG=1" in stalling
    assert any(m.startswith("STATUS=") for m in late)  # the service is alive ...
    assert "WATCHDOG=1" not in late  # ... but its loop is not: no more pings


# --------------------------------------------------------------------------- faults


@pytest.fixture
def camera():
    frames = [cv2.resize(cv2.imread(str(p)), (320, 320)) for p in
              sorted(FIXTURE_FACES.glob("happy/*.jpg"))]  # fmt: skip
    cam = MjpegCamera(frames, fps=15)
    cam.start()
    yield cam
    cam.stop()


def wait_status(args, predicate, timeout: float) -> tuple[int, dict, float]:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        code, snap = status(args)
        if snap and predicate(code, snap):
            return code, snap, time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"status never matched within {timeout} s: {snap}")


@requires_models
def test_camera_unplugged_is_a_warning_and_recovery_takes_under_5_s(tmp_path, camera):
    args = dirs(tmp_path)
    proc = start(["--source", camera.url, *args])
    try:
        wait_status(args, lambda c, s: c == 0 and s.get("frames", 0) > 10, 30)
        camera.stop()  # unplug
        _, snap, _ = wait_status(args, lambda c, s: c == 1, 15)
        assert "stream" in snap["camera_error"] and snap["state"] == "waiting for camera"
        frames_before = snap["frames"]
        camera.start()  # plug back in
        _, snap, took = wait_status(
            args, lambda c, s: c == 0 and s.get("frames", 0) > frames_before, 10
        )
        assert took <= 5.0, f"recovered after {took:.1f} s"
        assert proc.poll() is None  # never exited
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


@requires_models
def test_disk_full_is_critical_without_a_crash_loop(tmp_path):
    """The daemon may write at most a few KB more than the database already holds
    (RLIMIT_FSIZE): SQLite gets 'disk full'; the daemon keeps running, CRITICAL."""
    args = dirs(tmp_path)
    subprocess.run([sys.executable, "-m", "appliance", "run", "--source", "demo",
                    "--max-frames", "5", "--quiet", *args], cwd=ROOT, check=True)  # fmt: skip
    db_path = tmp_path / "state" / "appliance.db"
    db = sqlite3.connect(db_path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    biggest = max(p.stat().st_size for p in db_path.parent.iterdir())

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (biggest + 4096, biggest + 4096))

    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "run", "--source", "demo", "--loop", "--quiet",
         "--set", "storage.sample_hz=10", *args],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=limit_file_size,
    )  # fmt: skip
    try:
        _, snap, _ = wait_status(args, lambda c, s: c == 2, 40)
        assert snap["state"] == "running" and snap["storage_error"]
        assert re.search(r"full|large|I/O", snap["storage_error"], re.I)
        frames = snap["frames"]
        _, later, _ = wait_status(args, lambda c, s: s.get("frames", 0) > frames + 20, 20)
        assert later["storage_error"]  # still failing, still processing frames
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def test_malformed_config_at_boot_fails_once_with_the_error(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("[camera]\nfps = 'fast'\n[nonsense]\n")
    result = subprocess.run(
        [sys.executable, "-m", "appliance", "--config", str(config), "run"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2  # RestartPreventExitStatus=2 in the unit: no restart storm
    assert f"{config}" in result.stderr and "camera.fps" in result.stderr.replace("] ", ".")
    assert "nonsense" in result.stderr


def run_cli(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_a_source_that_can_never_work_is_a_config_error_naming_the_key(tmp_path):
    """Exit 2 (RestartPreventExitStatus): restarting cannot fix a bad camera.source."""
    from appliance import cli
    from appliance.service import daemon

    assert daemon.EXIT_CONFIG == cli.EXIT_CONFIG == 2
    args = dirs(tmp_path)
    checked = run_cli(["config", "check", *args, "--set", "camera.source=v4l2:x"])
    assert checked.returncode == 2
    assert "[camera] source" in checked.stderr and "v4l2:N" in checked.stderr
    hidden = run_cli(["config", "check", *args, "--set", "camera.source=rtp://u:hunter2@cam/s"])
    assert hidden.returncode == 2 and "hunter2" not in hidden.stderr
    for how, key in ((["--set", "camera.source=nonsense"], "[camera] source"),
                     (["--source", "nonsense"], "--source")):  # fmt: skip
        result = run_cli(["run", "--quiet", *args, *how])
        assert result.returncode == 2, result.stderr
        assert "'nonsense' is not a source keyword (a file or folder" in result.stderr
        assert key in result.stderr


@requires_models
def test_a_camera_library_that_is_not_installed_is_fatal_not_retried(tmp_path):
    if importlib.util.find_spec("picamera2") is not None:
        pytest.skip("picamera2 is installed here")
    started = time.monotonic()
    result = run_cli(["run", "--quiet", *dirs(tmp_path), "--set", "camera.source=picamera"])
    assert result.returncode == 2, result.stderr
    assert "camera.source: picamera2 is not installed" in result.stderr
    assert "reconnecting" not in result.stderr
    assert time.monotonic() - started < 60


class _CameraThatStopsSending(FrameSource):
    """Stands in for a camera whose driver opens but then sends `frames_per_open` frames
    (maybe none) before going quiet; the daemon is stopped at the open after `opens`."""

    live = True

    def __init__(self, daemon, opens: int, frames_per_open: int) -> None:
        super().__init__("fake camera")
        self.daemon, self.opens_left, self.per_open = daemon, opens, frames_per_open
        self.frames_left = 0
        self.index = 0

    def open(self) -> None:
        self.opens_left -= 1
        if self.opens_left < 0:
            self.daemon.stop()
        self.frames_left = self.per_open

    def read(self, timeout: float | None = None) -> Frame:
        if self.frames_left:
            self.frames_left -= 1
            self.index += 1
            return Frame(np.zeros((120, 160, 3), np.uint8), time.monotonic(), self.index)
        raise CaptureError(f"no frame from fake camera for {timeout} s")

    def close(self) -> None:
        pass


@requires_models
@pytest.mark.parametrize(
    ("frames_per_open", "backoff"),
    [
        # opens, never delivers: one outage, backing off towards a minute
        (0, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]),
        (1, [0.5] * 9),  # delivered each time: each failure is a new one
    ],
)
def test_reconnect_backoff_restarts_only_after_a_frame(tmp_path, frames_per_open, backoff):
    from appliance.config import load_config
    from appliance.pipeline import Pipeline
    from appliance.service.daemon import Daemon

    config = load_config(None, [
        f"storage.state_dir={tmp_path / 'state'}", f"service.runtime_dir={tmp_path / 'run'}",
        "music.enabled=false", "models.va=",
    ], default_path=tmp_path / "none.toml")  # fmt: skip
    waits: list[float] = []
    camera = _CameraThatStopsSending(None, opens=len(backoff), frames_per_open=frames_per_open)
    daemon = Daemon(
        config, source=camera, pipeline=Pipeline.from_config(config), pause=waits.append
    )
    camera.daemon = daemon
    assert daemon.run() == 0
    assert waits == backoff
    assert daemon.frames == frames_per_open * len(backoff)


def test_a_missing_camera_is_logged_once_then_reminded_and_status_says_waiting(tmp_path, caplog):
    """A box whose camera cable came loose wrote three journal lines every 4 s (~65,000 a
    day) and status said "starting". Now one warning, a reminder every few minutes (the
    clock here is the waits' own sum), and status "waiting for camera"."""
    from appliance.config import load_config
    from appliance.service.daemon import Daemon
    from appliance.service.status import WARNING, assess, read_status

    config = load_config(None, [
        f"storage.state_dir={tmp_path / 'state'}", f"service.runtime_dir={tmp_path / 'run'}",
        "music.enabled=false", "service.status_interval_s=0.1",
    ], default_path=tmp_path / "none.toml")  # fmt: skip
    clock = [1000.0]
    seen: list[dict] = []

    def wait(seconds: float) -> None:
        clock[0] += seconds
        deadline = time.monotonic() + 5  # the publisher writes every 0.05 s
        while not seen and time.monotonic() < deadline:
            snapshot = read_status(tmp_path / "run") or {}
            if snapshot.get("state") == "waiting for camera":
                seen.append(snapshot)
            time.sleep(0.01)

    camera = _CameraThatStopsSending(None, opens=40, frames_per_open=0)
    daemon = Daemon(config, source=camera, pipeline=_Nothing(), pause=wait, clock=lambda: clock[0])
    camera.daemon = daemon
    with caplog.at_level(logging.DEBUG, logger="appliance.service.daemon"):
        assert daemon.run() == 0
    warnings = [
        r.getMessage() for r in caplog.records
        if r.levelno == logging.WARNING and r.name == "appliance.service.daemon"
    ]  # fmt: skip
    minutes = (clock[0] - 1000.0) / 60  # ~34 min of simulated outage in 40 attempts
    assert "retrying, up to every 60 s" in warnings[0]
    reminders = warnings[1:]
    assert all("still unavailable" in text for text in reminders)
    assert int(minutes // 5) - 1 <= len(reminders) <= int(minutes // 5), (minutes, warnings)
    assert seen and assess(seen[0], 60) == (
        WARNING,
        f"waiting for camera: {seen[0]['camera_error']}",
    )


class _Nothing:
    """A pipeline for a source that never delivers a frame."""

    def describe(self) -> dict:
        return {"detector": "none", "emotion_model": "none", "labels": []}

    def reset(self) -> None:
        pass


# --------------------------------------------------------------------------- doctor


def test_doctor_reports_each_check_and_fails_on_problems(tmp_path):
    args = dirs(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "appliance", "doctor", "--json", *args,
         "--set", "camera.source=demo", "--set", "music.enabled=true"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert {"config", "models", "camera", "state dir", "database", "catalog", "spotify",
            "vlm", "gpio"} <= set(checks)  # fmt: skip
    assert checks["catalog"]["status"] == "fail" and "catalog import" in checks["catalog"]["hint"]
    assert checks["spotify"]["status"] == "skip" and checks["vlm"]["status"] == "skip"
    assert checks["database"]["status"] == "pass"
    assert result.returncode == 1
    text = subprocess.run(
        [sys.executable, "-m", "appliance", "doctor", "--no-camera", *args,
         "--set", "camera.source=/dev/video99", "--set", "music.enabled=true"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    ).stdout  # fmt: skip
    assert "SKIP  camera" in text and "fix:" in text


def test_doctor_asks_a_running_daemon_about_the_camera_it_holds(tmp_path):
    """libcamera admits one user: opening the camera beside the daemon always fails."""
    from appliance.service.status import write_status

    args = dirs(tmp_path)
    doctor = [sys.executable, "-m", "appliance", "doctor", "--json", *args,
              "--set", "camera.source=/dev/video99"]  # fmt: skip
    snapshot = {"state": "running", "pid": 4242, "frames": 1234, "source": "picamera2:0",
                "updated_at": time.time(), "camera_error": None}  # fmt: skip

    def camera_check(status: dict) -> dict:
        write_status(tmp_path / "run", status)
        out = subprocess.run(doctor, cwd=ROOT, capture_output=True, text=True, timeout=120)
        return {c["name"]: c for c in json.loads(out.stdout)}["camera"]

    camera = camera_check(snapshot)
    assert camera["status"] == "pass" and "pid 4242" in camera["detail"]
    assert "1234 frames" in camera["detail"]
    camera = camera_check({**snapshot, "camera_error": "picamera2: unplugged"})
    assert camera["status"] == "fail" and "unplugged" in camera["detail"]
    camera = camera_check({**snapshot, "updated_at": time.time() - 3600})  # stale: opens it
    assert camera["status"] == "fail" and "video99" in camera["detail"]


def test_doctor_camera_report_keeps_a_stream_password_out(tmp_path, monkeypatch):
    """A camera that connects but sends nothing: the failure names the redacted source."""
    from appliance.capture.stream import StreamSource
    from appliance.config import load_config
    from appliance.service import doctor

    url = "rtsp://admin:p@ss/word@127.0.0.1:8554/live"

    class SilentStream(StreamSource):
        def open(self) -> None:
            pass

        def read(self, timeout: float = 1.0):
            return None

        def close(self) -> None:
            pass

    monkeypatch.setattr(doctor, "open_source", lambda spec, **_: SilentStream(spec))
    config = load_config(None, [
        f"camera.source={url}", f"service.runtime_dir={tmp_path / 'run'}",
    ], default_path=tmp_path / "none.toml")  # fmt: skip
    check = doctor.check_camera(config)
    assert check.status == "fail" and "no frame within 5 s" in check.detail
    assert "ss/word" not in check.detail and "***" in check.detail
