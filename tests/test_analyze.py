"""The study workflow (`analyze`, issue 23): a folder of users and conditions, one CSV per
session and one across sessions, timelines with the face at each peak and valley, a
study overview, a progress bar, and scores against a person's annotations."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from support import FIXTURE_FACES, cli_settings, load_tool, requires_models

from appliance.cli import main
from appliance.offline.analyze import (
    Progress,
    ReportError,
    Session,
    find_sessions,
    read_labels,
    scores,
    truth_at,
)

make_face_clip = load_tool("make_face_clip")
FPS = 5  # the clips' frame rate, and analyze's default
SECONDS_PER_FACE = 2


def clip(path: Path, labels: list[str], seed: int) -> Path:
    """Faces of the given classes, one after the other, 2 s each, small frames."""
    faces = make_face_clip.list_faces(FIXTURE_FACES)
    chosen = []
    for label in labels:
        pool = [f for f in faces if f[1] == label]
        chosen.append(pool[(seed + len(chosen)) % len(pool)])
    path.parent.mkdir(parents=True, exist_ok=True)
    make_face_clip.compose(
        chosen,
        path,
        width=320,
        height=240,
        min_side=90,
        max_side=120,
        frames_per_face=SECONDS_PER_FACE * FPS,
        fps=FPS,
        noise=0,
        seed=seed,
    )
    return path


STUDY = {  # user/condition/session: the faces shown
    "p01/music/s1": ["sad", "sad", "happy", "happy", "happy", "sad", "sad"],
    "p01/silence/s1": ["happy", "happy", "sad", "sad", "sad"],
    "p02/music/s1": ["happy", "happy", "happy", "sad", "sad", "happy"],
    "p02/silence/s1": ["sad", "sad", "happy", "happy", "sad"],
}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    for i, (name, labels) in enumerate(STUDY.items()):
        clip(root / f"{name}.mp4", labels, seed=i)
    (root / "p01" / "notes.txt").write_text("not a session")  # ignored
    return root


def write_labels(path: Path) -> Path:
    """A person's annotations: the label from t on, per session, where faces change."""
    lines = ["session,t,label"]
    for name, labels in STUDY.items():
        previous = None
        for i, label in enumerate(labels):
            if label != previous:
                lines.append(f"{name},{i * SECONDS_PER_FACE},{label}")
            previous = label
    path.write_text("\n".join(lines) + "\n")
    return path


