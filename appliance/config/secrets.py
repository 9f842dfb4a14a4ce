"""Secrets (API keys, client secrets) live in files that only their owner can read."""

from __future__ import annotations

import stat
from pathlib import Path

from appliance.common.redact import hide_in_logs


class SecretError(RuntimeError):
    """The secret file is missing, empty, unreadable or readable by everyone."""


def read_secret(path: str | Path, what: str) -> str:
    """A secret from a file that must not be world-readable (refused otherwise)."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        if mode & stat.S_IROTH:
            raise SecretError(f"{path}: {what} file is world-readable; run: chmod 600 {path}")
        secret = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise SecretError(f"{what} file not found: {path}") from None
    except OSError as exc:
        raise SecretError(f"cannot read {what} file {path}: {exc}") from exc
    if not secret:
        raise SecretError(f"{path}: {what} file is empty")
    hide_in_logs(secret)  # whatever later quotes it (a server's error, a traceback)
    return secret
