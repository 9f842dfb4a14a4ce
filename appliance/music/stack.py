"""The music side of the daemon, assembled from config: director, sync worker, buttons.

It plugs into the publisher as a companion (`tick` each status period, `snapshot` into
status), so none of it ever runs on the frame loop. Its one thread, the sync worker, is
started and stopped by the daemon's crew with the others (`workers`); `close()` then
releases the pins and the director's database.
"""

from __future__ import annotations

import logging
from typing import Any

from appliance.config import Config
from appliance.hardware.gpio import FeedbackPanel
from appliance.music.director import MusicDirector
from appliance.music.feedback import FeedbackRecorder
from appliance.music.spotify import SpotifyError, SpotifyPlayer, SpotifySecretError
from appliance.music.sync import SyncWorker
from appliance.store.database import StoreError

log = logging.getLogger(__name__)


class MusicStack:
    def __init__(self, config: Config, *, pin_factory: Any = None) -> None:
        state_dir = config.storage.state_dir
        self.spotify_error: str | None = None
        player = None
        if config.spotify.client_id:
            try:
                player = SpotifyPlayer(config.spotify, state_dir)
            except SpotifySecretError:
                raise  # a configuration error: `run` exits 2, as for the VLM key
            except SpotifyError as exc:
                self.spotify_error = str(exc)
                log.error("Spotify disabled: %s", exc)
        self.sync = SyncWorker(
            state_dir, player, config.spotify.poll_s, queue_ahead=config.music.queue_ahead
        )
        if player is None:
            reason = self.spotify_error or "no [spotify] client_id"
            log.info("songs stay in the local queue (%s)", reason)
        self.director = MusicDirector(state_dir, config.music, on_queued=self.sync.wake)
        self.recorder = FeedbackRecorder(
            state_dir,
            config.music.user,
            now_playing=lambda: self.sync.now_playing,
            request_next=self.sync.request_next_track,
        )
        self.panel = FeedbackPanel(
            config.gpio,
            lambda: self.press("like"),
            lambda: self.press("skip"),
            pin_factory=pin_factory,
        )
        self.enabled = True  # "music off" stops new recommendations; the rest goes on

    def press(self, action: str, source: str = "gpio") -> dict | None:
        """A like or skip, from a button or any other remote control (the one path for
        all of them; `source` names it in the feedback row): stored first, then acted
        on; the stored row, or None when no song is known or it could not be stored
        (logged)."""
        try:
            return self.recorder.press(action, source)
        except StoreError as exc:
            log.error("%s not stored: %s", action, exc)
            return None

    def set_enabled(self, on: bool) -> None:
        """Music on/off: while off, moods still follow the face but no song is queued."""
        if on != self.enabled:
            log.info("music %s", "on" if on else "off")
        self.enabled = on
        self.director.paused = not on

    @property
    def workers(self) -> list[SyncWorker]:
        return [self.sync]

    def start(self) -> None:
        """Start the sync thread (outside a daemon's crew, e.g. in tests)."""
        self.sync.start()

    def samples(self, rows: list[dict]) -> None:
        """The affect samples just taken from the board, oldest first."""
        for row in rows:
            self.director.update(
                row["t_stream"], row.get("valence"), row.get("arousal"), run_id=row.get("run_id")
            )

    def tick(self, view: Any) -> None:
        # a player that could not be built leaves the worker "local only" (LED off), yet
        # status says "error": the LED must blink for it too
        self.panel.show_sync("error" if self.spotify_error else self.sync.state)
        self.panel.show_mood(self.director.mood)

    def snapshot(self) -> dict[str, Any]:
        snap = {**self.director.snapshot(), **self.sync.snapshot()}
        if self.spotify_error:
            snap["spotify"], snap["spotify_error"] = "error", self.spotify_error
        snap["buttons"] = "ready" if self.panel.available else f"off: {self.panel.reason}"
        return snap

    def stop(self) -> None:
        """Stop the sync thread (if not stopped already) and release the rest."""
        self.sync.stop()
        self.close()

    def close(self) -> None:
        self.panel.close()
        self.director.close()
