"""The MQTT link (issue 22), against a real Mosquitto started here on 127.0.0.1 with a
password file (and, in one test, TLS with a certificate made on the fly): Home Assistant
discovery, retained state and availability, commands reaching the feedback table once,
the last will on SIGKILL, a broker restart mid-run, a refused login, the fleet view, and
the frame loop's rate with the link on and off. Pacing and deduplication are tested on
their own with injected clocks."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from support import FIXTURE_FACES, ROOT, cli_settings, load_tool, requires_models

from appliance import __version__, cli
from appliance.affect.smoothing import AffectState
from appliance.config import load_config
from appliance.config.schema import mqtt_device_id
from appliance.config.secrets import SecretError
from appliance.link.client import Topics
from appliance.link.commands import SAME_SONG_S, UNKNOWN_SONG_S, Commands, PressGate
from appliance.link.discovery import discovery_messages
from appliance.link.fleet import FleetCollector, format_rows, rows
from appliance.link.worker import Pacer, build_state
from appliance.pipeline import FrameResult
from appliance.service.daemon import Daemon
from appliance.service.doctor import check_mqtt
from appliance.service.publisher import BoardView
from appliance.service.status import OK, WARNING, assess, read_status

USER, PASSWORD = "appliance", "s3cret-pw"


def _tool(name: str) -> str | None:
    """mosquitto lives in /usr/sbin, which a normal user's PATH may lack."""
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/local/sbin"):
        if os.access(f"{folder}/{name}", os.X_OK):
            return f"{folder}/{name}"
    return None


MOSQUITTO, MOSQUITTO_PASSWD = _tool("mosquitto"), _tool("mosquitto_passwd")
MOSQUITTO_SUB, MOSQUITTO_PUB = _tool("mosquitto_sub"), _tool("mosquitto_pub")
requires_mosquitto = pytest.mark.skipif(
    not (MOSQUITTO and MOSQUITTO_PASSWD),
    reason="mosquitto not installed (tools/test.sh installs it as root; else "
    "`sudo apt install mosquitto mosquitto-clients`)",
)
requires_clients = pytest.mark.skipif(
    not (MOSQUITTO_SUB and MOSQUITTO_PUB), reason="mosquitto-clients not installed"
)


# ------------------------------------------------------------------------ a real broker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A Mosquitto of our own on 127.0.0.1: a password file, no anonymous clients, no
    persistence (a restart forgets every retained message), optionally TLS."""

    def __init__(self, folder: Path, *, tls: tuple[Path, Path] | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.port, self.proc = folder, free_port(), None
        passwords = folder / "passwords"
        subprocess.run(
            [MOSQUITTO_PASSWD, "-b", "-c", str(passwords), USER, PASSWORD],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous false",
            f"password_file {passwords}",
            "persistence false",
        ]
        if tls:
            lines += [f"certfile {tls[0]}", f"keyfile {tls[1]}"]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to `mosquitto`, who cannot read tmp_path
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.log = folder / "broker.log"

    def start(self) -> Broker:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.conf)], stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 10
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not start: {self.log.read_text()}")
            time.sleep(0.02)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def broker(tmp_path):
    if not (MOSQUITTO and MOSQUITTO_PASSWD):
        pytest.skip("mosquitto not installed (tools/test.sh installs it as root)")
    b = Broker(tmp_path / "broker").start()
    yield b
    b.kill()


class Observer:
    """A paho client that records every message it sees (the test's eyes)."""

    def __init__(self, port: int, topics=("#",), *, ca_file: Path | None = None) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.cond = threading.Condition()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"obs-{uuid.uuid4().hex}"
        )
        self.client.username_pw_set(USER, PASSWORD)
        if ca_file:
            self.client.tls_set(ca_certs=str(ca_file))
        self.client.on_message = self._add
        connected = threading.Event()
        self.client.on_connect = lambda *_: connected.set()
        self.client.connect("127.0.0.1", port)
        for topic in topics:
            self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        assert connected.wait(10), "the observer could not connect"

    def _add(self, _c, _u, message) -> None:
        with self.cond:
            self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))
            self.cond.notify_all()

    def wait_for(self, match, timeout: float = 20.0) -> tuple[str, bytes, bool]:
        """The first message for which match(topic, payload) is true, waiting for it."""

        def found():
            return next((m for m in self.messages if match(m[0], m[1])), None)

        with self.cond:
            assert self.cond.wait_for(found, timeout), [m[:2] for m in self.messages][-20:]
            return found()

    def states(self, topic: str) -> list[dict]:
        with self.cond:
            return [json.loads(p) for t, p, _ in self.messages if t == topic and p]

    def publish(self, topic: str, payload: str, **kwargs) -> None:
        self.client.publish(topic, payload, qos=1, **kwargs).wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def observe():
    made: list[Observer] = []

    def make(port: int, *topics: str, **kwargs) -> Observer:
        made.append(Observer(port, topics or ("#",), **kwargs))
        return made[-1]

    yield make
    for o in made:
        o.close()


