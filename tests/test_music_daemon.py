"""The whole appliance with music: `run` queues songs from the catalog as the mood goes,
and the sync worker pushes them to a (local, fake) Spotify. Real processes, real files."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from fake_spotify import CLIENT_SECRET, FakeSpotify
from support import FIXTURE_FACES, ROOT, cli_settings, load_tool, requires_models
from test_spotify import REDIRECT

from appliance.music.spotify import SpotifyPlayer

make_face_clip = load_tool("make_face_clip")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "faces.mp4"
    make_face_clip.compose(
        make_face_clip.list_faces(FIXTURE_FACES)[::5], path, frames_per_face=8, seed=5
    )
    return path


def settings(tmp_path, fake: FakeSpotify | None) -> list[str]:
    pairs = [
        "service.status_interval_s=0.2",
        "music.min_interval_s=0",
        "music.mood_hold_s=0",
        "music.queue_low=3",
    ]
    if fake is not None:
        secret = tmp_path / "secret"
        secret.write_text(CLIENT_SECRET)
        secret.chmod(0o600)
        s = fake.settings()
        pairs += [
            f"spotify.client_id={s.client_id}",
            f"spotify.client_secret_file={secret}",
            f"spotify.api_base={s.api_base}",
            f"spotify.token_url={s.token_url}",
            "spotify.poll_s=0.2",
        ]
    return cli_settings(tmp_path, *pairs)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
    )  # fmt: skip


def run_until(args: list[str], clip, done, timeout: float = 60.0) -> dict:
    """Run the daemon on the looping clip until done(status) or timeout; SIGTERM it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "run", "--source", str(clip), "--loop", "--quiet",
         *args],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    status: dict = {}
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            reply = cli("status", "--json", *args)
            status = (json.loads(reply.stdout) if reply.stdout else {}).get("status") or {}
            if done(status):
                break
            time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, proc.stderr.read()
    return status


def import_catalog(args: list[str], tmp_path) -> None:
    from test_music import write_minimal

    write_minimal(tmp_path / "tracks.csv", n=80)
    result = cli("catalog", "import", str(tmp_path / "tracks.csv"), *args)
    assert result.returncode == 0, result.stderr
    assert "80 tracks added" in result.stdout


@requires_models
def test_songs_are_queued_and_synced_to_spotify(tmp_path, clip):
    fake = FakeSpotify()
    try:
        args = settings(tmp_path, fake)
        import_catalog(args, tmp_path)
        SpotifyPlayer(fake.settings(), tmp_path / "state", client_secret=CLIENT_SECRET)\
            .complete_login(REDIRECT)  # fmt: skip
        status = run_until(
            args, clip, lambda s: s.get("songs_sent", 0) >= 2 and s.get("queue_depth", 0) >= 3
        )
        assert status["spotify"] == "online" and status["songs_sent"] == 2
        # nothing plays: the other songs wait here, music.queue_ahead (2) on Spotify
        assert len(fake.state.player_queue) == 2 and status["queue_depth"] >= 3
        assert status["mood"] in {"happy", "energetic", "calm", "sad"}
        assert status["last_song"]["uri"].startswith("spotify:track:")
        db = sqlite3.connect(tmp_path / "state" / "appliance.db")
        rows = db.execute("SELECT uri, state FROM queue ORDER BY id").fetchall()
        sent = [uri for uri, state in rows if state == "sent"]
        assert fake.state.player_queue[: len(sent)] == sent  # same order, none twice
        assert len(set(fake.state.player_queue)) == len(fake.state.player_queue)
    finally:
        fake.close()


@requires_models
def test_without_spotify_the_queue_stays_local_and_status_says_so(tmp_path, clip):
    args = settings(tmp_path, None)
    import_catalog(args, tmp_path)
    status = run_until(args, clip, lambda s: s.get("queue_depth", 0) >= 3)
    assert status["spotify"] == "local only" and status["queue_depth"] >= 3
    text = cli("status", *args).stdout
    assert "local only" in text and "mood" in text
    db = sqlite3.connect(tmp_path / "state" / "appliance.db")
    assert {s for (s,) in db.execute("SELECT state FROM queue")} == {"recommended"}


@requires_models
def test_without_a_catalog_the_appliance_runs_and_says_what_to_do(tmp_path, clip):
    args = settings(tmp_path, None)
    status = run_until(args, clip, lambda s: s.get("music", "starting") != "starting", 30)
    assert status["frames"] > 0 and "catalog import" in status["music"]


@requires_models
def test_a_missing_spotify_secret_stops_run_with_exit_2(tmp_path, clip):
    """It logged "Spotify disabled" and the run went on to exit 0: a file a person must
    fix is a configuration error, as the VLM key is (systemd does not restart on 2)."""
    fake = FakeSpotify()
    try:
        args = settings(tmp_path, fake)
        (tmp_path / "secret").unlink()
        result = cli("run", "--source", str(clip), "--max-frames", "5", "--quiet", *args)
    finally:
        fake.close()
    assert result.returncode == 2, result.stderr
    assert "Spotify client secret file not found" in result.stderr
    assert "Traceback" not in result.stderr


@requires_models
def test_the_owner_controls_a_running_daemon_from_the_shell(tmp_path, clip):
    """`queue`, `skip` and `like` beside a running daemon: what waits and plays, a skip
    run by the daemon on Spotify after it was stored, and never more than queue_ahead
    of our songs waiting on Spotify."""
    fake = FakeSpotify()
    proc = None
    try:
        args = settings(tmp_path, fake)
        import_catalog(args, tmp_path)
        SpotifyPlayer(fake.settings(), tmp_path / "state", client_secret=CLIENT_SECRET)\
            .complete_login(REDIRECT)  # fmt: skip
        proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", "run", "--source", str(clip), "--loop",
             "--quiet", *args],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while len(fake.state.player_queue) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        first = fake.play()
        assert first is not None, "nothing was pushed"
        while time.monotonic() < deadline:  # the daemon has heard it play
            status = json.loads(cli("status", "--json", *args).stdout)["status"] or {}
            if (status.get("now_playing") or {}).get("uri") == first:
                break
            time.sleep(0.2)
        report = json.loads(cli("queue", "--json", *args).stdout)
        assert report["daemon"] == "running" and report["playing"]["uri"] == first
        assert sum(s["state"] in ("sent", "sending") for s in report["songs"]) <= 2
        skipped = cli("skip", *args)
        assert skipped.returncode == 0, skipped.stderr
        assert "(stored); done: Spotify skipped to the next track" in skipped.stdout
        assert fake.state.next_calls == 1 and fake.state.playing != first
        liked = cli("like", *args)
        assert liked.returncode == 0 and "(stored)" in liked.stdout
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        assert proc.returncode == 0, proc.stderr.read()
        assert "Traceback" not in proc.stderr.read()
        assert fake.state.pushed_while_queued == []
        db = sqlite3.connect(tmp_path / "state" / "appliance.db")
        rows = db.execute("SELECT uri, action, source FROM feedback ORDER BY id").fetchall()
        assert [r[1:] for r in rows] == [("skip", "cli"), ("like", "cli")]
        assert rows[0][0] == first
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        fake.close()
