"""Face finding on FER faces composited into 640x480 frames (real models, real video)."""

from __future__ import annotations

import json
import logging
import shutil

import cv2
import numpy as np
import pytest
from support import (
    FER_VAL,
    FIXTURE_FACES,
    MODELS,
    face_found,
    load_tool,
    requires_fer_val,
    requires_models,
)

from appliance.capture import open_source
from appliance.config import load_config
from appliance.pipeline import Pipeline, build_finder
from appliance.vision.haar import HaarDetector
from appliance.vision.runtime import ModelError

make_face_clip = load_tool("make_face_clip")


def defaults(*overrides: str):
    return load_config(None, overrides, default_path="/nonexistent/config.toml")


def detection_rate(clip, pipeline: Pipeline) -> tuple[float, float, float]:
    """(share of frames whose face was found, share with a wrong box, emotion accuracy
    of the largest face on frames where it was found)."""
    meta = json.loads(clip.with_suffix(".json").read_text())
    truth = [(s["box"], s.get("label")) for s in meta["shots"] for _ in range(s["frames"])]
    found = wrong = correct = 0
    with open_source(str(clip)) as source:
        frames = list(source)
    assert len(frames) == len(truth)
    for frame, (box, label) in zip(frames, truth, strict=True):
        result = pipeline.process(frame)
        hits = [face_found(r.face.box, box) for r in result.faces]
        found += any(hits)
        wrong += hits.count(False)
        correct += bool(hits) and hits[0] and result.faces[0].emotion == label
    return found / len(truth), wrong / len(truth), correct / max(found, 1)


@requires_models
@requires_fer_val
def test_detection_rate_on_fer_val_clip(tmp_path):
    """The issue's bar: >= 95% of frames of a clip of 300 random val faces (4 frames each:
    a quarter of the frames are a face's first, where it must be found, not tracked)."""
    faces = make_face_clip.list_faces(FER_VAL)
    sample = [faces[i] for i in np.random.default_rng(42).choice(len(faces), 300, replace=False)]
    clip = tmp_path / "val.mp4"
    shots = make_face_clip.compose(sample, clip, frames_per_face=4, seed=42)
    clip.with_suffix(".json").write_text(
        json.dumps({"fps": 15, "shots": [{"box": s.box, "frames": s.frames} for s in shots]})
    )
    rate, wrong, frames = detection_rate(clip, Pipeline.from_config(defaults()))
    logging.getLogger(__name__).info("detection rate %.4f over %d frames", rate, frames)
    assert rate >= 0.95
    assert wrong <= 0.03


@requires_models
def test_detection_on_fixture_faces(tmp_path):
    """Core path without ../shared: the 35 fixture faces in a clip."""
    clip = tmp_path / "fixture.mp4"
    shots = make_face_clip.compose(
        make_face_clip.list_faces(FIXTURE_FACES), clip, frames_per_face=4, seed=3
    )
    clip.with_suffix(".json").write_text(
        json.dumps({"fps": 15, "shots": [{"box": s.box, "frames": s.frames} for s in shots]})
    )
    rate, wrong, _ = detection_rate(clip, Pipeline.from_config(defaults()))
    assert rate >= 0.90
    assert wrong <= 0.05


@requires_models
def test_empty_room_has_no_faces():
    finder = build_finder(defaults())
    for seed in range(40):
        rng = np.random.default_rng(seed)
        wall = make_face_clip.background(640, 480, rng)
        finder.reset()
        assert finder.find(wall, 0.0) == []


def _two_faces_frame() -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    rng = np.random.default_rng(0)
    frame = make_face_clip.background(640, 480, rng)
    faces = sorted(p for p in (FIXTURE_FACES / "happy").glob("*.jpg"))
    boxes = [(40, 120, 220, 220), (400, 200, 150, 150)]
    for path, (x, y, side, _) in zip(faces[:2], boxes, strict=True):
        face = cv2.resize(cv2.imread(str(path)), (side, side), interpolation=cv2.INTER_CUBIC)
        frame[y : y + side, x : x + side] = face
    return frame, boxes


