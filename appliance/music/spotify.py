"""Spotify through spotipy: headless login, Connect devices, queue, skip, now playing.

Every failure becomes a `SpotifyError` that says whether trying again later can help
(`transient`) and how long to wait (`retry_after`, from a Retry-After header), so the
sync worker's backoff needs no knowledge of HTTP. A 401 refreshes the token once and
retries. Only a token request the server refuses (invalid_grant and the like, 400/401)
means "log in again"; a token server that is down or busy (5xx, 429) is transient like
any other outage. A 403 from the player is a `SpotifyAccountError`: with reason
PREMIUM_REQUIRED it is about the account (Spotify Free); any other 403 may be about the
account, the device or just this command, and the sync worker decides by call (see
sync.py).

Every reply is checked before spotipy reads it (`_CheckedSession`): an HTTP error, or a
2xx whose body is not JSON (a captive portal's login page, a proxy's error page), is a
`ReplyError` classified here in one place, whatever shape its body has: the Web API's
`{"error": {"status", "message", "reason"}}`, OAuth's `{"error": "invalid_grant", ...}`,
a JSON object where a string was expected, HTML, or nothing at all. So a push answered
by a captive portal is never taken for a push Spotify accepted.

The Pi has no browser: `spotify login` prints the authorize URL, the user opens it on a
phone or laptop, and pastes back the address the browser was redirected to. The token
cache lives in the state dir, mode 0600, written atomically.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import requests
import spotipy
from spotipy.cache_handler import CacheHandler
from spotipy.exceptions import SpotifyException, SpotifyOauthError
from spotipy.oauth2 import SpotifyOAuth

from appliance.common.files import atomic_write
from appliance.common.http import DeadlineSession
from appliance.config.schema import SpotifyConfig
from appliance.config.secrets import SecretError, read_secret

log = logging.getLogger(__name__)

SCOPES = "user-modify-playback-state user-read-playback-state user-read-currently-playing"
TOKEN_FILE = "spotify_token.json"
# OAuth error codes (RFC 6749 5.2) no retry cures: the refresh token or the app's
# credentials are no longer accepted, so only `spotify login` helps.
RELOGIN_ERRORS = frozenset({"invalid_grant", "invalid_client", "unauthorized_client"})
# GET me/player/queue lists only about the next 20 tracks. A view listing this many or
# more may have been cut short: a song missing from it may still be further down. A
# shorter view is the whole queue.
QUEUE_VIEW_FULL = 16
T = TypeVar("T")


class SpotifyError(RuntimeError):
    """A Spotify call failed. transient: retrying later may work; retry_after: seconds;
    token: the token server failed it, so the Web API call itself was never made (or
    was refused with 401): it cannot have taken effect."""

    def __init__(
        self,
        message: str,
        *,
        transient: bool,
        retry_after: float | None = None,
        status: int = 0,
        token: bool = False,
    ) -> None:
        super().__init__(message)
        self.transient = transient
        self.retry_after = retry_after
        self.status = status
        self.token = token


class SpotifyAuthError(SpotifyError):
    """Not logged in, or the login was revoked: `emotion-appliance spotify login`."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=False)


class SpotifyAccountError(SpotifyError):
    """403 from the player. premium_required (Spotify Free): the account may not use the
    player at all. Otherwise Spotify's message says why ("Restriction violated": a
    restricted device, a skip with nothing playing, ...), which can be this call only."""

    def __init__(self, message: str, *, premium_required: bool = False) -> None:
        super().__init__(message, transient=False, status=403)
        self.premium_required = premium_required


