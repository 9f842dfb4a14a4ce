"""Writing smoothed affect samples: rate-limited, and never on the frame loop's time."""

from __future__ import annotations

import json
import logging
import sqlite3

import sqlite_utils

from appliance.affect.smoothing import AffectState
from appliance.store.database import StoreError, write_transaction

log = logging.getLogger(__name__)


def sample_row(state: AffectState, faces: int, source: str, t_wall: float) -> dict:
    return {
        "t_wall": t_wall,
        "t_stream": state.t,
        "emotion": state.emotion,
        "confidence": state.confidence,
        "face_presence": state.face_presence,
        "probs": json.dumps(state.probs, sort_keys=True),
        "valence": state.valence,
        "arousal": state.arousal,
        "faces": faces,
        "source": source,
    }


def write_samples(db: sqlite_utils.Database, rows: list[dict]) -> None:
    """Insert rows in one transaction; StoreError when the disk says no."""
    if not rows:
        return
    try:
        with write_transaction(db):
            db["affect_samples"].insert_all(rows)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot write affect samples: {exc}") from exc


def recent_samples(db: sqlite_utils.Database, limit: int = 100) -> list[dict]:
    rows = db.execute("SELECT * FROM affect_samples ORDER BY id DESC LIMIT ?", [limit]).fetchall()
    columns = [c[0] for c in db.execute("SELECT * FROM affect_samples LIMIT 0").description]
    return [dict(zip(columns, row, strict=True)) for row in reversed(rows)]
