"""Benchmarks, the timeline report and offline analysis, on real runs of real clips."""

from __future__ import annotations

import csv
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from support import FIXTURE_FACES, ROOT, cli_settings, load_tool, requires_models

from appliance.offline.report import (
    ReportError,
    Timeline,
    extrema,
    render,
    smooth,
    timeline_from_db,
)

make_face_clip = load_tool("make_face_clip")
SEGMENT_S = 10.0  # sad, happy, sad: 5 faces x 2 s each


@pytest.fixture(scope="module")
def mood_clip(tmp_path_factory):
    faces = make_face_clip.list_faces(FIXTURE_FACES)
    sad = [f for f in faces if f[1] == "sad"]
    happy = [f for f in faces if f[1] == "happy"]
    path = tmp_path_factory.mktemp("clip") / "sad_happy_sad.mp4"
    make_face_clip.compose(sad + happy + sad, path, frames_per_face=20, fps=10, seed=3)
    return path


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False,
    )  # fmt: skip


def dirs(tmp_path) -> list[str]:
    return cli_settings(tmp_path, "music.enabled=false", "storage.sample_hz=2")


# ------------------------------------------------------------------------------ report


def test_extrema_and_smoothing():
    import numpy as np

    t = np.arange(30, dtype=float)
    v = np.concatenate([np.full(10, -0.6), np.full(10, 0.7), np.full(10, -0.6)])
    marks = extrema(t, smooth(v, 3), window=5, prominence=0.25)
    assert [m.kind for m in marks] == ["valley", "peak", "valley"]
    assert 10 <= marks[1].t < 20
    with_gap = v.copy()
    with_gap[5] = np.nan
    assert np.isnan(smooth(with_gap, 3)[5]) and not np.isnan(smooth(with_gap, 3)[4])


@requires_models
def test_report_from_a_real_log_finds_the_happy_peak(tmp_path, mood_clip):
    args = dirs(tmp_path)
    run = cli("run", "--source", str(mood_clip), "--quiet", *args)
    assert run.returncode == 0, run.stderr
    db = sqlite3.connect(tmp_path / "state" / "appliance.db")
    from sqlite_utils import Database

    timeline = timeline_from_db(Database(db))
    assert len(timeline.t) >= 55  # 30 s at 2 Hz of stream time
    start = timeline.t[0]
    marks = extrema(timeline.t, smooth(timeline.valence, 5))
    peaks = [m.t - start for m in marks if m.kind == "peak"]
    valleys = [m.t - start for m in marks if m.kind == "valley"]
    assert peaks and all(SEGMENT_S <= p <= 2 * SEGMENT_S + 2 for p in peaks), peaks
    assert any(v < SEGMENT_S for v in valleys) or any(v > 2 * SEGMENT_S for v in valleys)

    out = tmp_path / "day.png"
    result = cli("report", "--out", str(out), *args)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cv2.imread(str(out)).shape == (700, 1400, 3)
    assert "peaks" in result.stdout
    page = tmp_path / "day.html"
    assert cli("report", "--out", str(page), *args).returncode == 0
    assert page.read_text().startswith("<!doctype html>") and "data:image/png;base64," in (
        page.read_text()
    )
    empty = cli("report", "--since", "2001-01-01", "--until", "2001-01-02", "--out",
                str(tmp_path / "none.png"), *args)  # fmt: skip
    assert empty.returncode == 1 and "no samples" in empty.stderr


def test_render_refuses_an_empty_timeline(tmp_path):
    import numpy as np

    empty = Timeline(np.array([]), np.array([]), np.array([]), [])
    with pytest.raises(ReportError, match="no samples"):
        render(empty, tmp_path / "x.png")


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_smooth_keeps_the_length_of_a_record_shorter_than_the_window(n):
    """mode="same" returned max(n, window) values: 1-4 samples crashed the report."""
    import numpy as np

    values = np.arange(n, dtype=float)
    expected = [values[max(0, i - 2) : i + 3].mean() for i in range(n)]  # +-2 samples
    np.testing.assert_allclose(smooth(values, 5), expected)
    with_gap = values.copy()
    with_gap[0] = np.nan
    smoothed = smooth(with_gap, 5)
    assert len(smoothed) == n and np.isnan(smoothed[0])
    np.testing.assert_allclose(smoothed[1:], [np.nanmean(with_gap[max(0, i - 2) : i + 3])
                                              for i in range(1, n)])  # fmt: skip


