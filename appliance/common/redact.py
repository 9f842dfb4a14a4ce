"""The one redaction rule: what of a camera spec, a URL or any other text may be shown in
logs, status.json, history rows, doctor reports, `config show` and error messages.

A URL's user-info password and credential query values are hidden (`redact`); in free
text every URL is treated so, and the contents of the configured secret files (API key,
client secret, broker password) are hidden wherever they appear (`redact_text`). The
logging formatter every command installs (`RedactingFormatter`) applies it to each log
line, tracebacks included, and learns each secret as `read_secret` reads it.

Standard library only, so every command (and `config check`) can use it instantly.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

# "scheme://" at the start of a lower-cased spec: a URL, whose password and credential
# query values are hidden; anything else (a file name holding "?pwd=") is shown as typed.
URL_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*://")

# user ":" password "@" host...: the password runs to the LAST "@" (it may hold "@", "/",
# ":"), because a leaked password is worse than a host hidden in the rare URL whose path
# holds an "@". urlsplit would stop the netloc at the first "/" and miss "a/b@cam".
_USERINFO = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@?#]*):.*@(?P<tail>[^@]*)", re.I | re.S)

# Query parameters that carry credentials in IP-camera URLs (Foscam's usr=&pwd=, Axis's
# and others' token=/key=/auth=, cheap P2P cameras' loginpas=), alone or after a prefix
# and "_" or "-" (auth_token, user_password, api-key): their values are hidden like a
# URL password. "monkey=" or "keyframe=" are not credentials and stay.
_SECRET_QUERY = re.compile(
    r"(?P<name>[?&;](?:[\w-]{0,32}[_-])?(?:pwd|pass|passwd|password|token|secret|auth|sig"
    r"|signature|key|apikey|loginpas)=)[^&#;]*",
    re.I,
)


def redact(spec: str) -> str:
    """The spec without a URL password or credential query values, for logs, status.json
    and history rows."""
    m = _USERINFO.fullmatch(spec)
    shown = f"{m['head']}:***@{m['tail']}" if m else spec
    if URL_SCHEME.match(shown.lower()):
        shown = _SECRET_QUERY.sub(r"\g<name>***", shown)
    return shown


_URL_IN_TEXT = re.compile(r"\b[a-z][a-z0-9+.-]{0,31}://[^\s\"'<>]+", re.I)
# the same names; a value in free text also ends at white space or a quote
_SECRET_QUERY_IN_TEXT = re.compile(
    _SECRET_QUERY.pattern.replace("[^&#;]*", "[^&#;\\s\"'<>]*"), re.I
)
MIN_SECRET_LEN = 6  # shorter "secrets" would mask ordinary words in every line


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Free text (a log line, an error a server sent) with every URL redacted and every
    known secret value replaced by ***."""
    shown = _URL_IN_TEXT.sub(lambda m: redact(m.group(0)), text)
    # a request line logged apart from its host ("POST /v1?token=... HTTP/1.1"): in free
    # text a value also ends at white space or a quote
    shown = _SECRET_QUERY_IN_TEXT.sub(r"\g<name>***", shown)
    for secret in sorted({s for s in secrets if len(s) >= MIN_SECRET_LEN}, key=len, reverse=True):
        shown = shown.replace(secret, "***")
    return shown


class RedactingFormatter(logging.Formatter):
    """A log formatter whose output, tracebacks included, passes `redact_text`."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.secrets: set[str] = set()

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record), self.secrets)


def hide_in_logs(secret: str) -> None:
    """From now on, mask `secret` in every line the root logger's handlers write."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, RedactingFormatter):
            handler.formatter.secrets.add(secret)
