"""The sync worker: pushes the local song queue to Spotify when it can, on its own thread.

Offline, rate-limited or logged out, songs simply wait in SQLite; the worker backs off
(1, 2, 4 ... 300 s, or Retry-After up to the Backoff's ceiling of an hour) and tries
again. A 403 PREMIUM_REQUIRED (Spotify Free) is about the account, whichever call meets
it: the songs wait as they are, the state is "error" and the worker asks again only
after 30 min. Any other 403 on a push (a restricted device, or something about that
song) is treated the same with a 5 min pause, but a song refused MAX_SONG_REFUSALS times
in a row is marked `failed`, so one song cannot hold back every song behind it. Any
other 403 on a skip ("Restriction violated": nothing playing, skipping disallowed) is
about that press only: it is logged and dropped, and the round goes on.

How far ahead: the worker keeps at most `queue_ahead` of our songs unplayed on Spotify
(sent, or a push being settled); the rest wait locally and go one by one as the listener
reaches them. Spotify's queue view lists only about the next 20 tracks, so this keeps
every song of ours where the view can see it.

A push whose outcome is unknown (the reply was lost, a timeout or 5xx, a reply that is
not Spotify's, or the process died during the call) stays `sending` and is settled
against Spotify's queue view before anything else is pushed (so order is kept):
- seen queued or playing: it is `sent` (and, playing, `played`);
- not seen, at least SETTLE_AFTER_S after the push (a song just added may not be listed
  yet), in a view that reaches the place it would have: the view lists the whole queue
  (shorter than spotify.QUEUE_VIEW_FULL), or shows the song of ours pushed before it
  with tracks behind it, or none of ours is ahead of it (it would be near the front:
  Spotify lists the queue before the playlist or album playing). It is not waiting on
  Spotify, so it is pushed again;
- not seen while our songs reach past the view (one pushed before it is sent, yet not
  shown, or shown at the view's last place: the owner queued many tracks by hand):
  *unknown*, not undelivered. It is looked for every round (currently-playing, the next
  view) and pushed again only after SENT_EXPIRY_S unseen, as a sent song is expired.
So a song is not lost, and not queued twice while a copy of it is still waiting there.
Delivery is at-least-once in one corner: if the song already finished playing before the
worker could look (a long outage right after the push), Spotify no longer shows it and
it is pushed again. A push again that cannot be proven harmless (no song of ours pushed
before it, nor the song playing at the push, is still on the player) is counted in
status (`songs_maybe_twice`) and logged. A queue reply that cannot be read settles
nothing. State changes are written with synchronous=FULL: a power cut must not roll
`sent` back to a state that pushes the song again.

It also polls what is playing: to mark songs played (and, SENT_EXPIRY_S after sending,
those Spotify no longer shows at all), and to tell the like/skip buttons which song they
are about. What Spotify last said is kept through failed rounds, but only for
NOW_PLAYING_FRESH_S after it said so: one failed poll must not turn a press into one
about a song still waiting in the queue, and an offline press minutes later must not
mean a song that has ended (feedback.py then guesses from the queue). It runs the skip
commands the buttons ask for, and those another process stored (`emotion-appliance
skip`, feedback.remote_skips), dropping ones that waited out an outage: they would skip
whatever plays by then.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from math import inf
from typing import Any

from appliance.common.backoff import Backoff
from appliance.common.worker import Worker
from appliance.music.feedback import remote_skips
from appliance.music.outbox import Outbox
from appliance.music.spotify import (
    QueueView,
    SpotifyAccountError,
    SpotifyAuthError,
    SpotifyError,
    SpotifyPlayer,
)
from appliance.store.database import StoreError, open_database

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 300.0
# A Free account stays Free until the user upgrades: asking twice an hour, not every
# backoff, keeps a doomed request (and its log line) from repeating all day.
PREMIUM_BACKOFF_S = 1800.0
# A skip older than two polls waited out an outage or a backoff and would skip a song the
# listener never pressed for. Never less than this, though: a press during a round in
# flight (a few requests, each up to spotify.timeout_s) runs only when that round ends.
SKIP_STALE_MIN_S = 10.0
# A `sent` song neither queued nor playing on Spotify this long after it was sent played
# unseen (while offline) or was dropped (queue cleared, another device): it ends as
# played. Not sooner: this leaves a song that played between two polls to mark_played.
# A push of unknown outcome that no view has shown for this long is pushed again.
SENT_EXPIRY_S = 600.0
# How often that is checked (one more request) while old `sent` songs are still queued.
EXPIRY_CHECK_S = 60.0
# A push of unknown outcome is judged missing only from a view taken this long after it:
# Spotify's queue reply can lag a song just added.
SETTLE_AFTER_S = 5.0
# How long the song Spotify last said was playing still answers "what is a press about"
# when polls fail: about one typical song (3 min). Later, that song has most likely
# ended, and the song queue's guess (feedback.py) is no worse.
NOW_PLAYING_FRESH_S = 180.0
# A plain 403 on a push (not PREMIUM_REQUIRED) may be the device's or the song's. Three
# in a row for one song, each after a MAX_BACKOFF_S pause, is about 10 min of asking:
# past that the song is failed so the ones behind it flow; if the next song is refused
# too, it was the device. Counted in memory: a restart allows three more tries.
MAX_SONG_REFUSALS = 3
DEFAULT_QUEUE_AHEAD = 2  # music.queue_ahead


@dataclass(frozen=True)
class SyncStatus:
    """The sync thread's last word, published as one object: a reader never pairs one
    round's state with another round's error."""

    state: str  # local only, starting, online, offline, login needed, error
    error: str | None = None
    sent: int = 0
    # pushed again after an unknown outcome without proof it was not delivered: each
    # may have played twice (the at-least-once corner)
    maybe_twice: int = 0
    # the track Spotify last said was playing (or None) and clock() when it said so
    playing: dict | None = None
    playing_at: float = -inf
    resume_at: float = 0.0  # clock(): no round before this (a backoff)
    # what became of the last skip another process stored: {"id": feedback id, "result"}
    remote_skip: dict | None = None


class SyncWorker(Worker):
    """States: local only (no Spotify configured), online, offline, login needed, error
    (a 403: Spotify Free, or the player refuses pushes; a refused skip is no error).

    One writer: this thread alone changes `status`; the buttons and the director only
    post (a skip command, a wake)."""

    stop_grace_s = 2.0  # a request in flight is abandoned (daemon thread) past this

    def __init__(
        self,
        state_dir: str,
        player: SpotifyPlayer | None,
        poll_s: float,
        *,
        queue_ahead: int = DEFAULT_QUEUE_AHEAD,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """queue_ahead: most of our songs unplayed on Spotify at once; clock: monotonic
        seconds for backoffs and the age of skip presses; wall_clock: unix time, as the
        song queue stores it (both replaceable for tests)."""
        super().__init__("spotify-sync")
        self.state_dir = state_dir
        self.player = player
        self.poll_s = poll_s
        self.queue_ahead = max(1, int(queue_ahead))
        self.clock = clock
        self.wall_clock = wall_clock
        self.status = SyncStatus("local only" if player is None else "starting")
        self._backoff = Backoff(1.0, MAX_BACKOFF_S)
        self._expiry_due = 0.0  # clock() of the next check for sent songs gone unseen
        self._refusals: tuple[int, int] = (0, 0)  # (queue id, plain 403s in a row)
        self._skip_refusal: str | None = None  # last refused skip's error, logged once
        self._commands: queue.Queue[tuple[str, float]] = queue.Queue()  # (command, at)
        self._playing_at_push: dict[int, str | None] = {}  # queue id -> track then playing
        self._remote_after = 0  # feedback id of the last remote skip handled
        self._started_wall = wall_clock()
        self._db = None

    # ------------------------------------------------------------ other threads

    @property
    def state(self) -> str:
        return self.status.state

    @property
    def last_error(self) -> str | None:
        return self.status.error

    @property
    def now_playing(self) -> dict | None:
        """The track Spotify last said was playing, if it said so within
        NOW_PLAYING_FRESH_S (a failed poll does not forget it); else None."""
        status = self.status
        fresh = self.clock() - status.playing_at <= NOW_PLAYING_FRESH_S
        return status.playing if fresh else None

    def request_next_track(self) -> None:
        """Ask for Spotify's next-track (a skip press); done on this thread, never blocking."""
        self._commands.put(("next", self.clock()))
        self.wake()

    def snapshot(self) -> dict[str, Any]:
        status = self.status
        return {
            "spotify": status.state,
            "spotify_error": status.error,
            "now_playing": self.now_playing,
            "songs_sent": status.sent,
            "songs_maybe_twice": status.maybe_twice,
            "remote_skip": status.remote_skip,
        }

    # ------------------------------------------------------------ the thread

    def finish(self) -> None:
        if self._db is not None:
            self._db.conn.close()
            self._db = None

    def work(self) -> None:
        if self.player is None:
            return
        while not self.stopping.is_set():
            db = self._db
            try:
                if db is None:
                    db = self._db = open_database(self.state_dir)
                    db.execute("PRAGMA synchronous = FULL")  # rare writes, each must last
                if self.clock() >= self.status.resume_at:
                    self.sync_once(Outbox(db))
            except StoreError as exc:
                self.status = replace(self.status, error=str(exc))
                log.error("sync: %s", exc)
                self.finish()  # reopened next round; a push left `sending` is settled then
                self.pause(self.poll_s)
            except Exception:
                log.exception("sync round failed")  # a bug must not end syncing for good
            self.pause(self._next_wait(self.clock()))

    def sync_once(self, outbox: Outbox) -> None:
        """One round: skips, settle unknown pushes, push due songs, check now playing."""
        assert self.player is not None
        try:
            self._run_skips(outbox)
            view = None
            if outbox.in_state("sending"):
                view = self.player.queue_view()
                settled = self._settle(outbox, view)
            else:
                settled = True
            if settled:  # an unknown push holds back the songs behind it: order is kept
                self._push(outbox)
            playing = self.player.now_playing()
            self.status = replace(self.status, playing=playing, playing_at=self.clock())
            if playing:
                outbox.mark_played(playing["uri"])
            self._expire_sent(outbox, view)
        except SpotifyAuthError as exc:
            self._failed("login needed", exc)
        except SpotifyAccountError as exc:
            self._failed("error", exc)
        except SpotifyError as exc:
            self._failed("offline", exc)
        else:
            if self.status.state != "online":
                log.info("Spotify sync online")
            self._backoff.reset()
            self.status = replace(self.status, state="online", error=None)

    def _push(self, outbox: Outbox) -> None:
        """Push due songs, oldest first, while fewer than queue_ahead are on the player."""
        room = self.queue_ahead - outbox.on_player()
        if room <= 0:
            return
        for item in outbox.due(limit=room):
            if not outbox.claim(item["id"]):  # withdrawn meanwhile (queue clear, a skip)
                continue
            playing = self.now_playing
            self._playing_at_push[item["id"]] = playing["uri"] if playing else None
            try:
                self.player.add_to_queue(item["uri"])
            except SpotifyError as exc:
                if (
                    isinstance(exc, SpotifyAccountError)
                    and not exc.premium_required
                    and self._count_refusal(item["id"]) >= MAX_SONG_REFUSALS
                ):
                    outbox.set_state(item["id"], "failed", error=str(exc))
                    log.warning(
                        "Spotify refused %s %d times (%s): failed, the next song goes on",
                        item["uri"],
                        MAX_SONG_REFUSALS,
                        exc,
                    )
                    continue
                if (
                    isinstance(exc, (SpotifyAuthError, SpotifyAccountError))
                    or exc.status == 429
                    or exc.token
                ):
                    # refused before acting (or the token server failed before the
                    # call), whatever the song: push again later
                    outbox.set_state(item["id"], "recommended", error=str(exc))
                    raise
                if exc.transient:
                    # the song may be on Spotify already: settled before pushing again
                    raise
                outbox.set_state(item["id"], "failed", error=str(exc))
                log.warning("Spotify refused %s: %s", item["uri"], exc)
                continue
            outbox.set_state(item["id"], "sent")
            self._playing_at_push.pop(item["id"], None)
            self.status = replace(self.status, sent=self.status.sent + 1)
            log.info("queued on Spotify: %s - %s", item["artist"], item["name"])

    def _run_skips(self, outbox: Outbox) -> None:
        """The skips pressed here (buttons) and those another process stored, if fresh."""
        stale_after = max(2 * self.poll_s, SKIP_STALE_MIN_S)
        while not self._commands.empty():
            command, at = self._commands.get_nowait()
            age = self.clock() - at
            if age > stale_after:
                log.info("dropped a stale skip pressed %.0f s ago", age)
            elif command == "next":
                self._skip()
        for press in remote_skips(outbox.db, self._remote_after):
            self._remote_after = press["id"]
            age = self.wall_clock() - press["t"]
            if press["t"] < self._started_wall - stale_after:
                continue  # history from before this worker started: not a command now
            if age > stale_after:
                log.info("dropped a stale skip (emotion-appliance skip) from %.0f s ago", age)
                result = f"dropped: pressed {age:.0f} s ago, Spotify could not be asked in time"
            else:
                try:
                    result = self._skip()
                except SpotifyError as exc:
                    result = f"not done: {exc}"
                    self._publish_remote(press["id"], result)
                    raise
            self._publish_remote(press["id"], result)

    def _publish_remote(self, feedback_id: int, result: str) -> None:
        self.status = replace(self.status, remote_skip={"id": feedback_id, "result": result})

    def _skip(self) -> str:
        """Spotify's next-track for a skip press; what happened, in words. A 403 other
        than PREMIUM_REQUIRED is about this command (nothing playing, a track that may
        not be skipped), not the account: the press is dropped and the round goes on
        instead of pausing sync."""
        try:
            self.player.next_track()
        except SpotifyAccountError as exc:
            if exc.premium_required:
                # a Free account can queue nothing either: the account's "error" state
                # and long pause; the press is dropped (it would be stale by then)
                raise
            # one warning per distinct refusal: repeated presses into it are INFO
            level = logging.INFO if str(exc) == self._skip_refusal else logging.WARNING
            self._skip_refusal = str(exc)
            log.log(level, "Spotify refused the skip (%s): dropped", exc)
            return f"refused by Spotify: {exc}"
        self._skip_refusal = None
        return "done: Spotify skipped to the next track"

    def _count_refusal(self, item_id: int) -> int:
        """Plain 403s in a row for this song. Songs are pushed oldest first and a refusal
        ends the round, so only the song at the head of the queue can be counting."""
        last_id, count = self._refusals
        count = count + 1 if last_id == item_id else 1
        self._refusals = (item_id, count)
        return count

    def _settle(self, outbox: Outbox, view: QueueView) -> bool:
        """Pushes of unknown outcome against Spotify's view; True when none is left
        unknown (see the module's doc)."""
        settled = True
        now = self.wall_clock()
        for item in outbox.in_state("sending"):
            uri = item["uri"]
            if view.shows(uri):
                outbox.set_state(item["id"], "sent")
                self._playing_at_push.pop(item["id"], None)
                self.status = replace(self.status, sent=self.status.sent + 1)
                if uri == view.playing:
                    outbox.mark_played(uri)
                log.info("settled: %s - %s is on Spotify", item["artist"], item["name"])
                continue
            age = now - item["updated_at"]
            if age < SETTLE_AFTER_S or (
                age < SENT_EXPIRY_S and self._maybe_hidden(outbox, item, view)
            ):
                settled = False  # not listed yet, or maybe further down: look again later
                continue
            proven = self._proven_missing(outbox, item, view)
            outbox.set_state(item["id"], "recommended", error="not on Spotify after a push")
            self._playing_at_push.pop(item["id"], None)
            if proven:
                log.info("%s - %s never reached Spotify: pushed again", item["artist"],
                         item["name"])  # fmt: skip
            else:
                self.status = replace(self.status, maybe_twice=self.status.maybe_twice + 1)
                log.warning(
                    "%s - %s is not on Spotify %.0f s after a push whose reply was lost:"
                    " pushed again (if it already played, it plays twice)",
                    item["artist"],
                    item["name"],
                    age,
                )
        return settled

    def _maybe_hidden(self, outbox: Outbox, item: dict, view: QueueView) -> bool:
        """Whether a song missing from the view may still be queued further down. Only
        when the view may be cut short and our songs reach past it: a song of ours pushed
        before this one is at the view's last place, or sent (certainly queued) yet not
        shown. A view showing one of ours with room behind it reaches the place this one
        would have (right behind it); and with none of ours ahead it would be near the
        front (Spotify lists the queue before the playlist or album playing)."""
        if not view.full:
            return False
        earlier = outbox.pushed_before(item["id"], self.queue_ahead + 1)
        shown = self._room_behind(earlier, view)
        if shown is not None:
            return not shown
        return any(row["state"] == "sent" for row in earlier)

    def _proven_missing(self, outbox: Outbox, item: dict, view: QueueView) -> bool:
        """Whether the song cannot have played yet, so it is certainly not on Spotify: a
        song of ours pushed before it is still there with room behind it in the view (it
        would be queued there), or the track playing when it was pushed still plays."""
        at_push = self._playing_at_push.get(item["id"])
        if at_push is not None and at_push == view.playing:
            return True
        earlier = outbox.pushed_before(item["id"], self.queue_ahead + 1)
        return bool(self._room_behind(earlier, view))

    @staticmethod
    def _room_behind(earlier: list[dict], view: QueueView) -> bool | None:
        """Whether the view lists tracks behind the last of these songs it shows (True),
        shows that one at its very end (False), or shows none of them (None)."""
        places = [-1 for row in earlier if row["uri"] == view.playing]
        queued = list(view.queued)
        for row in earlier:
            if row["uri"] in queued:
                places.append(len(queued) - 1 - queued[::-1].index(row["uri"]))
        if not places:
            return None
        return max(places) + 1 < len(queued) or not view.full

    def _expire_sent(self, outbox: Outbox, view: QueueView | None) -> None:
        """Old sent songs Spotify no longer has end as played, so the queue is topped up."""
        if self.clock() < self._expiry_due:
            return
        old = outbox.sent_before(self.wall_clock() - SENT_EXPIRY_S)
        if not old:
            return
        view = view or self.player.queue_view()
        self._expiry_due = self.clock() + EXPIRY_CHECK_S
        gone = [item["id"] for item in old if not view.shows(item["uri"])]
        if gone:
            outbox.mark_gone(gone)
            log.info(
                "%d sent song(s) gone from Spotify unseen (played offline, or the queue was"
                " cleared): counted as played",
                len(gone),
            )

    def _next_wait(self, now: float) -> float:
        """Until the next poll, or sooner when a backoff ends first (a wake cuts it short)."""
        resume_at = self.status.resume_at
        if resume_at > now:
            return max(0.05, min(self.poll_s, resume_at - now))
        return self.poll_s

    def _failed(self, state: str, exc: SpotifyError) -> None:
        floor = exc.retry_after or 0.0  # Retry-After: honoured up to the Backoff's ceiling
        if isinstance(exc, SpotifyAuthError):
            floor = max(floor, 60.0)
        if isinstance(exc, SpotifyAccountError):
            floor = max(floor, PREMIUM_BACKOFF_S if exc.premium_required else MAX_BACKOFF_S)
        delay = self._backoff.next(at_least=floor)
        status = self.status
        if state != status.state or str(exc) != status.error:
            log.warning("Spotify sync %s: %s; retrying in %.0f s", state, exc, delay)
        self.status = replace(status, state=state, error=str(exc), resume_at=self.clock() + delay)
