"""The timeline report (issue 23): one clock for every stored event, runs drawn apart,
the daemon's own mood decisions, songs as markers whose labels never overlap, peaks and
valleys from scipy, the output formats; read back from what was drawn. (`bench`, which
shares the offline package, is tested in test_bench.py.)"""

from __future__ import annotations

import re
import sqlite3
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from support import FIXTURE_FACES, cli_settings, load_tool, requires_models

from appliance.affect.smoothing import UNCERTAIN, AffectState
from appliance.cli import main
from appliance.music.director import record_mood_change
from appliance.music.feedback import FeedbackRecorder
from appliance.music.outbox import Outbox
from appliance.music.recommender import Recommendation
from appliance.offline.report import (
    BINS,
    EMOTION_COLOURS,
    ReportError,
    Timeline,
    downsample,
    find_extrema,
    list_runs,
    load_report,
    render,
    smooth,
)
from appliance.service.publisher import Board
from appliance.store.database import DB_NAME, MIGRATIONS, open_database
from appliance.store.samples import (
    RunClock,
    sample_row,
    set_live_run,
    stream_stamp,
    write_samples,
)

make_face_clip = load_tool("make_face_clip")
SEGMENT_S = 6.0  # the clip: sad, happy, sad, 3 faces x 2 s each


@pytest.fixture(scope="module")
def mood_clip(tmp_path_factory):
    """18 s at 5 fps, small frames: cheap to make and to run."""
    faces = make_face_clip.list_faces(FIXTURE_FACES)
    sad = [f for f in faces if f[1] == "sad"]
    happy = [f for f in faces if f[1] == "happy"]
    path = tmp_path_factory.mktemp("clip") / "sad_happy_sad.mp4"
    make_face_clip.compose(
        sad[:3] + happy[:3] + sad[3:],
        path,
        width=320,
        height=240,
        min_side=90,
        max_side=120,
        frames_per_face=10,
        fps=5,
        noise=0,
        seed=3,
    )
    return path


@pytest.fixture
def app(capsys, caplog):
    """The CLI in this process (a subprocess costs seconds of imports per call):
    app(*args) -> (exit code, stdout, stderr with the log lines)."""

    def call(*args: str) -> tuple[int, str, str]:
        caplog.clear()
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err + caplog.text

    return call


def state(t: float, emotion: str | None, valence: float | None) -> AffectState:
    face = emotion is not None
    return AffectState(
        t,
        emotion,
        0.8,
        1.0 if face else 0.0,
        {"happy": 0.5, "sad": 0.5},
        valence,
        0.2 if face else None,
    )


def song(i: int, title: str = "") -> Recommendation:
    return Recommendation(
        f"spotify:track:{i:022d}", title or f"Song {i}", f"Artist {i}", 0.5, 0.5, "happy", 1.0
    )


# A history of three runs: a camera's clock starts anywhere, and wall time runs 5x as
# fast as stream time (a recording processed faster than real time) so that placing
# anything by wall clock would put it in the wrong place.
STREAM0 = (5000.0, 200.0, 90000.0)
SONGS_AT = (3.0, 25.0, 45.0)  # seconds into each run: sad, happy, sad
MOODS = ((0.5, "sad"), (22.0, "happy"), (42.0, "sad"))


def three_runs(state_dir: Path, *, cjk: bool = False) -> list[str]:
    db = open_database(state_dir)
    ids = []
    wall0 = time.time() - 3 * 3600
    try:
        for r, stream0 in enumerate(STREAM0):
            clock = RunClock(f"2026010{r}-080000-ab{r}c", clock=lambda: 0.0)
            ids.append(clock.run_id)
            rows = []
            for i in range(140):  # 70 s at 2 Hz; happy from 20 to 40 s
                t = i * 0.5
                happy = 20.0 <= t < 40.0
                if 60.0 <= t < 62.0:
                    s = state(stream0 + t, None, None)  # looked away
                elif 62.0 <= t < 66.0:
                    s = state(stream0 + t, UNCERTAIN, 0.0)
                else:
                    s = state(stream0 + t, "happy" if happy else "sad", 0.7 if happy else -0.5)
                rows.append(sample_row(s, 1, f"clip {r}", wall0 + r * 3600 + t / 5, clock.run_id))
            write_samples(db, rows)
            previous = None
            for t, mood in MOODS:
                record_mood_change(db, clock.run_id, stream0 + t, mood, previous)
                previous = mood
            outbox = Outbox(db)
            for k, t in enumerate(SONGS_AT):
                title = "東京 Todo Por Estar Contigo" if cjk and k == 1 else ""
                outbox.add(song(10 * r + k, title), "u", run_id=clock.run_id, t_stream=stream0 + t)
            # a like and a played song while the run is live, stamped by its clock
            clock.advance(stream0 + 30.0)
            set_live_run(clock)
            try:
                item = outbox.last("u")
                outbox.set_state(item["id"], "sent")
                outbox.mark_played(item["uri"])
                FeedbackRecorder(str(state_dir), "u").press("like")
            finally:
                set_live_run(None)
    finally:
        db.conn.close()
    return ids


