"""Offline analysis of recorded sessions (the EmotionTrack-CNNLSTM study workflow): every
sampled frame of each video through the daemon's own pipeline, to a per-frame CSV per
session, one study table across sessions, a timeline per session with its peaks and
valleys shown with the face at that moment, a study overview, and, against a person's
annotations, accuracy, macro-F1 and a confusion matrix.

    emotion-appliance analyze STUDY_DIR --out results [--fps 5] [--labels labels.csv]
    emotion-appliance analyze session.mp4 --out results --user p07 --condition music

A study folder is STUDY_DIR/<user>/<condition>/<session>.mp4. Output, under --out:

    <user>/<condition>/<session>/frames.csv      one row per analysed frame
    <user>/<condition>/<session>/timeline.png    smoothed emotion, valence, arousal; faces
                                                 at the peaks and valleys
    <user>/<condition>/<session>/summary.json
    study.csv, study.png                         one row per session; per-condition plots
    evaluation.json, confusion.csv, confusion.png   with --labels

The face crops at peaks and valleys come from the user's own video and go only into
that session's timeline image; the daemon itself never stores a face.
"""

from __future__ import annotations

import bisect
import csv
import json
import math
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import cv2
import numpy as np

from appliance.affect.smoothing import UNCERTAIN
from appliance.capture import CaptureError, open_source
from appliance.config import Config
from appliance.offline.report import (
    EMOTION_COLOURS,
    ReportError,
    Timeline,
    downsample,
    extrema_of,
    render,
)
from appliance.vision.preprocess import crop_face

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm"}
FACE_PX = 64  # side of the crops kept for the peak and valley annotations
NO_FACE = "no face"  # a frame's prediction when no face was found


