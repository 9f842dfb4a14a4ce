"""Spotify through real spotipy against a local fake of the Web API; the sync worker."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_spotify import (
    AUTH_CODE,
    CLIENT_SECRET,
    PORTAL,
    FakeSpotify,
    oauth_error,
    web_api_error,
)
from support import ROOT, cli_settings

from appliance.config.schema import MusicConfig
from appliance.config.secrets import SecretError, read_secret
from appliance.music.catalog import import_catalog, load_moods
from appliance.music.director import MusicDirector
from appliance.music.outbox import Outbox
from appliance.music.recommender import Recommender
from appliance.music.spotify import SpotifyAuthError, SpotifyError, SpotifyPlayer
from appliance.music.sync import (
    EXPIRY_CHECK_S,
    NOW_PLAYING_FRESH_S,
    SETTLE_AFTER_S,
    SyncWorker,
)
from appliance.store.database import StoreError, open_database

REDIRECT = f"http://127.0.0.1:8888/callback?code={AUTH_CODE}&state=x"


@pytest.fixture
def fake():
    server = FakeSpotify()
    yield server
    server.close()


@pytest.fixture
def state_dir(tmp_path):
    return tmp_path / "state"


def player(fake, state_dir, **changes) -> SpotifyPlayer:
    return SpotifyPlayer(fake.settings(**changes), state_dir, client_secret=CLIENT_SECRET)


def logged_in(fake, state_dir, **changes) -> SpotifyPlayer:
    p = player(fake, state_dir, **changes)
    p.complete_login(REDIRECT)
    return p


def test_headless_login_caches_the_token_privately(fake, state_dir):
    p = player(fake, state_dir)
    url = p.authorize_url()
    assert url.startswith(f"{fake.base}/authorize?") and "client_id=test-client" in url
    assert "user-modify-playback-state" in url
    assert not p.logged_in()
    p.complete_login(REDIRECT)
    assert p.logged_in()
    mode = stat.S_IMODE(os.stat(p.cache.path).st_mode)
    assert mode == 0o600
    assert json.loads(p.cache.path.read_text())["refresh_token"] == "refresh-1"
    assert fake.state.token_grants == ["authorization_code"]


def test_login_with_a_bad_paste_or_code_is_a_clear_error(fake, state_dir):
    p = player(fake, state_dir)
    with pytest.raises(SpotifyAuthError, match="redirect URL"):
        p.complete_login("http://127.0.0.1:8888/callback")
    with pytest.raises(SpotifyAuthError, match="login"):
        p.complete_login("http://127.0.0.1:8888/callback?code=wrong")


def test_devices_queue_next_and_now_playing(fake, state_dir):
    p = logged_in(fake, state_dir, device_name="living ROOM")
    assert [d["name"] for d in p.devices()] == ["Kitchen", "Living room"]
    p.add_to_queue("spotify:track:" + "a" * 22)
    assert fake.state.queued_on == [("spotify:track:" + "a" * 22, "dev-living")]
    assert p.now_playing() is None  # 204: nothing playing
    p.next_track()
    playing = p.now_playing()
    assert playing["uri"] == "spotify:track:" + "a" * 22 and playing["artist"] == "Artist"


def test_unknown_device_is_transient(fake, state_dir):
    p = logged_in(fake, state_dir, device_name="Garage")
    with pytest.raises(SpotifyError, match="Garage") as info:
        p.add_to_queue("spotify:track:" + "a" * 22)
    assert info.value.transient


def test_401_refreshes_the_token_once_and_retries(fake, state_dir):
    p = logged_in(fake, state_dir)
    fake.revoke_access_tokens()  # the server says the access token expired
    assert p.devices()
    assert fake.state.token_grants == ["authorization_code", "refresh_token"]


def test_429_honours_retry_after_and_5xx_is_transient(fake, state_dir):
    p = logged_in(fake, state_dir)
    fake.fail("/v1/me/player/devices", 429, headers={"Retry-After": "7"})
    with pytest.raises(SpotifyError) as info:
        p.devices()
    assert info.value.transient and info.value.retry_after == 7.0
    fake.fail("/v1/me/player/devices", 503, body=b"<html>oops</html>")
    with pytest.raises(SpotifyError) as info:
        p.devices()
    assert info.value.transient and info.value.status == 503
    fake.fail("/v1/me/player/devices", 200, body=b"{not json")
    with pytest.raises(SpotifyError, match="malformed"):
        p.devices()
    assert p.devices()  # and then it works again


def test_403_is_permanent(fake, state_dir):
    p = logged_in(fake, state_dir)
    fake.fail("/v1/me/player/queue", 403, body=b'{"error": {"status": 403, "message": "Premium"}}')
    with pytest.raises(SpotifyError, match="Premium") as info:
        p.add_to_queue("spotify:track:" + "a" * 22)
    assert not info.value.transient


def test_unreachable_spotify_is_transient(fake, state_dir):
    p = logged_in(fake, state_dir)
    fake.close()
    with pytest.raises(SpotifyError, match="unreachable") as info:
        p.devices()
    assert info.value.transient


def test_not_logged_in_is_an_auth_error(fake, state_dir):
    with pytest.raises(SpotifyAuthError, match="spotify login"):
        player(fake, state_dir).devices()


def test_client_secret_file_must_not_be_world_readable(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    with pytest.raises(SecretError, match="world-readable"):
        read_secret(secret, "Spotify client secret")
    secret.chmod(0o600)
    assert read_secret(secret, "Spotify client secret") == "s3cret"
    with pytest.raises(SecretError, match="not found"):
        read_secret(tmp_path / "nope", "Spotify client secret")


# ------------------------------------------------------------------------ sync worker


def queue_songs(state_dir, tmp_path, n: int) -> list[dict]:
    from test_music import write_minimal

    db = open_database(state_dir)
    try:
        write_minimal(tmp_path / "tracks.csv", n=40)
        import_catalog(db, tmp_path / "tracks.csv")
        rec = Recommender(db, load_moods(db, k=4), MusicConfig())
        outbox = Outbox(db)
        picks = rec.recommend(0.5, 0.5, user="default", n=n)
        for p in picks:
            outbox.add(p, "default")
        return [p.to_json() for p in picks]
    finally:
        db.conn.close()


def outbox_states(state_dir) -> list[str]:
    db = open_database(state_dir)
    try:
        return [r[0] for r in db.execute("SELECT state FROM queue ORDER BY id").fetchall()]
    finally:
        db.conn.close()


def run_rounds(worker: SyncWorker, state_dir, rounds: int = 1) -> None:
    db = open_database(state_dir)
    try:
        for _ in range(rounds):
            worker.sync_once(Outbox(db))
    finally:
        db.conn.close()


def test_sync_pushes_in_order_once_and_marks_played(fake, state_dir, tmp_path):
    songs = queue_songs(state_dir, tmp_path, 3)
    worker = SyncWorker(str(state_dir), logged_in(fake, state_dir), poll_s=0.1, queue_ahead=3)
    run_rounds(worker, state_dir, rounds=3)
    assert fake.state.player_queue == [s["uri"] for s in songs]  # in order, no duplicates
    assert outbox_states(state_dir) == ["sent"] * 3
    assert worker.state == "online"
    fake.start_playing_next()
    fake.start_playing_next()  # the listener is on the 2nd song
    run_rounds(worker, state_dir)
    assert outbox_states(state_dir) == ["played", "played", "sent"]
    assert worker.now_playing["uri"] == songs[1]["uri"]


def test_only_queue_ahead_songs_go_to_spotify_the_rest_as_the_listener_reaches_them(
    fake, state_dir, tmp_path
):
    songs = queue_songs(state_dir, tmp_path, 3)
    worker = SyncWorker(str(state_dir), logged_in(fake, state_dir), poll_s=0.1)  # 2 ahead
    run_rounds(worker, state_dir, rounds=3)
    assert fake.state.player_queue == [s["uri"] for s in songs[:2]]
    assert outbox_states(state_dir) == ["sent", "sent", "recommended"]
    fake.play()  # song 1 starts: one of ours is left ahead, so the third one goes
    run_rounds(worker, state_dir, rounds=2)
    assert outbox_states(state_dir) == ["played", "sent", "sent"]
    assert fake.waiting() == [s["uri"] for s in songs]


def test_offline_keeps_songs_local_then_catches_up(fake, state_dir, tmp_path):
    songs = queue_songs(state_dir, tmp_path, 2)
    wall = [time.time()]
    worker = SyncWorker(
        str(state_dir), logged_in(fake, state_dir), poll_s=0.1, wall_clock=lambda: wall[0]
    )
    fake.fail("/v1/me/player/queue", 503, times=1)
    run_rounds(worker, state_dir)
    assert worker.state == "offline" and "503" in worker.last_error
    # a 5xx may come after Spotify acted: the push stays unknown until settled
    assert outbox_states(state_dir) == ["sending", "recommended"]
    run_rounds(worker, state_dir)  # too soon to tell: Spotify may not list it yet
    assert outbox_states(state_dir) == ["sending", "recommended"]
    assert fake.state.player_queue == []
    wall[0] += SETTLE_AFTER_S + 1
    run_rounds(worker, state_dir)
    assert fake.state.player_queue == [s["uri"] for s in songs]
    assert outbox_states(state_dir) == ["sent", "sent"]
    assert worker.state == "online" and worker.last_error is None


@pytest.mark.parametrize("status", [502, 504])
def test_a_lost_reply_does_not_queue_the_song_twice(fake, state_dir, tmp_path, status):
    songs = queue_songs(state_dir, tmp_path, 2)
    worker = SyncWorker(str(state_dir), logged_in(fake, state_dir), poll_s=0.1)
    # Spotify queues song 1, but the reply that says so is lost on the way back
    fake.fail("/v1/me/player/queue", status, after_acting=True)
    run_rounds(worker, state_dir)
    assert worker.state == "offline"
    assert fake.state.player_queue == [songs[0]["uri"]]
    run_rounds(worker, state_dir, rounds=2)
    assert fake.state.player_queue == [s["uri"] for s in songs]  # song 1 once
    assert outbox_states(state_dir) == ["sent", "sent"]


def test_an_online_worker_polls_spotify_every_poll_s_not_continuously(fake, state_dir):
    worker = SyncWorker(str(state_dir), logged_in(fake, state_dir), poll_s=0.5)
    worker.start()
    try:
        time.sleep(1.6)  # about three rounds at 0.5 s
    finally:
        worker.stop()
    assert worker.state == "online"
    polls = [r for r in fake.state.requests if r[1] == "/v1/me/player/currently-playing"]
    assert 2 <= len(polls) <= 5


def test_rate_limit_backoff_uses_retry_after(fake, state_dir, tmp_path):
    queue_songs(state_dir, tmp_path, 1)
    worker = SyncWorker(str(state_dir), logged_in(fake, state_dir), poll_s=0.1)
    fake.fail("/v1/me/player/queue", 429, headers={"Retry-After": "42"})
    before = time.monotonic()
    run_rounds(worker, state_dir)
    assert worker.status.resume_at - before == pytest.approx(42, abs=1)
    assert outbox_states(state_dir) == ["recommended"]


def test_refused_song_is_marked_failed_and_the_rest_go_on(fake, state_dir, tmp_path):
    songs = queue_songs(state_dir, tmp_path, 2)
    worker = SyncWorker(str(state_dir), logged_in(fake, state_dir), poll_s=0.1)
    fake.fail("/v1/me/player/queue", 400, body=b'{"error": {"status": 400, "message": "bad"}}')
    run_rounds(worker, state_dir)
    assert outbox_states(state_dir) == ["failed", "sent"]
    assert fake.state.player_queue == [songs[1]["uri"]]


def test_restart_settles_an_interrupted_push_without_sending_twice(fake, state_dir, tmp_path):
    songs = queue_songs(state_dir, tmp_path, 2)
    p = logged_in(fake, state_dir)
    # The previous process pushed song 1, then died before recording it; song 2's push
    # never happened. Both rows were left in 'sending'.
    p.add_to_queue(songs[0]["uri"])
    db = open_database(state_dir)
    db.execute("UPDATE queue SET state = 'sending'")
    db.conn.commit()
    db.conn.close()
    # the restarted process, SETTLE_AFTER_S later
    worker = SyncWorker(
        str(state_dir), p, poll_s=0.1, wall_clock=lambda: time.time() + SETTLE_AFTER_S + 1
    )
    run_rounds(worker, state_dir, rounds=2)
    assert fake.state.player_queue == [songs[0]["uri"], songs[1]["uri"]]
    assert outbox_states(state_dir) == ["sent", "sent"]
    # song 1, still queued ahead of where song 2 would be, proves song 2 never arrived
    assert worker.snapshot()["songs_maybe_twice"] == 0


def test_a_settle_reply_that_is_not_json_does_not_queue_the_song_twice(fake, state_dir, tmp_path):
    """A captive portal's 200 HTML page is no evidence that the queue is empty."""
    songs = queue_songs(state_dir, tmp_path, 1)
    worker = SyncWorker(str(state_dir), logged_in(fake, state_dir), poll_s=0.1)
    fake.fail("/v1/me/player/queue", 502, after_acting=True)  # the push: queued, reply lost
    fake.fail("/v1/me/player/queue", 200, body=b"<html>")  # the settle's GET
    run_rounds(worker, state_dir, rounds=2)
    assert fake.state.player_queue == [songs[0]["uri"]]  # not pushed again
    assert worker.state == "offline" and "malformed" in worker.last_error
    assert outbox_states(state_dir) == ["sending"]  # still unknown
    run_rounds(worker, state_dir)
    assert fake.state.player_queue == [songs[0]["uri"]]
    assert outbox_states(state_dir) == ["sent"]


