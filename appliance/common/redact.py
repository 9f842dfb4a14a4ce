"""The one redaction rule: what of a camera spec or URL may be shown in logs, status.json,
history rows, doctor reports and error messages.

Standard library only, so every command (and `config check`) can use it instantly.
"""

from __future__ import annotations

import re

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
    r"(?P<name>[?&;](?:[\w-]*[_-])?(?:pwd|pass|passwd|password|token|secret|auth|sig"
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
