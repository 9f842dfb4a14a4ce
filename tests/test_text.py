"""The one sanitiser for text from outside (appliance/common/text.py)."""

from __future__ import annotations

import json

import pytest

from appliance.common.text import printable

HOSTILE = [
    "\x1b]0;OWNED\x07\x1b[2J",  # retitle and clear the terminal
    "\x9b2J",  # the same through the 8-bit CSI
    "name\rOVERWRITTEN",
    "a\u202eevil.txt",  # right-to-left override
    "line\u2028break",
    "\x00\x7f",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_no_control_character_survives_and_nothing_is_lost(text):
    shown = printable(text)
    assert all(ch.isprintable() for ch in shown), repr(shown)
    assert "\\x" in shown or "\\u" in shown  # visible, not silently dropped


def test_ordinary_text_is_unchanged_and_long_text_is_cut():
    for text in ("Rosalía – Malamente", "周杰伦 - 晴天", "Sigur Rós", "AC/DC"):
        assert printable(text) == text
    assert printable("x" * 50, limit=10) == "x" * 9 + "…"
    assert printable(None) == "None"


def test_json_escapes_rather_than_strips():
    raw = "\x1b]0;OWNED\x07"
    assert "\x1b" not in json.dumps(raw) and json.loads(json.dumps(raw)) == raw