class SpotifySecretError(SpotifyError, SecretError):
    """The client secret file is not set, missing, empty, unreadable or world-readable:
    a configuration error (`run` exits 2, as for the VLM key), not a Spotify outage."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=False)


@dataclass(frozen=True)
class QueueView:
    """What GET me/player/queue shows: the track playing and the next ones (about 20)."""

    playing: str | None
    queued: tuple[str, ...]

    @property
    def full(self) -> bool:
        """Maybe cut short: a song not in the view may be further down the queue."""
        return len(self.queued) >= QUEUE_VIEW_FULL

    def shows(self, uri: str) -> bool:
        return uri == self.playing or uri in self.queued


class ReplyError(Exception):
    """A reply that is not a success in Spotify's form: an HTTP error status, or a 2xx
    whose body is not what the endpoint sends. Raised by the session before spotipy
    parses anything (so neither its `except ValueError` nor its error parsing sees it)
    and classified by `_classify`."""

    def __init__(self, response: requests.Response, *, token: bool) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.status = int(response.status_code)
        self.headers = response.headers
        self.token = token  # from the token server, not the Web API
        self.payload = _json(response.content)


_NOT_JSON = object()


def _json(body: bytes) -> Any:
    """The parsed body; None when empty; _NOT_JSON when it is not JSON at all."""
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return _NOT_JSON


def _token_reply_ok(payload: Any) -> bool:
    return (
        isinstance(payload, dict)
        and isinstance(payload.get("access_token"), str)
        and isinstance(payload.get("expires_in"), (int, float))
        and not isinstance(payload.get("expires_in"), bool)
    )


class _CheckedSession(DeadlineSession):
    """A plain session (no hidden urllib3 retries, so 429/5xx reach us with their
    headers) whose every reply is whole within spotify.timeout_s however slowly it
    comes (appliance.common.http), and that refuses every reply Spotify would not send:
    an HTTP error, a 2xx whose body is not JSON (empty is fine: 204), or a token reply
    without a token."""

    def __init__(self, *, token: bool, total_s: float) -> None:
        super().__init__(total_s)
        self.token = token

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        response = super().request(method, url, *args, **kwargs)
        if not 200 <= response.status_code < 300:
            raise ReplyError(response, token=self.token)
        payload = _json(response.content)
        if payload is _NOT_JSON or (self.token and not _token_reply_ok(payload)):
            raise ReplyError(response, token=self.token)
        return response


class TokenCache(CacheHandler):
    """spotipy token cache: one JSON file, 0600 from the first byte, replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def get_cached_token(self) -> dict | None:
        try:
            token = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable Spotify token cache %s: %s", self.path, exc)
            return None
        return token if isinstance(token, dict) else None

    def save_token_to_cache(self, token_info: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps(token_info), mode=0o600)


class HeadlessOAuth(SpotifyOAuth):
    """spotipy would prompt on stdin for a login it lacks; a daemon must fail instead."""

    def get_auth_response(self, open_browser: bool | None = None) -> str:
        raise SpotifyOauthError("not logged in to Spotify")


def _client_secret(settings: SpotifyConfig) -> str:
    path = settings.client_secret_file
    if not path.strip():
        raise SpotifySecretError(
            "spotify.client_id is set but spotify.client_secret_file is empty: name the file"
            " holding the app's client secret"
        )
    if Path(path).is_dir():
        raise SpotifySecretError(
            f"spotify.client_secret_file {path} is a folder: name the file holding the app's"
            " client secret"
        )
    try:
        return read_secret(path, "Spotify client secret")
    except SecretError as exc:
        raise SpotifySecretError(str(exc)) from exc


