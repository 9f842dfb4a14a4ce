"""The configuration schema: every section and key declared once, with its doc and limits.

The loader, the documented example file and `describe_config` are all derived from these
dataclasses, so a key cannot be documented one way and validated another.

Adding a section takes two steps:

1. write a frozen dataclass whose docstring is the section's doc and whose fields are
   declared with `setting(default, doc, min=..., max=..., choices=...)`;
2. add one line `name: NameConfig = field(default_factory=NameConfig)` to `Config`.

Supported key types are int, float, bool and str. A section whose keys constrain each
other defines `problems(self) -> list[tuple[key, message]]`; the loader reports them
like any other error.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, get_type_hints
from urllib.parse import urlsplit

from appliance.common.redact import redact
from appliance.sources import SOURCE_SETTING_DOC, spec_problem

DEFAULT_CONFIG_PATH = "/etc/emotion-appliance/config.toml"

_SETTING = "appliance.config.setting"
NAMES = tuple[str, ...]  # a list of names: an array of strings in TOML
_KINDS: tuple[Any, ...] = (bool, int, float, str, NAMES)


@dataclass(frozen=True, slots=True)
class Setting:
    """Per-key metadata: the doc shown to users plus the constraint the loader enforces."""

    doc: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None
    pattern: str | None = None  # strings: a regular expression the whole value must match
    pattern_doc: str = ""  # what the pattern means, for error messages


def setting(
    default: Any,
    doc: str,
    *,
    min: float | None = None,
    max: float | None = None,
    choices: Sequence[str] | None = None,
    pattern: str | None = None,
    pattern_doc: str = "",
) -> Any:
    """Declare a key: its default, its doc and its limits, in one place."""
    meta = Setting(
        doc, min, max, tuple(choices) if choices is not None else None, pattern, pattern_doc
    )
    return dataclasses.field(default=default, metadata={_SETTING: meta})


def _number(value: float) -> str:
    """Write a limit compactly: 1 not 1.0, 0.01 as is."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value)


@dataclass(frozen=True, slots=True)
class KeySpec:
    """One key of a section as the loader sees it: name, Python type, default, limits."""

    name: str
    kind: type
    default: Any
    setting: Setting

    @property
    def doc(self) -> str:
        return self.setting.doc

    def expected(self) -> str:
        """What a valid value looks like, for error messages and generated docs."""
        s = self.setting
        if self.kind is bool:
            return "true or false"
        if self.kind == NAMES:
            choices = f" from {', '.join(s.choices)}" if s.choices else ""
            return f'a list of names{choices}, e.g. ["a", "b"]'
        if self.kind is str:
            if s.choices:
                return "one of " + ", ".join(f'"{c}"' for c in s.choices)
            if s.pattern:
                return s.pattern_doc or f"a string matching {s.pattern}"
            return "a string"
        text = "an integer" if self.kind is int else "a number"
        if s.min is not None and s.max is not None:
            return f"{text} in {_number(s.min)}..{_number(s.max)}"
        if s.min is not None:
            return f"{text} >= {_number(s.min)}"
        if s.max is not None:
            return f"{text} <= {_number(s.max)}"
        return text


def section_keys(cls: type) -> tuple[KeySpec, ...]:
    """The keys of a section dataclass, in declaration order.

    Raises TypeError for a field declared without `setting()` or of an unsupported type:
    that is a programming error, caught by the tests at import of the schema.
    """
    hints = get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get(_SETTING)
        kind = hints[f.name]
        if not isinstance(meta, Setting):
            raise TypeError(f"{cls.__name__}.{f.name}: declare it with setting()")
        if kind not in _KINDS:
            raise TypeError(f"{cls.__name__}.{f.name}: unsupported type {kind!r}")
        specs.append(KeySpec(f.name, kind, f.default, meta))
    return tuple(specs)