# ------------------------------------------------------------------------ the daemon


class FakePipeline:
    """Models are not the point here: one smoothed emotion per frame, the test sets which."""

    def __init__(self) -> None:
        self.emotion = "happy"

    def describe(self) -> dict:
        return {"detector": "fake", "emotion_model": "fake", "labels": ["happy", "sad"]}

    def reset(self) -> None:
        pass

    def process(self, frame) -> FrameResult:
        time.sleep(0.01)  # a camera's pace, not a busy loop on a shared machine
        valence = 0.6 if self.emotion == "happy" else -0.6
        state = AffectState(
            t=frame.t, emotion=self.emotion, confidence=0.9, face_presence=1.0,
            probs={self.emotion: 0.9}, valence=valence, arousal=0.4,
        )  # fmt: skip
        return FrameResult(frame.index, frame.t, [], state, {"total": 0.1})


def password_file(tmp_path: Path, password: str = PASSWORD) -> Path:
    path = tmp_path / ("mqtt_password" if password == PASSWORD else "wrong_password")
    path.write_text(password + "\n")
    path.chmod(0o600)
    return path


def import_catalog(state_dir: Path, tmp_path: Path) -> None:
    from test_music import write_minimal

    from appliance.music.catalog import import_catalog as do_import
    from appliance.store.database import open_database

    write_minimal(tmp_path / "tracks.csv", n=40)
    db = open_database(state_dir)
    try:
        do_import(db, tmp_path / "tracks.csv", k=4)
    finally:
        db.conn.close()


def mqtt_settings(port: int, secret: Path, *extra: str) -> list[str]:
    return [
        "mqtt.enabled=true",
        "mqtt.host=127.0.0.1",
        f"mqtt.port={port}",
        f"mqtt.username={USER}",
        f"mqtt.password_file={secret}",
        *extra,
    ]


