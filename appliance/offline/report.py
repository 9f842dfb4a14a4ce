"""A picture of a run: emotion and valence-arousal over time, its peaks and valleys, the
moods the daemon decided and the songs it queued, played, liked and skipped, all on the
run's own stream clock.

    emotion-appliance report [--run ID|latest|all] [--since T] [--until T] --out FILE.png
                             (or .svg, .pdf, .html)
    emotion-appliance report --runs

One clock: every stored event carries its run's id and the stream time of the samples
(store/samples.py), so a song is drawn where the samples around it were, whether the run
was a camera or a file processed faster than real time. Nothing is re-computed: the mood
band is the director's logged decisions. Runs are separate panels. The series are
downsampled to the plot's resolution in SQLite (a month of 1 Hz history is millions of
samples), and peaks and valleys come from scipy's `find_peaks` on that downsampled
signal. matplotlib and scipy are optional (`pip install emotion-appliance[report]`);
without them the command says so and exits 1. `analyze` draws its sessions with the same
code (analyze.py). Nothing leaves the device.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import logging
import math
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from appliance.common.files import atomic_write
from appliance.common.text import printable

log = logging.getLogger(__name__)

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
NO_FACE_COLOUR = "#ffffff"
MOOD_COLOURS = {"happy": "#fff3b0", "energetic": "#ffd0c8", "calm": "#d4f5dc", "sad": "#d6e4ff"}
# kind -> (marker, colour, what the table says)
EVENT_STYLE = {
    "queued": ("v", "#264653", "queued"),
    "played": ("o", "#2a9d8f", "played"),
    "like": ("^", "#1a7f37", "liked"),
    "skip": ("X", "#d62728", "skipped"),
    "note": ("s", "#6c757d", "VLM note"),
}
FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf", ".html": "html", ".htm": "html"}

WIDTH_PX = 1400
DPI = 100
BINS = 1200  # points per panel: about one per pixel column of the plot
MAX_PANELS = 8
TABLE_ROWS_IN_IMAGE = 40
PROMINENCE = 0.25  # valence units a peak must stand out by
MIN_WIDTH_S = 2.0  # and for how long (at half its prominence)
SMOOTH_S = 5.0  # moving average before the search, capped at SMOOTH_MAX_POINTS
SMOOTH_MAX_POINTS = 9
LANE_ROWS = 3  # rows of song labels before neighbours are merged into one label
# fonts that cover CJK titles, Debian's first (apt install fonts-noto-cjk)
CJK_FONT_FILES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJKjp-Regular.otf",
    "/usr/share/fonts/truetype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
)
CJK_HINT = "install a font that covers them (Debian: apt install fonts-noto-cjk)"


class ReportError(RuntimeError):
    """Nothing to draw, no way to draw it (matplotlib or scipy missing), or nowhere to
    put it."""


@dataclass(frozen=True)
class Event:
    """Something that happened at a moment of a run: t on the run's stream clock, `wall`
    the unix time it was logged (None: not known)."""

    t: float
    kind: str  # a key of EVENT_STYLE
    text: str
    wall: float | None = None
    detail: str = ""  # the mood a song was queued for, the emotion a note saw


@dataclass(frozen=True)
class Extremum:
    t: float
    value: float
    kind: str  # peak or valley
    prominence: float = 0.0
    wall: float | None = None


@dataclass
class Timeline:
    """One run (or one analysed session), on its own clock: `t` in seconds of stream
    time, one point per sample or per downsampled bin (NaN valence: no face there)."""

    t: np.ndarray
    valence: np.ndarray
    arousal: np.ndarray
    emotion: list[str | None]
    # what the director decided: (t, mood, unix time it was logged or None)
    moods: list[tuple[float, str, float | None]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    title: str = "emotion-appliance"
    run_id: str = ""
    source: str = ""
    wall: np.ndarray | None = None  # unix time each point was logged (None: a video)
    samples: int = 0  # samples behind the points
    with_face: int = 0
    emotions: dict[str, int] = field(default_factory=dict)  # samples per reported label
    step_s: float = 0.0  # the spacing of the points
    end: float | None = None  # where the run ends on its clock (default: the last point)
    # analyze: the face crop (RGB) nearest a moment, to show at peaks and valleys
    face_at: Callable[[float], np.ndarray | None] | None = None
    lane: bool = True  # a lane for songs and feedback (the daemon's runs)
    axis_label: str = "time in the run (its stream clock)"

    def __post_init__(self) -> None:
        if not self.samples:
            self.samples = len(self.t)
        if not self.with_face and not self.emotions:
            labels = [e for e in self.emotion if e]
            self.with_face = len(labels)
            self.emotions = {k: labels.count(k) for k in sorted(set(labels))}
        if not self.step_s and len(self.t) > 1:
            self.step_s = float(np.median(np.diff(self.t)))

    @property
    def start(self) -> float:
        return float(self.t[0]) if len(self.t) else 0.0

    @property
    def stop(self) -> float:
        last = float(self.t[-1]) if len(self.t) else 0.0
        return max(last, self.end or last, *(e.t for e in self.events))


# ------------------------------------------------------------------------- the series


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average that skips NaN (no face) instead of spreading it; as long
    as its input, also for records shorter than the window."""
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