def test_a_queue_reply_without_a_queue_is_transient(fake, state_dir):
    p = logged_in(fake, state_dir)
    fake.fail("/v1/me/player/queue", 200, body=b'{"currently_playing": null}')
    with pytest.raises(SpotifyError, match="malformed") as info:
        p.queue_view()
    assert info.value.transient
    assert p.queue_view().queued == ()


def expire_access_token(p: SpotifyPlayer) -> None:
    token = p.cache.get_cached_token()
    token["expires_at"] = 0
    p.cache.save_token_to_cache(token)


@pytest.mark.parametrize("status", [500, 503, 429])
def test_a_token_server_outage_is_offline_not_login_needed(fake, state_dir, status):
    p = logged_in(fake, state_dir)
    worker = SyncWorker(str(state_dir), p, poll_s=0.1)
    expire_access_token(p)
    fake.fail("/api/token", status, headers={"Retry-After": "30"})
    before = time.monotonic()
    run_rounds(worker, state_dir)
    assert worker.state == "offline" and str(status) in worker.last_error
    if status == 429:
        assert worker.status.resume_at - before == pytest.approx(30, abs=1)
    run_rounds(worker, state_dir)
    assert worker.state == "online"


def test_a_refused_refresh_token_needs_a_new_login(fake, state_dir):
    p = logged_in(fake, state_dir)
    worker = SyncWorker(str(state_dir), p, poll_s=0.1)
    expire_access_token(p)
    fake.fail("/api/token", 400, body=b'{"error": "invalid_grant"}')
    run_rounds(worker, state_dir)
    assert worker.state == "login needed" and "spotify login" in worker.last_error