class Running:
    """The daemon in-process on a looping folder of frames, until the block ends."""

    def __init__(self, tmp_path: Path, overrides: list[str], pipeline=None) -> None:
        frames = tmp_path / "frames"
        frames.mkdir(exist_ok=True)
        for i in range(12):
            cv2.imwrite(str(frames / f"{i:03d}.png"), np.full((48, 64, 3), 40 + i, np.uint8))
        self.runtime = tmp_path / "run"
        self.state_dir = tmp_path / "state"
        self.config = load_config(
            None,
            [
                f"storage.state_dir={self.state_dir}",
                f"service.runtime_dir={self.runtime}",
                "service.status_interval_s=0.1",
                "gpio.enabled=false",
                "music.min_interval_s=0",
                "music.mood_hold_s=0",
                *overrides,
            ],
            default_path=tmp_path / "absent.toml",
        )
        self.pipeline = pipeline or FakePipeline()
        self.daemon = Daemon(self.config, source=str(frames), loop=True, pipeline=self.pipeline)
        self.codes: list[int] = []
        self.thread = threading.Thread(target=lambda: self.codes.append(self.daemon.run()))

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self.daemon.stop()
        self.thread.join(30)
        assert not self.thread.is_alive()

    def status(self) -> dict:
        return read_status(self.runtime) or {}

    def wait_status(self, done, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        while not done(status := self.status()):
            assert time.monotonic() < deadline, status
            time.sleep(0.05)
        return status


def feedback_rows(state_dir: Path) -> list[tuple]:
    db = sqlite3.connect(state_dir / "appliance.db")
    try:
        rows = db.execute("SELECT action, uri, source FROM feedback ORDER BY id").fetchall()
        assert all(source == "mqtt" for _, _, source in rows)  # stored as the MQTT's press
        return [(action, uri) for action, uri, _ in rows]
    finally:
        db.close()


# ------------------------------------------------------------------------ with a broker


@requires_mosquitto
def test_home_assistant_discovery_state_commands_and_a_clean_offline(
    tmp_path, broker, observe, caplog
):
    topics = Topics("emotion-appliance", "kitchen-pi", "homeassistant")
    watch = observe(broker.port)
    # a retained command left on the broker: delivered to every new subscription, where
    # it would fire on each reconnect; the link ignores it
    watch.publish(topics.command, "skip", retain=True)
    (tmp_path / "state").mkdir()
    import_catalog(tmp_path / "state", tmp_path)
    overrides = mqtt_settings(
        broker.port,
        password_file(tmp_path),
        "mqtt.client_id=kitchen-pi",
        "mqtt.state_interval_s=60",  # so every state after the first comes from a change
    )
    caplog.set_level(logging.INFO)
    with Running(tmp_path, overrides) as run:
        # discovery: one device, tied to availability, with the model and version
        _, payload, _ = watch.wait_for(
            lambda t, p: t == "homeassistant/sensor/kitchen-pi/emotion/config"
        )
        emotion = json.loads(payload)
        assert emotion["state_topic"] == topics.state
        assert emotion["availability_topic"] == topics.availability
        assert emotion["device"]["model"] == "emotion-appliance"
        assert emotion["device"]["sw_version"] == __version__
        assert emotion["unique_id"] == "kitchen-pi_emotion"
        for key in ("valence", "arousal", "mood", "now_playing", "status"):
            watch.wait_for(lambda t, p, k=key: t == f"homeassistant/sensor/kitchen-pi/{k}/config")
        _, payload, _ = watch.wait_for(lambda t, p: t.endswith("button/kitchen-pi/like/config"))
        like = json.loads(payload)
        assert like["command_topic"] == topics.command and like["payload_press"] == "like"
        _, payload, _ = watch.wait_for(lambda t, p: t.endswith("switch/kitchen-pi/music/config"))
        switch = json.loads(payload)
        assert (switch["payload_on"], switch["payload_off"]) == ("music on", "music off")
        assert all(
            json.loads(p)["device"] == emotion["device"]
            for t, p, _ in watch.messages
            if t.startswith("homeassistant/")
        )
        watch.wait_for(lambda t, p: t == topics.availability and p == b"online")

        # the state: all the fields, and a song queued so that a like has one to go to
        status = run.wait_status(lambda s: s.get("queue_depth", 0) >= 2 and s.get("mood"))
        assert status["mqtt"]["state"] == "connected" and assess(status, 10)[0] == OK
        _, payload, _ = watch.wait_for(
            lambda t, p: t == topics.state and json.loads(p)["mood"] is not None
        )
        state = json.loads(payload)
        assert state["emotion"] == "happy" and state["valence"] == 0.6
        assert state["arousal"] == 0.4 and state["confidence"] == 0.9
        assert state["mood"] in {"happy", "energetic", "calm", "sad"}
        assert state["music_on"] is True and state["queue_depth"] >= 2
        assert state["now_playing"] is None  # no Spotify: nothing plays
        assert state["status"] in {"OK", "WARNING"} and state["id"] == "kitchen-pi"

        # a change of emotion goes out at once, not at the 60 s interval
        run.pipeline.emotion = "sad"
        watch.wait_for(lambda t, p: t == topics.state and json.loads(p)["emotion"] == "sad")

        # a like sent twice (QoS 1 delivers at least once) counts once
        watch.publish(topics.command, "like")
        watch.publish(topics.command, " LIKE ")
        status = run.wait_status(lambda s: s["mqtt"]["commands"] + s["mqtt"]["duplicates"] >= 2)
        assert status["mqtt"]["duplicates"] == 1
        liked = feedback_rows(run.state_dir)
        assert [action for action, _ in liked] == ["like"]
        assert liked[0][1] == status["last_song"]["uri"]

        # music off and on, through the same path as the buttons; the switch follows
        watch.publish(topics.command, "music off")
        run.wait_status(lambda s: s.get("music") == "off")
        watch.wait_for(lambda t, p: t == topics.state and json.loads(p)["music_on"] is False)
        watch.publish(topics.command, "music on")
        run.wait_status(lambda s: s.get("music") != "off")

        # an unknown command: logged (printably) and ignored; so was the retained one
        watch.publish(topics.command, "Dance\x1b[2J")
        status = run.wait_status(lambda s: s["mqtt"]["ignored"] >= 2)
        assert "unknown command 'Dance\\x1b[2J' ignored" in caplog.text
        assert "retained command 'skip' ignored" in caplog.text
        assert "\x1b" not in caplog.text

        # what a newcomer (Home Assistant restarting) gets: everything retained
        fresh = observe(broker.port)
        for topic in (
            topics.availability,
            topics.state,
            "homeassistant/button/kitchen-pi/like/config",
        ):
            assert fresh.wait_for(lambda t, p, x=topic: t == x)[2] is True
    # a clean stop says offline itself (the will is not needed)
    assert run.codes == [0]
    _, payload, _ = watch.wait_for(lambda t, p: t == topics.availability and p == b"offline")
    assert read_status(run.runtime)["mqtt"]["state"] in ("stopping", "stopped")
    assert [a for a, _ in feedback_rows(run.state_dir)] == ["like"]  # the retained skip: never


@requires_mosquitto
def test_a_broker_restart_mid_run_resumes_the_state_without_a_backlog(
    tmp_path, broker, observe, caplog
):
    topics = Topics("emotion-appliance", "lab-pi-3", "")
    overrides = mqtt_settings(
        broker.port,
        password_file(tmp_path),
        "mqtt.client_id=lab-pi-3",
        "mqtt.state_interval_s=0.2",
        "mqtt.discovery_prefix=",
        "mqtt.events=true",
        "music.enabled=false",
    )
    caplog.set_level(logging.INFO)
    with Running(tmp_path, overrides) as run:
        watch = observe(broker.port)
        watch.wait_for(lambda t, p: t == topics.state)
        _, payload, _ = watch.wait_for(lambda t, p: t == topics.events)
        event = json.loads(payload)  # the smoothed part of --events, for robots
        smoothed = {"emotion": "happy", "confidence": 0.9, "valence": 0.6, "arousal": 0.4}
        assert event["smoothed"] == smoothed and isinstance(event["frame"], int)
        assert not [t for t, _, _ in watch.messages if t.startswith("homeassistant/")]
        watch.close()
        broker.kill()  # the broker goes away mid-run
        down = run.wait_status(lambda s: s["mqtt"]["state"] == "down")
        code, reason = assess(down, 10)
        assert code == WARNING and "MQTT link down" in reason
        # frames go on meanwhile; nothing is published, nothing piles up
        later = run.wait_status(lambda s: s["frames"] > down["frames"] + 20)
        assert later["mqtt"]["states"] == down["mqtt"]["states"]
        assert later["mqtt"]["events"] == down["mqtt"]["events"]
        restarted = time.time()
        broker.start()  # a new broker, with no retained message at all
        back = observe(broker.port)
        _, payload, _ = back.wait_for(lambda t, p: t == topics.state)
        assert json.loads(payload)["t"] >= restarted - 0.5  # the latest state, not an old one
        back.wait_for(lambda t, p: t == topics.availability and p == b"online")
        status = run.wait_status(lambda s: s["mqtt"]["state"] == "connected")
        assert status["mqtt"]["error"] is None and assess(status, 10)[0] == OK
    assert "connection lost" in caplog.text and "MQTT connected to" in caplog.text
    assert run.codes == [0]


@requires_mosquitto
def test_a_wrong_password_is_a_warning_with_a_clear_log_line(tmp_path, broker, caplog):
    secret = password_file(tmp_path, "not-the-password")
    overrides = mqtt_settings(broker.port, secret, "mqtt.client_id=pi", "music.enabled=false")
    caplog.set_level(logging.INFO)
    with Running(tmp_path, overrides) as run:
        # two tries (the first retry comes after the Backoff's first second)
        status = run.wait_status(lambda s: s.get("mqtt", {}).get("retries", 0) >= 2)
        assert status["mqtt"]["state"] == "down"
        assert "refused the login of user 'appliance'" in status["mqtt"]["error"]
        code, reason = assess(status, 10)
        assert code == WARNING and reason.startswith("MQTT link down: 127.0.0.1:")
        run.wait_status(lambda s: s["frames"] > 20)  # the appliance itself goes on
    lines = [r for r in caplog.records if "refused the login" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.ERROR  # once, not every retry
    assert "check mqtt.username and mqtt.password_file" in lines[0].getMessage()
    assert "not-the-password" not in caplog.text
    assert run.codes == [0]


@requires_mosquitto
def test_two_appliances_with_one_client_id_are_told_so(tmp_path, broker):
    """A room of Pis flashed with one host name: each connect takes the other's session.
    Status names the cause, and the backoff is not reset by connections that do not last."""
    from appliance.link.worker import MqttLink
    from appliance.service.publisher import Board

    config = load_config(
        None, mqtt_settings(broker.port, password_file(tmp_path), "mqtt.client_id=twin"),
        default_path=tmp_path / "x",
    )  # fmt: skip
    twins = [MqttLink(config.mqtt, password=PASSWORD, board=Board(info={})) for _ in range(2)]
    try:
        for link in twins:
            link.start()
        deadline = time.monotonic() + 20
        while not any(t.snapshot()["mqtt"]["retries"] >= 2 for t in twins):
            assert time.monotonic() < deadline, [t.snapshot() for t in twins]
            time.sleep(0.05)
        # retries: 2 means the second wait is 2 s, not 1 s again after a short connection
        errors = [t.snapshot()["mqtt"]["error"] or "" for t in twins]
        assert any("another appliance using client id 'twin'?" in e for e in errors), errors
    finally:
        for link in twins:
            assert link.stop()


@requires_mosquitto
def test_doctor_checks_the_broker_with_a_fix_line(tmp_path, broker):
    def doctor(*extra: str):
        config = load_config(None, mqtt_settings(broker.port, *extra), default_path=tmp_path / "x")
        return check_mqtt(config)

    good = doctor(password_file(tmp_path))
    assert good.status == "pass" and f"127.0.0.1:{broker.port}: connected as" in good.detail
    bad = doctor(password_file(tmp_path, "wrong-password"))
    assert bad.status == "fail" and "refused the login" in bad.detail
    assert "mqtt.password_file" in bad.line()
    open_secret = password_file(tmp_path)
    open_secret.chmod(0o644)
    refused = doctor(open_secret)
    assert refused.status == "fail" and "chmod 600" in refused.line()
    nowhere = ["mqtt.enabled=true", "mqtt.host=127.0.0.1", f"mqtt.port={free_port()}"]
    closed = load_config(None, nowhere, default_path=tmp_path / "x")
    nobody = check_mqtt(closed)
    assert nobody.status == "fail" and "connection refused" in nobody.detail
    assert "fix: check mqtt.host and mqtt.port" in nobody.line()
    assert check_mqtt(load_config(None, [], default_path=tmp_path / "x")).status == "skip"


def make_certificate(folder: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed: no certificate for the TLS test")
    cert, key = folder / "broker.crt", folder / "broker.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@requires_mosquitto
def test_tls_with_a_certificate_made_on_the_fly(tmp_path, observe, capsys):
    cert, key = make_certificate(tmp_path)
    broker = Broker(tmp_path / "tls-broker", tls=(cert, key)).start()
    try:
        secret = password_file(tmp_path)
        tls = mqtt_settings(broker.port, secret, "mqtt.tls=true", f"mqtt.ca_file={cert}")
        config = load_config(None, tls, default_path=tmp_path / "x")
        check = check_mqtt(config)
        assert check.status == "pass" and "over TLS, certificate verified" in check.detail
        # the system store does not know this certificate: refused, with a fix
        untrusted = check_mqtt(load_config(None, tls[:-1], default_path=tmp_path / "x"))
        assert untrusted.status == "fail" and "certificate not trusted" in untrusted.detail
        assert "mqtt.ca_file" in untrusted.line()
        # plain MQTT to the TLS port: a clear failure, not a hang
        plain = check_mqtt(load_config(None, tls[:-2], default_path=tmp_path / "x"))
        assert plain.status == "fail"
        # the link over TLS, seen by the fleet view over TLS
        with Running(tmp_path, [*tls, "mqtt.client_id=tls-pi", "music.enabled=false"]) as run:
            run.wait_status(lambda s: s.get("mqtt", {}).get("state") == "connected")
            watch = observe(broker.port, ca_file=cert)
            watch.wait_for(lambda t, p: t == "emotion-appliance/tls-pi/state")
            code = cli.main(["fleet", "--json", "--wait", "0.5", *cli_settings(tmp_path, *tls)])
        assert code == 0
        (row,) = json.loads(capsys.readouterr().out)
        assert row["id"] == "tls-pi" and row["online"] is True and row["emotion"] == "happy"
    finally:
        broker.kill()


@requires_mosquitto
def test_fleet_prints_each_appliance_printably_and_creates_nothing(
    tmp_path, broker, observe, capsys
):
    peer = observe(broker.port, "nothing/here")
    now = time.time()
    peer.publish("emotion-appliance/pi-1/availability", "online", retain=True)
    state = {"id": "pi-1", "t": now - 3, "emotion": "happy", "mood": "calm", "status": "OK",
             "now_playing": {"artist": "A", "name": "Song \x1b]0;owned\x07"}}  # fmt: skip
    peer.publish("emotion-appliance/pi-1/state", json.dumps(state), retain=True)
    peer.publish("emotion-appliance/pi-2/availability", "offline", retain=True)
    # (Mosquitto refuses control characters in a topic; a bidi override gets through)
    peer.publish("emotion-appliance/pi-\u202e3/state", "not json", retain=True)
    peer.publish("emotion-appliance/a/b/state", "{}", retain=True)  # not one level: not ours
    args = ["--broker", f"127.0.0.1:{broker.port}", "--wait", "0.5",
            *cli_settings(tmp_path, f"mqtt.username={USER}",
                          f"mqtt.password_file={password_file(tmp_path)}")]  # fmt: skip
    assert cli.main(["fleet", *args]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "ONLINE", "EMOTION", "MOOD", "PLAYING", "STATUS", "AGE"]
    assert lines[1].split()[:4] == ["pi-1", "online", "happy", "calm"]
    assert "A - Song \\x1b]0;owned\\x07" in lines[1] and lines[1].split()[-1] in ("3s", "4s")
    assert lines[2].split()[:2] == ["pi-2", "offline"]
    assert "pi-\\u202e3" in lines[3] and "state not JSON" in lines[3]
    assert len(lines) == 4
    assert cli.main(["fleet", "--json", *args]) == 0
    table = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in table] == ["pi-1", "pi-2", "pi-\u202e3"]
    assert not (tmp_path / "state").exists() and not (tmp_path / "run").exists()  # read-only
    # a wrong password: a clear error, exit 1
    wrong_secret = password_file(tmp_path, "nope-nope")
    wrong = ["--broker", f"127.0.0.1:{broker.port}",
             *cli_settings(tmp_path, f"mqtt.username={USER}",
                           f"mqtt.password_file={wrong_secret}")]  # fmt: skip
    assert cli.main(["fleet", *wrong]) == 1


# ------------------------------------------------------------------------ real processes


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    make_face_clip = load_tool("make_face_clip")
    path = tmp_path_factory.mktemp("clip") / "faces.mp4"
    make_face_clip.compose(
        make_face_clip.list_faces(FIXTURE_FACES)[::5], path, frames_per_face=8, seed=5
    )
    return path


class Subscriber:
    """mosquitto_sub, as the issue's judge runs it: `retain topic payload` lines."""

    def __init__(self, port: int, *topics: str) -> None:
        args = [MOSQUITTO_SUB, "-h", "127.0.0.1", "-p", str(port), "-u", USER, "-P", PASSWORD,
                "-q", "1", "-F", "%r %t %p"]  # fmt: skip
        for topic in topics:
            args += ["-t", topic]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        self.lines: list[tuple[bool, str, str]] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            retain, topic, payload = [*line.rstrip("\n").split(" ", 2), "", ""][:3]
            with self.cond:
                self.lines.append((retain == "1", topic, payload))
                self.cond.notify_all()

    def wait_for(self, match, timeout: float = 30.0) -> tuple[bool, str, str]:
        def found():
            return next((m for m in self.lines if match(m[1], m[2])), None)

        with self.cond:
            assert self.cond.wait_for(found, timeout), self.lines[-10:]
            return found()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def _state_has(payload: str, *keys: str) -> bool:
    try:
        state = json.loads(payload)
    except ValueError:
        return False
    return all(state.get(k) is not None for k in keys)


@requires_models
@requires_mosquitto
@requires_clients
def test_the_daemon_on_a_recorded_clip_as_the_issue_judges_it(tmp_path, broker, clip):
    """`run` with the real models on a clip and only the documented --set keys: the
    retained discovery configs, online, a full state, a like recorded in the database,
    and after SIGKILL the last will's offline."""
    device = mqtt_device_id("")  # the host name: no client_id given
    base = f"emotion-appliance/{device}"
    args = cli_settings(
        tmp_path,
        "service.status_interval_s=0.2",
        "music.min_interval_s=0",
        "music.mood_hold_s=0",
        "mqtt.enabled=true",
        "mqtt.host=127.0.0.1",
        f"mqtt.port={broker.port}",
        f"mqtt.username={USER}",
        f"mqtt.password_file={password_file(tmp_path)}",
    )
    (tmp_path / "state").mkdir()
    import_catalog(tmp_path / "state", tmp_path)
    sub = Subscriber(broker.port, "homeassistant/#", "emotion-appliance/#")
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "run", "--source", str(clip), "--loop", "--quiet",
         *args],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        sub.wait_for(lambda t, p: t == f"homeassistant/sensor/{device}/emotion/config")
        sub.wait_for(lambda t, p: t == f"homeassistant/button/{device}/like/config")
        sub.wait_for(lambda t, p: t == f"{base}/availability" and p == "online")
        sub.wait_for(
            lambda t, p: (
                t == f"{base}/state" and _state_has(p, "emotion", "valence", "arousal", "mood")
            )
        )
        deadline = time.monotonic() + 30
        while not (read_status(tmp_path / "run") or {}).get("last_song"):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        subprocess.run(
            [MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(broker.port), "-u", USER, "-P",
             PASSWORD, "-q", "1", "-t", f"{base}/command", "-m", "like"],
            check=True, timeout=30,
        )  # fmt: skip
        while not feedback_rows(tmp_path / "state"):
            assert time.monotonic() < deadline + 30 and proc.poll() is None
            time.sleep(0.1)
        assert [a for a, _ in feedback_rows(tmp_path / "state")] == ["like"]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        sub.wait_for(lambda t, p: t == f"{base}/availability" and p == "offline")
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()
    # and it stays there, retained, for whoever looks next
    late = Subscriber(broker.port, f"{base}/availability")
    try:
        assert late.wait_for(lambda t, p: p == "offline")[0] is True
    finally:
        late.close()


@requires_models
@requires_mosquitto
def test_the_link_costs_the_frame_loop_nothing(tmp_path, broker, clip, monkeypatch):
    """The same recorded clip with MQTT on (state, and events at 30 Hz): the frame loop's
    thread never calls paho, every publish and network round is on the link's own
    thread. Behaviour, not speed: the frame rates on vs off are in BENCHMARKS.md."""
    callers: set[str] = set()
    for name in ("publish", "loop", "connect"):
        original = getattr(mqtt.Client, name)

        def spy(self, *args, _original=original, **kwargs):
            callers.add(threading.current_thread().name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(mqtt.Client, name, spy)
    on = mqtt_settings(
        broker.port, password_file(tmp_path), "mqtt.events=true", "mqtt.events_max_hz=30"
    )
    config = load_config(None, [f"storage.state_dir={tmp_path / 'state'}",
                                f"service.runtime_dir={tmp_path / 'run'}",
                                "music.enabled=false", *on],
                         default_path=tmp_path / "x")  # fmt: skip
    daemon = Daemon(config, source=str(clip))
    assert daemon.run() == 0
    link = read_status(tmp_path / "run")["mqtt"]
    assert link["states"] >= 1 and link["events"] >= 1
    assert callers == {"mqtt"}  # the link's Worker thread, never the frame loop's


# ------------------------------------------------------------------------ without a broker


def test_mqtt_settings_are_validated_like_every_other_section(tmp_path):
    def problems(*pairs: str) -> str:
        try:
            load_config(None, list(pairs), default_path=tmp_path / "x")
        except Exception as exc:
            return str(exc)
        return ""

    assert "[mqtt] host: must name the broker" in problems("mqtt.enabled=true")
    assert "the port is mqtt.port" in problems("mqtt.host=broker:1883")
    assert "the port is mqtt.port" in problems("mqtt.host=mqtt://broker")
    assert "needs a username" in problems(
        "mqtt.enabled=true", "mqtt.host=h", "mqtt.password_file=/p"
    )
    assert "only with tls = true" in problems("mqtt.ca_file=/etc/ca.pem")
    assert "without + # or spaces" in problems("mqtt.topic_prefix=home/+/x")
    assert "A-Z a-z 0-9" in problems("mqtt.client_id=kitchen.pi")
    assert problems("mqtt.discovery_prefix=") == ""
    config = load_config(None, ["mqtt.tls=true", "mqtt.host=::1"], default_path=tmp_path / "x")
    assert config.mqtt.broker_port == 8883 and config.mqtt.shown_broker == "[::1]:8883"
    assert load_config(None, [], default_path=tmp_path / "x").mqtt.enabled is False
    assert mqtt_device_id("", "Kitchen Pi.local") == "Kitchen-Pi"
    assert mqtt_device_id("", "...") == "emotion-appliance"


def test_a_world_readable_password_file_stops_the_start(tmp_path):
    secret = password_file(tmp_path)
    secret.chmod(0o644)
    config = load_config(
        None,
        [f"storage.state_dir={tmp_path / 'state'}", f"service.runtime_dir={tmp_path / 'run'}",
         *mqtt_settings(1883, secret)],
        default_path=tmp_path / "x",
    )  # fmt: skip
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "0.png"), np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(SecretError, match="world-readable"):
        Daemon(config, source=str(frames), pipeline=FakePipeline()).run()
    status = read_status(tmp_path / "run")
    assert status["state"] == "failed" and "chmod 600" in status["last_error"]
    assert stat.S_IMODE(secret.stat().st_mode) == 0o644  # nothing changed behind the user


def test_the_state_is_due_on_a_change_or_at_the_interval():
    pacer = Pacer(state_interval_s=5.0, events_hz=None)
    assert pacer.state_due(0.0, ("happy", None))
    pacer.state_sent(0.0, ("happy", None))
    assert not pacer.state_due(4.9, ("happy", None))
    assert pacer.state_due(1.0, ("sad", None))  # a new emotion
    assert pacer.state_due(1.0, ("happy", "calm"))  # a new mood
    assert pacer.state_due(5.0, ("happy", None))  # the interval
    pacer.force()
    assert pacer.state_due(0.1, ("happy", None))  # a new connection
    assert not pacer.event_due(100.0, 7)  # events off


def test_events_are_rate_capped_and_only_for_new_frames():
    pacer = Pacer(state_interval_s=1.0, events_hz=10.0)
    sent = []
    t = 0.0
    frames = 0
    while t < 2.0:  # 60 fps of frames, polled every 5 ms
        frames = int(t * 60)
        if pacer.event_due(t, frames):
            pacer.event_sent(t, frames)
            sent.append(t)
        t = round(t + 0.005, 3)
    gaps = np.diff(sent)
    assert len(sent) == 20 and gaps.min() >= 0.1 - 1e-9
    assert not pacer.event_due(100.0, int(sent[-1] * 60))  # no new frame: nothing to send


def test_a_press_for_the_same_song_counts_once():
    now = [0.0]
    gate = PressGate(clock=lambda: now[0])
    assert not gate.duplicate("like", "spotify:track:a")
    gate.accepted("like", "spotify:track:a")
    now[0] = 1.0
    assert gate.duplicate("like", "spotify:track:a")  # redelivered, or pressed twice
    assert not gate.duplicate("skip", "spotify:track:a")  # another action
    assert not gate.duplicate("like", "spotify:track:b")  # another song
    now[0] = SAME_SONG_S + 1
    assert not gate.duplicate("like", "spotify:track:a")  # the song came round again
    gate.accepted("skip", None)  # no song known
    now[0] += UNKNOWN_SONG_S - 1
    assert gate.duplicate("skip", None)
    now[0] += 2
    assert not gate.duplicate("skip", None)


class FakeMusic:
    def __init__(self) -> None:
        self.enabled = True
        self.pressed: list[str] = []

    def press(self, action: str, source: str = "gpio") -> dict:
        assert source == "mqtt"
        self.pressed.append(action)
        return {"uri": "spotify:track:x", "action": action}

    def set_enabled(self, on: bool) -> None:
        self.enabled = on


def test_commands_take_the_music_path_and_junk_is_ignored(caplog):
    music, song = FakeMusic(), ["spotify:track:x"]
    commands = Commands(music, current_song=lambda: song[0], clock=lambda: 0.0)
    assert commands.handle(b"like") == "like"
    assert commands.handle(b"  Like\n") == "duplicate"
    assert commands.handle(b"skip") == "skip"
    song[0] = "spotify:track:y"  # the skip moved on: a new song
    assert commands.handle(b"skip") == "skip"
    assert commands.handle(b"music   OFF") == "music off" and music.enabled is False
    assert commands.handle(b"music off") == "music off" and music.enabled is False  # idempotent
    assert commands.handle(b"\xff\xfejunk") == "ignored"
    assert commands.handle(b"like", retained=True) == "ignored"
    assert music.pressed == ["like", "skip", "skip"]
    with caplog.at_level(logging.WARNING):
        for _ in range(20):
            commands.handle(b"flood")
    assert len(caplog.records) <= 5  # bounded, not one line per junk message
    assert Commands(None).handle(b"like") == "ignored"  # music off in the config


def test_discovery_without_music_withdraws_the_buttons_and_switch():
    topics = Topics("emotion-appliance", "pi", "homeassistant")
    with_music = dict(discovery_messages(topics, music=True, version="1.0"))
    without = dict(discovery_messages(topics, music=False, version="1.0"))
    assert set(with_music) == set(without)
    assert len([t for t in with_music if "/sensor/" in t]) == 6
    for topic in ("homeassistant/button/pi/like/config", "homeassistant/button/pi/skip/config",
                  "homeassistant/switch/pi/music/config"):  # fmt: skip
        assert json.loads(with_music[topic])["command_topic"] == "emotion-appliance/pi/command"
        assert without[topic] == ""  # an empty retained config deletes the entity
    assert discovery_messages(Topics("e", "pi", ""), music=True, version="1") == []


def test_the_state_message_carries_the_status_words():
    result = FrameResult(
        3, 1.5, [], AffectState(1.5, "uncertain", 0.3, 0.9, {}, valence=float("nan"), arousal=0.1)
    )
    view = BoardView("running", 4, 4, result, None, None)
    status = {"state": "running", "mood": "calm", "queue_depth": 2,
              "now_playing": {"artist": "A", "name": "B", "uri": "u", "extra": 1}}  # fmt: skip
    state = build_state("pi", view, status, ("WARNING", "Spotify login needed"), True, 10.0)
    assert state["emotion"] == "uncertain" and state["valence"] is None  # NaN is not JSON
    assert state["now_playing"] == {"artist": "A", "name": "B", "uri": "u"}
    assert (state["status"], state["status_reason"]) == ("WARNING", "Spotify login needed")
    json.dumps(state, allow_nan=False)
    empty = build_state("pi", None, None, ("UNKNOWN", "no daemon status"), None, 0.0)
    assert empty["emotion"] is None and empty["face"] is False and empty["queue_depth"] == 0


def test_the_fleet_collector_keeps_to_its_topics_and_bounds():
    fleet = FleetCollector("emotion-appliance")
    fleet.add("emotion-appliance/pi/state", b'{"t": 1, "emotion": "sad"}')
    fleet.add("emotion-appliance/pi/availability", b"offline")
    fleet.add("emotion-appliance/x/y/state", b"{}")
    fleet.add("other/pi/state", b"{}")
    fleet.add("emotion-appliance/big/state", b"{" * 100_000)
    fleet.add("emotion-appliance/deep/state", b"[" * 100_000)
    table = rows(fleet.seen, now=11.0)
    assert [r["id"] for r in table] == ["big", "deep", "pi"]
    assert table[2] == {"id": "pi", "online": False, "emotion": "sad", "mood": None,
                        "playing": None, "status": None, "age_s": 10.0}  # fmt: skip
    assert table[0]["status"] == "state too large"
    assert "sad" in format_rows(table)


def test_a_link_down_is_a_warning_in_status():
    snapshot = {"state": "running", "updated_at": time.time(),
                "mqtt": {"state": "down", "error": "b:1883 refused the login"}}  # fmt: skip
    assert assess(snapshot, 10) == (WARNING, "MQTT link down: b:1883 refused the login")
    snapshot["mqtt"] = {"state": "connecting", "error": None}
    assert assess(snapshot, 10)[0] == OK