def folder_problems(key: str, value: str, what: str) -> list[tuple[str, str]]:
    """An empty folder key is an error: Path("") is the working directory, so the daemon
    would put `what` wherever it was started, and `status` would look there too."""
    if value.strip():
        return []
    problem = f'expected a folder path, got "{value}" ({what} would land in the working directory)'
    return [(key, problem)]


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class CameraConfig:
    """Camera: where frames come from and at what size and rate."""

    source: str = setting("auto", SOURCE_SETTING_DOC)  # from the source kinds' registry
    width: int = setting(640, "Requested frame width in pixels.", min=160, max=4096)
    height: int = setting(480, "Requested frame height in pixels.", min=120, max=4096)
    fps: int = setting(15, "Requested frames per second.", min=1, max=120)

    def problems(self) -> list[tuple[str, str]]:
        """A source that can never work (empty, v4l2:x, ftp://..., a mistyped keyword), by
        the source kinds' own checks, is a configuration error now (exit 2, no restart
        loop), not a camera failure at run time."""
        problem = spec_problem(self.source)
        return [("source", problem)] if problem else []


@dataclass(frozen=True)
class ModelsConfig:
    """Models: the TFLite face detector, emotion classifier and valence-arousal regressor."""

    dir: str = setting(
        "",
        'Folder holding the .tflite files and their .json model cards; "" = auto: the '
        "repository's models/ folder when running from a checkout, else "
        "/usr/share/emotion-appliance/models.",
    )
    detector: str = setting(
        "blazeface_short_range",
        "Face detector: a model card name in dir, or a path to a model card .json.",
    )
    emotion: str = setting(
        "emotion_ensemble_int8",
        "Emotion classifier: a model card name in dir, or a path to a model card .json "
        "(emotion_ensemble_int8: this project's two int8 CNNs, the robust v2 and, where v2 "
        "is doubtful, the clean-face v1 averaged with it; emotion_cnn_int8: v2 alone, "
        "about 60% of the time per face; fer_baseline: the fer package's model).",
    )
    va: str = setting(
        "va_mobilenetv3_int8",
        "Valence-arousal regressor: a model card name in dir, or a path to a card .json; "
        '"" = no VA model: valence and arousal then come from the emotion probabilities '
        "through the coordinates in appliance/affect/va.py (status says which).",
    )
    threads: str = setting(
        "auto",
        "CPU cores for the vision pipeline. 1: all of it on one thread (one TFLite thread "
        "per model, OpenCV sequential). N >= 2: the frame loop takes N cores (N - 1 above "
        "2, leaving one to the publisher, sync, VLM and MQTT threads): it finds the faces "
        "of the next frame while a worker classifies the current one; cores beyond those two "
        "go, as TFLite threads, to the stage that is slower on this machine (timed at "
        "start), one thread for a model whose threads do not pay (BENCHMARKS.md, Cores). "
        '"auto" = the CPUs this process may run on (its affinity mask: systemd\'s '
        "CPUAffinity and taskset are honoured).",
        pattern="auto|[1-8]",
        pattern_doc='"auto" or an integer 1..8',
    )


@dataclass(frozen=True)
class EmotionConfig:
    """Emotion: which of the model's classes the appliance reports."""

    classes: tuple[str, ...] = setting(
        (),
        "The emotion classes to report, a subset of the model card's labels, e.g. "
        '["angry", "happy", "sad", "surprise", "neutral"] (the CNN-VLM study\'s five); '
        "probabilities are renormalised over them everywhere (events, smoothing, VA from "
        "the probabilities, status, history). [] = all of the card's labels. A name the "
        "card lacks stops the start with exit 2.",
    )

    def problems(self) -> list[tuple[str, str]]:
        if len(set(self.classes)) != len(self.classes):
            return [("classes", "names a class twice")]
        if len(self.classes) == 1:
            return [("classes", "one class cannot be told apart from anything: name two or more")]
        if any(not name.strip() for name in self.classes):
            return [("classes", "holds an empty name")]
        return []


