"""Like/skip buttons (gpiozero MockFactory) and the durable feedback they record."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from gpiozero import Button
from gpiozero.pins.mock import MockFactory, MockPWMPin
from support import ROOT

from appliance.config.schema import GpioConfig, MusicConfig, parse_rgb_pins
from appliance.hardware.gpio import FeedbackPanel
from appliance.music.catalog import import_catalog, load_moods
from appliance.music.feedback import FeedbackRecorder
from appliance.music.outbox import Outbox
from appliance.music.recommender import Recommender
from appliance.store.database import open_database


@pytest.fixture
def factory():
    pins = MockFactory(pin_class=MockPWMPin)
    yield pins
    pins.reset()


@pytest.fixture
def songs(tmp_path):
    """A catalog and two songs in the outbox, the first already sent to the player."""
    from test_music import write_minimal

    state = tmp_path / "state"
    db = open_database(state)
    try:
        write_minimal(tmp_path / "t.csv", n=40)
        import_catalog(db, tmp_path / "t.csv")
        picks = Recommender(db, load_moods(db, k=4), MusicConfig()).recommend(
            0.5, 0.5, user="ana", n=2
        )
        outbox = Outbox(db)
        first = outbox.add(picks[0], "ana")
        outbox.add(picks[1], "ana")
        outbox.set_state(first, "sent")
    finally:
        db.conn.close()
    return state, picks


def feedback_rows(state) -> list[tuple]:
    db = open_database(state)
    try:
        return db.execute("SELECT user, uri, artist, action, source FROM feedback").fetchall()
    finally:
        db.conn.close()


def test_buttons_record_like_and_skip_of_the_song_playing(factory, songs):
    state, picks = songs
    nexts = []
    recorder = FeedbackRecorder(str(state), "ana", request_next=lambda: nexts.append(1))
    panel = FeedbackPanel(
        GpioConfig(bounce_s=0.0),
        lambda: recorder.press("like"),
        lambda: recorder.press("skip"),
        pin_factory=factory,
    )
    try:
        assert panel.available
        like, skip = factory.pin(17), factory.pin(27)
        like.drive_low()  # pressed: pulled to ground
        like.drive_high()
        skip.drive_low()
        skip.drive_high()
        deadline = time.monotonic() + 5
        while len(feedback_rows(state)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        panel.close()
    main_artist = picks[0].artist  # minimal catalog: artist == main artist
    assert feedback_rows(state) == [
        ("ana", picks[0].uri, main_artist, "like", "gpio"),
        ("ana", picks[0].uri, main_artist, "skip", "gpio"),
    ]
    assert nexts == [1]  # skip asks Spotify for the next track
    db = open_database(state)
    try:
        assert db.execute("SELECT state FROM queue ORDER BY id").fetchall() == [
            ("skipped",),
            ("recommended",),
        ]
    finally:
        db.conn.close()


def test_press_means_spotifys_now_playing_when_known(songs):
    state, picks = songs
    playing = {"uri": picks[1].uri, "name": picks[1].name, "artist": "Someone, Else"}
    recorder = FeedbackRecorder(str(state), "ana", now_playing=lambda: playing)
    row = recorder.press("like")
    assert row["uri"] == picks[1].uri and row["artist"] == picks[1].artist


def test_press_with_no_song_known_stores_nothing(tmp_path):
    recorder = FeedbackRecorder(str(tmp_path / "state"), "ana")
    assert recorder.press("like") is None
    with pytest.raises(ValueError):
        recorder.press("love")


def test_leds_show_sync_state_and_mood(factory):
    panel = FeedbackPanel(
        GpioConfig(led_pin=22, rgb_pins="5,6,13"), lambda: None, lambda: None, pin_factory=factory
    )
    try:
        panel.show_sync("online")
        assert factory.pin(22).state == 1
        panel.show_sync("local only")
        assert factory.pin(22).state == 0
        for failing in ("offline", "login needed", "error"):  # error: e.g. Premium required
            panel.show_sync("local only")
            since = len(factory.pin(22).states)
            panel.show_sync(failing)
            time.sleep(0.5)  # blink: 0.2 s on, then off
            assert [s.state for s in factory.pin(22).states[since:]][:2] == [1, 0], failing
        panel.show_mood("sad")
        assert (factory.pin(5).state, factory.pin(13).state) == (0.0, 1.0)
        panel.show_mood("calm")
        assert factory.pin(6).state == pytest.approx(0.8)
    finally:
        panel.close()


def test_no_gpio_hardware_disables_buttons_without_crashing(caplog):
    caplog.set_level(logging.INFO)
    panel = FeedbackPanel(GpioConfig(), lambda: None, lambda: None)
    if panel.available:
        panel.close()
        pytest.skip("this machine has GPIO pins")
    assert "no GPIO here" in panel.reason
    panel.show_sync("online")  # harmless
    panel.show_mood("happy")
    panel.close()
    assert len([r for r in caplog.records if "GPIO buttons disabled" in r.message]) == 1
    off = FeedbackPanel(GpioConfig(enabled=False), lambda: None, lambda: None)
    assert not off.available and off.reason == "disabled in config"


def test_rgb_pins_parsing():
    assert parse_rgb_pins("") is None
    assert parse_rgb_pins("5,6,13") == (5, 6, 13)
    for bad in ("5,6", "a,b,c", "0,6,13", "5,6,40"):
        with pytest.raises(ValueError, match=r"gpio\.rgb_pins"):
            parse_rgb_pins(bad)


def test_acknowledged_presses_survive_sigkill_during_heavy_writes(songs):
    """A child presses like as fast as it can (printing each acknowledgement) while a
    thread floods the same database with samples; SIGKILL it mid-way."""
    state, _ = songs
    child = textwrap.dedent(
        f"""
        import sys, threading, json
        sys.path.insert(0, {str(ROOT)!r})
        from appliance.music.feedback import FeedbackRecorder
        from appliance.store.database import open_database
        def flood():
            db = open_database({str(state)!r})
            row = dict(t_wall=0, t_stream=0, emotion="happy", confidence=1, face_presence=1,
                       probs="{{}}", faces=1, source="x")
            while True:
                with db.conn:
                    db["affect_samples"].insert_all([row] * 200)
        threading.Thread(target=flood, daemon=True).start()
        recorder = FeedbackRecorder({str(state)!r}, "ana", source="test")
        i = 0
        while True:
            recorder.press("like")
            i += 1
            print(i, flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    acked = 0
    deadline = time.monotonic() + 30
    while acked < 25 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acked = int(line)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert acked >= 25, "the child did not get going"
    stored = [r for r in feedback_rows(state) if r[4] == "test"]
    assert len(stored) >= acked  # every acknowledged press is on disk


def test_a_skip_is_stored_with_its_queue_mark_or_not_at_all(songs):
    """The feedback row and the 'skipped' mark are one transaction: before, sqlite-utils 4
    committed the insert on its own, so a failed mark left a skip the queue never saw."""
    from appliance.store.database import StoreError

    state, _ = songs
    db = open_database(state)
    try:
        db.execute(
            "CREATE TRIGGER no_skips BEFORE UPDATE ON queue"
            " BEGIN SELECT RAISE(ABORT, 'disk I/O error (simulated)'); END"
        )
    finally:
        db.conn.close()
    recorder = FeedbackRecorder(str(state), "ana")
    with pytest.raises(StoreError, match="cannot store the skip"):
        recorder.press("skip")
    assert feedback_rows(state) == []


def test_a_failure_reading_the_current_song_is_a_store_error(songs):
    """The GPIO handler logs "not stored" for StoreError only; a raw sqlite3 error from
    looking up the song escaped it and the press was lost without a word."""
    from appliance.store.database import StoreError

    state, picks = songs
    db = open_database(state)
    try:
        db.execute("DROP TABLE tracks")  # a damaged database
    finally:
        db.conn.close()
    playing = {"uri": picks[0].uri, "name": picks[0].name, "artist": "Someone"}
    recorder = FeedbackRecorder(str(state), "ana", now_playing=lambda: playing)
    with pytest.raises(StoreError, match="no such table"):
        recorder.press("like")


class LgpioError(Exception):
    """Like lgpio.error: a bare Exception subclass that gpiozero 2.0.1 does not wrap."""


def busy_factory(busy: int) -> MockFactory:
    """A MockFactory whose pin `busy` is held by another program (lgpio's 'GPIO busy')."""

    class BusyPin(MockPWMPin):
        def __init__(self, factory, info):
            if info.name == f"GPIO{busy}":
                raise LgpioError("GPIO busy")
            super().__init__(factory, info)

    return MockFactory(pin_class=BusyPin)


BUSY_KEYS = [
    (17, "gpio.like_pin"),
    (27, "gpio.skip_pin"),
    (22, "gpio.led_pin"),
    (13, "gpio.rgb_pins"),
]


@pytest.mark.parametrize(("busy", "key"), BUSY_KEYS)
def test_a_busy_pin_turns_buttons_off_with_one_warning_naming_the_key(caplog, busy, key):
    """lgpio's own error escaped the panel and crashed the daemon into a restart loop."""
    caplog.set_level(logging.INFO)
    factory = busy_factory(busy)
    try:
        panel = FeedbackPanel(
            GpioConfig(led_pin=22, rgb_pins="5,6,13"), lambda: None, lambda: None,
            pin_factory=factory,
        )  # fmt: skip
        assert not panel.available and panel.failed_key == key
        assert key in panel.reason and "LgpioError: GPIO busy" in panel.reason
        panel.show_sync("offline")  # harmless without LEDs
        panel.show_mood("sad")
        panel.close()
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and key in warnings[0].getMessage()
        assert str(busy) in warnings[0].getMessage()
        # the pins claimed before the busy one were released
        Button(17 if busy != 17 else 27, pin_factory=factory).close()
    finally:
        factory.reset()


def test_a_busy_pin_leaves_the_music_stack_running(tmp_path, caplog):
    from appliance.config import load_config
    from appliance.music.stack import MusicStack

    config = load_config(
        None, [f"storage.state_dir={tmp_path / 'state'}", "music.enabled=true"],
        default_path=tmp_path / "none.toml",
    )  # fmt: skip
    factory = busy_factory(27)
    try:
        stack = MusicStack(config, pin_factory=factory)
        stack.tick(None)
        assert stack.snapshot()["buttons"].startswith("off: gpio.skip_pin = 27 could not")
        stack.stop()
    finally:
        factory.reset()


def test_doctor_fails_a_busy_pin_and_asks_a_running_daemon_first(tmp_path, monkeypatch):
    from gpiozero import Device

    from appliance.config import load_config
    from appliance.service import doctor
    from appliance.service.status import write_status

    config = load_config(
        None, [f"service.runtime_dir={tmp_path / 'run'}"], default_path=tmp_path / "none.toml"
    )
    factory = busy_factory(17)
    monkeypatch.setattr(Device, "pin_factory", factory)  # what FeedbackPanel gets by default
    try:
        check = doctor.check_gpio(config)
        assert check.status == "fail" and "gpio.like_pin = 17" in check.detail
        snapshot = {"state": "running", "pid": 4242, "updated_at": time.time()}
        write_status(tmp_path / "run", {**snapshot, "buttons": "ready"})
        check = doctor.check_gpio(config)  # the daemon holds the pins: not claimed again
        assert check.status == "pass" and "pid 4242" in check.detail
        write_status(tmp_path / "run", {**snapshot, "buttons": "off: " + "x could not be claimed"})
        assert doctor.check_gpio(config).status == "fail"
    finally:
        factory.reset()


def spotify_config(tmp_path):
    from appliance.config import load_config

    return load_config(
        None,
        [
            f"storage.state_dir={tmp_path / 'state'}",
            "music.enabled=true",
            "spotify.client_id=abc",
            f"spotify.client_secret_file={tmp_path / 'missing'}",
            "gpio.led_pin=22",
        ],
        default_path=tmp_path / "none.toml",
    )


def test_a_missing_spotify_secret_stops_the_start_as_a_configuration_error(tmp_path, factory):
    """It disabled Spotify and `run` went on to exit 0: a person must fix the file, so
    the start fails as for the VLM key (the CLI maps SecretError to exit 2)."""
    from appliance.config.secrets import SecretError
    from appliance.music.stack import MusicStack

    with pytest.raises(SecretError, match="not found"):
        MusicStack(spotify_config(tmp_path), pin_factory=factory)


def test_a_spotify_that_cannot_start_blinks_the_sync_led(tmp_path, factory, monkeypatch):
    """Status said "spotify": "error" while the LED stayed off (the worker, given no
    player, is "local only")."""
    from appliance.music import stack as stack_module
    from appliance.music.spotify import SpotifyError

    def cannot_start(*args, **kwargs):
        raise SpotifyError("Spotify could not start", transient=False)

    monkeypatch.setattr(stack_module, "SpotifyPlayer", cannot_start)
    stack = stack_module.MusicStack(spotify_config(tmp_path), pin_factory=factory)
    try:
        assert stack.snapshot()["spotify"] == "error"
        since = len(factory.pin(22).states)
        stack.tick(None)
        time.sleep(0.5)  # blink: 0.2 s on, then off
        assert [s.state for s in factory.pin(22).states[since:]][:2] == [1, 0]
    finally:
        stack.stop()
