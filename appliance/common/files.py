"""Atomic file replacement: a reader (or a power cut) sees the old file or the new one,
never half of either.

Every file the appliance rewrites in place goes through here: the status snapshot, the
Spotify token cache, and the trainers' model + card pair.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path


def atomic_write(
    path: str | Path, data: bytes | str, *, mode: int = 0o644, durable: bool = True
) -> None:
    """Write `data` to a temp file beside `path` (created with `mode`, so a secret is
    never readable by others, not even for a moment), fsync it when `durable`, and
    rename it over `path`. The folder must exist."""
    replace_together([(Path(path), data)], mode=mode, durable=durable)


def replace_together(
    files: Sequence[tuple[str | Path, bytes | str]], *, mode: int = 0o644, durable: bool = True
) -> None:
    """Several files as one change, as far as POSIX allows: all are staged as temp files
    first (written, fsynced), and only when every one is staged are they renamed over
    their targets back to back, in the order given. A failure while staging removes the
    temps and leaves every target as it was."""
    staged: list[tuple[str, Path]] = []
    try:
        for target, data in files:
            target = Path(target)
            fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
            staged.append((temp, target))
            with os.fdopen(fd, "wb") as fh:
                os.fchmod(fh.fileno(), mode)
                fh.write(data.encode("utf-8") if isinstance(data, str) else data)
                if durable:
                    fh.flush()
                    os.fsync(fh.fileno())
        for temp, target in staged:
            os.replace(temp, target)
    finally:
        for temp, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
    if durable:
        for folder in {target.parent for _, target in staged}:
            fsync_dir(folder)


def fsync_dir(path: str | Path) -> None:
    """Make renames in `path` durable; a filesystem that cannot fsync a folder is fine."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