def safe_name(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return cleaned or "unnamed"


@dataclass(frozen=True)
class Session:
    user: str
    condition: str
    video: Path

    @property
    def name(self) -> str:
        return self.video.stem if self.video.suffix.lower() in VIDEO_SUFFIXES else self.video.name

    @property
    def id(self) -> str:
        """How --labels names it: user/condition/session."""
        return f"{self.user}/{self.condition}/{self.name}"


def find_sessions(path: Path, *, user: str, condition: str) -> list[Session]:
    """A video file or an image folder is one session (of --user, --condition); a study
    folder holds <user>/<condition>/<session> videos."""
    if path.is_file() or not path.exists():  # a file, or a source spec such as "demo"
        return [Session(user, condition, path)]
    if any(p.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp"} for p in path.iterdir()):
        return [Session(user, condition, path)]  # an image folder, as `run --source` reads
    sessions = [
        Session(video.parent.parent.name, video.parent.name, video)
        for video in sorted(path.glob("*/*/*"))
        if video.is_file() and video.suffix.lower() in VIDEO_SUFFIXES
    ]
    if not sessions:
        raise ReportError(
            f"{path}: no videos in {path}/<user>/<condition>/ (e.g. {path}/p07/music/s1.mp4)"
        )
    return sessions


@dataclass
class SessionResult:
    session: Session
    rows: list[dict]
    labels: list[str]
    crops: dict[int, bytes] = field(default_factory=dict)  # row index -> JPEG of the face
    seconds: float = 0.0

    def face_at(self, t: float) -> np.ndarray | None:
        """The face crop (RGB) of the analysed frame nearest t."""
        if not self.crops:
            return None
        keys = sorted(self.crops)
        times = [self.rows[i]["time_s"] for i in keys]
        j = bisect.bisect_left(times, t)
        best = min((k for k in (j - 1, j) if 0 <= k < len(keys)), key=lambda k: abs(times[k] - t))
        image = cv2.imdecode(np.frombuffer(self.crops[keys[best]], np.uint8), cv2.IMREAD_COLOR)
        return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class Progress:
    """A progress bar on a terminal (frames done of the expected total, rate, time
    left); elsewhere one line per finished session."""

    def __init__(self, stream: TextIO | None, total_frames: int, sessions: int) -> None:
        self.stream = stream
        self.bar = bool(stream is not None and getattr(stream, "isatty", lambda: False)())
        self.total = max(1, total_frames)
        self.sessions = sessions
        self.done = 0
        self.started = time.monotonic()
        self._shown = 0.0

    def frame(self, index: int, session: Session) -> None:
        self.done += 1
        now = time.monotonic()
        if not self.bar or now - self._shown < 0.2:
            return
        self._shown = now
        share = min(1.0, self.done / self.total)
        rate = self.done / max(1e-6, now - self.started)
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        filled = int(share * 30)
        self.stream.write(
            f"\ranalyze [{'#' * filled}{'.' * (30 - filled)}] {share:4.0%} "
            f"session {index}/{self.sessions} {session.id[:40]}  {rate:5.1f} frames/s, "
            f"{int(left // 60)}:{int(left % 60):02d} left "
        )
        self.stream.flush()

    def session_done(self, index: int, result: SessionResult) -> None:
        if self.stream is None:
            return
        line = (
            f"[{index}/{self.sessions}] {result.session.id}: {len(result.rows)} frames in "
            f"{result.seconds:.1f} s"
        )
        self.stream.write(("\r" + line + " " * 20 + "\n") if self.bar else line + "\n")
        self.stream.flush()


def expected_frames(session: Session, fps: float) -> int:
    """About how many frames a session will give at fps (for the progress bar)."""
    if session.video.is_dir():
        return sum(1 for _ in session.video.iterdir())
    capture = cv2.VideoCapture(str(session.video))
    try:
        count = capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0.0
        rate = capture.get(cv2.CAP_PROP_FPS) or 0.0
    finally:
        capture.release()
    if count <= 0 or rate <= 0:
        return 0
    return int(count / rate * min(fps, rate)) + 1


def analyze(
    path: str | Path,
    out_root: Path,
    config: Config,
    *,
    fps: float,
    user: str = "anonymous",
    condition: str = "default",
    labels: Path | None = None,
    progress: TextIO | bool | None = None,
) -> dict:
    """Analyse one video or a study folder; returns what was written (see the module)."""
    from appliance.pipeline import build_classifier, build_finder, build_va

    if not (math.isfinite(fps) and fps > 0):  # inf made the sampling step 0
        raise ValueError(f"fps must be a finite positive number, not {fps}")
    out_root = prepare_output(Path(out_root))
    sessions = find_sessions(Path(path), user=user, condition=condition)
    annotations = read_labels(labels, sessions) if labels is not None else None
    stream = sys.stderr if progress is True else (progress or None)
    bar = Progress(stream, sum(expected_frames(s, fps) for s in sessions), len(sessions))
    finder, classifier, va = build_finder(config), build_classifier(config), build_va(config)
    results, summaries = [], []
    used: set[Path] = set()
    for index, session in enumerate(sessions, start=1):
        finder.reset()
        result = analyze_session(session, finder, classifier, va, config, fps, bar, index)
        bar.session_done(index, result)
        folder = _session_folder(out_root, session, used)
        summaries.append(write_session(result, folder, fps))
        results.append(result)
    study = {"sessions": summaries, "fps": fps}
    study["study_csv"] = str(write_study_csv(out_root / "study.csv", summaries, results))
    study["study_plot"] = draw_study(out_root / "study.png", summaries)
    if annotations is not None:
        study["evaluation"] = evaluate(results, annotations, out_root)
    return study


def _session_folder(out_root: Path, session: Session, used: set[Path]) -> Path:
    base = out_root / safe_name(session.user) / safe_name(session.condition)
    folder = base / safe_name(session.name)
    n = 2
    while folder in used:  # two names that clean to the same folder
        folder, n = base / f"{safe_name(session.name)}-{n}", n + 1
    used.add(folder)
    return prepare_output(folder)


def analyze_session(
    session: Session, finder, classifier, va, config: Config, fps: float, bar: Progress, index: int
) -> SessionResult:
    """Every frame at 1/fps steps of media time through a fresh pipeline (its own
    smoothing), one row each; a small crop of each face for the annotations."""
    from appliance.pipeline import Pipeline

    pipeline = Pipeline(finder, classifier, config, va)
    labels = list(classifier.labels)
    det = config.detection
    step = 1.0 / fps
    next_t = None
    result = SessionResult(session, [], labels)
    started = time.monotonic()
    try:
        with open_source(str(session.video)) as source:
            for frame in source:
                if next_t is None:
                    next_t = frame.t
                if frame.t + 1e-6 < next_t:
                    continue  # between samples: not analysed
                next_t += step * max(1, int((frame.t - next_t) / step + 1e-6) + 1)
                out = pipeline.process(frame)
                face = out.faces[0] if out.faces else None
                if face is not None:
                    crop = crop_face(frame.image, face.face.box, det.margin, det.crop_shift)
                    if crop.size:
                        small = cv2.resize(crop, (FACE_PX, FACE_PX), interpolation=cv2.INTER_AREA)
                        ok, jpeg = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 85])
                        if ok:
                            result.crops[len(result.rows)] = jpeg.tobytes()
                result.rows.append(frame_row(frame, face, out.smoothed, labels))
                bar.frame(index, session)
    except CaptureError as exc:
        raise ReportError(f"{session.video}: {exc}") from exc
    result.seconds = time.monotonic() - started
    if not result.rows:
        raise ReportError(f"{session.video}: no frames")
    return result