class SpotifyPlayer:
    """The few Web API calls the appliance makes, with errors classified."""

    def __init__(
        self,
        settings: SpotifyConfig,
        state_dir: str | Path,
        *,
        client_secret: str | None = None,
    ) -> None:
        if not settings.client_id:
            raise SpotifyError("Spotify is not configured ([spotify] client_id)", transient=False)
        self.settings = settings
        secret = client_secret or _client_secret(settings)
        self.cache = TokenCache(Path(state_dir) / TOKEN_FILE)
        self.oauth = HeadlessOAuth(
            client_id=settings.client_id,
            client_secret=secret,
            redirect_uri=settings.redirect_uri,
            scope=SCOPES,
            open_browser=False,
            cache_handler=self.cache,
            requests_session=_CheckedSession(token=True, total_s=settings.timeout_s),
            requests_timeout=settings.timeout_s,
        )
        self.oauth.OAUTH_TOKEN_URL = settings.token_url
        self.oauth.OAUTH_AUTHORIZE_URL = settings.authorize_url
        self.client = spotipy.Spotify(
            auth_manager=self.oauth,
            requests_session=_CheckedSession(token=False, total_s=settings.timeout_s),
            requests_timeout=settings.timeout_s,
        )
        self.client.prefix = settings.api_base.rstrip("/") + "/"
        self._device_id: str | None = None

    # ---------------------------------------------------------------- login

    def authorize_url(self) -> str:
        return self.oauth.get_authorize_url()

    def complete_login(self, redirected_url: str) -> None:
        """Exchange the code in the pasted redirect URL for tokens (cached, 0600)."""
        text = redirected_url.strip()
        try:
            code = self.oauth.parse_response_code(text)
        except SpotifyOauthError as exc:  # ?error=... : the consent page said no
            error = exc.error if isinstance(exc.error, str) else "an error"
            if error == "access_denied":
                raise SpotifyAuthError(
                    "Spotify login cancelled (access_denied: Cancel was pressed on Spotify's"
                    " page); run emotion-appliance spotify login again and press Agree"
                ) from None
            raise SpotifyAuthError(f"Spotify refused the login ({error})") from None
        if not code or code == text:
            raise SpotifyAuthError("no ?code= in that address; paste the full redirect URL")
        self._call(lambda: self.oauth.get_access_token(code, as_dict=False, check_cache=False))

    def logged_in(self) -> bool:
        token = self.cache.get_cached_token()
        return bool(token and token.get("refresh_token"))

    # ---------------------------------------------------------------- player

    def devices(self) -> list[dict]:
        reply = self._call(self.client.devices) or {}
        devices = reply.get("devices") if isinstance(reply, dict) else None
        if not isinstance(devices, list):
            raise SpotifyError("malformed devices reply", transient=True)
        return [d for d in devices if isinstance(d, dict)]

    def device_id(self, refresh: bool = False) -> str | None:
        """The configured Connect device's id (None = let Spotify use the active one)."""
        if not self.settings.device_name:
            return None
        if self._device_id is None or refresh:
            wanted = self.settings.device_name.casefold()
            matches = [d for d in self.devices() if str(d.get("name", "")).casefold() == wanted]
            if not matches:
                raise SpotifyError(
                    f"Spotify Connect device {self.settings.device_name!r} not found",
                    transient=True,
                )
            self._device_id = str(matches[0].get("id"))
        return self._device_id

    def add_to_queue(self, uri: str) -> None:
        device = self.device_id()
        try:
            self._call(lambda: self.client.add_to_queue(uri, device_id=device))
        except SpotifyError as exc:
            if exc.status == 404:
                self._device_id = None  # the device went away: look it up again next time
            raise

    def next_track(self) -> None:
        device = self.device_id()
        self._call(lambda: self.client.next_track(device_id=device))

    def now_playing(self) -> dict | None:
        """{"uri", "name", "artist", "is_playing"} of the current track, or None."""
        reply = self._call(self.client.currently_playing)
        if reply is None:
            return None  # 204 No Content: nothing playing
        if not isinstance(reply, dict):
            raise SpotifyError("malformed currently-playing reply", transient=True)
        return _track(reply.get("item"), is_playing=bool(reply.get("is_playing")))

    def queue_view(self) -> QueueView:
        """The track playing and those queued after it, as far as Spotify lists them
        (GET me/player/queue: about 20; see QueueView.full)."""
        reply = self._call(self.client.queue)
        queued = reply.get("queue") if isinstance(reply, dict) else None
        if not isinstance(queued, list):
            # no evidence of an empty queue: settling on it would push a song twice
            raise SpotifyError("malformed queue reply", transient=True)
        playing = _track(reply.get("currently_playing"))
        return QueueView(
            playing["uri"] if playing else None,
            tuple(t["uri"] for t in map(_track, queued) if t is not None),
        )

    # ---------------------------------------------------------------- errors

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            try:
                return fn()
            except ReplyError as exc:
                if exc.token or exc.status != 401:
                    raise
                self._refresh()  # expired or revoked access token: refresh once
                return fn()
        except ReplyError as exc:
            raise _classify(exc) from None
        except SpotifyOauthError as exc:  # raised locally: no login (HeadlessOAuth)
            raise SpotifyAuthError(
                f"Spotify login failed or was revoked ({exc}); run: emotion-appliance spotify login"
            ) from exc
        except SpotifyException as exc:  # spotipy's own (no reply we checked)
            status = int(exc.http_status or 0)
            raise SpotifyError(
                f"Spotify HTTP {status}", transient=status == 429 or status >= 500, status=status
            ) from exc
        except requests.RequestException as exc:
            raise SpotifyError(f"Spotify unreachable: {exc}", transient=True) from exc
        except (ValueError, LookupError, TypeError, AttributeError) as exc:
            raise SpotifyError(f"malformed Spotify reply: {exc}", transient=True) from exc

    def _refresh(self) -> None:
        token = self.cache.get_cached_token()
        if not token or not token.get("refresh_token"):
            raise SpotifyAuthError("not logged in to Spotify; run: emotion-appliance spotify login")
        self.oauth.refresh_access_token(token["refresh_token"])