@pytest.mark.parametrize("suffix", [".png", ".html"])
def test_render_draws_a_three_sample_timeline(tmp_path, suffix):
    import numpy as np

    timeline = Timeline(
        np.array([0.0, 0.5, 1.0]),
        np.array([0.2, np.nan, -0.1]),
        np.array([0.1, np.nan, 0.3]),
        ["happy", None, "sad"],
        wall_clock=False,
    )
    out = tmp_path / f"short{suffix}"
    summary = render(timeline, out)
    assert summary["samples"] == 3 and summary["with_face"] == 2
    assert out.stat().st_size > 0


# ------------------------------------------------------------------------------ analyze


@requires_models
def test_analyze_writes_one_row_per_sample_at_the_requested_fps(tmp_path, mood_clip):
    out = tmp_path / "results"
    result = cli("analyze", str(mood_clip), "--fps", "5", "--out", str(out),
                 "--user", "p 07", "--condition", "music/on", *dirs(tmp_path))  # fmt: skip
    assert result.returncode == 0, result.stderr
    folder = out / "p_07" / "music_on"
    with (folder / "frames.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 150  # 30 s at 5 fps (the clip has 300 frames at 10 fps)
    assert [float(r["time_s"]) for r in rows[:3]] == [0.0, 0.2, 0.4]
    assert {"box_x", "p_happy", "valence", "smoothed_emotion", "smoothed_valence"} <= set(rows[0])
    assert sum(r["face"] == "1" for r in rows) >= 120  # 89% here: every 2nd frame only
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["rows"] == 150 and summary["user"] == "p 07"
    assert cv2.imread(str(folder / "report.png")) is not None


@requires_models
def test_analyze_a_clip_shorter_than_the_smoothing_window(tmp_path):
    """Three sampled frames: the summary and the report are still written."""
    from appliance.config import load_config
    from appliance.offline.analyze import analyze

    clip = tmp_path / "short.mp4"
    make_face_clip.compose(make_face_clip.list_faces(FIXTURE_FACES)[:1], clip, frames_per_face=3,
                           fps=10, seed=3)  # fmt: skip
    config = load_config(None, [], default_path="/nonexistent/config.toml")
    summary = analyze(str(clip), tmp_path / "out", config, fps=10, user="u", condition="c")
    folder = tmp_path / "out" / "u" / "c"
    assert summary["rows"] == 3
    assert json.loads((folder / "summary.json").read_text())["timeline_summary"]["samples"] == 3
    assert cv2.imread(str(folder / "report.png")) is not None


# ------------------------------------------------------------------------------ bench


@requires_models
def test_bench_json_contract_with_peer(tmp_path, short_clip):
    """The real `bench --peer`, end to end: the JSON's shape, which a few frames show as
    well as a long clip (BENCHMARKS.md has the speeds, measured on the demo clip)."""
    result = cli("bench", "--source", str(short_clip), "--peer", "--json", *dirs(tmp_path))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    ours, peer = report["ours"], report["peer"]
    assert {"fps", "detection_rate", "median_ms", "p95_ms", "rss_mb", "stages"} <= set(ours)
    assert {"decode", "detect", "classify", "va", "smooth", "total"} <= set(ours["stages"])
    assert {"fps", "detection_rate", "median_ms"} <= set(peer)
    assert report["ratio_fps"] == pytest.approx(ours["fps"] / peer["fps"], rel=0.02)
    assert 0 < ours["cold_start_s"] < 30 and 20 < ours["rss_mb"] < 1000
    assert report["frames"] == 3


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory):
    """Three frames, one face each: what bench's JSON and its config need, at a fraction
    of a full run's cost (ours, the cold-start probe and the peer each load the models)."""
    path = tmp_path_factory.mktemp("short") / "short.mp4"
    faces = make_face_clip.list_faces(FIXTURE_FACES)[::12]  # 3 of the 35 faces
    make_face_clip.compose(faces, path, frames_per_face=1, fps=10, seed=3)
    return path