@dataclass(frozen=True)
class DetectionConfig:
    """Detection: finding faces and cropping them for the emotion model."""

    min_score: float = setting(0.5, "BlazeFace score threshold.", min=0.0, max=1.0)
    max_faces: int = setting(1, "Most faces classified per frame.", min=1, max=10)
    margin: float = setting(
        0.08,
        "Fraction of the face box added on each side before cropping. With crop_shift, "
        "the default turns a BlazeFace box (brows to chin) into the framing of FER2013 "
        "faces (forehead to chin), which the emotion models were trained on.",
        min=0.0,
        max=1.0,
    )
    crop_shift: float = setting(
        0.08,
        "Move the crop up by this fraction of the face box (negative: down).",
        min=-0.5,
        max=0.5,
    )
    haar_fallback: bool = setting(
        True,
        "Use the OpenCV Haar cascade when the BlazeFace model is absent or unusable "
        "(damaged, or not matching its card).",
    )
    min_face_px: int = setting(
        40, "Faces smaller than this many pixels across are ignored.", min=8, max=1000
    )
    max_distance_m: float = setting(
        0.0,
        "With depth (a RealSense): faces farther than this many metres are not classified,"
        " so the person at the desk is followed, not people walking past; 0 = off. With"
        " depth, the nearest face (not the largest) is the one the smoothed state follows.",
        min=0.0,
        max=20.0,
    )
    min_relief_m: float = setting(
        0.004,
        "With depth: a face whose depth varies less than this across its box, once the"
        " tilt is taken out, is flat (a printed photo, a phone screen) and marked"
        " live: false. Measured on recordings: flat photo cards 0-0.34 cm within 1.2 m,"
        " face-shaped reliefs 0.6-3.4 cm (README, Sources).",
        min=0.0,
        max=0.1,
    )
    reject_flat: bool = setting(
        False,
        "With depth: flat faces (live: false) are left out, not classified (false:"
        " they are classified and only marked).",
    )


@dataclass(frozen=True)
class SmoothingConfig:
    """Smoothing: turning noisy per-frame probabilities into a steady label."""

    tau_s: float = setting(
        0.5,
        "Time constant in seconds of the exponential filter on class probabilities.",
        min=0.01,
        max=30.0,
    )
    no_face_tau_s: float = setting(
        1.5,
        'How fast, in seconds, the state decays towards "no face" when no face is seen.',
        min=0.01,
        max=60.0,
    )
    hold_s: float = setting(
        0.6,
        "Seconds a new label must lead before it is reported.",
        min=0.0,
        max=30.0,
    )
    min_confidence: float = setting(
        0.35,
        "Smoothed probability a label needs to be reported.",
        min=0.0,
        max=1.0,
    )


@dataclass(frozen=True)
class StorageConfig:
    """Storage: where history is kept."""

    state_dir: str = setting(
        "/var/lib/emotion-appliance", "Folder for the SQLite history and other state."
    )
    sample_hz: float = setting(
        1.0,
        "Rate in Hz at which smoothed samples are written to SQLite.",
        min=0.01,
        max=10.0,
    )
    history_days: int = setting(
        30,
        "Days of history kept: older affect samples, VLM replies, mood changes, runs and "
        "finished songs are deleted at start and once a day (songs are kept at least "
        "music.no_repeat_hours; likes and skips are kept). 0 = keep everything (about 20 MB "
        "a day at 1 Hz).",
        min=0,
        max=3650,
    )

    def problems(self) -> list[tuple[str, str]]:
        return folder_problems("state_dir", self.state_dir, "the SQLite history")


@dataclass(frozen=True)
class ServiceConfig:
    """Service: the running daemon."""

    runtime_dir: str = setting(
        "/run/emotion-appliance", "Folder for the status file and other runtime files."
    )
    status_interval_s: float = setting(1.0, "Seconds between status updates.", min=0.1, max=60.0)

    def problems(self) -> list[tuple[str, str]]:
        return folder_problems("runtime_dir", self.runtime_dir, "the status file")


