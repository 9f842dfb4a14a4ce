"""The MQTT client as the appliance builds it, the topics, and what a failure means.

paho-mqtt's `Client`, spoken as MQTT 5 so that the broker keeps the link's session (its
command subscription and the QoS 1 commands sent while the appliance was away) for
SESSION_EXPIRY_S only: a `like` sent while the appliance reboots is still delivered, one
sent hours ago (for a song long gone) is dropped by the broker, not queued for ever.

The daemon's link (`worker.MqttLink`), `doctor` and `fleet` all build their clients
here; only the link sets a last will and keeps its session.
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass
from typing import ClassVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from appliance.config.schema import MqttConfig
from appliance.config.secrets import SecretError, read_secret

KEEPALIVE_S = 20  # a pulled plug shows as offline (the will) within 1.5 x this
CONNECT_TIMEOUT_S = 2.0  # TCP connect and TLS handshake, each; the link's stop waits for it
CONNACK_TIMEOUT_S = 10.0  # a broker that accepted the socket but never answers
SESSION_EXPIRY_S = 300  # the broker keeps the link's session (and queued commands) this long
MAX_QUEUED = 100  # paho's outgoing QoS>0 queue: a bound, never a backlog (see worker.py)

ONLINE, OFFLINE = "online", "offline"


@dataclass(frozen=True)
class Topics:
    """The topics of one appliance (device id = `mqtt.client_id` or the host name)."""

    prefix: str
    device: str
    discovery: str  # "" = no Home Assistant discovery

    @classmethod
    def from_settings(cls, settings: MqttConfig) -> Topics:
        return cls(settings.topic_prefix, settings.device_id, settings.discovery_prefix)

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.device}"

    @property
    def availability(self) -> str:
        return f"{self.base}/availability"

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    @property
    def events(self) -> str:
        return f"{self.base}/events"

    @property
    def command(self) -> str:
        return f"{self.base}/command"


class LinkError(Exception):
    """Why the broker cannot be used, in one line, with what to do about it.

    `kind`: "auth" (login refused), "tls" (certificate or handshake), "unreachable" (no
    route, refused, unknown name), "timeout" (no answer), "refused" (another refusal)."""

    HINTS: ClassVar[dict[str, str]] = {
        "auth": "check mqtt.username and mqtt.password_file (and the broker's password "
        "file and ACL)",
        "tls": "check mqtt.ca_file (or the system certificate store), and that mqtt.host "
        "is a name in the broker's certificate; a plain-MQTT port answers TLS with "
        "'wrong version number'",
        "unreachable": "check mqtt.host and mqtt.port, the network, and that the broker runs",
        "timeout": "check mqtt.host and mqtt.port (a TLS port needs mqtt.tls = true) and "
        "that the broker is not overloaded",
        "refused": "see the broker's log for why it refused this client",
    }

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind

    @property
    def hint(self) -> str:
        return self.HINTS.get(self.kind, self.HINTS["refused"])


def read_password(settings: MqttConfig) -> str | None:
    """The broker password from `password_file` (refused when world-readable), or None."""
    if not settings.password_file:
        return None
    return read_secret(settings.password_file, "MQTT password")


def new_client(settings: MqttConfig, password: str | None, client_id: str) -> mqtt.Client:
    """A paho client with the login and TLS of `settings`; not connected. A CA file that
    cannot be loaded is a SecretError: like a refused key file it needs a person."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
    )
    client.connect_timeout = CONNECT_TIMEOUT_S
    client.max_queued_messages_set(MAX_QUEUED)
    if settings.username:
        client.username_pw_set(settings.username, password)
    if settings.tls:
        try:
            context = ssl.create_default_context(cafile=settings.ca_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise SecretError(
                f"mqtt.ca_file {settings.ca_file}: cannot load the CA certificate: {exc}"
            ) from exc
        client.tls_set_context(context)
    return client


def connect_properties(session_expiry_s: int) -> Properties:
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = session_expiry_s
    return properties


def refusal(settings: MqttConfig, reason: object) -> LinkError:
    """A CONNACK that refused the connection, as a LinkError."""
    code = getattr(reason, "value", reason)
    who = f" of user '{settings.username}'" if settings.username else " (anonymous)"
    if code in (134, 135):  # bad user name or password; not authorized
        return LinkError("auth", f"{settings.shown_broker} refused the login{who}: {reason}")
    return LinkError("refused", f"{settings.shown_broker} refused the connection: {reason}")


def socket_failure(settings: MqttConfig, exc: BaseException) -> LinkError:
    """An exception from opening the connection (TCP, TLS, name lookup), as a LinkError."""
    broker = settings.shown_broker
    if isinstance(exc, ssl.SSLCertVerificationError):
        return LinkError("tls", f"{broker}: TLS certificate not trusted: {exc.verify_message}")
    if isinstance(exc, ssl.SSLError):
        return LinkError("tls", f"{broker}: TLS handshake failed: {exc.reason or exc}")
    if isinstance(exc, socket.gaierror):
        return LinkError("unreachable", f"{broker}: host name not found ({exc.strerror})")
    if isinstance(exc, ConnectionRefusedError):
        return LinkError("unreachable", f"{broker}: connection refused (no broker on that port)")
    if isinstance(exc, TimeoutError):
        return LinkError("timeout", f"{broker}: no answer within {CONNECT_TIMEOUT_S:.0f} s")
    if isinstance(exc, OSError):
        return LinkError("unreachable", f"{broker}: {exc.strerror or exc}")
    return LinkError("refused", f"{broker}: {type(exc).__name__}: {exc}")


def lost(settings: MqttConfig, rc: object) -> LinkError:
    """A connection closed under the client (paho's error code or a DISCONNECT reason)."""
    text = mqtt.error_string(rc) if isinstance(rc, mqtt.MQTTErrorCode) else str(rc)
    return LinkError("unreachable", f"{settings.shown_broker}: connection lost ({text})")


def connect_blocking(client: mqtt.Client, settings: MqttConfig, timeout_s: float) -> None:
    """Connect with a clean session and wait for the broker's answer (doctor, fleet);
    raises LinkError. The client's own on_connect is replaced."""
    answer: list[object] = []
    client.on_connect = lambda _c, _u, _flags, reason, _props: answer.append(reason)
    try:
        client.connect(settings.host, settings.broker_port, keepalive=KEEPALIVE_S, clean_start=True)
    except (OSError, ValueError) as exc:
        raise socket_failure(settings, exc) from None
    deadline = time.monotonic() + timeout_s
    while not answer:
        if time.monotonic() > deadline:
            client.disconnect()
            raise LinkError(
                "timeout", f"{settings.shown_broker}: no answer within {timeout_s:.0f} s"
            )
        rc = client.loop(timeout=0.1)
        if rc != mqtt.MQTT_ERR_SUCCESS and not answer:
            raise LinkError(
                "unreachable",
                f"{settings.shown_broker}: connection closed before the broker answered "
                f"({mqtt.error_string(rc)}; a TLS port needs mqtt.tls = true)",
            )
    reason = answer[0]
    if getattr(reason, "is_failure", False):
        raise refusal(settings, reason)
