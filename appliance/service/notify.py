"""systemd's notify protocol: READY, STATUS, WATCHDOG and STOPPING messages.

systemd-python's `daemon.notify` when it is importable, otherwise the protocol itself:
one datagram on the AF_UNIX socket named by $NOTIFY_SOCKET ("@..." is the abstract
namespace). Outside systemd (no $NOTIFY_SOCKET) every call is a no-op, so a laptop run
needs nothing.

The watchdog pings only while the frame loop shows progress (its heartbeat is fresh),
so a loop stuck in a driver call or a deadlock stops the pings and systemd restarts
the service after WatchdogSec.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


def _systemd_notify() -> Callable[[str], Any] | None:
    try:
        from systemd import daemon  # type: ignore[import-not-found]
    except ImportError:
        return None
    return daemon.notify


class Notifier:
    """Sends notify messages; silent when not started by systemd with Type=notify."""

    def __init__(self, environ: dict[str, str] | None = None, *, use_library: bool = True) -> None:
        env = os.environ if environ is None else environ
        self.socket_path = env.get("NOTIFY_SOCKET") or None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.watchdog_s = int(usec) / 1e6 if usec.isdigit() and mine else None
        self._library = _systemd_notify() if use_library and self.socket_path else None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.socket_path is not None

    def send(self, message: str) -> bool:
        if not self.enabled:
            return False
        try:
            if self._library is not None:
                return bool(self._library(message))
            address = self.socket_path
            if address.startswith("@"):
                address = "\0" + address[1:]
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(address)
                sock.sendall(message.encode())
            return True
        except OSError as exc:
            if not self._warned:
                log.warning("cannot notify systemd at %s: %s", self.socket_path, exc)
                self._warned = True
            return False

    def ready(self, status: str = "") -> None:
        self.send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, text: str) -> None:
        self.send(f"STATUS={' '.join(text.split())}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def stopping(self) -> None:
        self.send("STOPPING=1")


class ServiceHeartbeat:
    """Publisher companion: READY once the frame loop runs (a frame arrived, or the camera
    is missing and being retried: an unplugged camera must not read as a failed start,
    or systemd kills and restarts the service forever), STATUS every few seconds, and
    WATCHDOG while the frame loop's heartbeat is fresh."""

    STATUS_EVERY_S = 5.0

    def __init__(
        self,
        notifier: Notifier,
        heartbeat: Callable[[], float],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.notifier = notifier
        self.heartbeat = heartbeat  # monotonic time of the frame loop's last progress
        self.clock = clock
        self.ready_sent = False
        self._next_status = 0.0
        # The loop may stall for at most half the watchdog period before pings stop.
        period = notifier.watchdog_s or 30.0
        self.stale_after_s = max(2.0, period / 2)

    def tick(self, view: Any) -> None:
        now = self.clock()
        if not self.ready_sent and (view.frames > 0 or view.camera_error):
            self.notifier.ready(summary(view))
            self.ready_sent = True
        if now - self.heartbeat() <= self.stale_after_s:
            self.notifier.watchdog()
        if now >= self._next_status:
            self.notifier.status(summary(view))
            self._next_status = now + self.STATUS_EVERY_S

    def snapshot(self) -> dict[str, Any]:
        return {"systemd": "notify" if self.notifier.enabled else None}


def summary(view: Any) -> str:
    latest = view.latest
    emotion = (latest.smoothed.emotion if latest else None) or "no face"
    camera = f"camera error: {view.camera_error}" if view.camera_error else "camera ok"
    return f"{view.state}, {view.frames} frames, {emotion}, {camera}"