@dataclass(frozen=True)
class MusicConfig:
    """Music: moods from the catalog, and when the daemon queues a song."""

    enabled: bool = setting(
        True, "Recommend songs from the local catalog as the mood changes (needs a catalog)."
    )
    user: str = setting("default", "Listener profile: likes, skips and history are kept per user.")
    moods: int = setting(
        4, "k of the k-means mood clusters over the catalog's valence/energy.", min=2, max=8
    )
    mood_hold_s: float = setting(
        20.0,
        "Seconds a new mood must stay nearest before the mood changes (no flapping).",
        min=0.0,
        max=3600.0,
    )
    mood_margin: float = setting(
        0.05,
        "A new mood must be this much closer (valence/energy units) than the current one.",
        min=0.0,
        max=1.0,
    )
    min_interval_s: float = setting(
        30.0, "Least seconds between two queued songs.", min=0.0, max=3600.0
    )
    queue_low: int = setting(
        2, "Queue another song when fewer than this many are waiting or unplayed.", min=1, max=50
    )
    queue_ahead: int = setting(
        2,
        "Most of our songs waiting unplayed in Spotify's queue at once; the rest wait in the"
        " local queue and go one by one as the listener reaches them. Spotify's queue view"
        " lists only about the next 20 tracks: kept short, it always shows our songs, so a"
        " push whose reply was lost is checked there instead of being pushed twice.",
        min=1,
        max=10,
    )
    no_repeat_hours: float = setting(
        6.0,
        "A song is not recommended again to the same user within this time.",
        min=0.0,
        max=720.0,
    )
    history_half_life_days: float = setting(
        14.0, "Likes and skips weigh half as much after this many days.", min=0.1, max=3650.0
    )


@dataclass(frozen=True)
class SpotifyConfig:
    """Spotify: where queued songs are played. Empty client_id = the queue stays local."""

    client_id: str = setting("", 'Spotify app client id (developer dashboard); "" = no Spotify.')
    client_secret_file: str = setting(
        "/etc/emotion-appliance/spotify_client_secret",
        "File holding the app's client secret (mode 0600 or 0640; never world-readable).",
    )
    redirect_uri: str = setting(
        "http://127.0.0.1:8888/callback",
        "Redirect URI registered for the app; after login the browser lands there and you "
        "paste the address it shows into `emotion-appliance spotify login`.",
    )
    device_name: str = setting(
        "", 'Spotify Connect device to queue on (e.g. "Living room"); "" = the active one.'
    )
    api_base: str = setting(
        "https://api.spotify.com/v1", "Web API base URL (change only for tests or a proxy)."
    )
    token_url: str = setting(
        "https://accounts.spotify.com/api/token",
        "OAuth token endpoint (change only for tests or a proxy).",
    )
    authorize_url: str = setting(
        "https://accounts.spotify.com/authorize",
        "OAuth authorize page (change only for tests or a proxy).",
    )
    timeout_s: float = setting(10.0, "HTTP timeout per Spotify request.", min=1.0, max=120.0)
    poll_s: float = setting(
        5.0, "Seconds between sync rounds (queue pushes, now-playing checks).", min=0.2, max=600.0
    )


def parse_rgb_pins(text: str) -> tuple[int, int, int] | None:
    """`"R,G,B"` BCM pins -> tuple; "" -> None. ValueError names the config key."""
    if not text.strip():
        return None
    try:
        pins = tuple(int(p) for p in text.split(","))
    except ValueError:
        pins = ()
    if len(pins) != 3 or not all(1 <= p <= 27 for p in pins):
        raise ValueError(f'gpio.rgb_pins: expected "R,G,B" BCM pins 1..27, got {text!r}')
    return pins  # type: ignore[return-value]


