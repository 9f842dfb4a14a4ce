"""Spotify through spotipy: headless login, Connect devices, queue, skip, now playing.

Every failure becomes a `SpotifyError` that says whether trying again later can help
(`transient`) and how long to wait (`retry_after`, from Retry-After on 429), so the sync
worker's backoff needs no knowledge of HTTP. A 401 refreshes the token once and retries.
Only a token request the server refuses (invalid_grant and the like, 400/401) means "log
in again"; a token server that is down or busy (5xx, 429) is transient like any other
outage. A 403 from the player is a `SpotifyAccountError`: with reason PREMIUM_REQUIRED
it is about the account (Spotify Free); any other 403 may be about the account, the
device or just this command, and the sync worker decides by call (see sync.py).

The Pi has no browser: `spotify login` prints the authorize URL, the user opens it on a
phone or laptop, and pastes back the address the browser was redirected to. The token
cache lives in the state dir, mode 0600, written atomically.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import requests
import spotipy
from spotipy.cache_handler import CacheHandler
from spotipy.exceptions import SpotifyException, SpotifyOauthError
from spotipy.oauth2 import SpotifyOAuth

from appliance.common.files import atomic_write
from appliance.config.schema import SpotifyConfig
from appliance.config.secrets import SecretError, read_secret

log = logging.getLogger(__name__)

SCOPES = "user-modify-playback-state user-read-playback-state user-read-currently-playing"
TOKEN_FILE = "spotify_token.json"
# OAuth error codes (RFC 6749 5.2) no retry cures: the refresh token or the app's
# credentials are no longer accepted, so only `spotify login` helps.
RELOGIN_ERRORS = frozenset({"invalid_grant", "invalid_client", "unauthorized_client"})
T = TypeVar("T")


class SpotifyError(RuntimeError):
    """A Spotify call failed. transient: retrying later may work; retry_after: seconds."""

    def __init__(
        self, message: str, *, transient: bool, retry_after: float | None = None, status: int = 0
    ) -> None:
        super().__init__(message)
        self.transient = transient
        self.retry_after = retry_after
        self.status = status


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
        try:
            secret = client_secret or read_secret(
                settings.client_secret_file, "Spotify client secret"
            )
        except SecretError as exc:
            raise SpotifyError(str(exc), transient=False) from exc
        self.cache = TokenCache(Path(state_dir) / TOKEN_FILE)
        self.oauth = HeadlessOAuth(
            client_id=settings.client_id,
            client_secret=secret,
            redirect_uri=settings.redirect_uri,
            scope=SCOPES,
            open_browser=False,
            cache_handler=self.cache,
            requests_timeout=settings.timeout_s,
        )
        self.oauth.OAUTH_TOKEN_URL = settings.token_url
        self.oauth.OAUTH_AUTHORIZE_URL = settings.authorize_url
        # A plain session: no hidden urllib3 retries, so 429/5xx reach us with headers.
        self.client = spotipy.Spotify(
            auth_manager=self.oauth,
            requests_session=requests.Session(),
            requests_timeout=settings.timeout_s,
        )
        self.client.prefix = settings.api_base.rstrip("/") + "/"
        self._device_id: str | None = None

    # ---------------------------------------------------------------- login

    def authorize_url(self) -> str:
        return self.oauth.get_authorize_url()

    def complete_login(self, redirected_url: str) -> None:
        """Exchange the code in the pasted redirect URL for tokens (cached, 0600)."""
        code = self.oauth.parse_response_code(redirected_url.strip())
        if not code or code == redirected_url.strip():
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
        if not isinstance(reply, dict):
            return None  # 204 No Content: nothing playing
        return _track(reply.get("item"), is_playing=bool(reply.get("is_playing")))

    def queued_uris(self) -> list[str]:
        """URIs now playing and queued on the player (GET me/player/queue)."""
        reply = self._call(self.client.queue)
        # spotipy turns a 200 that is not JSON (a captive portal's page) into None: that
        # is no evidence of an empty queue, and settling on it would push a song twice
        queued = reply.get("queue") if isinstance(reply, dict) else None
        if not isinstance(queued, list):
            raise SpotifyError("malformed queue reply", transient=True)
        items = [reply.get("currently_playing"), *queued]
        return [item["uri"] for item in items if isinstance(item, dict) and "uri" in item]

    # ---------------------------------------------------------------- errors

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            try:
                return fn()
            except SpotifyException as exc:
                if exc.http_status != 401:
                    raise
                self._refresh()  # expired or revoked access token: refresh once
                return fn()
        except SpotifyException as exc:
            raise _classify(exc) from exc
        except SpotifyOauthError as exc:
            raise _classify_oauth(exc) from exc
        except requests.RequestException as exc:
            raise SpotifyError(f"Spotify unreachable: {exc}", transient=True) from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise SpotifyError(f"malformed Spotify reply: {exc}", transient=True) from exc

    def _refresh(self) -> None:
        token = self.cache.get_cached_token()
        if not token or not token.get("refresh_token"):
            raise SpotifyAuthError("not logged in to Spotify; run: emotion-appliance spotify login")
        self.oauth.refresh_access_token(token["refresh_token"])


def _track(item: Any, **extra: Any) -> dict | None:
    if not isinstance(item, dict) or not isinstance(item.get("uri"), str):
        return None
    artists = item.get("artists") or []
    names = [a.get("name") for a in artists if isinstance(a, dict) and a.get("name")]
    return {"uri": item["uri"], "name": item.get("name"), "artist": ", ".join(names), **extra}


def _classify(exc: SpotifyException) -> SpotifyError:
    status = int(exc.http_status or 0)
    if status == 401:
        return SpotifyAuthError(
            "Spotify refused the token after a refresh; run: emotion-appliance spotify login"
        )
    if status == 429:
        return SpotifyError(
            "Spotify rate limit", transient=True, retry_after=_retry_after(exc.headers), status=429
        )
    message = f"Spotify HTTP {status}: {exc.msg}".strip()
    if status == 403:
        if exc.reason == "PREMIUM_REQUIRED":
            return SpotifyAccountError(
                "Spotify Premium is required to queue songs or skip", premium_required=True
            )
        return SpotifyAccountError(message)
    if status >= 500 or status == 404:  # 404: no active device (yet); 5xx: Spotify's side
        return SpotifyError(message, transient=True, status=status)
    return SpotifyError(message, transient=False, status=status)


def _classify_oauth(exc: SpotifyOauthError) -> SpotifyError:
    """A token request failed: re-login only when the server refused the grant.

    spotipy raises SpotifyOauthError inside its `except HTTPError`, so the reply is on
    `__context__`; no reply at all means it was raised locally (HeadlessOAuth: not
    logged in), which is a login problem too.
    """
    response = getattr(exc.__context__, "response", None)
    status = int(getattr(response, "status_code", 0) or 0)
    if exc.error in RELOGIN_ERRORS or status in (0, 400, 401):
        return SpotifyAuthError(
            f"Spotify login failed or was revoked ({exc}); run: emotion-appliance spotify login"
        )
    return SpotifyError(
        f"Spotify token request failed: HTTP {status}",
        transient=True,
        retry_after=_retry_after(response.headers) if status == 429 else None,
        status=status,
    )


def _retry_after(headers: Any) -> float:
    """Seconds from a Retry-After header (1 when missing or unreadable)."""
    try:
        return max(0.0, float((headers or {}).get("Retry-After", 1)))
    except (TypeError, ValueError):
        return 1.0