def find_extrema(
    t: np.ndarray,
    values: np.ndarray,
    *,
    prominence: float = PROMINENCE,
    min_width_s: float = MIN_WIDTH_S,
    wall: np.ndarray | None = None,
) -> list[Extremum]:
    """Peaks and valleys of a (downsampled, evenly spaced) series with
    `scipy.signal.find_peaks`: standing out by `prominence` for at least `min_width_s`
    at half that height. Stretches without a face are bridged for the search (a look
    away does not make a valley) but never hold a mark themselves; the ends of the
    record are no extrema (nothing beyond them to compare with)."""
    try:
        from scipy.signal import find_peaks
    except ImportError as exc:
        raise ReportError(
            "peaks and valleys need scipy: pip install 'emotion-appliance[report]'"
        ) from exc
    ok = ~np.isnan(values)
    if ok.sum() < 3:
        return []
    step = float(np.median(np.diff(t))) if len(t) > 1 else 1.0
    # rounded: a plateau of means is flat, not float noise with a "peak" at every bump
    filled = np.round(np.interp(t, t[ok], values[ok]), 6)
    width = max(1.0, min_width_s / step) if step > 0 else 1.0
    found: list[Extremum] = []
    for kind, sign in (("peak", 1.0), ("valley", -1.0)):
        index, props = find_peaks(sign * filled, prominence=prominence, width=width)
        for i, p in zip(index, props["prominences"], strict=True):
            if ok[i]:
                w = float(wall[i]) if wall is not None and not np.isnan(wall[i]) else None
                found.append(Extremum(float(t[i]), float(values[i]), kind, float(p), w))
    merged: list[Extremum] = []  # two peaks with no valley between count once
    for mark in sorted(found, key=lambda m: m.t):
        if merged and merged[-1].kind == mark.kind:
            if mark.prominence > merged[-1].prominence:
                merged[-1] = mark
        else:
            merged.append(mark)
    return merged


def downsample(
    t: np.ndarray,
    valence: np.ndarray,
    arousal: np.ndarray,
    emotion: Sequence[str | None],
    *,
    bins: int = BINS,
    wall: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str | None], np.ndarray | None, float]:
    """At most `bins` evenly spaced points: means of valence and arousal over the
    samples with a face, the most frequent label (None = no face), the mean wall time.
    A record with fewer samples than bins keeps one point per sample period."""
    n = len(t)
    if n == 0:
        return t, valence, arousal, list(emotion), wall, 0.0
    span = float(t[-1] - t[0])
    period = float(np.median(np.diff(t))) if n > 1 else 1.0
    step = max(span / bins, period, 1e-6)
    index = np.minimum(np.floor((t - t[0]) / step).astype(np.int64), max(1, bins) - 1)
    if n <= bins and len(np.unique(index)) == n:
        return t, valence, arousal, list(emotion), wall, step  # one sample per point
    keys, first = np.unique(index, return_index=True)
    ends = np.append(first[1:], n)
    out_t = t[0] + (keys + 0.5) * step
    out_v = _bin_means(valence, first, ends)
    out_a = _bin_means(arousal, first, ends)
    out_w = _bin_means(wall, first, ends) if wall is not None else None
    labels = []
    for lo, hi in zip(first, ends, strict=True):
        chunk = list(emotion[lo:hi])
        labels.append(max(set(chunk), key=lambda x: (chunk.count(x), x is not None, x or "")))
    return out_t, out_v, out_a, labels, out_w, step


def _bin_means(values: np.ndarray, first: np.ndarray, ends: np.ndarray) -> np.ndarray:
    ok = ~np.isnan(values)
    total = np.add.reduceat(np.where(ok, values, 0.0), first)
    count = np.add.reduceat(ok.astype(np.float64), first)
    out = np.full(len(first), np.nan)
    np.divide(total, count, out=out, where=count > 0)
    return out


# ---------------------------------------------------------------------- the database


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    source: str
    started_at: float  # unix time of its first sample
    last_wall: float
    t_stream0: float
    last_stream: float
    samples: int


def list_runs(db) -> list[RunInfo]:
    """Every run with stored samples, oldest first."""
    rows = _query(
        db,
        "SELECT run_id, source, started_at, last_wall, t_stream0, last_stream, samples"
        " FROM runs ORDER BY started_at, run_id",
        [],
    )
    return [RunInfo(*row) for row in rows]


def legacy_samples(db, since: float | None = None, until: float | None = None) -> int:
    """Samples stored before run ids (schema v5): they belong to no run and are not
    drawn."""
    lo, hi = _range(since, until)
    return _query(
        db,
        "SELECT count(*) FROM affect_samples WHERE run_id IS NULL AND t_wall BETWEEN ? AND ?",
        [lo, hi],
    )[0][0]


def select_runs(
    db, run: str | None = None, since: float | None = None, until: float | None = None
) -> list[RunInfo]:
    """The runs a report shows: `run` is an id (or a unique start of one), "latest"
    (the default without --since/--until) or "all"; --since/--until keep the runs with
    samples in that range."""
    runs = list_runs(db)
    if since is not None or until is not None:
        lo, hi = _range(since, until)
        runs = [r for r in runs if r.last_wall >= lo and r.started_at <= hi]
        if run in (None, "all"):
            return runs
    elif run is None:
        run = "latest"
    if run == "all":
        return runs
    if run == "latest":
        return [max(runs, key=lambda r: r.last_wall)] if runs else []
    exact = [r for r in runs if r.run_id == run]
    matches = exact or [r for r in runs if r.run_id.startswith(run)]
    if len(matches) > 1:
        names = ", ".join(r.run_id for r in matches[:5])
        raise ReportError(f"--run {run!r} matches {len(matches)} runs ({names}): say more")
    if not matches:
        raise ReportError(f"no run {run!r} (emotion-appliance report --runs lists them)")
    return matches