PREMIUM_REQUIRED = json.dumps(
    {
        "error": {
            "status": 403,
            "message": "Player command failed: Premium required",
            "reason": "PREMIUM_REQUIRED",
        }
    }
).encode()


def test_spotify_free_is_an_account_error_and_the_songs_wait(fake, state_dir, tmp_path):
    """403 PREMIUM_REQUIRED is about the account: no song is failed, a long backoff."""
    songs = queue_songs(state_dir, tmp_path, 2)
    worker = SyncWorker(str(state_dir), logged_in(fake, state_dir), poll_s=0.1)
    fake.fail("/v1/me/player/queue", 403, body=PREMIUM_REQUIRED, times=2)
    before = time.monotonic()
    run_rounds(worker, state_dir)
    assert worker.snapshot()["spotify"] == "error"
    assert worker.last_error == "Spotify Premium is required to queue songs or skip"
    assert outbox_states(state_dir) == ["recommended", "recommended"]
    assert worker.status.resume_at - before >= 30 * 60 - 1
    run_rounds(worker, state_dir)  # still Free: still waiting, nothing failed
    assert outbox_states(state_dir) == ["recommended", "recommended"]
    run_rounds(worker, state_dir)  # upgraded
    assert outbox_states(state_dir) == ["sent", "sent"]
    assert fake.state.player_queue == [s["uri"] for s in songs]


