"""The RealSense source on the real pyrealsense2: recordings made by
tools/make_realsense_recording.py (software_device + recorder), played back, aligned by
rs.align, and what depth adds to a face (distance, gating, the flat-face check).

Skips, saying why, where pyrealsense2 (x86_64 wheels; the dev extra) or the libusb it
loads is missing. The live camera path is tested against a fake module in test_capture.
"""

from __future__ import annotations

import itertools
import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import ROOT, cli_settings, load_tool, requires_models

from appliance.capture import CaptureError, open_source
from appliance.capture.files import Pacer
from appliance.config import load_config
from appliance.vision.depth import measure_face

try:
    import pyrealsense2  # noqa: F401
except Exception as exc:  # ImportError, or OSError when libusb-1.0-0 is missing
    pytest.skip(
        f"pyrealsense2 unusable here ({exc}): pip install pyrealsense2 (x86_64) and"
        " apt-get install libusb-1.0-0",
        allow_module_level=True,
    )

from appliance.capture.realsense import RealSenseRecordingSource

mk = load_tool("make_realsense_recording")
FACES = mk.list_faces(mk.FACES)
HAPPY, NEUTRAL, SURPRISE, WIDE_BOX = (str(FACES[i][0]) for i in (15, 20, 30, 21))
FRAMES = 6
FPS = 30


def scene() -> list:
    """A face with relief and a flat photo at 0.8 m; a passer-by at 3 m whose face image
    is the largest (so "nearest" and "largest" disagree)."""
    return [
        mk.SceneObject("face", 0.8, (120, 240), 140, HAPPY),
        mk.SceneObject("card", 0.8, (320, 240), 140, NEUTRAL),
        mk.SceneObject("person", 3.0, (530, 240), 170, SURPRISE),
    ]


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("realsense")
    made = {
        "scene": root / "scene.db3",
        "still": root / "still.db3",
        "rgb_no_units": root / "rgb_no_units.db3",
        "shallow": root / "shallow.db3",
    }
    mk.make(made["scene"], scene(), frames=FRAMES, fps=FPS, seed=1)
    # without noise or holes, every frame alike: the two are compared pixel by pixel
    mk.make(made["still"], scene(), frames=2, fps=FPS, seed=1, noise_m=0, holes=0)
    mk.make(made["rgb_no_units"], scene(), frames=2, fps=FPS, seed=1, noise_m=0, holes=0,
            color_format="rgb8", depth_units=0)  # fmt: skip
    # at the margin both ways: the shallowest relief measured, a card turned 40 degrees
    shallow = [
        mk.SceneObject("face", 0.8, (160, 240), 150, HAPPY),
        mk.SceneObject("card", 1.0, (470, 240), 140, NEUTRAL),
    ]
    mk.make(made["shallow"], shallow, frames=3, fps=FPS, seed=2, relief="dome:0.03",
            tilt_deg=40, noise_m=0.004)  # fmt: skip
    return made


def frames_of(path: Path, **kwargs) -> list:
    with RealSenseRecordingSource(path, **kwargs) as source:
        return list(source)


def inner_box(box: list[int]) -> tuple[int, int, int, int]:
    """About where the face detector puts its box on a pasted FER face: its middle 80%."""
    x, y, w, h = box
    return x + w // 10, y + h // 10, w * 8 // 10, h * 8 // 10


def sidecar(path: Path) -> dict:
    return json.loads(path.with_suffix(".json").read_text())


def test_the_recording_tool_from_its_command_line(tmp_path):
    out = tmp_path / "desk.db3"
    assert mk.main([str(out), "face:0.8", "card:1.1:480,240:120", "--frames", "2",
                    "--tilt", "20", "--color-format", "rgb8"]) == 0  # fmt: skip
    side = sidecar(out)
    assert [o["kind"] for o in side["objects"]] == ["face", "card"]
    assert side["objects"][1]["box"] == [420, 180, 120, 120] and side["tilt_deg"] == 20
    assert len(frames_of(out)) == 2
    assert mk.main([str(tmp_path / "old.bag"), "face:0.8"]) == 2  # 2.59 writes .db3 only
    assert mk.main([str(out), "face:0.8", "--relief", "cone:1"]) == 2
    assert mk.main([str(out), "hat:0.8"]) == 2


# ---------------------------------------------------------------- playback and alignment


