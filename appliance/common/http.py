"""One whole-response deadline for every outbound HTTP call (VLM, Spotify, its token
server): connect, headers and body together, however slowly the peer sends them.

requests' `timeout` bounds each socket operation, not the reply: a server that sends
one byte a second (of the headers or of the body) keeps a call going for ever, holding
a worker whose breaker or backoff never sees a failure. Here every socket a request
opens or reuses is registered with the `Deadline` active on the calling thread; when it
expires, a timer shuts those sockets down, which wakes a blocked read or TLS handshake
at once, and the caller reports a timeout. A body cut short at the deadline may look
complete (a reply delimited by the connection's close), so callers check `expired`.

Name resolution is not covered (getaddrinfo cannot be interrupted): it is bounded by
the system resolver's own timeout.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_active = threading.local()  # the Deadline of the request running on this thread


class Deadline:
    """A limit on everything the calling thread's requests do inside the `with` block.

    In nested blocks a socket is registered with every enclosing deadline, so the
    earliest one wins: an inner deadline can shorten the wait, never extend it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(0.0, seconds), self._expire)
        self._timer.daemon = True
        self._outer: Deadline | None = None
        self._ends = time.monotonic() + seconds

    def __enter__(self) -> Deadline:
        self._outer = getattr(_active, "deadline", None)
        _active.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        with self._lock:
            self._sockets.clear()  # closed or back in the pool: not ours to shut later
        _active.deadline = self._outer

    def remaining(self) -> float:
        return max(0.0, self._ends - time.monotonic())

    def track(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            if self.expired.is_set():
                _shut(sock)
            else:
                self._sockets.append(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired.set()
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # closed already: nothing to wake
        sock.shutdown(socket.SHUT_RDWR)


def _track(sock: socket.socket | None) -> None:
    deadline = getattr(_active, "deadline", None)
    if deadline is not None:
        for outer in _chain(deadline):
            outer.track(sock)


def _chain(deadline: Deadline) -> list[Deadline]:
    chain = []
    while deadline is not None:
        chain.append(deadline)
        deadline = deadline._outer
    return chain


class _Connection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _track(sock)  # before any TLS handshake or request bytes
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        _track(self.sock)  # a kept-alive connection reused by this request
        super().request(*args, **kwargs)


class _TLSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _track(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        _track(self.sock)
        super().request(*args, **kwargs)


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _TLSConnection


class DeadlineAdapter(HTTPAdapter):
    """requests' adapter whose connections register their sockets with the active
    Deadline. No retries: the caller's worker decides when to try again."""

    def __init__(self) -> None:
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _Pool, "https": _TLSPool}


class DeadlineSession(requests.Session):
    """A requests Session whose every request (a whole reply, read into memory) ends
    within `total_s`, or raises requests.Timeout. A streamed request is the caller's to
    bound: open a `Deadline` around the request and the reading of its body."""

    def __init__(self, total_s: float) -> None:
        super().__init__()
        self.total_s = total_s
        adapter = DeadlineAdapter()
        self.mount("http://", adapter)
        self.mount("https://", adapter)

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        timeout = kwargs.get("timeout")
        per_read = self.total_s if timeout is None else min(_first(timeout), self.total_s)
        kwargs["timeout"] = per_read
        if kwargs.get("stream") or getattr(_active, "deadline", None) is not None:
            return super().request(method, url, *args, **kwargs)
        with Deadline(self.total_s) as deadline:
            try:
                response = super().request(method, url, *args, **kwargs)
            except requests.RequestException:
                if deadline.expired.is_set():
                    raise requests.Timeout(late(self.total_s)) from None
                raise
        if deadline.expired.is_set():  # cut short: what came may look complete
            response.close()
            raise requests.Timeout(late(self.total_s))
        return response


def late(seconds: float) -> str:
    return f"no complete reply within {seconds:g} s"


def _first(timeout: Any) -> float:
    """requests' timeout may be (connect, read): the longer bounds a single wait."""
    if isinstance(timeout, tuple):
        return max(float(t) for t in timeout if t is not None)
    return float(timeout)
