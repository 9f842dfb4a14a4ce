"""appliance/common/http.py: one whole-response deadline, whatever the peer drips."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import requests

from appliance.common.http import Deadline, DeadlineSession


class Dripper:
    """A TCP peer on 127.0.0.1 that answers any request with `reply`, one byte every
    `every_s` seconds (headers included), and notes when the client hung up."""

    def __init__(self, reply: bytes, every_s: float) -> None:
        self.reply, self.every_s = reply, every_s
        self.hung_up = threading.Event()
        self.stop = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/x"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            conn.recv(65536)
            try:
                for i in range(len(self.reply)):
                    if self.stop.wait(self.every_s):
                        return
                    conn.sendall(self.reply[i : i + 1])
            except OSError:
                self.hung_up.set()
                return
            if conn.recv(1) == b"":  # the client closed after reading
                self.hung_up.set()

    def close(self) -> None:
        self.stop.set()
        self.server.close()


BODY = b'{"ok": true}'
REPLY = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    + f"Content-Length: {len(BODY)}\r\n\r\n".encode()
    + BODY
)


def test_dripped_headers_end_at_the_deadline():
    peer = Dripper(REPLY, every_s=0.1)  # ~9 s for the whole reply, each byte in time
    try:
        session = DeadlineSession(1.0)
        started = time.monotonic()
        with pytest.raises(requests.Timeout, match="no complete reply within 1 s"):
            session.get(peer.url)
        assert time.monotonic() - started < 2.5
        assert peer.hung_up.wait(3)
    finally:
        peer.close()


def test_a_reply_within_the_deadline_is_read_whole():
    peer = Dripper(REPLY, every_s=0.001)
    try:
        assert DeadlineSession(5.0).get(peer.url).json() == {"ok": True}
    finally:
        peer.close()


def test_an_outer_deadline_bounds_a_streamed_body_read():
    peer = Dripper(REPLY, every_s=0.1)
    try:
        session = DeadlineSession(30.0)
        with (
            Deadline(1.0) as deadline,
            pytest.raises(requests.RequestException),
            session.get(peer.url, stream=True) as response,
        ):
            response.content  # noqa: B018
        assert deadline.expired.is_set()
    finally:
        peer.close()