def test_playback_gives_every_frame_with_colour_and_depth_in_metres(recordings):
    frames = frames_of(recordings["scene"])
    assert [f.index for f in frames] == list(range(FRAMES))
    assert [f.t for f in frames] == pytest.approx([i / FPS for i in range(FRAMES)], abs=1e-6)
    objects = scene()
    images = {o.image: mk.cv2.imread(o.image, mk.cv2.IMREAD_GRAYSCALE) for o in objects}
    expected, _ = mk.render(objects, images, wall_m=4.0, tilt_deg=0.0, seed=1)
    for frame in frames:
        assert frame.image.shape == (480, 640, 3) and frame.image.dtype == np.uint8
        assert np.array_equal(frame.image, expected)  # BGR8, bit-exact
        assert frame.depth.shape == (480, 640) and frame.depth.dtype == np.float32
    wall = frames[0].depth[10:40, 300:340]  # above the faces: the wall, 4 m
    assert np.median(wall[wall > 0]) == pytest.approx(4.0, abs=0.1)


def test_depth_is_aligned_to_the_colour_image(recordings):
    """The card is 1.3 x 140 px in colour pixels: in the aligned depth its edges are
    where the colour image has them (the depth camera, 15 mm aside and wider-angled,
    sees it elsewhere and smaller; beside it, the strip of wall it hides from the depth
    camera has no depth, as on a real D435)."""
    depth = frames_of(recordings["scene"])[0].depth

    def seen(values: np.ndarray) -> float:
        return float(np.median(values[values > 0]))

    left, right, top = 320 - 91, 320 + 91, 240 - 91
    row, column = depth[240], depth[:, 320]
    for inside in (row[left + 2 : left + 10], row[right - 10 : right - 2],
                   column[top + 2 : top + 10]):  # fmt: skip
        assert seen(inside) == pytest.approx(0.8, abs=0.02)
    for outside in (row[left - 30 : left - 2], row[right + 2 : right + 30],
                    column[top - 10 : top - 2]):  # fmt: skip
        assert seen(outside) > 1.5  # the wall
    import pyrealsense2 as rs  # the depth as recorded: the card is elsewhere there

    pipe, config = rs.pipeline(), rs.config()
    config.enable_device_from_file(str(recordings["scene"]), repeat_playback=False)
    pipe.start(config).get_device().as_playback().set_real_time(False)
    raw = np.asanyarray(pipe.wait_for_frames(5000).get_depth_frame().get_data()).copy()
    pipe.stop()
    card_columns = np.flatnonzero(np.abs(raw[240].astype(int) - 800) <= 5)
    assert raw.shape == (480, 848) and card_columns.max() > right + 50


def test_a_recording_without_depth_units_and_in_rgb8_reads_the_same(recordings):
    """RGB8 (what a D435 recording usually holds) becomes BGR; depth units missing from
    the file are taken as the D400's 1 mm and aligned without rs.align, to within the
    rounding of a pixel at the edges."""
    with_units = frames_of(recordings["still"])[0]
    bare = frames_of(recordings["rgb_no_units"])[0]
    assert np.array_equal(bare.image, with_units.image)
    both = (bare.depth > 0) & (with_units.depth > 0)
    assert both.mean() > 0.95
    agree = np.abs(bare.depth - with_units.depth)[both] < 0.002
    assert agree.mean() > 0.98


# ---------------------------------------------------------------- what depth says of a face


def test_distance_and_relief_of_each_object(recordings):
    frame = frames_of(recordings["scene"])[0]
    measured = {
        obj["kind"]: measure_face(frame.depth, inner_box(obj["box"]))
        for obj in sidecar(recordings["scene"])["objects"]
    }
    threshold = load_config(None).detection.min_relief_m
    assert measured["face"].distance_m == pytest.approx(0.8, abs=0.05)
    assert measured["card"].distance_m == pytest.approx(0.8, abs=0.05)
    assert measured["person"].distance_m == pytest.approx(3.0, abs=0.05)
    assert measured["face"].relief_m > 4 * threshold  # about 3 cm
    assert measured["person"].relief_m > 4 * threshold
    assert measured["card"].relief_m < threshold / 4


def test_the_flat_face_check_at_its_margins(recordings):
    """The shallowest relief measured (half an ellipsoid 3 cm high) is still a face; a
    photo turned 40 degrees, with twice the default noise, is still flat."""
    threshold = load_config(None).detection.min_relief_m
    objects = {o["kind"]: o for o in sidecar(recordings["shallow"])["objects"]}
    for frame in frames_of(recordings["shallow"]):
        dome = measure_face(frame.depth, inner_box(objects["face"]["box"]))
        card = measure_face(frame.depth, inner_box(objects["card"]["box"]))
        assert dome.relief_m > 1.25 * threshold, dome
        assert card.relief_m < 0.75 * threshold, card
        assert card.distance_m == pytest.approx(1.0, abs=0.05)


