"""A small Spotify on 127.0.0.1 speaking the documented endpoints the appliance uses.

Accounts: POST /api/token (authorization_code and refresh_token grants, Basic client
auth). Web API under /v1 with Bearer tokens: GET me/player/devices, POST
me/player/queue?uri=&device_id=, POST me/player/next, GET me/player/currently-playing
(204 when idle), GET me/player/queue.

It behaves like Spotify where the appliance depends on it: the queue view lists only the
next VIEW_DEPTH (20) tracks, however long the queue is; after the queue comes the
context (the playlist or album the listener started), and the player plays track after
track as the test advances time (`advance(seconds)`, `track_s` each; no wall clock).
Every push is recorded, and so is every push of a song a copy of which is still queued
or playing (`pushed_while_queued`: what must never happen).

Tests script failures with `fail(path, status, method=, headers=, body=, times=,
after_acting=, drop=)`: after_acting: the request takes effect, then its reply is the
failure (a lost reply); drop: the connection is closed without a reply (a reset). The
error bodies Spotify's two servers send are `web_api_error(...)`, `oauth_error(...)`,
and HTML (a captive portal's page) is `PORTAL`. The server is made unreachable by
stopping it.
"""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

CLIENT_ID, CLIENT_SECRET = "test-client", "test-secret"
AUTH_CODE = "good-code"
VIEW_DEPTH = 20  # GET me/player/queue lists this many tracks at most, as Spotify does
PORTAL = b"<!DOCTYPE html><html><body>Please log in to the hotel Wi-Fi</body></html>"


def web_api_error(status: int, message: str, reason: str | None = None) -> bytes:
    """The Web API's error body: {"error": {"status", "message"[, "reason"]}}."""
    error: dict = {"status": status, "message": message}
    if reason:
        error["reason"] = reason
    return json.dumps({"error": error}).encode()


def oauth_error(code, description: str | None = None) -> bytes:
    """The accounts service's error body: {"error": code, "error_description": ...}; code
    may be anything, e.g. a JSON object where RFC 6749 has a string."""
    body: dict = {"error": code}
    if description:
        body["error_description"] = description
    return json.dumps(body).encode()


@dataclass
class Failure:
    status: int
    headers: dict[str, str]
    body: bytes
    times: int
    after_acting: bool = False
    method: str | None = None  # None: any method
    drop: bool = False  # close the connection without a reply
    hold: threading.Event | None = None  # the reply waits for this (a process killed mid-call)


@dataclass
class SpotifyState:
    devices: list[dict] = field(
        default_factory=lambda: [
            {"id": "dev-kitchen", "name": "Kitchen", "type": "Speaker", "is_active": False},
            {"id": "dev-living", "name": "Living room", "type": "Speaker", "is_active": True},
        ]
    )
    player_queue: list[str] = field(default_factory=list)  # uris queued, in order
    context: list[str] = field(default_factory=list)  # what plays after the queue
    queued_on: list[tuple[str, str | None]] = field(default_factory=list)  # (uri, device)
    pushed_while_queued: list[str] = field(default_factory=list)  # never, if all is well
    playing: str | None = None
    position_s: float = 0.0  # into the track playing
    played: list[str] = field(default_factory=list)  # every track that started, in order
    next_calls: int = 0
    token_grants: list[str] = field(default_factory=list)
    access_tokens: set[str] = field(default_factory=set)
    revoked: set[str] = field(default_factory=set)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    failures: dict[str, list[Failure]] = field(default_factory=dict)