@dataclass(frozen=True)
class GpioConfig:
    """GPIO: like/skip buttons and status LEDs (BCM pin numbers; 0 = not fitted)."""

    enabled: bool = setting(True, "Use the buttons and LEDs when GPIO hardware is present.")
    like_pin: int = setting(17, "Like button: pin to ground, internal pull-up.", min=0, max=27)
    skip_pin: int = setting(27, "Skip button: pin to ground, internal pull-up.", min=0, max=27)
    bounce_s: float = setting(0.05, "Button debounce time in seconds.", min=0.0, max=1.0)
    led_pin: int = setting(
        0,
        "Sync LED: on = synced, blinking = offline or failing, off = local only.",
        min=0,
        max=27,
    )
    rgb_pins: str = setting(
        "",
        'Mood RGB LED as "R,G,B" pins (common cathode), "" = none.',
        pattern=r"|([1-9]|1[0-9]|2[0-7]),([1-9]|1[0-9]|2[0-7]),([1-9]|1[0-9]|2[0-7])",
        pattern_doc='"" or three BCM pins 1..27 as "R,G,B"',
    )

    def problems(self) -> list[tuple[str, str]]:
        """Two parts on one pin: gpiozero would refuse the second at start-up and every
        button would be off, so say which keys clash now."""
        if not self.enabled:
            return []
        owners: dict[int, str] = {}
        found = []
        uses = [("like_pin", self.like_pin), ("skip_pin", self.skip_pin), ("led_pin", self.led_pin)]
        uses += [("rgb_pins", pin) for pin in parse_rgb_pins(self.rgb_pins) or ()]
        for key, pin in uses:
            if pin == 0:
                continue  # not fitted
            if pin in owners:
                found.append((key, f"pin {pin} is already used by {owners[pin]}"))
            else:
                owners[pin] = key
        return found


VLM_DEFAULT_PROMPT = (
    "An on-device classifier reads this person's face as {emotion} (confidence "
    "{confidence:.2f}; valence {valence:+.2f}, arousal {arousal:+.2f} on -1..1). Do not "
    "re-classify the emotion. In one short sentence, describe what in the scene might "
    "explain or contradict that mood (setting, activity, posture, company)."
)
VLM_PROMPT_FIELDS = {"emotion": "happy", "confidence": 0.5, "valence": 0.1, "arousal": 0.1}


# names that resolve on the LAN only; anything else with a dot is taken as public
_LOCAL_SUFFIXES = (".local", ".lan", ".home", ".internal", ".home.arpa", ".localdomain")


def cleartext_to_public_host(endpoint: str) -> bool:
    """http:// to a host that is not loopback, private, link-local or a LAN-only name.

    Decided from the URL alone (no DNS lookup at startup): IP literals by their range
    (not globally routable counts as local, so CGNAT/Tailscale 100.64/10 is too), names
    by form: localhost, single-label names and LAN suffixes are local.
    """
    try:
        parts = urlsplit(endpoint.strip())
        host = (parts.hostname or "").rstrip(".")
    except ValueError:
        return False
    if parts.scheme.lower() != "http" or not host:
        return False
    try:
        return ipaddress.ip_address(host).is_global
    except ValueError:
        pass
    if host == "localhost" or host.endswith(".localhost") or "." not in host:
        return False
    return not host.endswith(_LOCAL_SUFFIXES)