@requires_models
def test_a_study_folder_gives_sessions_a_study_table_faces_at_peaks_and_scores(
    tmp_path, study, capsys
):
    out = tmp_path / "results"
    labels = write_labels(tmp_path / "labels.csv")
    code = main(
        ["analyze", str(study), "--out", str(out), "--labels", str(labels), *cli_settings(tmp_path)]
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "4 sessions" in printed.out and "accuracy" in printed.out
    assert "[4/4] p02/silence/s1" in printed.err  # progress, one line per session off a tty
    for name, faces in STUDY.items():
        folder = out / name
        with (folder / "frames.csv").open() as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == len(faces) * SECONDS_PER_FACE * FPS  # every frame at 5 fps
        assert [float(r["time_s"]) for r in rows[:3]] == [0.0, 0.2, 0.4]
        assert {"p_happy", "emotion", "smoothed_emotion", "smoothed_valence"} <= set(rows[0])
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["id"] == name and summary["rows"] == len(rows)
        drawn = summary["timeline_summary"]
        image = cv2.imread(str(folder / "timeline.png"))
        assert image is not None and image.shape[1] == 1400
        # the happy stretch is a valence peak, shown with the face at that moment
        happy = [i for i, f in enumerate(faces) if f == "happy"]
        peaks = drawn["runs"][0]["peaks"]
        if happy[0] > 0 and happy[-1] < len(faces) - 1:  # a happy stretch inside
            assert peaks and happy[0] * 2 <= peaks[0]["t"] <= (happy[-1] + 1) * 2 + 1.5
        assert summary["peaks"] == len(peaks)
        # each peak and valley with the face of that moment beside it
        marks = peaks + drawn["runs"][0]["valleys"]
        assert sorted(f["t"] for f in summary["faces_shown"]) == sorted(m["t"] for m in marks)
    with (out / "study.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert [f"{r['user']}/{r['condition']}/{r['session']}" for r in table] == list(STUDY)
    assert {"share_happy", "share_sad", "share_uncertain", "mean_valence", "peaks"} <= set(table[0])
    for row in table:
        shares = [float(v) for k, v in row.items() if k.startswith("share_")]
        assert sum(shares) == pytest.approx(1.0, abs=0.01)
    assert cv2.imread(str(out / "study.png")) is not None
    evaluation = json.loads((out / "evaluation.json").read_text())
    with (out / "confusion.csv").open() as fh:
        confusion = list(csv.reader(fh))
    counts = sum(int(c) for row in confusion[1:] for c in row[1:])
    assert counts == evaluation["frames"] == sum(len(f) for f in STUDY.values()) * 10
    assert [row[0] for row in confusion[1:]] == ["happy", "sad"]
    assert confusion[0][-1] == "no face"
    # the scores are what the frames say
    right = total = 0
    for name, faces_ in STUDY.items():
        with (out / name / "frames.csv").open() as fh:
            for row in csv.DictReader(fh):
                truth = faces_[min(len(faces_) - 1, int(float(row["time_s"]) // 2 + 1e-9))]
                right += (row["smoothed_emotion"] or "no face") == truth
                total += 1
    assert evaluation["accuracy"] == pytest.approx(right / total)
    assert evaluation["accuracy"] > 0.5 and 0 < evaluation["macro_f1"] <= 1
    assert cv2.imread(str(out / "confusion.png")) is not None


@requires_models
def test_one_video_as_before_and_its_faces_at_peaks_and_valleys(tmp_path, study):
    from appliance.config import load_config
    from appliance.offline.analyze import analyze

    config = load_config(
        None, [f"storage.state_dir={tmp_path / 'state'}"], default_path="/nonexistent/config.toml"
    )
    video = study / "p01" / "music" / "s1.mp4"
    summary = analyze(video, tmp_path / "out", config, fps=2.5, user="p 07", condition="music/on")
    (session,) = summary["sessions"]
    assert session["id"] == "p 07/music/on/s1" and session["rows"] == 35  # 14 s at 2.5 fps
    folder = tmp_path / "out" / "p_07" / "music_on" / "s1"
    assert (folder / "frames.csv").is_file() and (folder / "timeline.png").is_file()
    drawn = session["timeline_summary"]
    marks = drawn["runs"][0]["peaks"] + drawn["runs"][0]["valleys"]
    assert marks  # sad -> happy -> sad: a peak at least


def test_the_face_shown_at_a_peak_is_the_frame_of_that_moment():
    from appliance.offline.analyze import SessionResult

    result = SessionResult(Session("u", "c", Path("v.mp4")), [], ["happy"])
    for i, shade in enumerate((10, 120, 240)):
        result.rows.append({"time_s": i * 1.0})
        _, jpeg = cv2.imencode(".jpg", np.full((16, 16, 3), shade, np.uint8))
        result.crops[i] = jpeg.tobytes()
    assert abs(int(result.face_at(1.1).mean()) - 120) < 5
    assert abs(int(result.face_at(5.0).mean()) - 240) < 5
    assert SessionResult(Session("u", "c", Path("v.mp4")), [], []).face_at(0.0) is None


def test_sessions_are_found_by_user_and_condition(tmp_path):
    for name in ("p1/a/x.mp4", "p1/b/y.MOV", "p2/a/z.mp4", "p2/a/readme.txt", "p3/w.mp4"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    sessions = find_sessions(tmp_path, user="u", condition="c")
    assert [s.id for s in sessions] == ["p1/a/x", "p1/b/y", "p2/a/z"]
    assert find_sessions(tmp_path / "p1" / "a" / "x.mp4", user="u", condition="c")[0].id == (
        "u/c/x"
    )
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="no videos in"):
        find_sessions(tmp_path / "empty", user="u", condition="c")


def test_labels_name_sessions_plainly_or_fail_with_the_line(tmp_path):
    sessions = [
        Session("p1", "a", Path("x.mp4")),
        Session("p1", "b", Path("x.mp4")),
        Session("p2", "a", Path("z.mp4")),
    ]
    good = tmp_path / "good.csv"
    good.write_text("session,t,label\np1/a/x,0,sad\nz.mp4,3,happy\nz,1,sad\np1/a/x,4,-\n")
    marks = read_labels(good, sessions)
    assert marks == {"p1/a/x": [(0.0, "sad"), (4.0, "")], "p2/a/z": [(1.0, "sad"), (3.0, "happy")]}
    assert truth_at([0.0, 3.9, 4.0, 9.0], marks["p1/a/x"]) == ["sad", "sad", "", ""]
    assert truth_at([0.5, 1.0, 3.5], marks["p2/a/z"]) == ["", "sad", "happy"]
    for text, message in (
        ("x,0,sad\n", "matches several sessions"),
        ("p9/a/q,0,sad\n", "is no analysed session"),
        ("p1/a/x,zero,sad\np1/a/x,soon,sad\n", ":2: t must be seconds"),
    ):
        bad = tmp_path / "bad.csv"
        bad.write_text(text)
        with pytest.raises(ReportError, match=message):
            read_labels(bad, sessions)


def test_accuracy_and_macro_f1():
    truth = ["a", "a", "a", "b", "b", "c"]
    predicted = ["a", "a", "b", "b", "uncertain", "c"]
    result = scores(truth, predicted)
    assert result["accuracy"] == pytest.approx(4 / 6)
    # a: p 2/2 r 2/3 -> 0.8; b: p 1/2 r 1/2 -> 0.5; c: 1.0 ("uncertain" only counts against)
    assert result["macro_f1"] == pytest.approx((0.8 + 0.5 + 1.0) / 3)


def test_progress_bar_on_a_terminal_and_lines_elsewhere():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    from appliance.offline.analyze import SessionResult

    session = Session("p1", "a", Path("x.mp4"))
    result = SessionResult(session, [{"time_s": 0.0}] * 3, [], seconds=0.5)
    tty = Terminal()
    bar = Progress(tty, total_frames=3, sessions=1)
    bar._shown = -1e9
    bar.frame(1, session)
    bar.session_done(1, result)
    assert "\ranalyze [" in tty.getvalue() and "%" in tty.getvalue()
    assert "[1/1] p1/a/x: 3 frames" in tty.getvalue()
    pipe = io.StringIO()
    bar = Progress(pipe, total_frames=3, sessions=1)
    bar.frame(1, session)
    bar.session_done(1, result)
    assert pipe.getvalue() == "[1/1] p1/a/x: 3 frames in 0.5 s\n"


@pytest.mark.parametrize("fps", [float("inf"), float("nan"), 0.0])
def test_analyze_refuses_an_fps_that_gives_no_sampling_step(tmp_path, fps):
    from appliance.config import load_config
    from appliance.offline.analyze import analyze

    config = load_config(None, [], default_path="/nonexistent/config.toml")
    with pytest.raises(ValueError, match="finite positive"):
        analyze("demo", tmp_path, config, fps=fps, user="u", condition="c")


@pytest.mark.parametrize("where", ["file", "below-a-file", "unwritable"])
def test_analyze_out_that_cannot_be_a_folder_is_a_clear_error(tmp_path, where, capsys, caplog):
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
    code = main(
        ["analyze", str(tmp_path / "session.mp4"), "--out", str(out), *cli_settings(tmp_path)]
    )
    err = capsys.readouterr().err + caplog.text
    assert code == 1 and "Traceback" not in err and "--out" in err
    assert ("is a file, not a folder" if where != "unwritable" else "cannot create") in err
    assert existing.read_text() == "keep me\n"