def test_another_403_is_an_account_error_with_spotifys_message(fake, state_dir, tmp_path):
    queue_songs(state_dir, tmp_path, 1)
    worker = SyncWorker(str(state_dir), logged_in(fake, state_dir), poll_s=0.1)
    body = b'{"error": {"status": 403, "message": "Restriction violated"}}'
    fake.fail("/v1/me/player/queue", 403, body=body)
    before = time.monotonic()
    run_rounds(worker, state_dir)
    assert worker.state == "error" and "Restriction violated" in worker.last_error
    assert outbox_states(state_dir) == ["recommended"]
    assert worker.status.resume_at - before >= 300 - 1


RESTRICTED = b'{"error": {"status": 403, "message": "Restriction violated"}}'


def test_a_refused_skip_is_dropped_and_sync_goes_on(fake, state_dir, tmp_path, caplog):
    """A Premium account gets a plain 403 for next-track when nothing plays or skipping
    is disallowed: one press put sync in "error" for 5 min, the LED blinking."""
    songs = queue_songs(state_dir, tmp_path, 1)
    worker = SyncWorker(str(state_dir), logged_in(fake, state_dir), poll_s=0.1)
    fake.fail("/v1/me/player/next", 403, body=RESTRICTED, times=2)
    before = time.monotonic()
    with caplog.at_level(logging.INFO, logger="appliance.music.sync"):
        worker.request_next_track()
        run_rounds(worker, state_dir)
        worker.request_next_track()  # the same refusal again: not another warning
        run_rounds(worker, state_dir)
    assert worker.state == "online" and worker.last_error is None
    assert worker.status.resume_at < before  # no pause
    assert outbox_states(state_dir) == ["sent"]  # the round went on
    assert fake.state.player_queue == [songs[0]["uri"]]
    refusals = [
        r
        for r in caplog.records
        if r.name == "appliance.music.sync" and "Restriction violated" in r.getMessage()
    ]
    assert [r.levelno for r in refusals] == [logging.WARNING, logging.INFO]
    worker.request_next_track()  # Spotify allows it again
    run_rounds(worker, state_dir)
    assert fake.state.next_calls == 1


def test_a_skip_refused_for_spotify_free_is_the_account_error(fake, state_dir, tmp_path):
    """PREMIUM_REQUIRED is about the account whichever call meets it: a Free account
    cannot queue songs either, so the long pause; the skip itself is dropped."""
    queue_songs(state_dir, tmp_path, 1)
    worker = SyncWorker(str(state_dir), logged_in(fake, state_dir), poll_s=0.1)
    fake.fail("/v1/me/player/next", 403, body=PREMIUM_REQUIRED)
    before = time.monotonic()
    worker.request_next_track()
    run_rounds(worker, state_dir)
    # the message is not about adding to the queue, the call that did not fail
    assert worker.last_error == "Spotify Premium is required to queue songs or skip"
    assert worker.status.resume_at - before >= 30 * 60 - 1
    assert outbox_states(state_dir) == ["recommended"]  # not pushed into a refusal
    run_rounds(worker, state_dir)  # upgraded: the old press is not replayed
    assert worker.state == "online" and fake.state.next_calls == 0
    assert outbox_states(state_dir) == ["sent"]