@dataclass(frozen=True)
class VlmConfig:
    """VLM: an occasional sentence of context from a remote vision-language model.

    Off by default: while enabled is false no image or request leaves the device. The
    endpoint must speak the OpenAI chat-completions API (vLLM, Ollama, llama.cpp's
    server and hosted APIs do)."""

    enabled: bool = setting(False, "Send occasional images to the VLM endpoint.")
    endpoint: str = setting(
        "",
        "Base URL of the OpenAI-compatible API, e.g. https://vlm.example.org/v1 "
        "(/chat/completions is appended unless already there).",
    )
    model: str = setting("", "Model name sent in each request.")
    api_key_file: str = setting(
        "", 'File holding the API key (not world-readable); "" = no key (local servers).'
    )
    prompt: str = setting(
        VLM_DEFAULT_PROMPT,
        "Prompt sent with the image; {emotion}, {confidence}, {valence} and {arousal} are "
        "filled in from the smoothed state, so the model adds context instead of "
        "re-classifying.",
    )
    interval_s: float = setting(
        300.0, "Seconds between requests (while a face is seen).", min=5.0, max=86400.0
    )
    on_change: bool = setting(True, "Also ask when the smoothed emotion changes.")
    min_gap_s: float = setting(
        30.0,
        "Never two requests closer than this, whatever triggers them.",
        min=1.0,
        max=86400.0,
    )
    timeout_s: float = setting(20.0, "Seconds to wait for a reply.", min=1.0, max=600.0)
    max_image_side: int = setting(
        256, "The image is downscaled so its longer side is at most this.", min=32, max=2048
    )
    send: str = setting(
        "face", "What is sent: the face crop, or the whole frame.", choices=("face", "frame")
    )
    max_reply_chars: int = setting(
        300, "Replies are trimmed to this many characters.", min=20, max=4000
    )

    @property
    def shown_endpoint(self) -> str:
        """The endpoint for logs, status and doctor: a URL password never leaves config."""
        return redact(self.endpoint)

    def cleartext_warning(self) -> str | None:
        """Why this endpoint sends face images unencrypted across the internet, or None.

        Not a config error: http:// to this machine or the LAN (Ollama, llama.cpp on a
        box next door) is normal. Only a public address or name over http:// is flagged.
        """
        if not self.enabled or not cleartext_to_public_host(self.endpoint):
            return None
        return (
            f"vlm.endpoint {self.shown_endpoint} is plain http:// to a host that is not "
            "loopback, private or a LAN name: face images and credentials would cross the "
            "network unencrypted; use https://"
        )

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if self.enabled and not self.endpoint.startswith(("https://", "http://")):
            found.append(("endpoint", "must be an http(s):// URL when enabled = true"))
        if self.enabled and not self.model:
            found.append(("model", "must name the model when enabled = true"))
        if self.api_key_file and urlsplit(self.endpoint).password is not None:
            # requests would turn the user:password into Basic auth and drop the Bearer
            # key: the server would get one of the two, silently
            found.append(
                (
                    "endpoint",
                    "carries a user:password and api_key_file is set too: the server would "
                    "get only one of them (Basic auth from the URL); keep one",
                )
            )
        try:
            self.prompt.format_map(VLM_PROMPT_FIELDS)
        except (KeyError, ValueError, IndexError, AttributeError) as exc:
            found.append(
                (
                    "prompt",
                    f"bad placeholder ({exc!r}); use {{emotion}}, {{confidence}}, "
                    "{valence}, {arousal}; write {{ }} for literal braces",
                )
            )
        return found


# MQTT topic levels chosen here: no wildcards (+ #), no empty level, no spaces
_MQTT_TOPIC = r"[^#+/\s]+(/[^#+/\s]+)*"
# The device id is a topic level and Home Assistant's node_id: [A-Za-z0-9_-] only
_MQTT_ID = r"[A-Za-z0-9_-]{0,64}"


def mqtt_device_id(client_id: str, hostname: str | None = None) -> str:
    """The device id: client_id, or this machine's host name (first label) made fit for
    a topic level and a Home Assistant node_id."""
    if client_id:
        return client_id
    if hostname is None:
        import socket

        hostname = socket.gethostname()
    label = hostname.split(".")[0]
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "_-") else "-" for c in label)
    return cleaned.strip("-")[:64] or "emotion-appliance"