def expected_x(panel: dict, t: float) -> float:
    x0, x1 = panel["plot_px"]
    lo, hi = panel["xlim"]
    return x0 + (t - lo) / (hi - lo) * (x1 - x0)


def overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_three_runs_are_three_panels_with_every_marker_at_its_stream_time(tmp_path):
    ids = three_runs(tmp_path / "state")
    db = open_database(tmp_path / "state", readonly=True)
    try:
        assert [r.run_id for r in list_runs(db)] == ids
        latest, _ = load_report(db)  # the default: the newest run only
        assert [t.run_id for t in latest] == [ids[-1]]
        timelines, notes = load_report(db, run="all")
        assert [t.run_id for t in load_report(db, run=ids[1][:8])[0]] == [ids[1]]  # a prefix
    finally:
        db.conn.close()
    assert notes == [] and [t.run_id for t in timelines] == ids
    out = tmp_path / "runs.svg"
    summary = render(timelines, out)
    svg = out.read_text()
    assert len(summary["drawn"]) == 3
    for panel in summary["drawn"]:
        # each run on its own clock: from its first sample, ending with the run (the
        # last sample at 69.5 s), not hours later where another run's wall time is
        assert panel["xlim"][0] == pytest.approx(0.0) and 69.5 <= panel["xlim"][1] < 72
        kinds = [m["kind"] for m in panel["markers"]]
        assert sorted(kinds) == ["like", "played", "queued", "queued", "queued"]
        queued = [m for m in panel["markers"] if m["kind"] == "queued"]
        assert [m["t"] for m in queued] == pytest.approx(list(SONGS_AT))
        live = [m for m in panel["markers"] if m["kind"] != "queued"]
        assert [m["t"] for m in live] == pytest.approx([30.0, 30.0])  # the run's clock
        for m in panel["markers"]:
            assert m["x_px"] == pytest.approx(expected_x(panel, m["t"]), abs=0.5)
            # the same position in the file written: SVG user units are points
            use = re.search(rf'<g id="event-{m["n"]}">.*?<use [^>]*x="([0-9.]+)"', svg, re.S)
            assert use and float(use.group(1)) == pytest.approx(m["x_px"] * 72 / 100, abs=0.5)
        # the song queued at 25 s stands beside the happy section, not the sad one
        strip = panel["emotions"]
        at = {m["t"]: next(e for a, b, e in strip if a <= m["t"] < b) for m in queued}
        assert at == {3.0: "sad", 25.0: "happy", 45.0: "sad"}
        assert [e for _, _, e in strip if e in (None, UNCERTAIN)] == [None, UNCERTAIN]
        # the band is what the director logged, never recomputed
        assert [(a, m) for a, _, m in panel["moods"]] == [(t, m) for t, m in MOODS]
        assert panel["moods"][-1][1] == pytest.approx(panel["xlim"][1])
        boxes = [label["box_px"] for label in panel["labels"]]
        assert len(boxes) == 5 and not any(
            overlaps(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :]
        )
    assert {e["n"] for e in summary["events"]} == set(range(1, 16))