def test_a_song_refused_three_times_fails_and_the_rest_flow(fake, state_dir, tmp_path):
    """A plain 403 on add-to-queue may be about that one song: retried forever, it held
    back every song queued behind it."""
    songs = queue_songs(state_dir, tmp_path, 2)
    worker = SyncWorker(str(state_dir), logged_in(fake, state_dir), poll_s=0.1)
    fake.fail("/v1/me/player/queue", 403, body=RESTRICTED, times=3)
    run_rounds(worker, state_dir, rounds=2)
    assert worker.state == "error"  # may be the account or device: wait and ask again
    assert outbox_states(state_dir) == ["recommended", "recommended"]
    run_rounds(worker, state_dir)  # the third refusal of the same song
    assert outbox_states(state_dir) == ["failed", "sent"]
    assert fake.state.player_queue == [songs[1]["uri"]]
    assert worker.state == "online"
    db = open_database(state_dir)
    try:
        error = db.execute("SELECT error FROM queue ORDER BY id").fetchone()[0]
    finally:
        db.conn.close()
    assert "Restriction violated" in error


def test_a_store_error_right_after_a_push_is_settled_later(fake, state_dir, tmp_path, monkeypatch):
    """A "database is locked" while recording `sent` must not leave the row `sending`."""
    songs = queue_songs(state_dir, tmp_path, 1)
    real_set_state = Outbox.set_state
    failed: list[int] = []

    def locked_once(self, item_id, state, **kwargs):
        if state == "sent" and not failed:
            failed.append(item_id)
            raise StoreError("cannot update the song queue: database is locked")
        return real_set_state(self, item_id, state, **kwargs)

    monkeypatch.setattr(Outbox, "set_state", locked_once)
    worker = SyncWorker(str(state_dir), logged_in(fake, state_dir), poll_s=0.1)
    worker.start()
    try:
        deadline = time.monotonic() + 5
        while outbox_states(state_dir) != ["sent"] and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        worker.stop()
    assert failed and outbox_states(state_dir) == ["sent"]
    assert fake.state.player_queue == [songs[0]["uri"]]  # settled, not pushed again


def test_a_failed_poll_keeps_what_was_playing_for_a_while(fake, state_dir, tmp_path):
    """One failed round used to forget the song playing; a press then meant the newest
    song sent, still waiting behind it: an unheard song was skipped (and its artist
    marked down). Now what Spotify last said is used for NOW_PLAYING_FRESH_S; after that
    a press falls back to the queue."""
    from appliance.music.feedback import FeedbackRecorder

    songs = queue_songs(state_dir, tmp_path, 2)
    a, c = songs[0]["uri"], songs[1]["uri"]
    db = open_database(state_dir)
    try:  # C is recommended later: not due yet
        db.execute("UPDATE queue SET next_attempt_at = 1e12 WHERE uri = ?", [c])
        db.conn.commit()
    finally:
        db.conn.close()
    mono = [1000.0]
    worker = SyncWorker(
        str(state_dir), logged_in(fake, state_dir), poll_s=0.1, clock=lambda: mono[0]
    )
    recorder = FeedbackRecorder(
        str(state_dir),
        "default",
        now_playing=lambda: worker.now_playing,
        request_next=worker.request_next_track,
    )
    run_rounds(worker, state_dir)  # A pushed
    fake.start_playing_next()
    run_rounds(worker, state_dir)  # A seen playing
    assert worker.now_playing["uri"] == a
    db = open_database(state_dir)
    try:
        db.execute("UPDATE queue SET next_attempt_at = 0 WHERE uri = ?", [c])
        db.conn.commit()
    finally:
        db.conn.close()
    fake.fail("/v1/me/player/currently-playing", 503)
    mono[0] += 5
    run_rounds(worker, state_dir)  # C pushed, then the poll fails
    assert worker.state == "offline" and outbox_states(state_dir) == ["played", "sent"]
    assert worker.snapshot()["now_playing"]["uri"] == a
    assert recorder.press("skip")["uri"] == a
    assert outbox_states(state_dir) == ["skipped", "sent"]  # C, unheard, still waits
    mono[0] += NOW_PLAYING_FRESH_S  # last confirmed longer ago than a song lasts
    assert worker.now_playing is None and worker.snapshot()["now_playing"] is None
    assert recorder.press("like")["uri"] == c  # the queue's guess


def test_a_skip_pressed_long_ago_is_dropped(fake, state_dir, caplog):
    """Presses queued during a long backoff must not all fire when Spotify is back."""
    now = [1000.0]
    worker = SyncWorker(
        str(state_dir), logged_in(fake, state_dir), poll_s=5.0, clock=lambda: now[0]
    )
    worker.request_next_track()
    worker.request_next_track()
    now[0] += 60.0
    worker.request_next_track()  # a fresh press still works
    with caplog.at_level(logging.INFO, logger="appliance.music.sync"):
        run_rounds(worker, state_dir)
    assert fake.state.next_calls == 1
    assert "stale skip" in caplog.text