@dataclass(frozen=True)
class MqttConfig:
    """MQTT: an optional link to a broker for Home Assistant, robots and fleets.

    Off by default: while enabled is false nothing leaves the device. When on, the
    smoothed emotion, valence, arousal, mood, song and status level are published (never
    images or faces), and like, skip and music on/off are accepted as commands."""

    enabled: bool = setting(False, "Connect to the MQTT broker and publish the state.")
    host: str = setting("", "Broker host name or IP address.")
    port: int = setting(0, "Broker port; 0 = 1883, or 8883 with tls = true.", min=0, max=65535)
    tls: bool = setting(
        False,
        "Connect with TLS, verifying the broker's certificate against ca_file, or the "
        "system's certificate store when ca_file is empty.",
    )
    ca_file: str = setting(
        "", 'CA certificate (PEM) that signed the broker\'s certificate; "" = system store.'
    )
    username: str = setting("", 'User name for the broker; "" = anonymous.')
    password_file: str = setting(
        "", 'File holding the password (not world-readable); "" = no password.'
    )
    client_id: str = setting(
        "",
        'MQTT client id, also the device id in topics and Home Assistant; "" = this '
        "machine's host name.",
        pattern=_MQTT_ID,
        pattern_doc='"" or up to 64 of A-Z a-z 0-9 _ -',
    )
    topic_prefix: str = setting(
        "emotion-appliance",
        "Topics are <topic_prefix>/<device id>/availability, /state, /events, /command.",
        pattern=_MQTT_TOPIC,
        pattern_doc="topic levels separated by /, without + # or spaces",
    )
    discovery_prefix: str = setting(
        "homeassistant",
        'Home Assistant discovery prefix for the sensors, buttons and switch; "" = no discovery.',
        pattern=f"|{_MQTT_TOPIC}",
        pattern_doc='"" or topic levels separated by /, without + # or spaces',
    )
    state_interval_s: float = setting(
        1.0,
        "Seconds between retained state messages (also sent at once on every change of "
        "emotion, mood, music on/off or status level).",
        min=0.1,
        max=3600.0,
    )
    events: bool = setting(
        False,
        "Also publish the smoothed state of every frame (for robots), at most "
        "events_max_hz times a second, on <topic_prefix>/<device id>/events.",
    )
    events_max_hz: float = setting(10.0, "Most event messages a second.", min=0.1, max=60.0)

    @property
    def broker_port(self) -> int:
        return self.port or (8883 if self.tls else 1883)

    @property
    def device_id(self) -> str:
        return mqtt_device_id(self.client_id)

    @property
    def shown_broker(self) -> str:
        """host:port for logs, status and doctor (never a password)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.broker_port}"

    def cleartext_warning(self) -> str | None:
        """Why the password would cross the internet unencrypted, or None."""
        if not self.enabled or self.tls or not self.password_file:
            return None
        if not cleartext_to_public_host(f"http://{self.shown_broker}/"):
            return None
        return (
            f"mqtt.host {self.host} is not loopback, private or a LAN name and tls = false: "
            "the MQTT password would cross the network unencrypted; set mqtt.tls = true"
        )

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if self.enabled and not self.host.strip():
            found.append(("host", "must name the broker when enabled = true"))
        elif any(c.isspace() or c in "/@?#" for c in self.host) or self.host.count(":") == 1:
            found.append(
                ("host", "expected a host name or IP address alone (the port is mqtt.port)")
            )
        if self.enabled and self.password_file and not self.username:
            found.append(("password_file", "needs a username (brokers ask for both)"))
        if self.ca_file and not self.tls:
            found.append(("ca_file", "is used only with tls = true"))
        return found


@dataclass(frozen=True)
class LoggingConfig:
    """Logging: how much the daemon reports."""

    level: str = setting(
        "INFO", "Least severe level logged.", choices=("DEBUG", "INFO", "WARNING", "ERROR")
    )


@dataclass(frozen=True)
class Config:
    """The whole appliance configuration: one instance of each section."""

    camera: CameraConfig = field(default_factory=CameraConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    emotion: EmotionConfig = field(default_factory=EmotionConfig)
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    music: MusicConfig = field(default_factory=MusicConfig)
    spotify: SpotifyConfig = field(default_factory=SpotifyConfig)
    gpio: GpioConfig = field(default_factory=GpioConfig)
    vlm: VlmConfig = field(default_factory=VlmConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    @classmethod
    def sections(cls) -> dict[str, type]:
        """Section name -> section dataclass, in declaration order."""
        hints = get_type_hints(cls)
        return {f.name: hints[f.name] for f in dataclasses.fields(cls)}
