"""MqttLink: the appliance's connection to an MQTT broker, on its own Worker thread.

Never on the frame loop. The link reads what the loop already hands over, the Board
(`Board.read()`: a lock and a copy), and the publisher's last status snapshot (one
immutable dict swapped in one assignment), so the loop does not know the link exists.
paho's network loop runs on this thread (`Client.loop`), commands arrive on it, and the
link alone writes its own state, published to status as one `LinkStatus` snapshot.

Topics (`<prefix>/<id>/...`): `availability` (online / offline, retained; the last will
says offline when the appliance vanishes), `state` (retained JSON every
`state_interval_s` and at once on a change of emotion, mood, music on/off or status
level), `events` (with `events = true`: the smoothed state of each frame, at most
`events_max_hz`), `command` (QoS 1: like, skip, music on, music off; see commands.py).

Bounded: while the broker is away nothing is queued; the state is rebuilt from the
latest frame and status when the link is back, and events in between are dropped (a
robot wants now, not a backlog). While connected, at most one state and one event are in
flight: a slow broker delays the next one, it never piles them up. Reconnects wait the
delays of the project's Backoff (1 s doubling to 60 s, starting over once a connection
has lasted STABLE_S).

A clean stop publishes `offline` (retained) and disconnects within `stop_grace_s`; a
crash or SIGKILL leaves that to the broker, through the will.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt

from appliance import __version__
from appliance.common.backoff import Backoff
from appliance.common.worker import Worker
from appliance.config.schema import MqttConfig
from appliance.link.client import (
    CONNACK_TIMEOUT_S,
    KEEPALIVE_S,
    OFFLINE,
    ONLINE,
    SESSION_EXPIRY_S,
    LinkError,
    Topics,
    connect_properties,
    lost,
    new_client,
    refusal,
    socket_failure,
)
from appliance.link.commands import Commands
from appliance.link.discovery import discovery_messages
from appliance.service.status import STATE_NAMES, UNKNOWN, assess

if TYPE_CHECKING:
    from appliance.music.stack import MusicStack
    from appliance.pipeline import FrameResult
    from appliance.service.publisher import Board, BoardView

log = logging.getLogger(__name__)

POLL_S = 0.1  # how soon a change of emotion or mood goes out
RETRY_BACKOFF_S = (1.0, 60.0)  # first, longest wait before reconnecting
# The backoff starts over only after a connection that lasted this long: one dropped at
# once (a client id taken over by a twin, a broker that refuses after the CONNACK) keeps
# backing off instead of reconnecting every second.
STABLE_S = 30.0
OFFLINE_WAIT_S = 1.0  # on stop: the broker's acknowledgement of "offline"
# A state or event not acknowledged in this long is given up on (the broker gets the
# next one): a stuck message must not silence the link.
INFLIGHT_GIVE_UP_S = 2.0 * KEEPALIVE_S

IDLE, CONNECTING, CONNECTED = "idle", "connecting", "connected"
SESSION_TAKEN_OVER = 142  # MQTT 5 DISCONNECT reason: the same client id connected elsewhere


@dataclass(frozen=True)
class LinkStatus:
    """The link as status.json shows it (`mqtt`). `state`: connecting (first try),
    connected, down (a try failed; `error` says why, and status warns), stopped."""

    state: str
    broker: str
    client_id: str
    tls: bool
    user: str | None
    error: str | None = None
    since: float | None = None  # wall time of the last change of state
    retries: int = 0  # waits since the last connection that lasted (the Backoff's count)
    states: int = 0  # state messages published
    events: int = 0
    commands: int = 0  # like / skip / music on / music off applied
    duplicates: int = 0
    ignored: int = 0


class Pacer:
    """When the next state and event are due, by the link's (injectable) clock.

    The state: at once when its key (emotion, mood, music on/off, status level) changed,
    else every `state_interval_s`. Events: a new frame, and never two closer than
    1 / events_hz (None: no events)."""

    def __init__(self, state_interval_s: float, events_hz: float | None) -> None:
        self.state_interval_s = state_interval_s
        self.event_gap_s = 1.0 / events_hz if events_hz else None
        self._key: object = object()
        self._next_state = -math.inf
        self._next_event = -math.inf
        self._frames: int | None = None

    def force(self) -> None:
        """The next state goes out at once (a new connection)."""
        self._key = object()

    def state_due(self, now: float, key: object) -> bool:
        return key != self._key or now >= self._next_state

    def state_sent(self, now: float, key: object) -> None:
        self._key = key
        self._next_state = now + self.state_interval_s

    def event_due(self, now: float, frames: int) -> bool:
        return self.event_gap_s is not None and frames != self._frames and now >= self._next_event

    def event_sent(self, now: float, frames: int) -> None:
        self._frames = frames
        self._next_event = now + (self.event_gap_s or 0.0)

    def wait(self, now: float) -> float:
        """How long the link may block in its network loop before something is due."""
        if self.event_gap_s is None:
            return POLL_S
        return min(POLL_S, max(0.005, self._next_event - now))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return round(float(value), 4)


def build_state(
    device: str,
    view: BoardView | None,
    status: dict[str, Any] | None,
    level: tuple[str, str],
    music_on: bool | None,
    wall: float,
) -> dict[str, Any]:
    """The retained state message: the latest smoothed affect from the board, music and
    status from the publisher's snapshot, the status level in `status`'s words."""
    latest = view.latest if view is not None else None
    smoothed = latest.smoothed if latest is not None else None
    status = status or {}
    playing = status.get("now_playing")
    depth = status.get("queue_depth")
    return {
        "id": device,
        "t": round(wall, 3),
        "state": status.get("state") or (view.state if view is not None else "starting"),
        "emotion": smoothed.emotion if smoothed else None,
        "confidence": _number(smoothed.confidence) if smoothed else None,
        "valence": _number(smoothed.valence) if smoothed else None,
        "arousal": _number(smoothed.arousal) if smoothed else None,
        "face": bool(latest.faces) if latest is not None else False,
        "face_presence": _number(smoothed.face_presence) if smoothed else None,
        # metres to the followed face, from a depth camera; None without depth or face
        "distance_m": _number(latest.faces[0].distance_m) if latest and latest.faces else None,
        "mood": status.get("mood"),
        "music_on": music_on,
        "now_playing": (
            {k: playing.get(k) for k in ("artist", "name", "uri")}
            if isinstance(playing, dict)
            else None
        ),
        "queue_depth": depth if isinstance(depth, int) and not isinstance(depth, bool) else 0,
        "status": level[0],
        "status_reason": level[1],
    }


def event_payload(device: str, result: FrameResult) -> dict[str, Any]:
    """The smoothed part of `run --events` for one frame."""
    s = result.smoothed
    return {
        "id": device,
        "frame": result.index,
        "t": round(result.t, 4),
        "smoothed": {
            "emotion": s.emotion,
            "confidence": _number(s.confidence),
            "valence": _number(s.valence),
            "arousal": _number(s.arousal),
        },
    }


class MqttLink(Worker):
    """The link: started by the daemon's crew after every other worker, so it is stopped
    first, while the rest still runs. Also a publisher companion (`snapshot`)."""

    stop_grace_s = 3.0  # connect timeout (2 s) or the "offline" acknowledgement (1 s)

    def __init__(
        self,
        settings: MqttConfig,
        *,
        password: str | None,
        board: Board | None = None,
        status: Callable[[], dict[str, Any] | None] = lambda: None,
        stale_after_s: float = 10.0,
        music: MusicStack | None = None,
        version: str = __version__,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        super().__init__("mqtt")
        self.settings = settings
        self.topics = Topics.from_settings(settings)
        self.board = board
        self.status_source = status
        self.stale_after_s = stale_after_s
        self.music = music
        self.version = version
        self.clock = clock
        self.wall = wall
        self.backoff = Backoff(*RETRY_BACKOFF_S)
        self.pacer = Pacer(
            settings.state_interval_s, settings.events_max_hz if settings.events else None
        )
        self.commands = Commands(music, current_song=self._current_song, clock=clock)
        self._client = new_client(settings, password, self.topics.device)  # may raise SecretError
        self._client.will_set(self.topics.availability, OFFLINE, qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._phase = IDLE
        self._retry_at = clock()
        self._connack_by = math.inf
        self._connected_at = -math.inf
        self._failures = 0
        self._logged_error: str | None = None
        self._last_bug = ""
        self._state_info: mqtt.MQTTMessageInfo | None = None
        self._state_sent_at = 0.0
        self._event_info: mqtt.MQTTMessageInfo | None = None
        self._event_sent_at = 0.0
        self._level_of: tuple[object, tuple[str, str]] = (None, (STATE_NAMES[UNKNOWN], ""))
        self._status = LinkStatus(
            state="connecting",
            broker=settings.shown_broker,
            client_id=self.topics.device,
            tls=settings.tls,
            user=settings.username or None,
            since=wall(),
        )

    def attach(
        self,
        *,
        board: Board,
        music: MusicStack | None,
        status: Callable[[], dict[str, Any] | None],
    ) -> None:
        """What the daemon builds after the link (which is built early, so that a refused
        password or CA file fails the start before hardware is claimed); before start()."""
        self.board = board
        self.music = self.commands.music = music
        self.status_source = status

    # ------------------------------------------------------------ other threads

    def snapshot(self) -> dict[str, Any]:
        """Status companion: the link's last published LinkStatus. The crew asks every
        worker to stop at once, so the publisher's final status may be written while the
        link is still saying offline: from the stop request on it shows stopping, then
        stopped (read from the stop flag and the thread, never written from here)."""
        status = self._status
        if self.stopping.is_set() and status.state != "stopped":
            status = dataclasses.replace(status, state="stopping" if self.is_alive() else "stopped")
        return {"mqtt": dataclasses.asdict(status)}

    def busy_with(self) -> str:
        return f"{self._phase} {self.settings.shown_broker}"

    # ------------------------------------------------------------ the thread

    def work(self) -> None:
        log.info(
            "MQTT link to %s as %s%s (topics %s/...)",
            self.settings.shown_broker,
            self.topics.device,
            " over TLS" if self.settings.tls else "",
            self.topics.base,
        )
        while not self.stopping.is_set():
            try:
                self._step()
            except Exception as exc:  # a bug must not end the link silently
                if str(exc) != self._last_bug:
                    log.exception("MQTT link step failed")
                    self._last_bug = str(exc)
                if self._phase != IDLE:  # whatever the socket's state: start over, later
                    self._failed(socket_failure(self.settings, exc))
                self.pause(POLL_S)

    def _step(self) -> None:
        now = self.clock()
        if self._phase == IDLE:
            if now < self._retry_at:
                self.pause(min(1.0, self._retry_at - now))
            else:
                self._connect()
            return
        rc = self._client.loop(timeout=self.pacer.wait(now) if self._phase == CONNECTED else POLL_S)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            self._failed(lost(self.settings, rc))
            return
        now = self.clock()
        if self._phase == CONNECTING and now >= self._connack_by:
            self._failed(
                LinkError(
                    "timeout",
                    f"{self.settings.shown_broker}: no answer to the login within "
                    f"{CONNACK_TIMEOUT_S:.0f} s",
                )
            )
            self._client.disconnect()
        elif self._phase == CONNECTED:
            self._publish_due(now)

    def finish(self) -> None:
        """A clean stop: "offline" (retained) acknowledged, then a normal DISCONNECT, after
        which the broker drops the will."""
        client = self._client
        if self._phase == CONNECTED:
            info = client.publish(self.topics.availability, OFFLINE, qos=1, retain=True)
            deadline = self.clock() + OFFLINE_WAIT_S
            while not info.is_published() and self.clock() < deadline:
                if client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
                    break
            if not info.is_published():
                log.warning("MQTT: offline not acknowledged within %.1f s", OFFLINE_WAIT_S)
        self._phase = IDLE
        client.disconnect()
        client.loop(timeout=0.01)  # close the socket paho may still hold
        self._set_status(state="stopped")

    # ------------------------------------------------------------ connection

    def _connect(self) -> None:
        self._phase = CONNECTING
        self._connack_by = self.clock() + CONNACK_TIMEOUT_S
        try:
            self._client.connect(
                self.settings.host,
                self.settings.broker_port,
                keepalive=KEEPALIVE_S,
                clean_start=False,  # keep the session: commands sent while away arrive
                properties=connect_properties(SESSION_EXPIRY_S),
            )
        except (OSError, ValueError) as exc:
            self._failed(socket_failure(self.settings, exc))

    def _on_connect(self, client, _userdata, flags, reason, _properties) -> None:
        try:
            if reason.is_failure:
                self._failed(refusal(self.settings, reason))
                return
            self._phase = CONNECTED
            if self._failures:
                log.info(
                    "MQTT connected to %s after %d failed tries",
                    self.settings.shown_broker,
                    self._failures,
                )
            else:
                log.info("MQTT connected to %s", self.settings.shown_broker)
            self._failures = 0
            self._logged_error = None
            self._connected_at = self.clock()
            self._state_info = self._event_info = None
            client.publish(self.topics.availability, ONLINE, qos=1, retain=True)
            for topic, payload in discovery_messages(
                self.topics, music=self.music is not None, version=self.version
            ):
                client.publish(topic, payload, qos=1, retain=True)
            client.subscribe(self.topics.command, qos=1)
            self.pacer.force()
            self._set_status(state="connected", error=None)
        except Exception:
            log.exception("MQTT: setting up the connection failed")

    def _on_disconnect(self, _client, _userdata, flags, reason, _properties) -> None:
        if self.stopping.is_set() or self._phase == IDLE:
            return
        if getattr(reason, "value", None) == SESSION_TAKEN_OVER:
            error = LinkError(
                "refused",
                f"{self.settings.shown_broker}: another client connected with the same client "
                f"id '{self.topics.device}' (give each appliance its own mqtt.client_id or "
                "host name)",
            )
        elif getattr(flags, "is_disconnect_packet_from_server", False):
            error = LinkError(
                "refused", f"{self.settings.shown_broker} closed the connection: {reason}"
            )
        elif self.clock() - self._connected_at < STABLE_S:
            # Mosquitto 2.0 drops the older of two clients with one id without a reason
            error = lost(
                self.settings,
                f"closed {self.clock() - self._connected_at:.0f} s after the login: is another "
                f"appliance using client id '{self.topics.device}'? Give each its own "
                "mqtt.client_id or host name",
            )
        else:
            error = lost(self.settings, "closed")
        self._failed(error)

    def _failed(self, error: LinkError) -> None:
        """One failed try or lost connection: wait the next backoff delay, say why once
        (the same error again is logged at DEBUG), and show it in status."""
        if self._phase == IDLE:
            return  # this try's failure is counted already
        was_connected = self._phase == CONNECTED
        self._phase = IDLE
        self._failures += 1
        if was_connected and self.clock() - self._connected_at >= STABLE_S:
            self.backoff.reset()
        delay = self.backoff.next()
        self._retry_at = self.clock() + delay
        message = str(error)
        if was_connected:
            log.warning("MQTT %s; reconnecting in %.0f s", message, delay)
        elif message != self._logged_error:
            level = logging.ERROR if error.kind in ("auth", "tls") else logging.WARNING
            log.log(level, "MQTT %s; %s; retrying in %.0f s", message, error.hint, delay)
        else:
            log.debug("MQTT %s; retrying in %.0f s", message, delay)
        self._logged_error = message
        self._set_status(state="down", error=message, retries=self.backoff.failures)

    # ------------------------------------------------------------ messages

    def _on_message(self, _client, _userdata, message: mqtt.MQTTMessage) -> None:
        """A command (QoS 1): applied before paho acknowledges it, when this returns."""
        if message.topic != self.topics.command:
            return
        try:
            self.commands.handle(message.payload, retained=bool(message.retain))
        except Exception:
            log.exception("MQTT command failed")
        c = self.commands
        self._set_status(commands=c.handled, duplicates=c.duplicates, ignored=c.ignored)

    def _current_song(self) -> str | None:
        """The song a press would be for, as the last status shows it."""
        status = self.status_source() or {}
        for key in ("now_playing", "last_song"):
            song = status.get(key)
            if isinstance(song, dict) and song.get("uri"):
                return str(song["uri"])
        return None

    def _level(self, snapshot: dict[str, Any] | None) -> tuple[str, str]:
        """`status`'s verdict on the snapshot, worked out once per snapshot."""
        source, level = self._level_of
        if snapshot is not source or source is None:
            code, reason = assess(snapshot, self.stale_after_s)
            level = (STATE_NAMES[code], reason)
            self._level_of = (snapshot, level)
        return level

    def _publish_due(self, now: float) -> None:
        view = self.board.read() if self.board is not None else None
        latest = view.latest if view is not None else None
        snapshot = self.status_source()
        level = self._level(snapshot)
        music_on = self.music.enabled if self.music is not None else None
        key = (
            latest.smoothed.emotion if latest is not None else None,
            (snapshot or {}).get("mood"),
            music_on,
            level[0],
        )
        state_free = self._free(self._state_info, self._state_sent_at, now)
        if self.pacer.state_due(now, key) and state_free:
            state = build_state(self.topics.device, view, snapshot, level, music_on, self.wall())
            payload = json.dumps(state, allow_nan=False, default=str)
            self._state_info = self._client.publish(self.topics.state, payload, qos=1, retain=True)
            self._state_sent_at = now
            self.pacer.state_sent(now, key)
            self._set_status(states=self._status.states + 1)
        if (
            latest is not None
            and self.pacer.event_due(now, view.frames)
            and self._free(self._event_info, self._event_sent_at, now)
        ):
            payload = json.dumps(event_payload(self.topics.device, latest), allow_nan=False)
            self._event_info = self._client.publish(self.topics.events, payload, qos=0)
            self._event_sent_at = now
            self.pacer.event_sent(now, view.frames)
            self._set_status(events=self._status.events + 1)

    @staticmethod
    def _free(info: mqtt.MQTTMessageInfo | None, sent_at: float, now: float) -> bool:
        """No message of this kind still on its way (or given up on)."""
        return (
            info is None
            or info.rc != mqtt.MQTT_ERR_SUCCESS
            or info.is_published()
            or now - sent_at > INFLIGHT_GIVE_UP_S
        )

    def _set_status(self, **changes: Any) -> None:
        if "state" in changes and changes["state"] != self._status.state:
            changes["since"] = self.wall()
        self._status = dataclasses.replace(self._status, **changes)