def test_sent_songs_the_player_no_longer_has_expire_and_the_queue_is_topped_up(
    fake, state_dir, tmp_path
):
    """Songs that played during a Wi-Fi drop, or a cleared queue: `sent` must not stay
    `sent` forever, or the director never tops the queue up again."""
    songs = queue_songs(state_dir, tmp_path, 2)
    now, mono = [time.time()], [1000.0]
    worker = SyncWorker(
        str(state_dir),
        logged_in(fake, state_dir),
        poll_s=0.1,
        clock=lambda: mono[0],
        wall_clock=lambda: now[0],
    )
    run_rounds(worker, state_dir)
    assert outbox_states(state_dir) == ["sent", "sent"]
    director = MusicDirector(
        str(state_dir), MusicConfig(queue_low=1, min_interval_s=0, mood_hold_s=0)
    )
    try:
        with fake.lock:  # the user dropped song 1 and plays something else
            fake.state.player_queue = [songs[1]["uri"]]
            fake.state.playing = "spotify:track:" + "z" * 22
        run_rounds(worker, state_dir)
        assert outbox_states(state_dir) == ["sent", "sent"]  # too soon to tell
        now[0] += 11 * 60
        run_rounds(worker, state_dir)
        assert outbox_states(state_dir) == ["played", "sent"]  # song 2 is still queued
        director.update(0.0, 0.5, 0.5)
        assert len(outbox_states(state_dir)) == 2  # one waiting: no new song
        with fake.lock:
            fake.state.player_queue = []
        mono[0] += EXPIRY_CHECK_S  # checked again at most once a minute
        run_rounds(worker, state_dir)
        assert outbox_states(state_dir) == ["played", "played"]
        db = open_database(state_dir)
        try:
            assert Outbox(db).waiting("default") == 0
        finally:
            db.conn.close()
        director.update(1.0, 0.5, 0.5)
        assert outbox_states(state_dir) == ["played", "played", "recommended"]
    finally:
        director.close()


def test_worker_thread_runs_skip_commands_and_stops(fake, state_dir, tmp_path):
    queue_songs(state_dir, tmp_path, 1)
    worker = SyncWorker(str(state_dir), logged_in(fake, state_dir), poll_s=0.1)
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while worker.status.sent < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        worker.request_next_track()
        while fake.state.next_calls < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        worker.stop()
    assert worker.status.sent == 1 and fake.state.next_calls == 1
    assert not worker.is_alive()


def test_without_spotify_the_worker_is_local_only(state_dir):
    worker = SyncWorker(str(state_dir), None, poll_s=0.1)
    worker.start()
    worker.stop()
    assert worker.snapshot()["spotify"] == "local only"


# ------------------------------------------------------------------------ command line


def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


def spotify_cli_settings(fake, tmp_path) -> tuple[list[str], Path]:
    """CLI arguments for the fake Spotify, with the client secret in a 0600 file."""
    secret = tmp_path / "secret"
    secret.write_text(CLIENT_SECRET)
    secret.chmod(0o600)
    s = fake.settings()
    common = cli_settings(
        tmp_path,
        f"spotify.client_id={s.client_id}",
        f"spotify.client_secret_file={secret}",
        f"spotify.api_base={s.api_base}",
        f"spotify.token_url={s.token_url}",
        f"spotify.authorize_url={s.authorize_url}",
    )
    return common, secret


def test_cli_login_then_devices(fake, tmp_path):
    common, secret = spotify_cli_settings(fake, tmp_path)
    login = cli("spotify", "login", *common, stdin=REDIRECT + "\n")
    assert login.returncode == 0, login.stderr
    assert f"{fake.base}/authorize?" in login.stdout and "logged in" in login.stdout
    devices = cli("spotify", "devices", "--json", *common)
    assert devices.returncode == 0, devices.stderr
    assert [d["name"] for d in json.loads(devices.stdout)] == ["Kitchen", "Living room"]
    secret.chmod(0o644)
    refused = cli("spotify", "devices", *common)  # a configuration error, as in `run`
    assert refused.returncode == 2 and "world-readable" in refused.stderr


def test_cli_login_without_a_terminal_is_a_clear_error(fake, tmp_path):
    """No stdin (ssh without -t, a script): input() raised EOFError, a traceback."""
    common, _ = spotify_cli_settings(fake, tmp_path)
    login = cli("spotify", "login", *common, stdin="")
    assert login.returncode == 1
    assert "--redirect-url" in login.stderr and "Traceback" not in login.stderr


# ------------------------------------------------------------------ every error shape