def timeline_from_db(
    db,
    info: RunInfo,
    *,
    since: float | None = None,
    until: float | None = None,
    bins: int = BINS,
) -> Timeline:
    """One run from the log, downsampled in SQLite to at most `bins` points (each point
    the mean over its stretch of stream time), with what the daemon decided and did on
    the same clock: mood changes, songs queued and played, likes and skips, VLM notes."""
    lo, hi = _range(since, until)
    first, last, count, faces = _query(
        db,
        "SELECT min(t_stream), max(t_stream), count(*), count(emotion) FROM affect_samples"
        " WHERE run_id = ? AND t_wall BETWEEN ? AND ?",
        [info.run_id, lo, hi],
    )[0]
    if not count:
        return Timeline(np.array([]), np.array([]), np.array([]), [], run_id=info.run_id)
    period = (last - first) / max(1, count - 1) if count > 1 else 1.0
    step = max((last - first) / bins, period, 1e-6)
    where = "run_id = ? AND t_wall BETWEEN ? AND ?"
    params = [info.run_id, lo, hi]
    bin_expr = f"min({max(1, bins) - 1}, CAST((t_stream - ?) / ? AS INTEGER))"
    rows = _query(
        db,
        f"SELECT {bin_expr} AS b, avg(t_stream), avg(valence), avg(arousal), avg(t_wall)"
        f" FROM affect_samples WHERE {where} GROUP BY b ORDER BY b",
        [first, step, *params],
    )
    labels: dict[int, dict[str | None, int]] = {}
    for b, label, n in _query(
        db,
        f"SELECT {bin_expr} AS b, emotion, count(*) FROM affect_samples WHERE {where}"
        " GROUP BY b, emotion",
        [first, step, *params],
    ):
        labels.setdefault(b, {})[label] = n
    emotions: dict[str, int] = {}
    for by_label in labels.values():
        for label, n in by_label.items():
            if label:
                emotions[label] = emotions.get(label, 0) + n
    per_point = count <= bins
    t = np.array([r[1] if per_point else first + (r[0] + 0.5) * step for r in rows])
    timeline = Timeline(
        t - info.t_stream0,  # seconds into the run
        np.array([np.nan if r[2] is None else r[2] for r in rows], dtype=np.float64),
        np.array([np.nan if r[3] is None else r[3] for r in rows], dtype=np.float64),
        [_mode(labels[r[0]]) for r in rows],
        run_id=info.run_id,
        source=info.source,
        wall=np.array([r[4] for r in rows], dtype=np.float64),
        samples=count,
        with_face=faces,
        emotions=dict(sorted(emotions.items())),
        step_s=step,
    )
    whole = since is None and until is None
    t_lo, t_hi = (first, last) if not whole else (float("-inf"), float("inf"))
    timeline.moods = _moods(db, info, first, last)
    timeline.events = [
        Event(e.t - info.t_stream0, e.kind, e.text, e.wall, e.detail)
        for e in _events(db, info.run_id)
        if t_lo <= e.t <= t_hi
    ]
    timeline.end = (info.last_stream if whole else last) - info.t_stream0
    start = dt.datetime.fromtimestamp(info.started_at)
    timeline.title = (
        f"run {info.run_id} · {info.source} · started {start:%Y-%m-%d %H:%M:%S} · {count} samples"
    )
    return timeline


def _mode(counts: dict[str | None, int]) -> str | None:
    return max(counts, key=lambda k: (counts[k], k is not None, k or ""))


def _moods(db, info: RunInfo, first: float, last: float) -> list[tuple[float, str, float | None]]:
    """The director's decisions in this stretch, with the one in force at its start."""
    rows = _query(
        db,
        "SELECT t_stream, mood, t_wall FROM mood_changes WHERE run_id = ? AND t_stream <= ?"
        " ORDER BY t_stream, id",
        [info.run_id, last],
    )
    before = [r for r in rows if r[0] < first]
    kept = [(first, *before[-1][1:])] if before else []
    kept += [r for r in rows if r[0] >= first]
    return [(t - info.t_stream0, mood, wall) for t, mood, wall in kept]


def _events(db, run_id: str) -> list[Event]:
    events = [
        Event(t, "queued", f"{artist} - {name}", wall, mood or "")
        for t, wall, name, artist, mood in _query(
            db,
            "SELECT t_stream, created_at, name, artist, mood FROM queue"
            " WHERE run_id = ? AND t_stream IS NOT NULL",
            [run_id],
        )
    ]
    events += [
        Event(t, "played", f"{artist} - {name}", wall if state == "played" else None, mood or "")
        for t, wall, state, name, artist, mood in _query(
            db,
            "SELECT played_t_stream, updated_at, state, name, artist, mood FROM queue"
            " WHERE played_run_id = ? AND played_t_stream IS NOT NULL",
            [run_id],
        )
    ]
    events += [
        Event(t, action, f"{artist} - {name}" if name else uri, wall)
        for t, wall, action, uri, name, artist in _query(
            db,
            "SELECT f.t_stream, f.t, f.action, f.uri, tr.name, tr.artist FROM feedback f"
            " LEFT JOIN tracks tr ON tr.uri = f.uri"
            " WHERE f.run_id = ? AND f.t_stream IS NOT NULL",
            [run_id],
        )
    ]
    events += [
        Event(t, "note", reply, wall, emotion or "")
        for t, wall, reply, emotion in _query(
            db,
            "SELECT t_stream, t_wall, reply, emotion FROM vlm_notes"
            " WHERE run_id = ? AND t_stream IS NOT NULL",
            [run_id],
        )
    ]
    return sorted(events, key=lambda e: (e.t, e.kind))


def _query(db, sql: str, params: list) -> list[tuple]:
    try:
        return db.execute(sql, params).fetchall()
    except sqlite3.Error as exc:
        raise ReportError(f"cannot read the history: {exc}") from exc


def _range(since: float | None, until: float | None) -> tuple[float, float]:
    return (
        since if since is not None else float("-inf"),
        until if until is not None else float("inf"),
    )


