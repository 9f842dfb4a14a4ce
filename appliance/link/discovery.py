"""Home Assistant MQTT discovery: the appliance as one device with sensors, buttons and
a switch, each a retained config under `<discovery_prefix>/<component>/<id>/<key>/config`.

Every entity reads the one retained state topic (a `value_template` picks its field) and
follows the availability topic, so a pulled plug greys them all out. The like and skip
buttons and the music switch publish the same words as any other controller on the
command topic. With music off in the config they are withdrawn (an empty retained
config deletes an entity in Home Assistant), so a dashboard never offers a dead button.
"""

from __future__ import annotations

import json
from typing import Any

from appliance.link.client import OFFLINE, ONLINE, Topics

MODEL = "emotion-appliance"

# key, name, template, icon, extra fields
SENSORS: tuple[tuple[str, str, str, str, dict[str, Any]], ...] = (
    ("emotion", "Emotion", "{{ value_json.emotion or 'no face' }}", "mdi:emoticon-outline", {}),
    ("valence", "Valence", "{{ value_json.valence }}", "mdi:thumbs-up-down",
     {"state_class": "measurement", "suggested_display_precision": 2}),
    ("arousal", "Arousal", "{{ value_json.arousal }}", "mdi:lightning-bolt-outline",
     {"state_class": "measurement", "suggested_display_precision": 2}),
    ("mood", "Mood", "{{ value_json.mood }}", "mdi:palette-outline", {}),
    ("now_playing", "Now playing",
     "{{ (value_json.now_playing.artist ~ ' - ' ~ value_json.now_playing.name)[:250] "
     "if value_json.now_playing else 'nothing' }}", "mdi:music", {}),
    ("status", "Status", "{{ value_json.status }}", "mdi:list-status",
     {"entity_category": "diagnostic"}),
)  # fmt: skip
BUTTONS = (("like", "Like", "mdi:thumb-up"), ("skip", "Skip", "mdi:skip-next"))
SWITCH = ("music", "Music", "mdi:music-note")


def device_info(topics: Topics, version: str) -> dict[str, Any]:
    return {
        "identifiers": [f"{MODEL}_{topics.device}"],
        "name": f"Emotion appliance {topics.device}",
        "model": MODEL,
        "manufacturer": "emotion-appliance project",
        "sw_version": version,
    }


def _config(topics: Topics, version: str, key: str, name: str, icon: str) -> dict[str, Any]:
    return {
        "name": name,
        "unique_id": f"{topics.device}_{key}",
        "icon": icon,
        "availability_topic": topics.availability,
        "payload_available": ONLINE,
        "payload_not_available": OFFLINE,
        "device": device_info(topics, version),
        "origin": {"name": MODEL, "sw_version": version},
    }


def discovery_messages(topics: Topics, *, music: bool, version: str) -> list[tuple[str, str]]:
    """(topic, payload) of every retained discovery config; an empty payload withdraws
    an entity. Nothing when discovery is off (`discovery_prefix = ""`)."""
    if not topics.discovery:
        return []
    out: list[tuple[str, str]] = []

    def topic(component: str, key: str) -> str:
        return f"{topics.discovery}/{component}/{topics.device}/{key}/config"

    for key, name, template, icon, extra in SENSORS:
        config = _config(topics, version, key, name, icon)
        config.update(state_topic=topics.state, value_template=template)
        config.update(extra)
        if key == "status":
            config["json_attributes_topic"] = topics.state
            config["json_attributes_template"] = (
                "{{ {'reason': value_json.status_reason, 'state': value_json.state} | tojson }}"
            )
        out.append((topic("sensor", key), json.dumps(config, sort_keys=True)))
    for key, name, icon in BUTTONS:
        config = _config(topics, version, key, name, icon)
        config.update(command_topic=topics.command, payload_press=key, qos=1)
        out.append((topic("button", key), json.dumps(config, sort_keys=True) if music else ""))
    key, name, icon = SWITCH
    config = _config(topics, version, key, name, icon)
    config.update(
        command_topic=topics.command,
        payload_on="music on",
        payload_off="music off",
        state_topic=topics.state,
        value_template="{{ 'on' if value_json.music_on else 'off' }}",
        state_on="on",
        state_off="off",
        qos=1,
    )
    out.append((topic("switch", key), json.dumps(config, sort_keys=True) if music else ""))
    return out
