"""Commands from the MQTT command topic: `like`, `skip`, `music on`, `music off`.

They take the same path as the buttons and the CLI: `MusicStack.press` for like and
skip, `MusicStack.set_enabled` for music on/off. With music off in the config there is
nothing to press: the command is logged and ignored.

MQTT delivers QoS 1 at least once: a command may arrive twice (redelivered after a lost
acknowledgement or a reconnect, or sent twice by a controller that retried). Music on/off
is idempotent by nature. A like or skip is deduplicated by (action, song): a second
press of the same action while the song the status shows (Spotify's now playing, else
the last song queued) is still the one of the accepted press counts once, within
SAME_SONG_S; a new song, or the other action, is a new press. Deduplicating by song
rather than by message matters because MQTT 3/5 messages carry no id an application can
trust across a reconnect (a packet id is reused), and a duplicate skip must not skip
the next song too. While no song is known the recorder stores nothing anyway; a press
then counts once within UNKNOWN_SONG_S.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from appliance.common.text import printable

if TYPE_CHECKING:
    from appliance.music.stack import MusicStack

log = logging.getLogger(__name__)

SAME_SONG_S = 600.0  # a like of the song still playing counts once within this (a song)
UNKNOWN_SONG_S = 10.0  # with no song known: a repeat within this is the same press
# Ignored commands: at most LOG_BURST lines per LOG_WINDOW_S, then a count of the rest
LOG_BURST = 5
LOG_WINDOW_S = 60.0
MAX_SHOWN = 60  # characters of an unknown command shown in the log

PRESSES = ("like", "skip")
SWITCHES = {"music on": True, "music off": False}


class PressGate:
    """Which like/skip presses are duplicates, by (action, song) and an injected clock."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._last: dict[str, tuple[str | None, float]] = {}

    def duplicate(self, action: str, song: str | None) -> bool:
        last = self._last.get(action)
        if last is None:
            return False
        last_song, at = last
        age = self.clock() - at
        if song is not None and last_song is not None:
            return song == last_song and age < SAME_SONG_S
        return age < UNKNOWN_SONG_S

    def accepted(self, action: str, song: str | None) -> None:
        self._last[action] = (song, self.clock())


class Commands:
    """Applies command payloads to the music stack (None: music off in the config).

    `current_song` names the song a press would be for, as the status shows it (None
    when unknown). Runs on the link's thread; the counters are read by the link."""

    def __init__(
        self,
        music: MusicStack | None,
        *,
        current_song: Callable[[], str | None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.music = music
        self.current_song = current_song
        self.clock = clock
        self.gate = PressGate(clock=clock)
        self.handled = 0
        self.duplicates = 0
        self.ignored = 0
        self._window_start = float("-inf")
        self._logged = 0
        self._unlogged = 0

    def handle(self, payload: bytes, *, retained: bool = False) -> str:
        """Apply one command; what became of it: "like", "skip", "music on", "music off",
        "duplicate" or "ignored"."""
        words = " ".join(payload.decode("utf-8", "replace").split())
        text, shown = words.lower(), printable(words, MAX_SHOWN)  # shown: from outside
        if retained:
            # a stored command, sent again to every new subscription: it would fire on
            # each reconnect (a command published with retain while the link listens
            # arrives live, without the flag, and is applied once)
            return self._ignore(
                f"retained command '{shown}' ignored (clear it: mosquitto_pub -r -n -t "
                "<command topic>)"
            )
        if text not in PRESSES and text not in SWITCHES:
            return self._ignore(
                f"unknown command '{shown}' ignored (known: like, skip, music on, music off)"
            )
        if self.music is None:
            return self._ignore(f"'{shown}' ignored: music is off in the config (music.enabled)")
        if text in SWITCHES:
            self.music.set_enabled(SWITCHES[text])
            self.handled += 1
            return text
        song = self.current_song()
        if self.gate.duplicate(text, song):
            self.duplicates += 1
            log.info("MQTT %s for the same song again: counted once", text)
            return "duplicate"
        row = self.music.press(text, "mqtt")  # None: no song known, or not stored (logged)
        if row is not None:
            self.gate.accepted(text, song if song is not None else row.get("uri"))
        self.handled += 1
        return text

    def _ignore(self, message: str) -> str:
        """Log it, up to LOG_BURST lines per LOG_WINDOW_S: a flood of junk on the command
        topic must not flood the journal (the rest are counted, in the next line and in
        status)."""
        self.ignored += 1
        now = self.clock()
        if now - self._window_start >= LOG_WINDOW_S:
            self._window_start, self._logged = now, 0
        if self._logged >= LOG_BURST:
            self._unlogged += 1
            return "ignored"
        more = f" (and {self._unlogged} more not logged before)" if self._unlogged else ""
        log.warning("MQTT %s%s", message, more)
        self._logged += 1
        self._unlogged = 0
        return "ignored"
