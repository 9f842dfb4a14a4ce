"""A small Spotify on 127.0.0.1 speaking the documented endpoints the appliance uses.

Accounts: POST /api/token (authorization_code and refresh_token grants, Basic client
auth). Web API under /v1 with Bearer tokens: GET me/player/devices, POST
me/player/queue?uri=&device_id=, POST me/player/next, GET me/player/currently-playing
(204 when idle), GET me/player/queue. Tests script failures with `fail(path, status,
headers, body, times, after_acting)` (after_acting: the request takes effect, then its
reply is the failure, as when a reply is lost) and make the server unreachable by
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


@dataclass
class Failure:
    status: int
    headers: dict[str, str]
    body: bytes
    times: int
    after_acting: bool = False


@dataclass
class SpotifyState:
    devices: list[dict] = field(
        default_factory=lambda: [
            {"id": "dev-kitchen", "name": "Kitchen", "type": "Speaker", "is_active": False},
            {"id": "dev-living", "name": "Living room", "type": "Speaker", "is_active": True},
        ]
    )
    player_queue: list[str] = field(default_factory=list)  # uris queued, in order
    queued_on: list[tuple[str, str | None]] = field(default_factory=list)  # (uri, device)
    playing: str | None = None
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
        status: int,
        *,
        headers=None,
        body=b"",
        times: int = 1,
        after_acting: bool = False,
    ) -> None:
        with self.lock:
            self.state.failures.setdefault(path, []).append(
                Failure(status, headers or {}, body, times, after_acting)
            )

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
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _scripted(self, path: str) -> Failure | None:
                failures = fake.state.failures.get(path)
                if not failures:
                    return None
                failure = failures[0]
                failure.times -= 1
                if failure.times <= 0:
                    failures.pop(0)
                return failure

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
                    failure = self._scripted(url.path)
                    if failure is None or failure.after_acting:
                        self.muted = failure is not None
                        self._serve(method, url, query, body)
                        self.muted = False
                    if failure is not None:
                        self._reply(failure.status, failure.body, failure.headers)

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
                    state.player_queue.append(query["uri"])
                    state.queued_on.append((query["uri"], query.get("device_id")))
                    return self._reply(204)
                if method == "POST" and path == "me/player/next":
                    state.next_calls += 1
                    state.playing = state.player_queue.pop(0) if state.player_queue else None
                    return self._reply(204)
                if method == "GET" and path == "me/player/currently-playing":
                    if state.playing is None:
                        return self._reply(204)
                    return self._reply(
                        200,
                        {
                            "is_playing": True,
                            "item": {
                                "uri": state.playing,
                                "name": "Song " + state.playing[-4:],
                                "artists": [{"name": "Artist"}],
                            },
                        },
                    )
                if method == "GET" and path == "me/player/queue":

                    def item(uri: str) -> dict:
                        return {"uri": uri, "name": "x"}

                    return self._reply(
                        200,
                        {
                            "currently_playing": item(state.playing) if state.playing else None,
                            "queue": [item(u) for u in state.player_queue],
                        },
                    )
                self._reply(404, {"error": {"status": 404, "message": f"no {method} {path}"}})

        return Handler

    def start_playing_next(self) -> str | None:
        """The listener's player moves on to the next queued song."""
        with self.lock:
            q = self.state.player_queue
            self.state.playing = q.pop(0) if q else None
            return self.state.playing