class FakeSpotify:
    def __init__(self) -> None:
        self.state = SpotifyState()
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self._tokens = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def settings(self, **changes):
        from appliance.config.schema import SpotifyConfig

        values = {
            "client_id": CLIENT_ID,
            "redirect_uri": "http://127.0.0.1:8888/callback",
            "api_base": f"{self.base}/v1",
            "token_url": f"{self.base}/api/token",
            "authorize_url": f"{self.base}/authorize",
            "timeout_s": 2.0,
            "poll_s": 0.2,
        }
        values.update(changes)
        return SpotifyConfig(**values)

    def fail(
        self,
        path: str,
        status: int = 0,
        *,
        method: str | None = None,
        headers=None,
        body=b"",
        times: int = 1,
        after_acting: bool = False,
        drop: bool = False,
        hold: threading.Event | None = None,
    ) -> None:
        with self.lock:
            self.state.failures.setdefault(path, []).append(
                Failure(status, headers or {}, body, times, after_acting, method, drop, hold)
            )

    # ------------------------------------------------------------ the player

    def advance(self, seconds: float, track_s: float = 20.0) -> None:
        """Let the player play on for `seconds`: each track lasts `track_s`, then the next
        one from the queue (else the context) starts; with nothing left it stops."""
        with self.lock:
            state = self.state
            state.position_s += seconds
            while state.playing is not None and state.position_s >= track_s:
                position = state.position_s - track_s
                self._start_next()
                state.position_s = position
            if state.playing is None:
                state.position_s = 0.0

    def play(self) -> str | None:
        """The listener presses play: the next track starts if none is playing."""
        with self.lock:
            if self.state.playing is None:
                self._start_next()
            return self.state.playing

    def _start_next(self) -> None:
        state = self.state
        source = state.player_queue if state.player_queue else state.context
        state.playing = source.pop(0) if source else None
        state.position_s = 0.0
        if state.playing is not None:
            state.played.append(state.playing)

    def waiting(self) -> list[str]:
        """What is playing and queued, in order (the whole queue, not just the view)."""
        with self.lock:
            head = [self.state.playing] if self.state.playing else []
            return head + list(self.state.player_queue)

    def revoke_access_tokens(self) -> None:
        with self.lock:
            self.state.revoked |= self.state.access_tokens

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _new_token(self) -> str:
        self._tokens += 1
        token = f"access-{self._tokens}"
        self.state.access_tokens.add(token)
        return token

    def _handler(self):
        fake = self

        def track(uri: str) -> dict:
            return {
                "uri": uri,
                "name": "Song " + uri[-4:],
                "artists": [{"name": "Artist"}],
                "duration_ms": 20_000,
            }

        class Handler(BaseHTTPRequestHandler):
            muted = False  # the real reply of an after_acting failure is dropped

            def log_message(self, *args):  # quiet
                pass

            def _reply(self, status: int, body=None, headers=None) -> None:
                if self.muted:
                    return
                data = (
                    b""
                    if body is None
                    else (body if isinstance(body, bytes) else json.dumps(body).encode())
                )
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                if data:
                    html = data.lstrip().startswith(b"<")
                    self.send_header("Content-Type", "text/html" if html else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _scripted(self, method: str, path: str) -> Failure | None:
                failures = fake.state.failures.get(path)
                for failure in failures or ():
                    if failure.method not in (None, method):
                        continue
                    failure.times -= 1
                    if failure.times <= 0:
                        failures.remove(failure)
                    return failure
                return None

            def do_POST(self):
                self._dispatch("POST")

            def do_GET(self):
                self._dispatch("GET")

            def _dispatch(self, method: str) -> None:
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with fake.lock:
                    fake.state.requests.append((method, url.path))
                    failure = self._scripted(method, url.path)
                    if failure is None or failure.after_acting:
                        self.muted = failure is not None
                        self._serve(method, url, query, body)
                        self.muted = False
                if failure is None:
                    return
                if failure.hold is not None:  # outside the lock: the test goes on meanwhile
                    failure.hold.wait(30)
                if failure.drop:
                    self.close_connection = True  # a reset: no reply at all
                    return
                try:
                    self._reply(failure.status, failure.body, failure.headers)
                except OSError:  # the client is gone (killed while waiting)
                    self.close_connection = True

            def _serve(self, method: str, url, query: dict, body: bytes) -> None:
                if url.path == "/api/token" and method == "POST":
                    return self._token(parse_qs(body.decode()))
                if not url.path.startswith("/v1/"):
                    return self._reply(404, {"error": {"status": 404, "message": "nope"}})
                auth = self.headers.get("Authorization", "")
                token = auth.removeprefix("Bearer ")
                if token not in fake.state.access_tokens or token in fake.state.revoked:
                    return self._reply(
                        401, {"error": {"status": 401, "message": "The access token expired"}}
                    )
                self._api(method, url.path.removeprefix("/v1/"), query)

            def _token(self, form: dict) -> None:
                expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
                if self.headers.get("Authorization") != f"Basic {expected}":
                    return self._reply(400, {"error": "invalid_client"})
                grant = form.get("grant_type", [""])[0]
                fake.state.token_grants.append(grant)
                if grant == "authorization_code" and form.get("code", [""])[0] == AUTH_CODE:
                    reply = {"refresh_token": "refresh-1"}
                elif grant == "refresh_token" and form.get("refresh_token", [""])[0]:
                    reply = {}
                else:
                    return self._reply(400, {"error": "invalid_grant"})
                reply.update(
                    access_token=fake._new_token(),
                    token_type="Bearer",
                    expires_in=3600,
                    scope="user-modify-playback-state",
                )
                self._reply(200, reply)

            def _api(self, method: str, path: str, query: dict) -> None:
                state = fake.state
                if method == "GET" and path == "me/player/devices":
                    return self._reply(200, {"devices": state.devices})
                if method == "POST" and path == "me/player/queue":
                    uri = query["uri"]
                    if uri == state.playing or uri in state.player_queue:
                        state.pushed_while_queued.append(uri)
                    state.player_queue.append(uri)
                    state.queued_on.append((uri, query.get("device_id")))
                    return self._reply(204)
                if method == "POST" and path == "me/player/next":
                    state.next_calls += 1
                    fake._start_next()
                    return self._reply(204)
                if method == "GET" and path == "me/player/currently-playing":
                    if state.playing is None:
                        return self._reply(204)
                    return self._reply(
                        200,
                        {
                            "is_playing": True,
                            "progress_ms": int(state.position_s * 1000),
                            "item": track(state.playing),
                        },
                    )
                if method == "GET" and path == "me/player/queue":
                    upcoming = [*state.player_queue, *state.context][:VIEW_DEPTH]
                    return self._reply(
                        200,
                        {
                            "currently_playing": track(state.playing) if state.playing else None,
                            "queue": [track(u) for u in upcoming],
                        },
                    )
                self._reply(404, {"error": {"status": 404, "message": f"no {method} {path}"}})

        return Handler

    def start_playing_next(self) -> str | None:
        """The listener's player moves on to the next queued song."""
        with self.lock:
            self._start_next()
            return self.state.playing