def frame_row(frame, face, smoothed, labels: Sequence[str]) -> dict:
    return {
        "time_s": round(frame.t, 3),
        "frame": frame.index,
        "face": int(face is not None),
        "box_x": face.face.box[0] if face else "",
        "box_y": face.face.box[1] if face else "",
        "box_w": face.face.box[2] if face else "",
        "box_h": face.face.box[3] if face else "",
        "face_score": round(face.face.score, 4) if face else "",
        **{f"p_{k}": round(face.probs[k], 4) if face else "" for k in labels},
        "emotion": face.emotion if face else "",  # this frame's top class
        "valence": round(face.valence, 4) if face else "",
        "arousal": round(face.arousal, 4) if face else "",
        "smoothed_emotion": smoothed.emotion or "",
        "smoothed_valence": "" if smoothed.valence is None else round(smoothed.valence, 4),
        "smoothed_arousal": "" if smoothed.arousal is None else round(smoothed.arousal, 4),
    }


def _series(rows: list[dict], key: str) -> np.ndarray:
    return np.array([np.nan if r[key] == "" else float(r[key]) for r in rows], dtype=np.float64)


def session_timeline(result: SessionResult) -> Timeline:
    rows = result.rows
    t, v, a, emotion, _, step = downsample(
        np.array([r["time_s"] for r in rows], dtype=np.float64),
        _series(rows, "smoothed_valence"),
        _series(rows, "smoothed_arousal"),
        [r["smoothed_emotion"] or None for r in rows],
    )
    reported = [r["smoothed_emotion"] for r in rows if r["smoothed_emotion"]]
    s = result.session
    return Timeline(
        t,
        v,
        a,
        emotion,
        title=f"{s.video.name}: {len(rows)} frames analysed",
        run_id=s.id,
        source=str(s.video),
        samples=len(rows),
        with_face=len(reported),
        emotions={k: reported.count(k) for k in sorted(set(reported))},
        step_s=step,
        face_at=result.face_at,
        lane=False,
        axis_label="time in the video",
    )