def _track(item: Any, **extra: Any) -> dict | None:
    if not isinstance(item, dict) or not isinstance(item.get("uri"), str):
        return None
    artists = item.get("artists")
    names = [
        a.get("name")
        for a in (artists if isinstance(artists, list) else [])
        if isinstance(a, dict) and isinstance(a.get("name"), str) and a.get("name")
    ]
    name = item.get("name")
    return {
        "uri": item["uri"],
        "name": name if isinstance(name, str) else None,
        "artist": ", ".join(names),
        **extra,
    }


def _error_fields(payload: Any) -> tuple[str, str | None]:
    """(message, code) of an error body of any shape: the Web API's {"error": {"status",
    "message", "reason"}} gives its message and reason; OAuth's {"error": "invalid_grant",
    "error_description": ...} its code and description. Anything else (HTML, empty, JSON
    of another shape, an object where a string belongs) gives ("", None)."""
    if not isinstance(payload, dict):
        return "", None
    error = payload.get("error")
    if isinstance(error, dict):
        message, reason = error.get("message"), error.get("reason")
        return (
            message if isinstance(message, str) else "",
            reason if isinstance(reason, str) else None,
        )
    if isinstance(error, str):
        description = payload.get("error_description")
        if isinstance(description, str) and description:
            return f"{error}: {description}", error
        return error, error
    return "", None


def _classify(exc: ReplyError) -> SpotifyError:
    status = exc.status
    message, code = _error_fields(exc.payload)
    detail = f": {message[:200]}" if message else ""
    where = "Spotify's token server" if exc.token else "Spotify"
    if 200 <= status < 300:
        return SpotifyError(
            f"malformed reply from {where} (HTTP {status}, not Spotify's: a captive portal"
            " or a proxy?)",
            transient=True,
            status=status,
            token=exc.token,
        )
    if status == 429:
        return SpotifyError(
            f"{where}: rate limit (HTTP 429)",
            transient=True,
            retry_after=_retry_after(exc.headers, default=1.0),
            status=429,
            token=exc.token,
        )
    if exc.token:
        if status in (400, 401) or (code in RELOGIN_ERRORS and status < 500):
            return SpotifyAuthError(
                f"Spotify login failed or was revoked (HTTP {status}{detail}); run:"
                " emotion-appliance spotify login"
            )
        return SpotifyError(
            f"Spotify token request failed: HTTP {status}{detail}",
            transient=True,
            retry_after=_retry_after(exc.headers),
            status=status,
            token=True,
        )
    if status == 401:
        return SpotifyAuthError(
            "Spotify refused the token after a refresh; run: emotion-appliance spotify login"
        )
    if status == 403:
        if code == "PREMIUM_REQUIRED":
            return SpotifyAccountError(
                "Spotify Premium is required to queue songs or skip", premium_required=True
            )
        return SpotifyAccountError(f"Spotify HTTP 403{detail}")
    if status >= 500 or status == 404:  # 404: no active device (yet); 5xx: Spotify's side
        return SpotifyError(
            f"Spotify HTTP {status}{detail}",
            transient=True,
            retry_after=_retry_after(exc.headers),
            status=status,
        )
    return SpotifyError(f"Spotify HTTP {status}{detail}", transient=status < 400, status=status)


def _retry_after(headers: Any, default: float | None = None) -> float | None:
    """Seconds a Retry-After header asks for: delta-seconds or an HTTP-date. `default`
    when it is missing or unreadable ("inf" is neither form). A huge value is passed on
    as it is: the sync's Backoff honours it only up to its ceiling."""
    try:
        value = (headers or {}).get("Retry-After")
    except AttributeError:
        return default
    if value is None:
        return default
    text = str(value).strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
            seconds = when.timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return default
    if not math.isfinite(seconds):
        return default
    return max(0.0, seconds)