@requires_models
def test_largest_face_first_and_max_faces():
    frame, boxes = _two_faces_frame()
    two = build_finder(defaults("detection.max_faces=2")).find(frame, 0.0)
    assert len(two) == 2
    assert face_found(two[0].box, boxes[0]) and face_found(two[1].box, boxes[1])
    assert two[0].area > two[1].area
    one = build_finder(defaults("detection.max_faces=1")).find(frame, 0.0)
    assert len(one) == 1 and face_found(one[0].box, boxes[0])


@requires_models
def test_boxes_clipped_to_frame():
    """A face half outside the frame still yields a box inside it."""
    frame, _ = _two_faces_frame()
    shifted = np.roll(frame, -120, axis=1)  # first face now partly off the left edge
    for face in build_finder(defaults("detection.max_faces=2")).find(shifted, 0.0):
        x, y, w, h = face.box
        assert x >= 0 and y >= 0 and x + w <= 640 and y + h <= 480


@requires_models
def test_tracking_follows_a_moving_face():
    """After the first search, later frames are found by the cheap tracked search."""
    rng = np.random.default_rng(1)
    wall = make_face_clip.background(640, 480, rng)
    face = cv2.imread(str(sorted((FIXTURE_FACES / "neutral").glob("*.jpg"))[0]))
    face = cv2.resize(face, (180, 180), interpolation=cv2.INTER_CUBIC)
    finder = build_finder(defaults())
    for i in range(12):
        x = 100 + 10 * i
        frame = wall.copy()
        frame[150:330, x : x + 180] = face
        found = finder.find(frame, i / 15)
        assert found and face_found(found[0].box, (x, 150, 180, 180)), i


def test_haar_fallback_when_blazeface_absent(tmp_path, caplog):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(MODELS / "blazeface_short_range.json", models)
    with caplog.at_level(logging.WARNING):
        finder = build_finder(defaults(f"models.dir={models}"))
    assert isinstance(finder.detector, HaarDetector)
    assert "Haar" in caplog.text
    # The same search/verify/track loop runs on Haar: it still finds most fixture faces.
    clip = tmp_path / "fixture.mp4"
    shots = make_face_clip.compose(
        make_face_clip.list_faces(FIXTURE_FACES), clip, frames_per_face=2, seed=3
    )
    truth = [s.box for s in shots for _ in range(s.frames)]
    with open_source(str(clip)) as source:
        found = sum(
            any(face_found(f.box, box) for f in finder.find(frame.image, frame.t))
            for frame, box in zip(source, truth, strict=True)
        )
    assert found / len(truth) >= 0.6
    with pytest.raises(ModelError, match="fetch_models"):
        build_finder(defaults(f"models.dir={models}", "detection.haar_fallback=false"))


@requires_models
@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda models: (models / "blazeface_short_range.tflite").write_bytes(b"junk"), "sha256"),
        (lambda models: _edit_card(models, size=[96, 96]), "model has"),
    ],
    ids=["sha-mismatch", "card-does-not-fit"],
)
def test_haar_fallback_when_blazeface_is_unusable(tmp_path, caplog, damage, reason):
    """A damaged detector file stopped the daemon although haar_fallback was on."""
    models = tmp_path / "models"
    shutil.copytree(MODELS, models)
    damage(models)
    config = defaults(f"models.dir={models}")
    with caplog.at_level(logging.WARNING):
        pipeline = Pipeline.from_config(config)
    assert isinstance(pipeline.finder.detector, HaarDetector)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and reason in errors[0].getMessage() and "Haar" in errors[0].getMessage()
    described = pipeline.describe()
    assert described["detector"] == "haar" and reason in described["detector_error"]
    with pytest.raises(ModelError, match=reason):
        build_finder(defaults(f"models.dir={models}", "detection.haar_fallback=false"))


def _edit_card(models, **inputs) -> None:
    card = models / "blazeface_short_range.json"
    raw = json.loads(card.read_text())
    raw["input"].update(inputs)
    card.write_text(json.dumps(raw))


@requires_models
def test_usable_blazeface_reports_no_detector_error():
    assert Pipeline.from_config(defaults()).describe()["detector_error"] is None