def write_session(result: SessionResult, out: Path, fps: float) -> dict:
    """frames.csv, timeline.png and summary.json of one session; returns the summary."""
    rows = result.rows
    _write_csv(out / "frames.csv", list(rows[0]), rows)
    timeline = session_timeline(result)
    marks = extrema_of(timeline)
    with_face = [r for r in rows if r["face"]]
    reported = [r["smoothed_emotion"] for r in rows if r["smoothed_emotion"]]
    shares = {k: reported.count(k) / len(reported) for k in _classes(result.labels, reported)}
    s = result.session
    summary = {
        "id": s.id,
        "user": s.user,
        "condition": s.condition,
        "session": s.name,
        "video": str(s.video),
        "fps": fps,
        "rows": len(rows),
        "frames_with_face": len(with_face),
        "face_share": len(with_face) / len(rows),
        "shares": shares if reported else {},
        "mean_valence": _mean(_series(rows, "smoothed_valence")),
        "mean_arousal": _mean(_series(rows, "smoothed_arousal")),
        "peaks": sum(m.kind == "peak" for m in marks),
        "valleys": sum(m.kind == "valley" for m in marks),
        "csv": str(out / "frames.csv"),
    }
    try:
        summary["timeline"] = str(out / "timeline.png")
        drawn = render(timeline, out / "timeline.png", title=f"session {s.id}")
        # the faces shown at the peaks and valleys: (kind, moment), x where drawn
        summary["faces_shown"] = drawn.pop("drawn")[0]["faces"]
        summary["timeline_summary"] = drawn
    except ReportError as exc:
        summary["timeline"] = f"not drawn: {exc}"
    _write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    return summary


def _classes(labels: Sequence[str], seen: Sequence[str]) -> list[str]:
    """The model's labels and `uncertain`, then any other reported label: the same
    columns for every study, whether or not a session was ever uncertain."""
    known = [*labels, UNCERTAIN]
    return [*known, *sorted(set(seen) - set(known))]


def _mean(values: np.ndarray) -> float | None:
    return round(float(np.nanmean(values)), 4) if np.isfinite(values).any() else None


def write_study_csv(path: Path, summaries: list[dict], results: list[SessionResult]) -> Path:
    """One row per session: user, condition, session, frames, share with a face, share of
    each reported emotion (of the frames with a reported label), mean valence and
    arousal (smoothed), peaks and valleys of valence."""
    labels = _classes(results[0].labels, [k for s in summaries for k in s["shares"]])
    rows = []
    for s in summaries:
        rows.append(
            {
                "user": s["user"],
                "condition": s["condition"],
                "session": s["session"],
                "frames": s["rows"],
                "face_share": round(s["face_share"], 4),
                **{f"share_{k}": round(s["shares"].get(k, 0.0), 4) for k in labels},
                "mean_valence": "" if s["mean_valence"] is None else s["mean_valence"],
                "mean_arousal": "" if s["mean_arousal"] is None else s["mean_arousal"],
                "peaks": s["peaks"],
                "valleys": s["valleys"],
            }
        )
    _write_csv(path, list(rows[0]), rows)
    return path


