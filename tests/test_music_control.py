"""The owner in control from a shell: `queue [--json]`, `queue clear`, `like`, `skip`.

Presses from the shell take the buttons' path (committed first); a skip's next-track is
run by the daemon's sync worker, which reports in status what it did."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from fake_spotify import FakeSpotify, web_api_error
from support import ROOT, cli_settings
from test_spotify import logged_in, outbox_states, queue_songs, run_rounds

from appliance.common.process import identity
from appliance.config import load_config
from appliance.music import control
from appliance.music.feedback import REMOTE_SOURCE, FeedbackRecorder
from appliance.music.outbox import CLEARED
from appliance.music.sync import SyncWorker
from appliance.service.status import write_status
from appliance.store.database import open_database


@pytest.fixture
def fake():
    server = FakeSpotify()
    yield server
    server.close()


def cli(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args, *cli_settings(tmp_path)],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )  # fmt: skip


def config_for(tmp_path):
    return load_config(
        None,
        [f"storage.state_dir={tmp_path / 'state'}", f"service.runtime_dir={tmp_path / 'run'}"],
        default_path=tmp_path / "none.toml",
    )


def set_states(tmp_path, states: list[str]) -> None:
    db = open_database(tmp_path / "state")
    try:
        for i, state in enumerate(states, start=1):
            db.execute(
                "UPDATE queue SET state = ?, updated_at = ? WHERE id = ?", [state, time.time(), i]
            )
        db.conn.commit()
    finally:
        db.conn.close()


def daemon_status(tmp_path, **fields) -> None:
    """A status file as a running daemon (this process) writes it."""
    write_status(
        tmp_path / "run",
        {
            **identity(),
            "state": "running",
            "updated_at": time.time(),
            "updated_monotonic": time.monotonic(),
            "spotify": "online",
            **fields,
        },
    )


def feedback_rows(tmp_path) -> list[tuple]:
    db = open_database(tmp_path / "state")
    try:
        return db.execute("SELECT uri, action, source FROM feedback ORDER BY id").fetchall()
    finally:
        db.conn.close()


def test_queue_shows_what_plays_what_is_sent_and_what_waits_with_times(tmp_path):
    songs = queue_songs(tmp_path / "state", tmp_path, 4)
    set_states(tmp_path, ["played", "sent", "sending", "recommended"])
    shown = cli(tmp_path, "queue", "--json")
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["daemon"] == "not running" and report["playing"] is None
    assert report["last_seen_playing"]["uri"] == songs[0]["uri"]
    assert [(s["uri"], s["state"]) for s in report["songs"]] == [
        (songs[1]["uri"], "sent"),
        (songs[2]["uri"], "sending"),
        (songs[3]["uri"], "recommended"),
    ]
    assert all(s["queued_at"] > 0 and s["updated_at"] > 0 for s in report["songs"])
    text = cli(tmp_path, "queue").stdout
    assert "no daemon running; last seen playing at" in text
    lines = text.splitlines()
    assert lines[1].startswith("sent") and songs[1]["name"] in lines[1]
    assert lines[3].startswith("waiting") and songs[3]["name"] in lines[3]
    assert "1 sent, 1 sending, 1 waiting here" in lines[-1]


def test_queue_shows_what_the_running_daemon_hears_spotify_play(tmp_path):
    queue_songs(tmp_path / "state", tmp_path, 1)
    playing = {"uri": "spotify:track:" + "p" * 22, "name": "Now", "artist": "Band"}
    daemon_status(tmp_path, now_playing=playing, songs_maybe_twice=1)
    report = control.queue_report(config_for(tmp_path))
    assert report["daemon"] == "running" and report["playing"] == playing
    assert report["spotify"] == "online" and report["songs_maybe_twice"] == 1
    text = control.format_queue(report)
    assert text.splitlines()[0] == "playing  Band - Now  (Spotify)"
    assert "1 may have played twice" in text


def test_queue_clear_withdraws_the_unsent_songs_and_keeps_the_history(tmp_path):
    songs = queue_songs(tmp_path / "state", tmp_path, 3)
    set_states(tmp_path, ["sent", "recommended", "recommended"])
    FeedbackRecorder(str(tmp_path / "state"), "default").press("like")
    cleared = cli(tmp_path, "queue", "clear")
    assert cleared.returncode == 0, cleared.stderr
    assert "2 song(s) not sent yet withdrawn" in cleared.stdout
    assert "1 already on Spotify's queue stay there" in cleared.stdout
    db = open_database(tmp_path / "state")
    try:
        rows = db.execute("SELECT uri, state, error FROM queue ORDER BY id").fetchall()
    finally:
        db.conn.close()
    assert rows == [
        (songs[0]["uri"], "sent", None),
        (songs[1]["uri"], "skipped", CLEARED),
        (songs[2]["uri"], "skipped", CLEARED),
    ]
    assert feedback_rows(tmp_path) == [(songs[0]["uri"], "like", "gpio")]  # untouched


def test_a_withdrawn_song_is_never_pushed(fake, tmp_path):
    """`queue clear` runs beside the daemon: a row it withdraws between the worker's
    reading of the due songs and its push must not go out."""
    state = tmp_path / "state"
    queue_songs(state, tmp_path, 2)
    worker = SyncWorker(str(state), logged_in(fake, state), poll_s=1.0)
    control.clear_queue(config_for(tmp_path))
    run_rounds(worker, state)
    assert fake.state.player_queue == [] and outbox_states(state) == ["skipped", "skipped"]


def test_like_and_skip_from_the_shell_are_stored_without_a_daemon(tmp_path):
    songs = queue_songs(tmp_path / "state", tmp_path, 2)
    set_states(tmp_path, ["sent", "recommended"])
    liked = cli(tmp_path, "like")
    assert liked.returncode == 0, liked.stderr
    song = f"{songs[0]['artist']} - {songs[0]['name']}"
    assert liked.stdout.strip() == f"like: {song} (stored)"
    skipped = cli(tmp_path, "skip")
    assert skipped.returncode == 0, skipped.stderr
    assert "no daemon is running, so Spotify was not asked to skip" in skipped.stdout
    assert feedback_rows(tmp_path) == [
        (songs[0]["uri"], "like", REMOTE_SOURCE),
        (songs[0]["uri"], "skip", REMOTE_SOURCE),
    ]
    assert outbox_states(tmp_path / "state") == ["skipped", "recommended"]


def test_a_press_with_no_song_known_stores_nothing_and_says_so(tmp_path):
    result = cli(tmp_path, "like")
    assert result.returncode == 1 and "no song known yet" in result.stdout
    assert "Traceback" not in result.stderr


def test_skip_from_the_shell_is_run_by_the_daemons_sync_worker(fake, tmp_path):
    """Committed first, then Spotify: the shell stores the skip; the running daemon's
    sync worker asks Spotify for the next track and says so in status, which the
    command waits for. Here the daemon is a sync worker and a status writer."""
    state = tmp_path / "state"
    songs = queue_songs(state, tmp_path, 2)
    worker = SyncWorker(str(state), logged_in(fake, state), poll_s=1.0)
    run_rounds(worker, state)  # both sent
    fake.play()
    run_rounds(worker, state)  # the first is playing
    daemon_status(tmp_path, **worker.snapshot())
    rounds = []

    def daemon_round(_seconds: float) -> None:  # while `skip` waits: one poll, one status
        rounds.append(1)
        run_rounds(worker, state)
        daemon_status(tmp_path, **worker.snapshot())

    stored, text = control.press(config_for(tmp_path), "skip", sleep=daemon_round)
    assert stored and len(rounds) == 1
    assert text.startswith(f"skip: Artist - Song {songs[0]['uri'][-4:]} (stored)")
    assert text.endswith("done: Spotify skipped to the next track")
    assert fake.state.next_calls == 1 and fake.state.playing == songs[1]["uri"]
    assert feedback_rows(tmp_path) == [(songs[0]["uri"], "skip", REMOTE_SOURCE)]


def test_a_skip_from_the_shell_that_waited_out_an_outage_is_dropped(fake, tmp_path):
    state = tmp_path / "state"
    queue_songs(state, tmp_path, 1)
    wall = [time.time()]
    worker = SyncWorker(str(state), logged_in(fake, state), poll_s=1.0, wall_clock=lambda: wall[0])
    run_rounds(worker, state)
    row = FeedbackRecorder(str(state), "default", source=REMOTE_SOURCE).press("skip")
    wall[0] += 60  # Spotify was out of reach meanwhile
    run_rounds(worker, state)
    assert fake.state.next_calls == 0
    report = worker.snapshot()["remote_skip"]
    assert report["id"] == row["id"] and report["result"].startswith("dropped")


def test_a_skip_from_the_shell_that_spotify_refuses_is_reported(fake, tmp_path):
    state = tmp_path / "state"
    queue_songs(state, tmp_path, 1)
    worker = SyncWorker(str(state), logged_in(fake, state), poll_s=1.0)
    run_rounds(worker, state)
    row = FeedbackRecorder(str(state), "default", source=REMOTE_SOURCE).press("skip")
    fake.fail("/v1/me/player/next", 403, body=web_api_error(403, "Restriction violated"))
    run_rounds(worker, state)
    assert worker.state == "online"  # about that press only
    report = worker.snapshot()["remote_skip"]
    assert report == {"id": row["id"], "result": report["result"]}
    assert "refused by Spotify" in report["result"] and "Restriction" in report["result"]
    run_rounds(worker, state)  # handled once
    assert fake.state.requests.count(("POST", "/v1/me/player/next")) == 1


def test_old_skips_from_the_shell_are_not_replayed_when_the_daemon_starts(fake, tmp_path):
    state = tmp_path / "state"
    queue_songs(state, tmp_path, 1)
    FeedbackRecorder(str(state), "default", source=REMOTE_SOURCE).press("skip")
    worker = SyncWorker(
        str(state), logged_in(fake, state), poll_s=1.0, wall_clock=lambda: time.time() + 3600
    )
    run_rounds(worker, state)
    assert fake.state.next_calls == 0


def test_a_stale_or_dead_daemon_status_counts_as_no_daemon(tmp_path):
    queue_songs(tmp_path / "state", tmp_path, 1)
    daemon_status(tmp_path, pid=2**22 + 12345)  # no such process
    assert control.running_daemon(config_for(tmp_path)) is None
    daemon_status(tmp_path, state="stopped")
    assert control.running_daemon(config_for(tmp_path)) is None
    daemon_status(tmp_path)
    assert control.running_daemon(config_for(tmp_path)) is not None