def load_report(
    db, *, run: str | None = None, since: float | None = None, until: float | None = None
) -> tuple[list[Timeline], list[str]]:
    """The timelines a report draws, and notes for its reader (runs left out, samples
    from before run ids)."""
    runs = select_runs(db, run, since, until)
    notes = []
    if (old := legacy_samples(db, since, until)) > 0:
        notes.append(
            f"{old} samples stored before run ids (schema v5) belong to no run and are not drawn"
        )
    if len(runs) > MAX_PANELS:
        left = runs[:-MAX_PANELS]
        notes.append(
            f"{len(left)} older runs in that range not drawn (the newest {MAX_PANELS} are): "
            "narrow --since/--until or pick one with --run"
        )
        runs = runs[-MAX_PANELS:]
    timelines = [timeline_from_db(db, info, since=since, until=until) for info in runs]
    timelines = [t for t in timelines if len(t.t)]
    if not timelines:
        ranged = since is not None or until is not None
        why = "no samples in that time range" if ranged else "no runs in the history yet"
        raise ReportError("; ".join([why, *notes]))
    return timelines, notes


# --------------------------------------------------------------------------- drawing


def output_format(out: Path) -> str:
    """png, svg, pdf or html, by the file's extension; anything else is an error (before
    any work is done)."""
    kind = FORMATS.get(out.suffix.lower())
    if kind is None:
        shown = f"'{out.suffix}'" if out.suffix else "none"
        raise ReportError(
            f"--out {out}: unknown extension ({shown}); use .png, .svg, .pdf or .html"
        )
    return kind


@dataclass
class _Fonts:
    family: list[str]
    covered: set[int]
    cjk: str | None  # the CJK font found, if any
    replaced: int = 0  # titles with characters no font covers

    def shown(self, text: str) -> str:
        """Text as the image can draw it: characters no installed font covers become
        '?' (instead of empty boxes), counted for the reader's note."""
        out = "".join(c if ord(c) in self.covered or c.isspace() else "?" for c in text)
        if out != text:
            self.replaced += 1
        return out


def setup_fonts() -> _Fonts:
    """DejaVu Sans for Latin, Noto Sans CJK (or another CJK font) where installed for
    CJK titles, through matplotlib's per-glyph fallback."""
    from matplotlib import font_manager, ft2font

    family = ["DejaVu Sans"]
    cjk = None
    known = {f.name for f in font_manager.fontManager.ttflist}
    for name in (
        "Noto Sans CJK JP",
        "Noto Sans CJK SC",
        "WenQuanYi Zen Hei",
        "Droid Sans Fallback",
    ):
        if name in known:
            cjk = name
            break
    if cjk is None:
        for path in CJK_FONT_FILES:
            if Path(path).is_file():
                try:
                    font_manager.fontManager.addfont(path)
                    cjk = font_manager.FontProperties(fname=path).get_name()
                    break
                except (OSError, RuntimeError, ValueError) as exc:
                    log.debug("font %s unusable: %s", path, exc)
    if cjk:
        family.append(cjk)
    covered: set[int] = set()
    for name in family:
        try:
            path = font_manager.findfont(
                font_manager.FontProperties(family=name), fallback_to_default=False
            )
            covered |= set(ft2font.FT2Font(path).get_charmap())
        except (ValueError, RuntimeError, OSError) as exc:
            log.debug("font %s: %s", name, exc)
    return _Fonts(family, covered, cjk)