def draw_study(path: Path, summaries: list[dict]) -> str:
    """Per condition: the sessions' mean valence and arousal, and the mean share of each
    emotion. Returns the path, or why it was not drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "not drawn: the plot needs matplotlib: pip install 'emotion-appliance[report]'"
    conditions = sorted({s["condition"] for s in summaries})
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), dpi=100)
    for ax, key, name in (
        (axes[0], "mean_valence", "valence"),
        (axes[1], "mean_arousal", "arousal"),
    ):
        groups = [
            [s[key] for s in summaries if s["condition"] == c and s[key] is not None]
            for c in conditions
        ]
        ax.boxplot([g or [np.nan] for g in groups], tick_labels=conditions, widths=0.5)
        for i, g in enumerate(groups, start=1):
            jitter = np.linspace(-0.12, 0.12, len(g)) if len(g) > 1 else [0.0]
            ax.scatter(np.add(i, jitter), g, s=14, color="#2a9d8f", zorder=3)
        ax.axhline(0, color="#999999", lw=0.6)
        ax.set_ylim(-1.05, 1.05)
        ax.set_title(f"mean {name} per session", fontsize=10)
        ax.tick_params(labelsize=8)
    labels = [k for k in EMOTION_COLOURS if any(s["shares"].get(k) for s in summaries)]
    bottom = np.zeros(len(conditions))
    for label in labels:
        share = np.array(
            [
                np.mean([s["shares"].get(label, 0.0) for s in summaries if s["condition"] == c])
                for c in conditions
            ]
        )
        axes[2].bar(conditions, share, bottom=bottom, color=EMOTION_COLOURS[label], label=label)
        bottom += share
    axes[2].set_ylim(0, 1)
    axes[2].set_title("share of each emotion (mean over sessions)", fontsize=10)
    axes[2].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    axes[2].tick_params(labelsize=8)
    counts = {c: sum(s["condition"] == c for s in summaries) for c in conditions}
    fig.suptitle(
        "study overview: " + ", ".join(f"{c} ({n} sessions)" for c, n in counts.items()),
        fontsize=11,
    )
    return _save(fig, path)


# ------------------------------------------------------------------- annotations


def read_labels(path: Path, sessions: Sequence[Session]) -> dict[str, list[tuple[float, str]]]:
    """A person's annotations: CSV rows `session,t,label` (a header row is optional).
    Each row gives the label from t (seconds of the video) until the session's next row;
    a label of "" or "-" ends the labelled stretch. A session is named as
    user/condition/session, or by its session name (or video file name) alone where
    that is unambiguous."""
    by_key: dict[str, list[Session]] = {}
    for s in sessions:
        for key in {s.id, s.name, s.video.name}:
            by_key.setdefault(key, []).append(s)
    out: dict[str, list[tuple[float, str]]] = {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            for line, row in enumerate(csv.reader(fh), start=1):
                if not row or not "".join(row).strip():
                    continue
                if len(row) < 3:
                    raise ReportError(f"{path}:{line}: expected session,t,label")
                name, t, label = (c.strip() for c in row[:3])
                try:
                    seconds = float(t)
                except ValueError:
                    if line == 1:
                        continue  # the header
                    raise ReportError(f"{path}:{line}: t must be seconds, not {t!r}") from None
                matches = by_key.get(name, [])
                if len(matches) != 1:
                    why = "matches several sessions" if matches else "is no analysed session"
                    known = ", ".join(s.id for s in sessions[:6])
                    raise ReportError(f"{path}:{line}: {name!r} {why} (sessions: {known})")
                out.setdefault(matches[0].id, []).append((seconds, "" if label == "-" else label))
    except OSError as exc:
        raise ReportError(f"--labels: cannot read {path}: {exc.strerror or exc}") from exc
    if not out:
        raise ReportError(f"--labels: {path} holds no annotations")
    return {k: sorted(v) for k, v in out.items()}


def truth_at(times: Sequence[float], marks: list[tuple[float, str]]) -> list[str]:
    """The annotated label at each time ("" where nothing is annotated)."""
    starts = [t for t, _ in marks]
    out = []
    for t in times:
        i = bisect.bisect_right(starts, t + 1e-6) - 1
        out.append(marks[i][1] if i >= 0 else "")
    return out


def scores(truth: Sequence[str], predicted: Sequence[str]) -> dict:
    """Accuracy, and macro-F1 over the classes the annotations use (a prediction of any
    other label, "uncertain" or no face, only ever counts against)."""
    truth, predicted = np.asarray(truth, dtype=object), np.asarray(predicted, dtype=object)
    classes = sorted(set(truth))
    f1 = {}
    for c in classes:
        tp = float(np.sum((truth == c) & (predicted == c)))
        p = tp / max(1.0, float(np.sum(predicted == c)))
        r = tp / max(1.0, float(np.sum(truth == c)))
        f1[c] = 0.0 if p + r == 0 else 2 * p * r / (p + r)
    return {
        "accuracy": float(np.mean(truth == predicted)) if len(truth) else 0.0,
        "macro_f1": float(np.mean(list(f1.values()))) if f1 else 0.0,
        "f1": f1,
    }


def evaluate(
    results: Sequence[SessionResult], annotations: dict[str, list[tuple[float, str]]], out: Path
) -> dict:
    """The appliance's reported (smoothed) label and each frame's top class against the
    annotations, over the analysed frames that fall in an annotated stretch."""
    truth, smoothed, raw, per_session = [], [], [], {}
    for result in results:
        marks = annotations.get(result.session.id)
        if not marks:
            continue
        times = [r["time_s"] for r in result.rows]
        labelled = [
            (row, y) for row, y in zip(result.rows, truth_at(times, marks), strict=True) if y
        ]
        ys = [y for _, y in labelled]
        ps = [row["smoothed_emotion"] or NO_FACE for row, _ in labelled]
        truth += ys
        smoothed += ps
        raw += [row["emotion"] or NO_FACE for row, _ in labelled]
        per_session[result.session.id] = {"frames": len(ys), **scores(ys, ps)}
    if not truth:
        raise ReportError("--labels: no analysed frame falls in an annotated stretch")
    labels = results[0].labels
    rows = _classes(labels, truth)
    columns = [*_classes(labels, [p for p in smoothed if p != NO_FACE]), NO_FACE]
    matrix = np.zeros((len(rows), len(columns)), dtype=np.int64)
    for y, p in zip(truth, smoothed, strict=True):
        matrix[rows.index(y), columns.index(p)] += 1
    keep = [i for i, r in enumerate(rows) if matrix[i].sum() > 0]
    rows, matrix = [rows[i] for i in keep], matrix[keep]
    _write_csv(
        out / "confusion.csv",
        ["annotated \\ reported", *columns],
        [
            {"annotated \\ reported": r, **dict(zip(columns, map(int, m), strict=True))}
            for r, m in zip(rows, matrix, strict=True)
        ],
    )
    evaluation = {
        "frames": len(truth),
        **scores(truth, smoothed),
        "per_frame_top_class": scores(truth, raw),
        "sessions": per_session,
        "confusion": {"rows": rows, "columns": columns, "counts": matrix.tolist()},
        "confusion_csv": str(out / "confusion.csv"),
    }
    evaluation["confusion_plot"] = _draw_confusion(out / "confusion.png", rows, columns, matrix)
    _write_text(out / "evaluation.json", json.dumps(evaluation, indent=1) + "\n")
    return evaluation


def _draw_confusion(path: Path, rows, columns, matrix: np.ndarray) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "not drawn: needs matplotlib"
    share = matrix / np.maximum(1, matrix.sum(axis=1, keepdims=True))
    fig, ax = plt.subplots(figsize=(1.2 + 0.75 * len(columns), 1.0 + 0.55 * len(rows)), dpi=100)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for i in range(len(rows)):
        for j in range(len(columns)):
            ax.text(
                j,
                i,
                f"{matrix[i, j]}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if share[i, j] > 0.6 else "black",
            )
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel("reported (smoothed)")
    ax.set_ylabel("annotated")
    return _save(fig, path)


# ------------------------------------------------------------------------ files


def _write_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    try:
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
    except OSError as exc:
        raise ReportError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _write_text(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ReportError(f"cannot write {path}: {exc.strerror or exc}") from exc


def prepare_output(out: Path) -> Path:
    """Create the output folder before any frame is analysed: a --out that names a file
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


def _save(fig, path: Path) -> str:
    """Lay out, write and close a figure; a place that cannot be written is a
    ReportError naming it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    try:
        fig.savefig(path)
    except OSError as exc:
        raise ReportError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        plt.close(fig)
    return str(path)