def test_measure_face_ignores_holes_and_says_nothing_without_depth():
    yy, xx = np.mgrid[0:200, 0:200]
    plane = (0.9 + 0.001 * xx).astype(np.float32)  # a card turned about 30 degrees
    plane[::7, ::5] = 0  # holes
    reading = measure_face(plane, (50, 50, 100, 100))
    assert reading.distance_m == pytest.approx(1.0, abs=0.01) and reading.relief_m < 0.001
    r2 = ((xx - 100) / 50.0) ** 2 + ((yy - 100) / 60.0) ** 2
    dome = np.where(r2 < 1, 0.8 - 0.08 * np.sqrt(np.clip(1 - r2, 0, 1)), 4.0).astype(np.float32)
    assert measure_face(dome, (60, 55, 80, 90)).relief_m > 0.01
    assert measure_face(None, (0, 0, 10, 10)).distance_m is None
    empty = np.zeros((100, 100), np.float32)
    assert measure_face(empty, (10, 10, 50, 50)).distance_m is None
    assert measure_face(plane, (500, 500, 20, 20)).distance_m is None  # off the map


# ---------------------------------------------------------------- the pipeline with depth


def run_pipeline(tmp_path: Path, recording: Path, *settings: str) -> list:
    from appliance.pipeline import Pipeline

    config = load_config(None, [f"storage.state_dir={tmp_path / 'state'}", *settings])
    pipeline = Pipeline.from_config(config)
    return [pipeline.process(frame) for frame in frames_of(recording)]


def by_kind(result, objects: list[dict]) -> dict[str, object]:
    """Which detected face is which object: the one whose box centre lies in its image."""
    found = {}
    for face in result.faces:
        x, y, w, h = face.face.box
        for obj in objects:
            ox, oy, ow, oh = obj["box"]
            if ox <= x + w / 2 <= ox + ow and oy <= y + h / 2 <= oy + oh:
                found[obj["kind"]] = face
    return found


@requires_models
def test_each_face_gets_its_distance_and_liveness_nearest_first(tmp_path, recordings):
    objects = sidecar(recordings["scene"])["objects"]
    results = run_pipeline(tmp_path, recordings["scene"], "detection.max_faces=3")
    for result in results:
        found = by_kind(result, objects)
        assert set(found) == {"face", "card", "person"}, result.to_event()
        assert found["face"].distance_m == pytest.approx(0.8, abs=0.05)
        assert found["card"].distance_m == pytest.approx(0.8, abs=0.05)
        assert found["person"].distance_m == pytest.approx(3.0, abs=0.05)
        assert (found["face"].live, found["card"].live, found["person"].live) == (
            True, False, True,
        )  # fmt: skip
        distances = [f.distance_m for f in result.faces]
        assert distances == sorted(distances)  # nearest first
        event = result.to_event()["faces"]
        assert {"distance_m", "relief_m", "live"} <= set(event[0])
    # one face classified: the nearest, not the passer-by whose face image is largest
    (result,) = run_pipeline(tmp_path, recordings["scene"])[-1:]
    assert len(result.faces) == 1 and result.faces[0].distance_m < 1.0


@requires_models
def test_far_faces_are_not_classified_past_max_distance(tmp_path, recordings):
    objects = sidecar(recordings["scene"])["objects"]
    for result in run_pipeline(
        tmp_path, recordings["scene"], "detection.max_faces=3", "detection.max_distance_m=1.5"
    ):
        assert set(by_kind(result, objects)) == {"face", "card"}
        assert all(f.distance_m <= 1.5 for f in result.faces)


@requires_models
def test_reject_flat_drops_the_photo_and_keeps_the_face(tmp_path, recordings):
    objects = sidecar(recordings["scene"])["objects"]
    for result in run_pipeline(
        tmp_path, recordings["scene"], "detection.max_faces=3", "detection.reject_flat=true"
    ):
        assert set(by_kind(result, objects)) == {"face", "person"}
        assert all(f.live for f in result.faces)
    # one face: the photo in front no longer hides the real face behind its place
    last = run_pipeline(tmp_path, recordings["scene"], "detection.reject_flat=true")[-1]
    assert set(by_kind(last, objects)) == {"face"}
    assert last.faces[0].emotion in last.faces[0].probs


