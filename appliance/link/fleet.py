"""`emotion-appliance fleet`: every appliance on a broker, one line each.

Read-only and runnable anywhere (a teacher's laptop in a classroom pilot): it subscribes
to `<prefix>/+/state` and `<prefix>/+/availability`, gathers the retained messages (and
any live ones) for `wait_s`, and prints id, online, emotion, mood, playing, status and the
age of the state. It publishes nothing, creates no file and keeps no session (a clean
start with its own client id). Everything it prints came from the network, so each field
goes through the project's one sanitiser (`appliance.common.text.printable`).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

from appliance.common.text import printable
from appliance.config.schema import MqttConfig
from appliance.link.client import OFFLINE, ONLINE, connect_blocking, new_client

MAX_PAYLOAD = 64 * 1024  # a state is ~500 bytes; anything far larger is not one of ours
MAX_APPLIANCES = 10_000  # a bound on what a busy (or hostile) broker can make us hold
CONNECT_WAIT_S = 10.0
COLUMNS = ("id", "online", "emotion", "mood", "playing", "status", "age")
FIELD_CHARS = 40  # each printed field is cut to this


@dataclass
class Seen:
    online: bool | None = None  # None: no availability message seen
    state: dict[str, Any] | None = None
    note: str = ""  # e.g. "state not JSON"


def _device(topic: str, prefix: str, leaf: str) -> str | None:
    head, tail = f"{prefix}/", f"/{leaf}"
    if not (topic.startswith(head) and topic.endswith(tail)):
        return None
    device = topic[len(head) : -len(tail)]
    return device if device and "/" not in device else None


class FleetCollector:
    """Folds state and availability messages into one `Seen` per device id."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.seen: dict[str, Seen] = {}

    @property
    def topics(self) -> list[str]:
        return [f"{self.prefix}/+/state", f"{self.prefix}/+/availability"]

    def add(self, topic: str, payload: bytes) -> None:
        for leaf in ("state", "availability"):
            device = _device(topic, self.prefix, leaf)
            if device is not None:
                break
        else:
            return
        entry = self.seen.get(device)
        if entry is None:
            if len(self.seen) >= MAX_APPLIANCES:
                return
            entry = self.seen[device] = Seen()
        if leaf == "availability":
            text = payload[:16].decode("utf-8", "replace").strip()
            entry.online = True if text == ONLINE else False if text == OFFLINE else None
            return
        if not payload:  # a retained state cleared
            entry.state = None
            return
        if len(payload) > MAX_PAYLOAD:
            entry.note = "state too large"
            return
        try:
            state = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            entry.note = "state not JSON"
            return
        if isinstance(state, dict):
            entry.state, entry.note = state, ""
        else:
            entry.note = "state not a JSON object"


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _age(state: dict[str, Any] | None, now: float) -> float | None:
    t = (state or {}).get("t")
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
        return None
    return round(now - t, 1)


def rows(seen: dict[str, Seen], now: float) -> list[dict[str, Any]]:
    """One plain dict per appliance, sorted by id (the `--json` output)."""
    out = []
    for device in sorted(seen):
        entry = seen[device]
        state = entry.state or {}
        playing = state.get("now_playing")
        if isinstance(playing, dict):
            playing = f"{playing.get('artist')} - {playing.get('name')}"
        out.append(
            {
                "id": device,
                "online": entry.online,
                "emotion": _text(state.get("emotion")),
                "mood": _text(state.get("mood")),
                "playing": _text(playing),
                "status": _text(state.get("status")) or (entry.note or None),
                "age_s": _age(entry.state, now),
            }
        )
    return out


def _shown_age(age: float | None) -> str:
    if age is None:
        return "-"
    if age < 0:
        return "future"
    if age < 120:
        return f"{age:.0f}s"
    if age < 7200:
        return f"{age / 60:.0f}min"
    return f"{age / 3600:.0f}h"


def format_rows(table: list[dict[str, Any]]) -> str:
    """Aligned columns; every field made printable (it came from the network)."""
    shown = []
    for row in table:
        online = {True: "online", False: "offline", None: "?"}[row["online"]]
        values = [
            row["id"],
            online,
            *(row[key] or "-" for key in ("emotion", "mood", "playing", "status")),
            _shown_age(row["age_s"]),
        ]
        shown.append([printable(v, FIELD_CHARS) for v in values])
    widths = [max(len(c), *(len(r[i]) for r in shown)) for i, c in enumerate(COLUMNS)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(COLUMNS, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in shown]
    return "\n".join(line.rstrip() for line in lines)


def collect(settings: MqttConfig, password: str | None, wait_s: float) -> dict[str, Seen]:
    """Connect to settings' broker, subscribe, gather for `wait_s`, disconnect; raises
    LinkError."""
    collector = FleetCollector(settings.topic_prefix)
    client = new_client(settings, password, f"emotion-appliance-fleet-{os.getpid()}")
    client.on_message = lambda _c, _u, message: collector.add(message.topic, message.payload)
    connect_blocking(client, settings, CONNECT_WAIT_S)
    try:
        for topic in collector.topics:
            client.subscribe(topic, qos=0)
        deadline = time.monotonic() + wait_s
        while (left := deadline - time.monotonic()) > 0:
            if client.loop(timeout=min(0.1, left)) != mqtt.MQTT_ERR_SUCCESS:
                break
    finally:
        client.disconnect()
    return collector.seen
