"""Offline analysis of a recorded session (seed EmotionTrack-CNNLSTM): every sampled
frame of a video through the same pipeline, to a per-frame CSV and a report, organised
as OUT/<user>/<condition>/ so sessions of a study line up.

    emotion-appliance analyze session.mp4 --fps 5 --out results --user p07 --condition music
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from pathlib import Path

import numpy as np

from appliance.capture import open_source
from appliance.config import Config
from appliance.offline.report import ReportError, Timeline, render
from appliance.pipeline import Pipeline


def safe_name(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return cleaned or "unnamed"


def analyze(
    video: str, out_root: Path, config: Config, *, fps: float, user: str, condition: str
) -> dict:
    """Write frames.csv, summary.json and report.png; returns the summary."""
    if not (math.isfinite(fps) and fps > 0):  # inf made the sampling step 0
        raise ValueError(f"fps must be a finite positive number, not {fps}")
    out = prepare_output(out_root / safe_name(user) / safe_name(condition))
    pipeline = Pipeline.from_config(config)
    labels = list(pipeline.classifier.labels)
    step = 1.0 / fps
    next_t = None
    rows = []
    with open_source(video) as source:
        for frame in source:
            if next_t is None:
                next_t = frame.t
            if frame.t + 1e-6 < next_t:
                continue  # between samples: not analysed
            next_t += step * max(1, int((frame.t - next_t) / step + 1e-6) + 1)
            result = pipeline.process(frame)
            face = result.faces[0] if result.faces else None
            s = result.smoothed
            row = {
                "time_s": round(frame.t, 3),
                "frame": frame.index,
                "face": int(face is not None),
                "box_x": face.face.box[0] if face else "",
                "box_y": face.face.box[1] if face else "",
                "box_w": face.face.box[2] if face else "",
                "box_h": face.face.box[3] if face else "",
                "face_score": round(face.face.score, 4) if face else "",
                **{f"p_{k}": round(face.probs[k], 4) if face else "" for k in labels},
                "valence": round(face.valence, 4) if face else "",
                "arousal": round(face.arousal, 4) if face else "",
                "smoothed_emotion": s.emotion or "",
                "smoothed_valence": "" if s.valence is None else s.valence,
                "smoothed_arousal": "" if s.arousal is None else s.arousal,
            }
            rows.append(row)
    if not rows:
        raise ReportError(f"{video}: no frames")
    try:
        with (out / "frames.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    except OSError as exc:
        raise ReportError(f"cannot write {out / 'frames.csv'}: {exc.strerror or exc}") from exc
    timeline = Timeline(
        np.array([r["time_s"] for r in rows], dtype=np.float64),
        np.array([np.nan if r["smoothed_valence"] == "" else r["smoothed_valence"] for r in rows],
                 dtype=np.float64),
        np.array([np.nan if r["smoothed_arousal"] == "" else r["smoothed_arousal"] for r in rows],
                 dtype=np.float64),
        [r["smoothed_emotion"] or None for r in rows],
        title=f"{Path(video).name}: user {user}, condition {condition}",
        wall_clock=False,
    )  # fmt: skip
    summary = {
        "video": str(video),
        "user": user,
        "condition": condition,
        "fps": fps,
        "rows": len(rows),
        "frames_with_face": sum(r["face"] for r in rows),
        "csv": str(out / "frames.csv"),
    }
    try:
        summary["report"] = str(out / "report.png")
        summary.update(timeline_summary=render(timeline, out / "report.png"))
    except ReportError as exc:
        summary["report"] = f"not drawn: {exc}"
    try:
        (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    except OSError as exc:
        raise ReportError(f"cannot write {out / 'summary.json'}: {exc.strerror or exc}") from exc
    return summary


def prepare_output(out: Path) -> Path:
    """Create the session folder before any frame is analysed: a --out that names a file
    or a place this user cannot write fails at once, with the reason, not after minutes
    of video (or as a traceback)."""
    try:
        for part in (out, *out.parents):
            if part.exists() and not part.is_dir():
                raise ReportError(f"--out: {part} is a file, not a folder")
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"--out: cannot create {out}: {exc.strerror or exc}") from exc
    if not os.access(out, os.W_OK | os.X_OK):
        raise ReportError(f"--out: {out} is not writable by this user")
    return out
