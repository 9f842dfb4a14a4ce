"""A picture of the day: emotion and valence-arousal over time, with peaks and valleys,
mood bands and the songs queued, liked and skipped, on one time axis.

    emotion-appliance report [--since 2026-11-21T08:00] [--until ...] --out day.png|day.html

Data comes from the local SQLite log (or, for `analyze`, from a per-frame CSV); nothing
leaves the device. matplotlib is optional (`pip install emotion-appliance[report]`);
without it the command says so and exits 1.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

EMOTION_COLOURS = {
    "angry": "#d62728",
    "disgust": "#8c564b",
    "fear": "#9467bd",
    "happy": "#ffbf00",
    "neutral": "#bbbbbb",
    "sad": "#1f77b4",
    "surprise": "#ff7f0e",
    "uncertain": "#e8e8e8",  # a face, but no class confident (affect/smoothing.UNCERTAIN)
}
MOOD_COLOURS = {"happy": "#fff3b0", "energetic": "#ffd0c8", "calm": "#d4f5dc", "sad": "#d6e4ff"}


class ReportError(RuntimeError):
    """Nothing to draw, no way to draw it (matplotlib missing), or nowhere to put it."""


@dataclass
class Timeline:
    """Series on one axis; t in seconds (unix time for the daemon's log)."""

    t: np.ndarray
    valence: np.ndarray  # NaN where no face
    arousal: np.ndarray
    emotion: list[str | None]
    moods: list[str | None] = field(default_factory=list)
    events: list[tuple[float, str, str]] = field(default_factory=list)  # (t, kind, text)
    title: str = "emotion-appliance"
    wall_clock: bool = True  # x axis in local time (else seconds from the start)


@dataclass(frozen=True)
class Extremum:
    t: float
    value: float
    kind: str  # peak or valley


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average that skips NaN (no face) instead of spreading it.

    The centred slice of the full convolution keeps the output as long as the input:
    mode="same" returns max(n, window) values, which breaks records shorter than the
    window (a short clip, a narrow --since/--until)."""
    n = len(values)
    if window <= 1 or n == 0:
        return values.astype(np.float64)
    ok = ~np.isnan(values)
    kernel = np.ones(window)
    centre = slice((window - 1) // 2, (window - 1) // 2 + n)
    total = np.convolve(np.where(ok, values, 0.0), kernel, mode="full")[centre]
    count = np.convolve(ok.astype(np.float64), kernel, mode="full")[centre]
    out = np.full(n, np.nan)
    np.divide(total, count, out=out, where=count > 0)
    out[~ok] = np.nan
    return out


def extrema(
    t: np.ndarray,
    values: np.ndarray,
    *,
    window: int = 5,
    prominence: float = 0.25,
    horizon: int = 600,
) -> list[Extremum]:
    """Peaks and valleys by topographic prominence: a local max (min) over +-window
    samples that rises at least `prominence` above the higher of the lowest points
    between it and a higher (lower) sample on either side, searched up to `horizon`
    samples away. Consecutive marks of one kind count once, at their extreme."""
    found: list[Extremum] = []
    n = len(values)
    for i in range(n):
        v = values[i]
        if np.isnan(v):
            continue
        lo, hi = max(0, i - window), min(n, i + window + 1)
        around = values[lo:hi]
        around = around[~np.isnan(around)]
        for kind, sign in (("peak", 1.0), ("valley", -1.0)):
            if sign * v < (sign * around).max():
                continue
            if _prominence(values, i, sign, horizon) < prominence:
                continue
            mark = Extremum(float(t[i]), float(v), kind)
            if found and found[-1].kind == kind:
                if sign * v > sign * found[-1].value:
                    found[-1] = mark
            else:
                found.append(mark)
    return found


def _prominence(values: np.ndarray, i: int, sign: float, horizon: int) -> float:
    """How far values[i] stands out (sign +1: above, -1: below) from its surroundings."""
    v = sign * values[i]
    bounded, open_ended = [], []
    for step in (-1, 1):
        lowest, j = v, i + step
        while 0 <= j < len(values) and abs(j - i) <= horizon:
            w = sign * values[j]
            if not np.isnan(w):
                if w > v:
                    break
                lowest = min(lowest, w)
            j += step
        # A side that runs off the start or end of the record has no higher ground to
        # compare with: it only counts when neither side has any.
        (open_ended if not 0 <= j < len(values) else bounded).append(lowest)
    return v - (max(bounded) if bounded else min(open_ended))


def render(timeline: Timeline, out: Path, *, width_px: int = 1400, height_px: int = 700) -> dict:
    """Draw the timeline to PNG or HTML (by suffix); returns a summary dict."""
    if len(timeline.t) == 0:
        raise ReportError("no samples in that time range")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ReportError(
            "the report needs matplotlib: pip install 'emotion-appliance[report]'"
        ) from exc
    x = _axis(timeline)
    valence = smooth(timeline.valence, 5)
    arousal = smooth(timeline.arousal, 5)
    marks = extrema(timeline.t, valence)
    dpi = 100
    fig, (ax_va, ax_em) = plt.subplots(
        2, 1, sharex=True, figsize=(width_px / dpi, height_px / dpi), dpi=dpi,
        gridspec_kw={"height_ratios": [4, 1]},
    )  # fmt: skip
    _mood_bands(ax_va, x, timeline.moods)
    ax_va.axhline(0, color="#888888", lw=0.6)
    ax_va.plot(x, valence, color="#2a9d8f", lw=1.8, label="valence")
    ax_va.plot(x, arousal, color="#e76f51", lw=1.2, alpha=0.8, label="arousal")
    for mark in marks:
        mx = _axis_value(timeline, mark.t)
        ax_va.annotate(
            f"{mark.kind} {mark.value:+.2f}",
            (mx, mark.value),
            xytext=(0, 12 if mark.kind == "peak" else -16),
            textcoords="offset points",
            ha="center",
            fontsize=8,
            arrowprops={"arrowstyle": "-", "color": "#555555"},
        )
    for t, kind, text in timeline.events:
        ex = _axis_value(timeline, t)
        style = {"queued": ("#264653", ":"), "like": ("#2a9d8f", "-"), "skip": ("#d62728", "-")}
        colour, line = style.get(kind, ("#555555", ":"))
        ax_va.axvline(ex, color=colour, ls=line, lw=0.8, alpha=0.7)
        ax_va.text(ex, 1.02, f"{kind}: {text}"[:40], rotation=90, fontsize=6, va="bottom",
                   ha="center", color=colour, clip_on=False)  # fmt: skip
    ax_va.set_ylim(-1.05, 1.05)
    ax_va.set_ylabel("valence / arousal")
    ax_va.legend(loc="lower left", fontsize=8)
    ax_va.set_title(timeline.title, pad=60 if timeline.events else 10)
    _emotion_strip(ax_em, x, timeline.emotion)
    ax_em.set_yticks([])
    ax_em.set_xlabel("local time" if timeline.wall_clock else "seconds")
    if timeline.wall_clock:
        import matplotlib.dates as mdates

        ax_em.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    fig.tight_layout()
    summary = summarise(timeline, marks)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    png = buffer.getvalue()
    try:
        if out.suffix.lower() in (".html", ".htm"):
            out.write_text(_html(timeline, png, summary), encoding="utf-8")
        else:
            out.write_bytes(png)
    except OSError as exc:  # a folder, a missing or read-only place: a message, not a traceback
        raise ReportError(f"cannot write {out}: {exc.strerror or exc}") from exc
    return summary


def summarise(timeline: Timeline, marks: Sequence[Extremum]) -> dict:
    labels = [e for e in timeline.emotion if e]
    counts = {label: labels.count(label) for label in sorted(set(labels))}
    return {
        "samples": len(timeline.t),
        "with_face": len(labels),
        "emotions": counts,
        "peaks": [{"t": m.t, "valence": round(m.value, 3)} for m in marks if m.kind == "peak"],
        "valleys": [{"t": m.t, "valence": round(m.value, 3)} for m in marks if m.kind == "valley"],
        "events": [{"t": t, "kind": k, "text": s} for t, k, s in timeline.events],
    }


def _axis(timeline: Timeline):
    if timeline.wall_clock:
        return [dt.datetime.fromtimestamp(t) for t in timeline.t]
    return timeline.t - timeline.t[0]


def _axis_value(timeline: Timeline, t: float):
    return dt.datetime.fromtimestamp(t) if timeline.wall_clock else t - timeline.t[0]


def _spans(x, labels: Sequence[str | None]):
    start = 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            end = x[i] if i < len(labels) else x[-1]
            yield x[start], end, labels[start]
            start = i


def _mood_bands(ax, x, moods: Sequence[str | None]) -> None:
    if not moods:
        return
    for x0, x1, mood in _spans(x, moods):
        if mood:
            colour = MOOD_COLOURS.get(mood.split("-")[0], "#eeeeee")
            ax.axvspan(x0, x1, color=colour, alpha=0.8, lw=0)
            ax.text(x0, -1.0, mood, fontsize=7, color="#666666")


def _emotion_strip(ax, x, emotions: Sequence[str | None]) -> None:
    for x0, x1, emotion in _spans(x, emotions):
        colour = EMOTION_COLOURS.get(emotion or "", "#ffffff")
        ax.axvspan(x0, x1, color=colour, lw=0)
    handles = [
        __import__("matplotlib.patches", fromlist=["Patch"]).Patch(color=c, label=k)
        for k, c in EMOTION_COLOURS.items()
    ]
    ax.legend(handles=handles, ncol=7, fontsize=7, loc="upper center",
              bbox_to_anchor=(0.5, -0.6), frameon=False)  # fmt: skip


def _html(timeline: Timeline, png: bytes, summary: dict) -> str:
    data = base64.b64encode(png).decode("ascii")
    rows = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{v}</td></tr>"
        for k, v in summary["emotions"].items()
    )
    return (
        "<!doctype html><meta charset='utf-8'>"
        f"<title>{html.escape(timeline.title)}</title>"
        f"<h1>{html.escape(timeline.title)}</h1>"
        f"<img alt='timeline' src='data:image/png;base64,{data}'>"
        f"<h2>Samples per emotion</h2><table>{rows}</table>"
        f"<h2>Summary</h2><pre>{html.escape(json.dumps(summary, indent=1))}</pre>"
    )


def timeline_from_db(
    db, *, since: float | None = None, until: float | None = None, mood_hold_s: float = 20.0,
    mood_k: int = 4,
) -> Timeline:  # fmt: skip
    """The daemon's log between two unix times. Samples are placed by stream time within
    each run (a recording processed faster than real time keeps its own timeline), each
    run starting at its first wall-clock time."""
    rows = db.execute(
        "SELECT t_wall, t_stream, emotion, valence, arousal, source FROM affect_samples"
        " WHERE t_wall >= ? AND t_wall <= ? ORDER BY id",
        [
            since if since is not None else float("-inf"),
            until if until is not None else float("inf"),
        ],
    ).fetchall()
    t, valence, arousal, emotion = [], [], [], []
    run_wall = run_stream = None
    previous = None
    for t_wall, t_stream, label, v, a, source in rows:
        new_run = (
            previous is None
            or source != previous[2]
            or t_stream < previous[1]
            or t_wall - previous[0] > 60.0
        )
        if new_run:
            run_wall, run_stream = t_wall, t_stream
        t.append(run_wall + (t_stream - run_stream))
        valence.append(np.nan if v is None else v)
        arousal.append(np.nan if a is None else a)
        emotion.append(label)
        previous = (t_wall, t_stream, source)
    timeline = Timeline(
        np.array(t, dtype=np.float64),
        np.array(valence, dtype=np.float64),
        np.array(arousal, dtype=np.float64),
        emotion,
    )
    timeline.moods = _moods(db, timeline, mood_hold_s, mood_k)
    if rows:
        lo, hi = rows[0][0], rows[-1][0]
        for created, name, artist in db.execute(
            "SELECT created_at, name, artist FROM queue WHERE created_at BETWEEN ? AND ?",
            [lo, hi],
        ).fetchall():
            timeline.events.append((created, "queued", f"{artist} - {name}"))
        for when, action, uri in db.execute(
            "SELECT f.t, f.action, coalesce(t.name, f.uri) FROM feedback f"
            " LEFT JOIN tracks t ON t.uri = f.uri WHERE f.t BETWEEN ? AND ?",
            [lo, hi],
        ).fetchall():
            timeline.events.append((when, action, uri))
        timeline.events.sort()
        start = dt.datetime.fromtimestamp(lo).strftime("%Y-%m-%d %H:%M")
        timeline.title = f"emotion-appliance: {len(rows)} samples from {start}"
    return timeline


def _moods(db, timeline: Timeline, hold_s: float, k: int) -> list[str | None]:
    from appliance.music.catalog import load_moods
    from appliance.music.moods import MoodTracker

    try:
        moods = load_moods(db, k=k)
    except Exception:  # no catalog, or an old database: the bands are optional
        moods = None
    if moods is None:
        return []
    tracker = MoodTracker(moods, hold_s, 0.05)
    out: list[str | None] = []
    for t, v, a in zip(timeline.t, timeline.valence, timeline.arousal, strict=True):
        out.append(None if np.isnan(v) else tracker.update(float(t), float(v), float(a)))
    return out


def parse_time(text: str | None) -> float | None:
    """ISO date/time (local) or unix seconds -> unix seconds."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ReportError(
            f"{text!r}: expected an ISO date/time (2026-11-21T08:00) or unix seconds"
        ) from None