def test_crowded_song_labels_merge_instead_of_overlapping(tmp_path):
    t = np.arange(0.0, 600.0, 1.0)
    timeline = Timeline(t, np.sin(t / 30), np.cos(t / 30), ["happy"] * len(t), run_id="r")
    from appliance.offline.report import Event

    times = [*np.linspace(100, 104, 40), 300.0, 301.0, 500.0]
    timeline.events = [Event(float(x), "queued", f"song {i}") for i, x in enumerate(times)]
    summary = render(timeline, tmp_path / "busy.png")
    (panel,) = summary["drawn"]
    assert len(panel["markers"]) == len(times)  # every event keeps its own marker
    for m in panel["markers"]:
        assert m["x_px"] == pytest.approx(expected_x(panel, m["t"]), abs=0.5)
    boxes = [label["box_px"] for label in panel["labels"]]
    assert not any(overlaps(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    texts = [label["text"] for label in panel["labels"]]
    assert any("–" in x for x in texts)  # neighbours share a label such as "3–9"
    numbers = set()
    for x in texts:
        a, _, b = x.partition("–")
        numbers |= set(range(int(a), int(b or a) + 1))
    assert numbers == set(range(1, len(times) + 1))  # and none is lost


def test_report_cli_formats_html_and_the_runs_list(tmp_path, app):
    ids = three_runs(tmp_path / "state")
    args = cli_settings(tmp_path)
    code, out, err = app("report", "--runs", *args)
    assert code == 0 and all(i in out for i in ids) and "clip 2" in out
    path = tmp_path / "day.png"  # (every format: test_render_draws_a_three_sample_timeline)
    code, out, err = app("report", "--out", str(path), *args)
    assert code == 0, err
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert f"run {ids[-1]}" in out and "5 song events" in out
    assert cv2.imread(str(tmp_path / "day.png")).shape[1] == 1400
    # an extension that is no format is an error, before anything is read or written
    code, out, err = app("report", "--out", str(tmp_path / "day.jpg"), *args)
    assert code == 1 and "unknown extension ('.jpg')" in err and ".svg" in err
    assert not (tmp_path / "day.jpg").exists()
    page = tmp_path / "all.html"
    code, out, err = app("report", "--run", "all", "--out", str(page), *args)
    assert code == 0 and "3 runs" in out
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!doctype html>") and "<img alt=" in text and "base64," in text
    assert text.count("<table>") == 2 and all(i in text for i in ids)
    db = sqlite3.connect(tmp_path / "state" / DB_NAME)
    wall, title = db.execute("SELECT created_at, name FROM queue ORDER BY id LIMIT 1").fetchone()
    local = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(wall))
    row = re.search(r"<tr><td class=n>1</td>.*?</tr>", text).group(0)
    assert local in row and "0:03" in row and title in row  # local time and run time
    assert str(int(wall)) not in text and '"events"' not in text  # no raw JSON or unix time


def test_since_until_select_runs_by_local_time(tmp_path):
    ids = three_runs(tmp_path / "state")
    db = open_database(tmp_path / "state", readonly=True)
    try:
        middle = list_runs(db)[1]
        timelines, _ = load_report(db, since=middle.started_at - 1, until=middle.last_wall + 1)
        assert [t.run_id for t in timelines] == [ids[1]]
        with pytest.raises(ReportError, match="no samples in that time range"):
            load_report(db, since=1e9, until=1e9 + 1)
        with pytest.raises(ReportError, match="no run 'nope'"):
            load_report(db, run="nope")
    finally:
        db.conn.close()


def test_titles_in_cjk_are_drawn_with_a_font_that_has_them_or_said_so(tmp_path):
    three_runs(tmp_path / "state", cjk=True)
    db = open_database(tmp_path / "state", readonly=True)
    try:
        timelines, _ = load_report(db)
    finally:
        db.conn.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = render(timelines, tmp_path / "cjk.png")
        page = tmp_path / "cjk.html"
        render(timelines, page)
    assert not [w for w in caught if "Glyph" in str(w.message)]  # never empty boxes
    assert "東京 Todo Por Estar Contigo" in page.read_text(encoding="utf-8")
    if len(summary["fonts"]) > 1:  # Debian's fonts-noto-cjk (or another CJK font) found
        assert not summary["notes"]
    else:
        assert "fonts-noto-cjk" in summary["notes"][0]


def test_report_on_an_older_schema_says_so_and_changes_nothing(tmp_path, app):
    path = tmp_path / "state" / DB_NAME
    path.parent.mkdir()
    conn = sqlite3.connect(path)
    for number, sql in MIGRATIONS[:4]:
        conn.executescript(sql + f"; PRAGMA user_version = {number};")
    conn.close()
    before = path.read_bytes()
    code, _, err = app("report", "--out", str(tmp_path / "r.png"), *cli_settings(tmp_path))
    assert code == 1 and "schema v4 is older" in err and "upgrades it when it next starts" in err
    assert path.read_bytes() == before and not (tmp_path / "r.png").exists()
    # once upgraded, samples from before run ids are counted, not drawn
    conn = sqlite3.connect(path)
    conn.execute(
        "INSERT INTO affect_samples (t_wall, t_stream, emotion, confidence,"
        " face_presence, probs, faces, source) VALUES (1, 1, 'sad', 1, 1, '{}', 1, 'x')"
    )
    conn.commit()
    conn.close()
    open_database(tmp_path / "state").conn.close()
    code, _, err = app("report", "--out", str(tmp_path / "r.png"), *cli_settings(tmp_path))
    assert code == 1 and "no runs in the history yet" in err and "1 samples stored before" in err


# ------------------------------------------------------------- what the daemon writes


def test_every_writer_stamps_its_row_with_the_run_and_its_stream_time(tmp_path):
    """Board (samples), director (moods, songs: from the sample's own stamp), the live
    run's clock (a played song, a button press), another process's press (estimated
    from the newest sample), a VLM note (the offered frame's stamp)."""
    from appliance.config import load_config
    from appliance.pipeline import FrameResult
    from appliance.vlm.client import VlmReply
    from appliance.vlm.worker import VlmWorker

    ticks = [100.0]
    board = Board(
        info={"source": "cam"}, sample_period_s=1.0, run=RunClock("run-a", clock=lambda: ticks[0])
    )
    for i in range(3):
        board.post(FrameResult(i, 50.0 + i, [], state(50.0 + i, "sad", -0.4), {}))
    rows = board.take_samples()
    assert [(r["run_id"], r["t_stream"]) for r in rows] == [
        ("run-a", 50.0),
        ("run-a", 51.0),
        ("run-a", 52.0),
    ]
    ticks[0] = 102.5  # 2.5 s after the last frame, on the monotonic clock
    assert board.run.stamp() == ("run-a", pytest.approx(54.5))
    db = open_database(tmp_path)
    try:
        write_samples(db, rows)
        (run,) = list_runs(db)
        assert (run.run_id, run.t_stream0, run.last_stream, run.samples) == ("run-a", 50, 52, 3)
        # another process (`emotion-appliance like` over SSH): from the newest sample
        newest = rows[-1]["t_wall"]
        assert stream_stamp(db, newest + 4.0) == ("run-a", pytest.approx(56.0))
        assert stream_stamp(db, newest + 3600) == (None, None)  # that run is over
    finally:
        db.conn.close()

    class Client:
        def describe(self, image, context):
            assert "t_stream" not in context and "run_id" not in context  # never sent
            return VlmReply("a person frowning", 12.0, "m")

        def close(self):
            pass

    cfg = load_config(None, ["vlm.endpoint=http://127.0.0.1:9/v1", "vlm.model=m"]).vlm
    worker = VlmWorker(cfg, str(tmp_path), Client())
    worker.offer(np.zeros((8, 8, 3), np.uint8), {"emotion": "sad"}, 0.0, stamp=("run-a", 51.5))
    assert worker.handle_pending()
    note = (
        sqlite3.connect(tmp_path / DB_NAME)
        .execute("SELECT run_id, t_stream, reply FROM vlm_notes")
        .fetchone()
    )
    assert note == ("run-a", 51.5, "a person frowning")


@requires_models
def test_three_loop_runs_of_the_daemon_with_music(tmp_path, app, mood_clip):
    """The real daemon, three times over one history, each run looping the clip
    (stream time moving on past its end): every mood change and song carries its run's
    id and the stream time of the sample that caused it, and the report draws each run
    in its own panel, songs where those samples are."""
    from test_music import write_minimal

    from appliance.music.catalog import import_catalog

    args = cli_settings(
        tmp_path,
        "storage.sample_hz=2",
        "music.mood_hold_s=1",
        "music.min_interval_s=0",
        "music.queue_low=1",
        "service.status_interval_s=0.5",
    )
    write_minimal(tmp_path / "tracks.csv", n=40)
    db = open_database(tmp_path / "state")
    import_catalog(db, tmp_path / "tracks.csv")
    db.conn.close()
    for _ in range(3):
        code, _, err = app(
            "run", "--source", str(mood_clip), "--loop", "--max-frames", "135", "--quiet", *args
        )
        assert code == 0, err
    db = sqlite3.connect(tmp_path / "state" / DB_NAME)
    runs = [r[0] for r in db.execute("SELECT run_id FROM runs ORDER BY started_at")]
    assert len(set(runs)) == 3
    for run_id in runs:
        samples = {
            t
            for (t,) in db.execute("SELECT t_stream FROM affect_samples WHERE run_id = ?", [run_id])
        }
        assert max(samples) > 3 * SEGMENT_S + 3  # the loop went on past the clip's end
        moods = db.execute("SELECT t_stream FROM mood_changes WHERE run_id = ?", [run_id])
        songs = db.execute("SELECT t_stream FROM queue WHERE run_id = ?", [run_id])
        moods, songs = [t for (t,) in moods], [t for (t,) in songs]
        assert moods and songs and set(moods + songs) <= samples
    assert db.execute("SELECT count(*) FROM mood_changes WHERE run_id IS NULL").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM queue WHERE run_id IS NULL").fetchone()[0] == 0
    out = tmp_path / "loops.svg"
    code, text, err = app("report", "--run", "all", "--out", str(out), *args)
    assert code == 0 and "3 runs" in text, err
    db = open_database(tmp_path / "state", readonly=True)
    try:
        timelines, _ = load_report(db, run="all")
    finally:
        db.conn.close()
    for timeline in timelines:
        assert timeline.start == 0.0 and timeline.stop < 30.0  # its own clock, not overlapping
        happy = [t for t, v in zip(timeline.t, timeline.valence, strict=True) if v > 0.2]
        assert happy and min(happy) > SEGMENT_S - 1  # the happy faces come second


# ------------------------------------------------------------------------ the series


def test_peaks_and_valleys_come_from_find_peaks_on_the_downsampled_signal():
    t = np.arange(0.0, 2_000_000.0)  # three weeks of 1 Hz samples, mostly flat
    v = np.zeros_like(t)
    v[400_000:460_000] = 0.8  # a long happy afternoon
    v[1_200_000:1_230_000] = -0.7
    v[1_500_000:1_500_001] = 1.0  # one sample: noise at this scale, not a peak
    emotion = ["neutral"] * len(t)
    started = time.perf_counter()
    pt, pv, _, pe, _, step = downsample(t, v, v, emotion)
    marks = find_extrema(pt, smooth(pv, 3))
    assert time.perf_counter() - started < 5.0  # was 2.75 ms per sample: 90 minutes
    assert len(pt) <= BINS and step == pytest.approx(2_000_000 / BINS)
    assert [(m.kind, round(m.t / 1e5)) for m in marks] == [("peak", 4), ("valley", 12)]
    assert pe[0] == "neutral"
    flat = find_extrema(np.arange(50.0), np.zeros(50))
    assert flat == []


def test_no_face_gaps_break_the_line_but_do_not_make_valleys():
    t = np.arange(60.0)
    v = np.where((t >= 20) & (t < 40), 0.6, -0.4)
    v[45:50] = np.nan  # looked away
    marks = find_extrema(t, v)
    assert [m.kind for m in marks] == ["peak"] and 20 <= marks[0].t < 40


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_smooth_keeps_the_length_of_a_record_shorter_than_the_window(n):
    values = np.arange(n, dtype=float)
    expected = [values[max(0, i - 2) : i + 3].mean() for i in range(n)]  # +-2 samples
    np.testing.assert_allclose(smooth(values, 5), expected)
    with_gap = values.copy()
    with_gap[0] = np.nan
    smoothed = smooth(with_gap, 5)
    assert len(smoothed) == n and np.isnan(smoothed[0])


@pytest.mark.parametrize("suffix", [".png", ".svg", ".pdf", ".html"])
def test_render_draws_a_three_sample_timeline(tmp_path, suffix):
    timeline = Timeline(
        np.array([0.0, 0.5, 1.0]),
        np.array([0.2, np.nan, -0.1]),
        np.array([0.1, np.nan, 0.3]),
        ["happy", None, UNCERTAIN],
    )
    out = tmp_path / f"short{suffix}"
    summary = render(timeline, out)
    assert summary["samples"] == 3 and summary["with_face"] == 2
    magic = {
        ".png": b"\x89PNG\r\n\x1a\n",
        ".svg": b"<?xml",
        ".pdf": b"%PDF-",
        ".html": b"<!doctype",
    }
    assert out.read_bytes().startswith(magic[suffix])
    assert [e for _, _, e in summary["drawn"][0]["emotions"]] == ["happy", None, UNCERTAIN]
    assert UNCERTAIN in EMOTION_COLOURS


def test_render_refuses_an_empty_timeline_and_unwritable_places(tmp_path):
    empty = Timeline(np.array([]), np.array([]), np.array([]), [])
    with pytest.raises(ReportError, match="no samples"):
        render(empty, tmp_path / "x.png")
    timeline = Timeline(
        np.array([0.0, 1.0, 2.0]),
        np.array([0.1, 0.5, -0.2]),
        np.array([0.0, 0.2, 0.1]),
        ["happy", "happy", "sad"],
    )
    for out in (tmp_path, tmp_path / "missing" / "day.png"):
        with pytest.raises(ReportError, match=r"cannot write|unknown extension"):
            render(timeline, out)
    with pytest.raises(ReportError, match=r"unknown extension \('.jpg'\)"):
        render(timeline, tmp_path / "day.jpg")
