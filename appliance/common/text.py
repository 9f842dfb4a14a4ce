"""The one sanitiser for text that came from outside, before a command prints it.

A VLM reply, a Spotify track or artist name, a catalog field, a file name, a model card
or an MQTT peer's message may carry terminal control sequences (`ESC ] 0 ; title BEL`,
`ESC [ 2 J`) that retitle or clear the operator's terminal, or bidirectional overrides
that make text read differently than it is. Human-readable output passes such text
through `printable()`: every control character is replaced by a visible escape, so
nothing is lost and nothing is obeyed. `--json` output needs no stripping:
`json.dumps` (ensure_ascii) escapes control characters itself.
"""

from __future__ import annotations

import unicodedata
from typing import Any

# Unicode's bidirectional embeddings, overrides and isolates: invisible, yet they reorder
# what the terminal shows (the "Trojan Source" trick).
_BIDI = {*map(chr, range(0x202A, 0x202F)), *map(chr, range(0x2066, 0x206A)), "\u200e", "\u200f"}


def _shown(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def printable(value: Any, limit: int | None = None) -> str:
    """`value` as one line of text safe to print to a terminal: control characters
    (C0, DEL, C1, line and paragraph separators, bidi controls) become visible escapes
    such as `\\x1b`; newlines and tabs too, since each printed field is one line.
    `limit` cuts long text with an ellipsis."""
    text = value if isinstance(value, str) else str(value)
    out = []
    for ch in text:
        if ch in _BIDI or unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
            out.append(_shown(ch))
        else:
            out.append(ch)
    shown = "".join(out)
    if limit is not None and len(shown) > limit:
        shown = shown[: max(0, limit - 1)] + "…"
    return shown