def one_waiting_song(state_dir) -> str:
    """One song in the outbox, without a catalog (a push needs no more)."""
    uri = "spotify:track:" + "w" * 22
    db = open_database(state_dir)
    try:
        db.execute(
            "INSERT INTO queue (user, uri, name, artist, state, created_at, updated_at)"
            " VALUES ('default', ?, 'Song', 'Artist', 'recommended', 0, 0)",
            [uri],
        )
        db.conn.commit()
    finally:
        db.conn.close()
    return uri


ERROR_BODIES = {
    "web api": web_api_error(503, "Service unavailable"),
    "oauth string": oauth_error("invalid_grant", "Refresh token revoked"),
    "oauth object": oauth_error({"status": 429, "message": "API rate limit exceeded"}),
    "oauth list": oauth_error(["server_error"]),
    "json list": b'["error"]',
    "json string": b'"error"',
    "html": PORTAL,
    "empty": b"",
}
# where a failure is met: the token refresh, a push, the now-playing poll
ENDPOINTS = {
    "token": "/api/token",
    "push": "/v1/me/player/queue",
    "poll": "/v1/me/player/currently-playing",
}


@pytest.mark.parametrize("where", sorted(ENDPOINTS))
def test_every_error_shape_is_classified_without_a_traceback(fake, state_dir, caplog, where):
    """A token-server error whose `error` is a JSON object raised TypeError (unhashable
    dict) in the sync round: a traceback every poll, the token endpoint hit every second
    through its Retry-After, and sync never showed offline. Every status with every body
    shape, at each place a round meets Spotify."""
    p = logged_in(fake, state_dir)
    db = open_database(state_dir)
    try:
        for status in (400, 401, 403, 404, 429, 500, 503):
            for body in sorted(ERROR_BODIES):
                case = f"{where} {status} {body}"
                caplog.clear()
                db.execute("DELETE FROM queue")
                db.conn.commit()
                one_waiting_song(state_dir)
                if where == "token":
                    expire_access_token(p)
                fake.fail(
                    ENDPOINTS[where], status, body=ERROR_BODIES[body],
                    headers={"Retry-After": "7"},
                )  # fmt: skip
                mono = [1000.0]
                worker = SyncWorker(str(state_dir), p, poll_s=5.0, clock=lambda m=mono: m[0])
                with caplog.at_level(logging.INFO):
                    worker.sync_once(Outbox(db))  # raised TypeError before
                assert not [r for r in caplog.records if r.exc_info], case
                state, error = worker.state, worker.last_error
                if state == "online":
                    # a 401 from the Web API is refreshed and retried; a song refused
                    # with a plain 4xx is failed and the round goes on
                    assert where != "token" and (status == 401 or where == "push"), case
                    assert status == 401 or outbox_states(state_dir) == ["failed"], case
                    continue
                assert state in ("offline", "login needed", "error") and error, case
                assert worker.status.resume_at > mono[0], case
                if status in (429, 500, 503):  # transient: never a login or account problem
                    assert state == "offline", case
                    assert worker.status.resume_at - mono[0] == pytest.approx(7), case
                if where == "token" and status in (400, 401):
                    assert state == "login needed", case
                if where == "push" and status == 403:
                    assert state == "error", case
    finally:
        db.conn.close()


def test_a_token_server_429_with_a_json_object_error_honours_retry_after(fake, state_dir):
    """The issue's case, exactly: no traceback; offline; the token endpoint is asked
    again only after Retry-After, not every poll."""
    p = logged_in(fake, state_dir)
    expire_access_token(p)
    body = oauth_error({"status": 429, "message": "API rate limit exceeded"})
    fake.fail("/api/token", 429, body=body, headers={"Retry-After": "5"})
    mono = [1000.0]
    worker = SyncWorker(str(state_dir), p, poll_s=1.0, clock=lambda: mono[0])
    run_rounds(worker, state_dir)
    assert worker.state == "offline" and "429" in worker.last_error
    assert worker.status.resume_at == pytest.approx(1005.0)
    run_rounds(worker, state_dir)
    assert worker.state == "online"
    # the login, the refused refresh, the one after Retry-After: not one every poll
    assert fake.state.requests.count(("POST", "/api/token")) == 3


@pytest.mark.parametrize(
    ("retry_after", "at_least", "at_most"),
    [
        ("999999999", 3600, 3600),  # honoured up to the Backoff's ceiling, an hour
        ("inf", 0.5, 300),  # not a number of seconds: the usual backoff
        ("nan", 0.5, 300),
        ("-5", 0.5, 300),
    ],
)
def test_a_huge_or_bogus_retry_after_pauses_sync_an_hour_at_most(
    fake, state_dir, retry_after, at_least, at_most
):
    """One 429 with Retry-After: 999999999 (or inf) paused sync until a restart, while
    status said nothing was wrong."""
    one_waiting_song(state_dir)
    mono = [1000.0]
    worker = SyncWorker(
        str(state_dir), logged_in(fake, state_dir), poll_s=5.0, clock=lambda: mono[0]
    )
    fake.fail("/v1/me/player/queue", 429, headers={"Retry-After": retry_after})
    run_rounds(worker, state_dir)
    assert worker.state == "offline" and "429" in worker.last_error
    assert at_least <= worker.status.resume_at - mono[0] <= at_most
    assert outbox_states(state_dir) == ["recommended"]  # refused before acting: waits