def _clock(seconds: float) -> str:
    """Run time as m:ss or h:mm:ss."""
    seconds = max(0.0, seconds)
    h, rest = divmod(round(seconds), 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _local(wall: float | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return (
        "—"
        if wall is None or not math.isfinite(wall)
        else dt.datetime.fromtimestamp(wall).strftime(fmt)
    )


def _short(text: str, limit: int = 70) -> str:
    text = " ".join(printable(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class _Numbered:
    n: int
    panel: int
    event: Event


def render(
    timelines: Timeline | Sequence[Timeline],
    out: Path,
    *,
    notes: Sequence[str] = (),
    width_px: int = WIDTH_PX,
    title: str = "emotion-appliance report",
) -> dict:
    """Draw the timelines, one panel each, to out (.png, .svg, .pdf or .html); returns
    a summary, including where each marker and label was drawn (`drawn`)."""
    kind = output_format(out)
    timelines = [timelines] if isinstance(timelines, Timeline) else list(timelines)
    timelines = [t for t in timelines if len(t.t)]
    if not timelines:
        raise ReportError("no samples in that time range")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ReportError(
            "the report needs matplotlib: pip install 'emotion-appliance[report]'"
        ) from exc
    fonts = setup_fonts()
    marks = [extrema_of(t) for t in timelines]
    numbered: list[_Numbered] = []
    for p, timeline in enumerate(timelines):
        for event in timeline.events:
            numbered.append(_Numbered(len(numbered) + 1, p, event))
    with matplotlib.rc_context(
        {
            "font.family": fonts.family,
            "svg.fonttype": "path",
            "pdf.fonttype": 42,
            "axes.unicode_minus": False,
        }
    ):
        fig, drawn = _draw(plt, timelines, marks, numbered, fonts, width_px, title)
        try:
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png" if kind == "html" else kind, dpi=DPI)
            drawn = [_where(fig, d) for d in drawn]  # where it all went, read back
        finally:
            plt.close(fig)
    data = buffer.getvalue()
    if fonts.replaced:
        notes = [
            *notes,
            f"{fonts.replaced} titles have characters no installed font covers: "
            f"'?' in the image, whole in the HTML table ({CJK_HINT})",
        ]
    summary = summarise(timelines, marks, numbered, notes)
    summary["drawn"] = drawn
    summary["fonts"] = fonts.family
    payload: bytes | str = (
        _html(timelines, data, summary, numbered, marks, title) if kind == "html" else data
    )
    try:
        atomic_write(out, payload, durable=False)
    except OSError as exc:  # a folder, a missing or read-only place: a message, not a traceback
        raise ReportError(f"cannot write {out}: {exc.strerror or exc}") from exc
    return summary


def extrema_of(timeline: Timeline) -> list[Extremum]:
    window = 1
    if timeline.step_s > 0:
        window = int(min(SMOOTH_MAX_POINTS, max(1, round(SMOOTH_S / timeline.step_s))))
        window += 1 - window % 2  # odd: centred
    return find_extrema(timeline.t, smooth(timeline.valence, window), wall=timeline.wall)


# pixel heights of the parts of a panel
_HEAD_PX, _FACES_PX, _VA_PX, _STRIP_PX, _LANE_ROW_PX, _AXIS_PX = 30, 62, 190, 24, 15, 34
_LEFT_PX, _RIGHT_PX = 80, 30
_TABLE_ROW_PX = 16


def _draw(plt, timelines, marks, numbered, fonts: _Fonts, width_px: int, title: str):
    """Lay the panels out in fixed pixel sizes (so marker positions are exact and
    testable), draw, and report what went where. A panel, top down: its title, the faces
    at its peaks (analyze), valence and arousal over the mood band, the faces at its
    valleys (analyze), the emotion strip, the song lane with the time axis."""
    from matplotlib.font_manager import FontProperties

    measure_fig = plt.figure(figsize=(width_px / DPI, 1), dpi=DPI)
    renderer = measure_fig.canvas.get_renderer()
    small = FontProperties(family=fonts.family, size=7)
    widths = {
        c: renderer.get_text_width_height_descent(c, small, ismath=False)[0] for c in "0123456789–"
    }
    plt.close(measure_fig)

    def text_px(text: str) -> float:
        return sum(widths.get(c, widths["8"]) for c in text)

    plot_w = width_px - _LEFT_PX - _RIGHT_PX
    layouts = [
        _lane_layout(t, [e for e in numbered if e.panel == p], plot_w, text_px)
        for p, t in enumerate(timelines)
    ]
    faces = [  # rows of faces (analyze): above the plot for peaks, below for valleys
        [k for k in ("peak", "valley") if t.face_at and any(m.kind == k for m in found)]
        for t, found in zip(timelines, marks, strict=True)
    ]
    heights = [
        _HEAD_PX
        + len(f) * _FACES_PX
        + _VA_PX
        + _STRIP_PX
        + (max(1, len(rows)) * _LANE_ROW_PX if t.lane else 0)
        + _AXIS_PX
        for t, f, (rows, _) in zip(timelines, faces, layouts, strict=True)
    ]
    legend_px = 62  # two rows of legend entries, and a gap
    table = numbered[:TABLE_ROWS_IN_IMAGE]
    table_px = (len(table) + (len(numbered) > len(table)) + 1) * _TABLE_ROW_PX if numbered else 0
    total_px = 40 + sum(heights) + legend_px + table_px + 10
    fig = plt.figure(figsize=(width_px / DPI, total_px / DPI), dpi=DPI)
    fig.text(
        _LEFT_PX / width_px,
        1 - 14 / total_px,
        fonts.shown(title),
        fontsize=12,
        va="center",
        parse_math=False,
    )

    def axes(top_px: float, height_px: float, **kw):
        return fig.add_axes(
            [
                _LEFT_PX / width_px,
                1 - (top_px + height_px) / total_px,
                plot_w / width_px,
                height_px / total_px,
            ],
            **kw,
        )

    drawn = []
    y = 40.0
    for p, timeline in enumerate(timelines):
        rows, clusters = layouts[p]
        xlim = (timeline.start, max(timeline.stop, timeline.start + 1.0))
        fig.text(
            _LEFT_PX / width_px,
            1 - (y + 12) / total_px,
            fonts.shown(timeline.title),
            fontsize=9,
            va="center",
            parse_math=False,
        )
        y += _HEAD_PX
        face_rows = {}
        if "peak" in faces[p]:
            face_rows["peak"] = axes(y, _FACES_PX)
            y += _FACES_PX
        ax_va = axes(y, _VA_PX)
        y += _VA_PX
        if "valley" in faces[p]:
            face_rows["valley"] = axes(y, _FACES_PX, sharex=ax_va)
            y += _FACES_PX
        ax_em = axes(y, _STRIP_PX, sharex=ax_va)
        y += _STRIP_PX
        bottom, ax_lane, markers = ax_em, None, []
        if timeline.lane:
            lane_px = max(1, len(rows)) * _LANE_ROW_PX
            bottom = ax_lane = axes(y, lane_px, sharex=ax_va)
            y += lane_px
            markers = _lane(ax_lane, clusters, len(rows))
            ax_lane.set_yticks([])
            ax_lane.set_ylabel("songs", rotation=0, ha="right", va="center", fontsize=8)
        y += _AXIS_PX
        ax_va.set_xlim(*xlim)
        mood_spans = _mood_band(ax_va, timeline, xlim)
        _va_lines(ax_va, timeline, marks[p])
        emotion_spans = _emotion_strip(ax_em, timeline)
        for ax in (ax_va, ax_em, ax_lane):
            if ax is not None and ax is not bottom:
                ax.tick_params(labelbottom=False)
        bottom.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _pos: _clock(v)))
        bottom.set_xlabel(timeline.axis_label, fontsize=8, labelpad=2)
        bottom.tick_params(labelsize=8)
        shown = _faces(fig, face_rows, ax_va, timeline, marks[p])
        drawn.append(
            {
                "run_id": timeline.run_id,
                "faces": shown,
                "axes": bottom,
                "markers": markers,
                "moods": mood_spans,
                "emotions": emotion_spans,
            }
        )
    _legends(fig, timelines, y, total_px, width_px)
    _table(fig, numbered, table, fonts, y + legend_px, total_px, width_px)
    return fig, drawn


def _lane_layout(timeline: Timeline, numbered: list[_Numbered], plot_w: float, text_px):
    """Song and feedback markers in rows under the strip, labelled with their numbers.
    Neighbours closer than their labels' width share one label ("3–5"), so labels never
    overlap, however many events a run has; the table below lists every title."""
    if not numbered:
        return [], []
    lo, hi = timeline.start, max(timeline.stop, timeline.start + 1.0)

    def px(t: float) -> float:
        return (t - lo) / (hi - lo) * plot_w

    groups = [[e] for e in numbered]
    while True:
        clusters = []
        for group in groups:
            a, b = group[0].n, group[-1].n
            text = str(a) if a == b else f"{a}–{b}"
            x0, x1 = px(group[0].event.t), px(group[-1].event.t)
            clusters.append(
                {"events": group, "text": text, "x0": x0 - 5, "x1": x1 + 6 + text_px(text) + 4}
            )
        rows: list[float] = []  # right end of each row
        crowded = None
        for i, c in enumerate(clusters):
            row = next((r for r, end in enumerate(rows) if end <= c["x0"]), None)
            if row is None and len(rows) < LANE_ROWS:
                row = len(rows)
                rows.append(float("-inf"))
            if row is None:
                crowded = i
                break
            c["row"] = row
            rows[row] = c["x1"]
        if crowded is None:
            return rows, clusters
        # merge the crowded cluster with the neighbour it is closest to, and lay out again
        i = crowded
        j = (
            i - 1
            if i + 1 >= len(groups)
            or (
                px(groups[i][0].event.t) - px(groups[i - 1][-1].event.t)
                <= px(groups[i + 1][0].event.t) - px(groups[i][-1].event.t)
            )
            else i + 1
        )
        a, b = min(i, j), max(i, j)
        groups[a : b + 1] = [groups[a] + groups[b]]


def _lane(ax, clusters, nrows: int) -> list[dict]:
    nrows = max(1, nrows)
    ax.set_ylim(nrows, 0)
    markers = []
    for c in clusters:
        y = c["row"] + 0.5
        for item in c["events"]:
            marker, colour, _ = EVENT_STYLE.get(item.event.kind, ("o", "#555555", ""))
            (line,) = ax.plot(
                [item.event.t],
                [y],
                marker=marker,
                color=colour,
                ms=6,
                ls="none",
                gid=f"event-{item.n}",
            )
            markers.append(
                {"n": item.n, "kind": item.event.kind, "t": item.event.t, "artist": line}
            )
        last = c["events"][-1].event.t
        text = ax.annotate(
            c["text"],
            (last, y),
            xytext=(6, 0),
            textcoords="offset points",
            va="center",
            ha="left",
            fontsize=7,
            annotation_clip=False,
            gid=f"label-{c['text']}",
        )
        c["artist"] = text
    return markers


def _mood_band(ax, timeline: Timeline, xlim) -> list[tuple[float, float, str]]:
    spans = []
    for i, (t0, mood, _) in enumerate(timeline.moods):
        t1 = timeline.moods[i + 1][0] if i + 1 < len(timeline.moods) else xlim[1]
        colour = MOOD_COLOURS.get(mood.split("-")[0], "#eeeeee")
        ax.axvspan(t0, t1, color=colour, alpha=0.9, lw=0, zorder=0)
        spans.append((t0, t1, mood))
    return spans


def _va_lines(ax, timeline: Timeline, marks: list[Extremum]) -> None:
    t = _with_gaps(timeline)
    ax.axhline(0, color="#888888", lw=0.6)
    ax.plot(t[0], t[1], color="#2a9d8f", lw=1.6, label="valence")
    ax.plot(t[0], t[2], color="#e76f51", lw=1.1, alpha=0.85, label="arousal")
    for mark in marks:
        up = mark.kind == "peak"
        ax.plot([mark.t], [mark.value], marker="^" if up else "v", color="#333333", ms=5, ls="none")
        ax.annotate(
            f"{mark.value:+.2f}",
            (mark.t, mark.value),
            xytext=(0, 7 if up else -9),
            textcoords="offset points",
            ha="center",
            va="center",
            fontsize=7,
        )
    for event in timeline.events:
        if event.kind == "queued":
            ax.axvline(event.t, color="#264653", ls=":", lw=0.7, alpha=0.6)
    ax.set_ylim(-1.1, 1.1)
    ax.set_ylabel("valence / arousal", fontsize=8)
    ax.tick_params(labelsize=8)


def _with_gaps(timeline: Timeline):
    """Break the lines where samples are missing (more than 3 points' spacing)."""
    t, v, a = timeline.t, timeline.valence, timeline.arousal
    if len(t) < 2 or not timeline.step_s:
        return t, v, a
    gaps = np.nonzero(np.diff(t) > 3 * max(timeline.step_s, 1e-9))[0]
    if not len(gaps):
        return t, v, a
    at = gaps + 1
    mid = (t[gaps] + t[at]) / 2
    return np.insert(t, at, mid), np.insert(v, at, np.nan), np.insert(a, at, np.nan)


def _emotion_strip(ax, timeline: Timeline) -> list[tuple[float, float, str | None]]:
    """One colour per point, from its time to the next point's (not past a gap)."""
    t = timeline.t
    step = timeline.step_s or 1.0
    spans = []
    start = 0
    for i in range(1, len(t) + 1):
        gap = i < len(t) and t[i] - t[i - 1] > 3 * step
        if i == len(t) or gap or timeline.emotion[i] != timeline.emotion[start]:
            end = t[i] if i < len(t) and not gap else t[i - 1] + step
            spans.append((float(t[start]), float(end), timeline.emotion[start]))
            start = i
    for x0, x1, label in spans:
        colour = EMOTION_COLOURS.get(label or "", NO_FACE_COLOUR if label is None else "#cccccc")
        ax.axvspan(x0, x1, color=colour, lw=0)
    ax.set_yticks([])
    ax.set_ylabel("emotion", rotation=0, ha="right", va="center", fontsize=8)
    return spans


def _faces(fig, rows: dict, ax_va, timeline: Timeline, marks: list[Extremum]) -> list[dict]:
    """analyze: the face at each peak (in the row above the plot) and valley (below),
    the most prominent first, moved sideways where one would cover another, each joined
    to its moment by a line; one that finds no room is left out."""
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage
    from matplotlib.patches import ConnectionPatch

    size_px = _FACES_PX - 8
    lo, hi = ax_va.get_xlim()
    room = (size_px + 4) * (hi - lo) / (ax_va.get_window_extent().width or 1.0)
    shown = []
    for kind, ax in rows.items():
        ax.set_xlim(lo, hi)
        ax.set_ylim(0, 1)
        ax.axis("off")
        placed: list[float] = []
        for mark in sorted((m for m in marks if m.kind == kind), key=lambda m: -m.prominence):
            image = timeline.face_at(mark.t) if timeline.face_at else None
            if image is None:
                continue
            x = _free_spot(mark.t, placed, room, lo + room / 2, hi - room / 2)
            if x is None:
                continue
            placed.append(x)
            shown.append({"kind": kind, "t": mark.t, "x": x})
            ax.add_artist(
                AnnotationBbox(
                    OffsetImage(image, zoom=size_px / max(image.shape[:2])),
                    (x, 0.5),
                    frameon=True,
                    pad=0.1,
                    annotation_clip=False,
                )
            )
            fig.add_artist(
                ConnectionPatch(
                    (x, 0.0 if kind == "peak" else 1.0),
                    (mark.t, mark.value),
                    "data",
                    "data",
                    axesA=ax,
                    axesB=ax_va,
                    color="#555555",
                    lw=0.6,
                )
            )
    return shown


def _free_spot(x: float, placed: list[float], room: float, lo: float, hi: float) -> float | None:
    """The place nearest x, within lo..hi, at least `room` from every placed one."""
    candidates = [min(max(x, lo), hi)]
    for p in placed:
        candidates += [p - room, p + room]
    for c in sorted(candidates, key=lambda c: abs(c - x)):
        if lo <= c <= hi and all(abs(c - p) >= room - 1e-9 for p in placed):
            return c
    return None


def _legends(fig, timelines, top_px: float, total_px: float, width_px: int) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    seen = {label for t in timelines for label in t.emotion}
    handles = [Patch(color=c, label=k) for k, c in EMOTION_COLOURS.items() if k in seen]
    if None in seen:
        handles.append(Patch(facecolor=NO_FACE_COLOUR, edgecolor="#999999", label="no face"))
    moods = {m for t in timelines for _, m, _ in t.moods}
    handles += [
        Patch(color=MOOD_COLOURS.get(m.split("-")[0], "#eeeeee"), label=f"mood: {m}")
        for m in sorted(moods)
    ]
    handles += [
        Line2D([], [], color="#2a9d8f", label="valence"),
        Line2D([], [], color="#e76f51", label="arousal"),
    ]
    kinds = {e.kind for t in timelines for e in t.events}
    handles += [
        Line2D([], [], marker=m, color=c, ls="none", label=w)
        for k, (m, c, w) in EVENT_STYLE.items()
        if k in kinds
    ]
    fig.legend(
        handles=handles,
        loc="upper left",
        ncol=min(len(handles), 9),
        fontsize=7,
        frameon=False,
        bbox_to_anchor=(_LEFT_PX / width_px, 1 - (top_px + 4) / total_px),
    )


def _table(fig, numbered, table, fonts: _Fonts, top_px: float, total_px: float, width_px: int):
    if not numbered:
        return
    columns = (0, 30, 85, 150, 255)  # px from the left margin: #, run time, local, what, title
    heads = ("#", "run time", "local time", "event", "title / text")

    def row(y_px: float, cells, **kw):
        for x, cell in zip(columns, cells, strict=True):
            fig.text(
                (_LEFT_PX + x) / width_px,
                1 - y_px / total_px,
                cell,
                fontsize=7.5,
                va="center",
                parse_math=False,
                **kw,
            )

    row(top_px, heads)
    for i, item in enumerate(table, start=1):
        e = item.event
        what = EVENT_STYLE.get(e.kind, ("", "", e.kind))[2]
        if e.detail:
            what += f" ({e.detail})"
        row(
            top_px + i * _TABLE_ROW_PX,
            (
                str(item.n),
                _clock(e.t),
                _local(e.wall, "%H:%M:%S"),
                what,
                fonts.shown(_short(e.text, 110)),
            ),
        )
    if len(numbered) > len(table):
        row(
            top_px + (len(table) + 1) * _TABLE_ROW_PX,
            (
                "",
                "",
                "",
                f"… and {len(numbered) - len(table)} more",
                "(the .html report lists all)",
            ),
        )


def _where(fig, drawn: dict) -> dict:
    """Where the markers and labels ended up, read back from the drawn artists: pixel x
    (from the left of the figure) against each event's stream time."""
    ax = drawn["axes"]
    height = fig.bbox.height
    bbox = ax.get_window_extent()
    markers = []
    for m in drawn["markers"]:
        xdata, ydata = m["artist"].get_data()
        x_px, y_px = ax.transData.transform((xdata[0], ydata[0]))
        markers.append(
            {
                "n": m["n"],
                "kind": m["kind"],
                "t": m["t"],
                "x_data": float(xdata[0]),
                "x_px": float(x_px),
                "y_px": float(height - y_px),
            }
        )
    labels = []
    for text in ax.texts:
        ext = text.get_window_extent()
        labels.append(
            {
                "text": text.get_text(),
                "box_px": [
                    float(ext.x0),
                    float(height - ext.y1),
                    float(ext.x1),
                    float(height - ext.y0),
                ],
            }
        )
    return {
        "run_id": drawn["run_id"],
        "faces": drawn["faces"],
        "xlim": [float(v) for v in ax.get_xlim()],
        "plot_px": [float(bbox.x0), float(bbox.x1)],
        "markers": markers,
        "labels": labels,
        "moods": [[float(a), float(b), m] for a, b, m in drawn["moods"]],
        "emotions": [[float(a), float(b), e] for a, b, e in drawn["emotions"]],
    }


# ---------------------------------------------------------------------- the summary


def summarise(timelines, marks, numbered=(), notes=()) -> dict:
    runs = []
    for timeline, found in zip(timelines, marks, strict=True):
        runs.append(
            {
                "run_id": timeline.run_id,
                "source": timeline.source,
                "samples": timeline.samples,
                "with_face": timeline.with_face,
                "emotions": timeline.emotions,
                "start": timeline.start,
                "stop": timeline.stop,
                "moods": [{"t": t, "mood": m} for t, m, _ in timeline.moods],
                "peaks": [
                    {"t": m.t, "valence": round(m.value, 3)} for m in found if m.kind == "peak"
                ],
                "valleys": [
                    {"t": m.t, "valence": round(m.value, 3)} for m in found if m.kind == "valley"
                ],
            }
        )
    return {
        "samples": sum(r["samples"] for r in runs),
        "with_face": sum(r["with_face"] for r in runs),
        "runs": runs,
        "peaks": [p for r in runs for p in r["peaks"]],
        "valleys": [v for r in runs for v in r["valleys"]],
        "events": [
            {
                "n": e.n,
                "run_id": timelines[e.panel].run_id,
                "t": e.event.t,
                "kind": e.event.kind,
                "text": e.event.text,
            }
            for e in numbered
        ],
        "notes": list(notes),
    }


def _html(timelines, image: bytes, summary: dict, numbered, marks, title: str) -> str:
    """A page a person reads: the picture, then the runs, then every event with its
    local time and its time in the run."""
    esc = html.escape
    data = base64.b64encode(image).decode("ascii")
    made = dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    parts = [
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>",
        f"<title>{esc(title)}</title>",
        "<style>body{font-family:'DejaVu Sans','Noto Sans CJK JP',sans-serif;margin:1.5em}"
        "table{border-collapse:collapse;margin-bottom:1.5em}th,td{padding:3px 10px;"
        "border-bottom:1px solid #ddd;text-align:left;vertical-align:top}"
        "td.n{text-align:right}img{max-width:100%}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f"<p>Made {made} (local time). Times in a run are on its stream clock, the clock "
        "every sample, mood change, song and note of the run was stored with.</p>",
    ]
    for note in summary["notes"]:
        parts.append(f"<p><b>Note:</b> {esc(note)}</p>")
    parts.append(
        f"<img alt='timeline of {len(timelines)} run(s)' src='data:image/png;base64,{data}'>"
    )
    parts.append(
        "<h2>Runs</h2><table><tr><th>run</th><th>source</th><th>started</th>"
        "<th>ended</th><th>length</th><th>samples</th><th>with a face</th>"
        "<th>most seen</th></tr>"
    )
    for timeline in timelines:
        wall = timeline.wall if timeline.wall is not None else np.array([np.nan])
        top = sorted(timeline.emotions.items(), key=lambda kv: -kv[1])[:3]
        seen = ", ".join(f"{k} {v / max(1, timeline.with_face):.0%}" for k, v in top)
        parts.append(
            f"<tr><td>{esc(timeline.run_id)}</td><td>{esc(printable(timeline.source))}</td>"
            f"<td>{_local(float(np.nanmin(wall)) if np.isfinite(wall).any() else None)}</td>"
            f"<td>{_local(float(np.nanmax(wall)) if np.isfinite(wall).any() else None)}</td>"
            f"<td class=n>{_clock(timeline.stop - timeline.start)}</td>"
            f"<td class=n>{timeline.samples}</td>"
            f"<td class=n>{timeline.with_face / max(1, timeline.samples):.0%}</td>"
            f"<td>{esc(seen)}</td></tr>"
        )
    parts.append("</table>")
    rows = []
    for p, timeline in enumerate(timelines):
        for t, mood, wall in timeline.moods:
            rows.append((p, t, wall, "", "mood set by the daemon", mood))
        for m in marks[p]:
            rows.append((p, m.t, m.wall, "", m.kind, f"valence {m.value:+.2f}"))
    for item in numbered:
        e = item.event
        what = EVENT_STYLE.get(e.kind, ("", "", e.kind))[2] + (f" ({e.detail})" if e.detail else "")
        rows.append((item.panel, e.t, e.wall, str(item.n), what, e.text))
    rows.sort(key=lambda r: (r[0], r[1]))
    parts.append(
        "<h2>What happened</h2><table><tr><th>#</th><th>run</th><th>local time</th>"
        "<th>run time</th><th>what</th><th>details</th></tr>"
    )
    for p, t, wall, n, what, text in rows:
        parts.append(
            f"<tr><td class=n>{esc(n)}</td><td>{esc(timelines[p].run_id)}</td>"
            f"<td>{_local(wall)}</td><td class=n>{_clock(t)}</td><td>{esc(what)}</td>"
            f"<td>{esc(printable(text))}</td></tr>"
        )
    parts.append("</table></body></html>\n")
    return "".join(parts)


def format_runs(runs: Sequence[RunInfo]) -> str:
    """`report --runs`: one line per run, newest last."""
    lines = [f"{'run':<22} {'started':<19}  {'length':>8} {'samples':>8}  source"]
    for r in runs:
        lines.append(
            f"{r.run_id:<22} {_local(r.started_at):<19}  {_clock(r.last_stream - r.t_stream0):>8} "
            f"{r.samples:>8}  {printable(r.source)}"
        )
    return "\n".join(lines)


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