@pytest.fixture(scope="module")
def made_otherwise(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The judged scenario, recorded another way: depth at the colour stream's size and
    place with no extrinsics recorded, RGB8, a dome-shaped relief instead of a head, and
    the photo's card barely larger than its face (the detector's box reaches past it);
    one recording each, as segments of one session would be."""
    root = tmp_path_factory.mktemp("otherwise")
    scenes = {
        "real": mk.SceneObject("face", 0.8, (300, 240), 150, HAPPY),
        "photo": mk.SceneObject("card", 0.8, (330, 250), 150, WIDE_BOX),
        "far": mk.SceneObject("person", 3.0, (320, 230), 130, SURPRISE),
    }
    made = {}
    for name, obj in scenes.items():
        made[name] = root / f"{name}.db3"
        mk.make(made[name], [obj], frames=3, fps=15, seed=4, relief="dome:0.06",
                card_margin=1.05, aligned=True, color_format="rgb8")  # fmt: skip
    return made


@requires_models
def test_the_judged_scenario_on_a_recording_made_otherwise(tmp_path, made_otherwise):
    expected = {"real": (0.8, True), "photo": (0.8, False), "far": (3.0, True)}
    for name, (distance, live) in expected.items():
        for result in run_pipeline(tmp_path, made_otherwise[name]):
            (face,) = result.faces
            assert face.distance_m == pytest.approx(distance, abs=0.1), name
            assert face.live is live, (name, face.relief_m)
            if name == "photo":  # the box reaches past the card, onto the wall
                assert face.face.box[2] > 1.05 * 150 * 1.2
    assert all(
        not r.faces
        for r in run_pipeline(tmp_path, made_otherwise["far"], "detection.max_distance_m=1.5")
    )
    flat = "detection.reject_flat=true"
    assert all(not r.faces for r in run_pipeline(tmp_path, made_otherwise["photo"], flat))
    for result in run_pipeline(tmp_path, made_otherwise["real"], flat):
        (face,) = result.faces
        assert face.live and face.emotion in face.probs


# ---------------------------------------------------------------- the source's life


def test_a_recording_ends_loops_and_keeps_time_moving(recordings):
    with RealSenseRecordingSource(recordings["scene"]) as source:
        assert len(list(source)) == FRAMES
        assert source.read() is None and source.read() is None  # ended, and stays so
    with RealSenseRecordingSource(recordings["scene"], loop=True) as source:
        frames = [source.read() for _ in range(2 * FRAMES + 1)]
    assert [f.index for f in frames] == list(range(2 * FRAMES + 1))
    times = [f.t for f in frames]
    assert all(b > a for a, b in itertools.pairwise(times))
    assert times[FRAMES] == pytest.approx(FRAMES / FPS, abs=1e-6)  # the second pass
    assert all(f.depth is not None for f in frames)


def test_realtime_paces_at_the_recordings_rate_and_drops_late_frames(recordings):
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    pacer = Pacer(clock=lambda: now[0], sleep=sleep)
    source = RealSenseRecordingSource(recordings["scene"], realtime=True, pacer=pacer)
    with source:
        times = []
        for frame in source:
            times.append(frame.t)
            now[0] += 0.001  # a fast pipeline: every frame, each at its time
    assert len(times) == FRAMES and sum(slept) == pytest.approx(
        (FRAMES - 1) / FPS - (FRAMES - 1) * 0.001, abs=1e-6
    )
    now[0], slept[:] = 500.0, []
    with source:
        times = []
        for frame in source:
            times.append(frame.t)
            now[0] += 2.5 / FPS  # a slow one: frames the next has overtaken are dropped
    assert 2 <= len(times) < FRAMES and times[0] == 0.0
    assert "real time" in source.describe()


def test_open_source_builds_recordings_and_cameras(recordings, tmp_path):
    from appliance.capture.realsense import RealSenseSource

    source = open_source(f"realsense:{recordings['scene']}", loop=True, realtime=True)
    assert isinstance(source, RealSenseRecordingSource) and source.loop and source.pacer
    camera = open_source("realsense:843112070123", width=320, height=240, fps=30)
    assert isinstance(camera, RealSenseSource) and camera.serial == "843112070123"
    assert (camera.width, camera.height, camera.fps) == (320, 240, 30)
    with pytest.raises(CaptureError, match="RealSense recording not found"):
        open_source(f"realsense:{tmp_path / 'nothing.db3'}").open()


@pytest.mark.parametrize("damage", ["random bytes", "truncated", "empty", "bag of noise"])
def test_a_corrupt_recording_is_a_clear_error_and_exit_1(tmp_path, recordings, damage):
    good = recordings["scene"].read_bytes()
    name, data = {
        "random bytes": ("bad.db3", np.random.default_rng(0).bytes(50_000)),
        "truncated": ("cut.db3", good[: len(good) // 3]),
        "empty": ("empty.db3", b""),
        "bag of noise": ("bad.bag", np.random.default_rng(1).bytes(5_000)),
    }[damage]
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(CaptureError, match=re.escape(f"RealSense recording {path}")):
        frames_of(path)
    if damage != "truncated":
        return  # the same path through `run` as the next: once is enough
    result = subprocess.run(
        [sys.executable, "-m", "appliance", "run", "--source", f"realsense:{path}",
         "--events", "-", *cli_settings(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert f"RealSense recording {path}" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


@requires_models
def test_run_on_a_recording_carries_distance_to_events_status_and_samples(tmp_path, recordings):
    """The judged way: `run --source realsense:FILE --events -`, to its end (exit 0)."""
    result = subprocess.run(
        [sys.executable, "-m", "appliance", "run", "--source", f"realsense:{recordings['scene']}",
         "--events", "-", *cli_settings(tmp_path, "detection.reject_flat=true",
                                        "detection.max_distance_m=1.5")],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(events) == FRAMES
    for event in events:
        (face,) = event["faces"]  # the photo and the passer-by are dropped
        assert face["distance_m"] == pytest.approx(0.8, abs=0.05) and face["live"] is True
        assert face["relief_m"] > 0.01 and face["emotion"] in face["probs"]
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "finished" and status["distance_m"] == pytest.approx(0.8, abs=0.05)
    assert status["live"] is True and "RealSense recording" in status["source"]
    with sqlite3.connect(tmp_path / "state" / "appliance.db") as db:
        stored = [row[0] for row in db.execute("SELECT distance_m FROM affect_samples")]
    assert stored and all(d == pytest.approx(0.8, abs=0.05) for d in stored)


def test_the_mqtt_state_carries_the_distance():
    from appliance.affect.smoothing import AffectState
    from appliance.link.worker import build_state
    from appliance.pipeline import FaceResult, FrameResult
    from appliance.service.publisher import BoardView
    from appliance.vision.faces import Face

    face = FaceResult(Face((1, 2, 50, 50), 0.9, "blazeface"), {"happy": 1.0}, 0.5, 0.2,
                      distance_m=0.8123, relief_m=0.03, live=True)  # fmt: skip
    result = FrameResult(3, 1.5, [face], AffectState(1.5, "happy", 0.9, 1.0, {"happy": 1.0}))
    view = BoardView("running", 4, 4, result, None, None)
    state = build_state("pi", view, {"state": "running"}, ("OK", ""), None, 10.0)
    assert state["distance_m"] == 0.8123
    no_depth = FrameResult(3, 1.5, [FaceResult(face.face, {"happy": 1.0}, 0.5, 0.2)],
                           result.smoothed)  # fmt: skip
    view = BoardView("running", 4, 4, no_depth, None, None)
    assert build_state("pi", view, {}, ("OK", ""), None, 10.0)["distance_m"] is None


def test_doctor_names_the_realsense_path_in_use(monkeypatch):
    from appliance.service import doctor

    check = doctor.check_realsense(load_config(None, ["camera.source=realsense"]))
    assert check.status == "pass" and "pyrealsense2" in check.detail and "depth" in check.detail
    assert "pip package" in check.detail  # the PyPI wheel, not a source build
    check = doctor.check_realsense(load_config(None, ["camera.source=demo"]))
    assert check.status == "skip"
    monkeypatch.setattr(doctor, "v4l2_device_name", lambda spec: "Intel(R) RealSense(TM) 435")
    check = doctor.check_realsense(load_config(None, ["camera.source=v4l2:4"]))
    assert check.status == "pass" and "no depth" in check.detail
    monkeypatch.setitem(sys.modules, "pyrealsense2", None)
    check = doctor.check_realsense(load_config(None, ["camera.source=realsense:x.db3"]))
    assert check.status == "fail" and "librealsense" in check.hint
    assert doctor.check_realsense(load_config(None)).status == "skip"  # auto