@requires_models
def test_bench_reads_the_config_file_and_reports_the_threads_both_pipelines_ran(
    tmp_path, short_clip
):
    """bench ignored --config (built-in defaults, not what the daemon runs), ran the peer
    on 1 thread whatever --threads said, and reported --threads over --set. Two threads
    (the file says 3): more TFLite threads than a 2-core machine has cost minutes."""
    config = tmp_path / "bench.toml"
    config.write_text('[models]\nva = ""\nthreads = 3\n')
    result = cli("bench", "--source", str(short_clip), "--peer", "--json", "--config",
                 str(config), "--set", "models.threads=2")  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ours"]["models"]["va_model"] is None  # the file's models.va = ""
    assert report["config"] == str(config)
    assert report["threads"] == 2 and report["peer"]["threads"] == 2


def test_bench_of_a_source_without_frames_is_a_capture_error(monkeypatch):
    from appliance.capture import CaptureError, FrameSource
    from appliance.offline import bench as benchmark

    class Empty(FrameSource):
        def open(self) -> None:
            pass

        def read(self, timeout=None):
            return None

        def close(self) -> None:
            pass

    monkeypatch.setattr(benchmark, "open_source", lambda spec: Empty(spec))
    with pytest.raises(CaptureError, match="no frames"):
        benchmark.run_bench("empty/")


@pytest.mark.parametrize("fps", [float("inf"), float("nan"), 0.0])
def test_analyze_refuses_an_fps_that_gives_no_sampling_step(tmp_path, fps):
    from appliance.config import load_config
    from appliance.offline.analyze import analyze

    config = load_config(None, [], default_path="/nonexistent/config.toml")
    with pytest.raises(ValueError, match="finite positive"):
        analyze("demo", tmp_path, config, fps=fps, user="u", condition="c")


# ------------------------------------------------------------------ where the output goes


@pytest.mark.parametrize("where", ["file", "below-a-file", "unwritable"])
def test_analyze_out_that_cannot_be_a_folder_is_a_clear_error(tmp_path, where):
    """--out naming a file or a place nobody may write: exit 1 with the reason, at once
    (before any frame is analysed), not a FileExistsError traceback."""
    existing = tmp_path / "results.csv"
    existing.write_text("keep me\n")
    out = {
        "file": existing,
        "below-a-file": existing / "sub",
        "unwritable": Path("/sys/emotion-appliance-test"),  # EPERM even for root
    }[where]
    if where == "unwritable" and not Path("/sys/kernel").is_dir():
        pytest.skip("no sysfs here")
    result = cli("analyze", str(tmp_path / "session.mp4"), "--out", str(out), *dirs(tmp_path))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "--out" in result.stderr
    assert ("is a file, not a folder" if where != "unwritable" else "cannot create") in (
        result.stderr
    )
    assert existing.read_text() == "keep me\n"


def test_render_into_a_folder_or_a_missing_place_is_a_report_error(tmp_path):
    import numpy as np

    timeline = Timeline(
        np.array([0.0, 1.0, 2.0]), np.array([0.1, 0.5, -0.2]), np.array([0.0, 0.2, 0.1]),
        ["happy", "happy", "sad"], wall_clock=False,
    )  # fmt: skip
    for out in (tmp_path, tmp_path / "missing" / "day.png"):
        with pytest.raises(ReportError, match="cannot write"):
            render(timeline, out)