def test_a_retry_after_date_is_honoured(fake, state_dir):
    from email.utils import formatdate

    mono = [1000.0]
    worker = SyncWorker(
        str(state_dir), logged_in(fake, state_dir), poll_s=5.0, clock=lambda: mono[0]
    )
    when = formatdate(time.time() + 120, usegmt=True)
    fake.fail("/v1/me/player/currently-playing", 503, headers={"Retry-After": when})
    run_rounds(worker, state_dir)
    assert worker.state == "offline"
    assert worker.status.resume_at - mono[0] == pytest.approx(120, abs=3)


class DownPlayer:
    """A Spotify that is never there (days offline), answering at once."""

    def _down(self, *args):
        raise SpotifyError("Spotify unreachable: no route to host", transient=True)

    now_playing = queue_view = add_to_queue = next_track = _down


def test_days_offline_never_overflow_the_backoff(state_dir):
    """After ~3.5 days offline, 2.0 ** (failures - 1) overflowed: a traceback every round
    and a 5 s poll from then on."""
    one_waiting_song(state_dir)
    mono = [1000.0]
    worker = SyncWorker(str(state_dir), DownPlayer(), poll_s=5.0, clock=lambda: mono[0])
    run_rounds(worker, state_dir, rounds=1200)  # 1100 was enough for an OverflowError
    assert worker.state == "offline"
    assert worker.status.resume_at - mono[0] == pytest.approx(300)  # the cap, still


# ------------------------------------------------------------------ login and secrets

CANCELLED = "http://127.0.0.1:8888/callback?error=access_denied&state=x"


def test_cancel_on_spotifys_consent_page_is_a_clear_error(fake, state_dir):
    with pytest.raises(SpotifyAuthError, match="cancelled"):
        player(fake, state_dir).complete_login(CANCELLED)


def test_cli_login_cancelled_ends_without_a_traceback(fake, tmp_path):
    common, _ = spotify_cli_settings(fake, tmp_path)
    login = cli("spotify", "login", "--redirect-url", CANCELLED, *common)
    assert login.returncode == 1
    assert "cancelled" in login.stderr and "Traceback" not in login.stderr


@pytest.mark.parametrize("problem", ["missing", "empty", "not set", "a folder"])
def test_a_spotify_secret_that_cannot_be_used_is_a_configuration_error(fake, tmp_path, problem):
    """A missing or empty secret file exited 0 and disabled Spotify; an empty setting
    said `chmod 600 .`. Exit 2, as for the VLM key, naming what to fix."""
    common, secret = spotify_cli_settings(fake, tmp_path)
    if problem == "missing":
        secret.unlink()
    elif problem == "empty":
        secret.write_text("\n")
    else:
        value = "" if problem == "not set" else str(tmp_path)
        common += ["--set", f"spotify.client_secret_file={value}"]
    result = cli("spotify", "devices", *common)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "chmod 600 ." not in result.stderr
    expected = {
        "missing": "not found",
        "empty": "empty",
        "not set": "spotify.client_secret_file is empty",
        "a folder": "is a folder",
    }[problem]
    assert expected in result.stderr


def test_a_token_server_failure_before_a_push_leaves_the_song_to_push_again(fake, state_dir):
    """The access token expired and the token server failed: the push was never made,
    so the song is simply due again, not a push of unknown outcome to settle."""
    one_waiting_song(state_dir)
    p = logged_in(fake, state_dir)
    expire_access_token(p)
    fake.fail("/api/token", 503)
    worker = SyncWorker(str(state_dir), p, poll_s=5.0)
    run_rounds(worker, state_dir)
    assert worker.state == "offline" and outbox_states(state_dir) == ["recommended"]
    run_rounds(worker, state_dir)
    assert outbox_states(state_dir) == ["sent"] and len(fake.state.player_queue) == 1


def test_a_spotify_reply_dripped_byte_by_byte_ends_at_timeout_s(fake, state_dir):
    """requests' timeout bounded each read: a proxy or server dripping its reply held
    the sync worker for as long as it liked. Now the whole reply must come within
    spotify.timeout_s, and a stall is a transient failure the backoff handles."""
    from test_http_deadline import REPLY, Dripper

    dripper = Dripper(REPLY, every_s=0.1)  # ~9 s for the whole reply
    try:
        base = dripper.url.rsplit("/", 1)[0]
        p = logged_in(fake, state_dir, api_base=f"{base}/v1", timeout_s=1.0)
        started = time.monotonic()
        with pytest.raises(SpotifyError) as caught:
            p.now_playing()
        assert caught.value.transient and "no complete reply within 1 s" in str(caught.value)
        assert time.monotonic() - started < 2.5
    finally:
        dripper.close()
