"""Vision building blocks: anchors, NMS, boxes, tiles, model cards, the TFLite wrapper, Haar."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from support import FIXTURE_FACES, MODELS, load_tool, requires_models

from appliance.vision.blazeface import ssd_anchors, weighted_nms
from appliance.vision.detector import square_tiles
from appliance.vision.emotion import EmotionClassifier
from appliance.vision.faces import Face, clip_box, iou, square_with_margin
from appliance.vision.haar import HaarDetector
from appliance.vision.model_card import (
    EnsembleCard,
    ModelCard,
    load_card,
    members_of,
    resolve_card,
)
from appliance.vision.runtime import ModelError, TFLiteModel, runtime_name

SHIPPED_CARDS = sorted(MODELS.glob("*.json"))

# ---------------------------------------------------------------------- BlazeFace anchors


def test_ssd_anchors_count_and_range():
    anchors = ssd_anchors()
    assert anchors.shape == (896, 2)
    assert np.all(anchors > 0.0) and np.all(anchors < 1.0)
    # stride 8: 16 x 16 cells x 2 anchors, then strides 16 (x3 layers): 8 x 8 cells x 6
    assert len(np.unique(anchors[:512], axis=0)) == 256
    assert len(np.unique(anchors[512:], axis=0)) == 64


def test_ssd_anchors_order():
    anchors = ssd_anchors()
    np.testing.assert_allclose(anchors[0], [1 / 32, 1 / 32])
    np.testing.assert_allclose(anchors[1], [1 / 32, 1 / 32])  # two anchors per cell
    np.testing.assert_allclose(anchors[2], [3 / 32, 1 / 32])  # then x moves first
    np.testing.assert_allclose(anchors[32], [1 / 32, 3 / 32])  # next row of the 16 x 16 grid
    np.testing.assert_allclose(anchors[512:518], [[1 / 16, 1 / 16]] * 6)
    np.testing.assert_allclose(anchors[-1], [15 / 16, 15 / 16])


def test_weighted_nms_merges_overlaps_and_keeps_distant_boxes():
    boxes = np.array(
        [
            [0.10, 0.10, 0.30, 0.30],
            [0.70, 0.70, 0.90, 0.90],  # far away
            [0.12, 0.12, 0.32, 0.32],  # overlaps the first (IoU ~0.68)
        ]
    )
    scores = np.array([0.6, 0.7, 0.9])
    kept = weighted_nms(boxes, scores, iou_threshold=0.3)
    assert len(kept) == 2
    (merged, merged_score), (distant, distant_score) = kept  # best score first
    expected = (0.6 * boxes[0] + 0.9 * boxes[2]) / 1.5
    np.testing.assert_allclose(merged, expected)
    assert merged_score == pytest.approx(0.9)
    np.testing.assert_allclose(distant, boxes[1])
    assert distant_score == pytest.approx(0.7)


def test_weighted_nms_below_threshold_keeps_both():
    boxes = np.array([[0.0, 0.0, 0.2, 0.2], [0.15, 0.15, 0.35, 0.35]])  # IoU ~0.03
    kept = weighted_nms(boxes, np.array([0.8, 0.9]), iou_threshold=0.3)
    assert len(kept) == 2
    np.testing.assert_allclose(kept[0][0], boxes[1])
    np.testing.assert_allclose(kept[1][0], boxes[0])


def test_weighted_nms_drops_boxes_without_area():
    """A zero- or negative-size box has IoU 0 with itself: its group was empty (0/0)."""
    boxes = np.array(
        [
            [0.10, 0.10, 0.30, 0.30],
            [0.50, 0.50, 0.50, 0.60],  # zero width
            [0.70, 0.70, 0.60, 0.80],  # negative width
            [0.20, 0.40, 0.30, 0.40],  # zero height
            [np.nan, 0.1, 0.2, 0.2],
        ]
    )
    kept = weighted_nms(boxes, np.array([0.6, 0.9, 0.8, 0.7, 0.95]), iou_threshold=0.3)
    assert len(kept) == 1
    np.testing.assert_allclose(kept[0][0], boxes[0])
    assert kept[0][1] == pytest.approx(0.6)
    assert weighted_nms(boxes[1:3], np.array([0.9, 0.8]), iou_threshold=0.3) == []


@requires_models
def test_blazeface_detect_survives_a_degenerate_box():
    """The real model with its outputs replaced: a confident zero-size regression beside a
    real box once raised "cannot convert float NaN to integer" in clip_box."""
    from appliance.vision.blazeface import BlazeFaceDetector

    detector = BlazeFaceDetector(load_card(MODELS / "blazeface_short_range.json"))
    regressors = np.zeros((1, 896, 16), np.float32)  # every box 0 x 0 px
    logits = np.full((1, 896, 1), -50.0, np.float32)
    logits[0, 100] = 5.0  # confident, zero size
    logits[0, 600] = 4.0  # confident, 40 x 40 input px
    regressors[0, 600, 2:4] = 40.0
    detector.model.run = lambda x: [regressors, logits]
    faces = detector.detect(np.zeros((128, 128, 3), np.uint8))
    assert len(faces) == 1 and faces[0].box[2] == faces[0].box[3] == 40


def test_iou():
    a = np.array([0.0, 0.0, 2.0, 2.0])
    b = np.array([[0.0, 0.0, 2.0, 2.0], [1.0, 0.0, 3.0, 2.0], [5.0, 5.0, 6.0, 6.0]])
    np.testing.assert_allclose(iou(a, b), [1.0, 1 / 3, 0.0])


# ------------------------------------------------------------------------------ face boxes


def test_clip_box():
    assert clip_box(10.4, 20.6, 30, 40, 640, 480) == (10, 21, 30, 40)
    assert clip_box(-10, -20, 50, 60, 640, 480) == (0, 0, 40, 40)
    assert clip_box(600, 450, 100, 100, 640, 480) == (600, 450, 40, 30)
    assert clip_box(700, 500, 10, 10, 640, 480) == (640, 480, 0, 0)  # empty, not negative


def test_square_with_margin_in_the_middle():
    box = square_with_margin((100, 100, 40, 60), 0.2, 640, 480)
    x, y, w, h = box
    assert w == h == round(60 * (1 + 2 * 0.2))
    assert (x + w / 2, y + h / 2) == pytest.approx((120, 130), abs=0.5)
    assert square_with_margin((100, 100, 50, 50), 0.0, 640, 480) == (100, 100, 50, 50)


@pytest.mark.parametrize("margin", [0.0, 0.1, 0.25, 0.5, 1.0])
def test_square_with_margin_grows_side(margin):
    _, _, w, h = square_with_margin((200, 150, 80, 80), margin, 640, 480)
    assert w == h == pytest.approx(80 * (1 + 2 * margin), abs=1)


@pytest.mark.parametrize(
    "box", [(0, 0, 40, 40), (620, 0, 20, 60), (0, 440, 60, 40), (600, 400, 40, 80), (-5, 3, 30, 30)]
)
def test_square_with_margin_is_clipped_at_edges(box):
    x, y, w, h = square_with_margin(box, 0.5, 640, 480)
    assert x >= 0 and y >= 0 and x + w <= 640 and y + h <= 480
    assert w > 0 and h > 0


def test_face_area():
    assert Face((1, 2, 30, 40), 0.9, "haar").area == 1200


# ----------------------------------------------------------------------------------- tiles


def covered(tiles, width, height) -> bool:
    mask = np.zeros((height, width), bool)
    for x, y, w, h in tiles:
        mask[y : y + h, x : x + w] = True
    return bool(mask.all())


def test_square_tiles_landscape():
    tiles = square_tiles(640, 480)
    assert tiles == [(0, 0, 480, 480), (160, 0, 480, 480)]
    assert covered(tiles, 640, 480)


def test_square_tiles_portrait():
    tiles = square_tiles(480, 640)
    assert tiles == [(0, 0, 480, 480), (0, 160, 480, 480)]
    assert covered(tiles, 480, 640)


def test_square_tiles_square_frame_is_one_tile():
    assert square_tiles(500, 500) == [(0, 0, 500, 500)]


@pytest.mark.parametrize(("width", "height"), [(1280, 480), (1920, 1080), (320, 1000), (641, 640)])
def test_square_tiles_cover_any_frame(width, height):
    tiles = square_tiles(width, height)
    side = min(width, height)
    assert all(w == h == side for _, _, w, h in tiles)
    assert all(x + w <= width and y + h <= height for x, y, w, h in tiles)
    assert covered(tiles, width, height)


# ----------------------------------------------------------------------------- model cards


VALID_CARD = {
    "name": "tiny",
    "task": "emotion",
    "file": "tiny.tflite",
    "sha256": "AB" * 32,
    "input": {"size": [48, 40], "channels": 1, "normalization": {"mean": 0, "std": 255.0}},
    "labels": ["a", "b"],
    "output": "logits",
}


def write_card(tmp_path: Path, card, name: str = "tiny.json") -> Path:
    path = tmp_path / name
    path.write_text(card if isinstance(card, str) else json.dumps(card), encoding="utf-8")
    return path


def card_with(**changes) -> dict:
    card = copy.deepcopy(VALID_CARD)
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        where = card
        for p in parents:
            where = where[p]
        if value is ...:
            del where[key]
        else:
            where[key] = value
    return card


def test_load_valid_card(tmp_path):
    card = load_card(write_card(tmp_path, VALID_CARD))
    assert card.name == "tiny"
    assert card.sha256 == "ab" * 32  # normalised to lower case
    assert card.input_size == (48, 40)
    assert card.channels == 1
    assert (card.mean, card.std) == (0.0, 255.0)
    assert card.labels == ("a", "b")
    assert card.extra == {"output": "logits"}
    assert card.model_path == (tmp_path / "tiny.tflite").resolve()
    assert card.verify_sha256() is False  # no model file


def test_card_without_labels_loads_but_classifier_refuses(tmp_path):
    path = write_card(tmp_path, card_with(labels=...))
    card = load_card(path)
    assert card.labels == ()
    with pytest.raises(ModelError, match="needs 'labels'") as info:
        EmotionClassifier(card)
    assert str(path) in str(info.value)


def test_missing_card_file(tmp_path):
    path = tmp_path / "absent.json"
    with pytest.raises(ModelError, match="not found") as info:
        load_card(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ("{not json", "unreadable model card"),
        ("[1, 2]", "JSON object"),
        (card_with(name=...), "'name'"),
        (card_with(sha256=12), "'sha256'"),
        (card_with(input=...), "'input'"),
        (card_with(input__size=...), "'size'"),
        (card_with(input__size=[48]), "input.size"),
        (card_with(input__size=[48, 0]), "input.size"),
        (card_with(input__size=[48.0, 48]), "input.size"),
        (card_with(input__size="48x48"), "'size'"),
        (card_with(input__channels=2), "input.channels"),
        (card_with(input__channels=True), "'channels'"),
        (card_with(input__normalization__std=0), "input.normalization.std"),
        (card_with(input__normalization__std=0.0), "input.normalization.std"),
        (card_with(input__normalization__mean=...), "'mean'"),
        (card_with(input__normalization__mean="127.5"), "'mean'"),
        (card_with(labels=["a", 3]), "labels"),
    ],
)
def test_card_errors_name_file_and_field(tmp_path, content, field):
    path = write_card(tmp_path, content)
    with pytest.raises(ModelError) as info:
        load_card(path)
    message = str(info.value)
    assert str(path) in message
    assert field in message


def test_resolve_card(tmp_path):
    assert resolve_card("fer_baseline", tmp_path) == tmp_path / "fer_baseline.json"
    assert resolve_card("cards/mine.json", tmp_path) == Path("cards/mine.json")
    assert resolve_card("cards/mine", tmp_path) == Path("cards/mine")
    assert resolve_card("mine.json", tmp_path) == Path("mine.json")
    assert resolve_card("/opt/models/x.json", tmp_path) == Path("/opt/models/x.json")


def test_shipped_cards_load():
    assert SHIPPED_CARDS, f"no model cards in {MODELS}"
    for path in SHIPPED_CARDS:
        card = load_card(path)
        assert card.name == path.stem
        for model in members_of(card):  # an ensemble's members are shipped cards too
            assert len(model.sha256) == 64
            assert isinstance(model.extra.get("file_size_bytes"), int)


@requires_models
def test_shipped_models_match_their_cards():
    checked = 0
    for path in SHIPPED_CARDS:
        card = load_card(path)
        if isinstance(card, EnsembleCard):
            assert card.verify_sha256(), f"a member of {path} does not match its card"
            continue
        if not card.model_path.is_file():
            continue
        assert card.verify_sha256(), f"{card.model_path} does not match {path}"
        assert card.model_path.stat().st_size == card.extra["file_size_bytes"]
        checked += 1
    assert checked >= 2


def test_fetch_pins_agree_with_cards():
    fetch_models = load_tool("fetch_models")
    cards = {card.file: card for path in SHIPPED_CARDS for card in members_of(load_card(path))}
    pins = {pin.dest: pin for pin in fetch_models.PINNED}
    assert set(pins) <= set(cards), "a pinned model without a card"
    for dest, pin in pins.items():
        assert pin.sha256 == cards[dest].sha256, dest
    for path in MODELS.glob("*.tflite"):
        if path.name in pins:
            assert fetch_models.sha256_of(path) == pins[path.name].sha256


def test_verify_sha256_detects_a_changed_file(tmp_path):
    data = b"pretend model"
    (tmp_path / "tiny.tflite").write_bytes(data)
    good = card_with(sha256=hashlib.sha256(data).hexdigest())
    assert load_card(write_card(tmp_path, good)).verify_sha256() is True
    (tmp_path / "tiny.tflite").write_bytes(data + b"!")
    assert load_card(write_card(tmp_path, good)).verify_sha256() is False


def blazeface_card_with(tmp_path: Path, change) -> Path:
    """The shipped BlazeFace card, changed by `change(raw)`, pointing at the real model."""
    raw = json.loads((MODELS / "blazeface_short_range.json").read_text())
    raw["file"] = str(MODELS / raw["file"])
    change(raw)
    path = tmp_path / "blazeface.json"
    path.write_text(json.dumps(raw))
    return path


@requires_models
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda raw: raw["input"].update(size=[96, 96]), r"model has \(1, 128, 128, 3\)"),
        (lambda raw: raw["input"].update(size=[128, 96]), "square"),
        (lambda raw: raw["anchors"].update(strides=[8, 16, 16]), r"regressors shaped \(1, 768"),
        (lambda raw: raw["anchors"].update(strides=[16, 32, 32, 32]), "anchors"),
        (lambda raw: raw["anchors"].update(strides="8,16"), "anchors.strides"),
        (lambda raw: raw["anchors"].update(offset="half"), "anchors.offset"),
        (lambda raw: raw["anchors"].update(fixed_size=False), "fixed-size"),
        (lambda raw: raw.update(anchors=[8, 16]), "'anchors'"),
    ],
    ids=[
        "input-size",
        "non-square",
        "fewer-layers",
        "other-strides",
        "strides-string",
        "offset-string",
        "not-fixed-size",
        "anchors-list",
    ],
)
def test_blazeface_card_that_does_not_fit_the_model_is_a_model_error(tmp_path, change, message):
    """Once a ValueError (a traceback from the CLI) or an IndexError mid-stream."""
    from appliance.vision.blazeface import BlazeFaceDetector

    path = blazeface_card_with(tmp_path, change)
    with pytest.raises(ModelError, match=message) as caught:
        BlazeFaceDetector(load_card(path))
    assert str(path) in str(caught.value)


@requires_models
def test_blazeface_reads_the_card_anchors(tmp_path):
    from appliance.vision.blazeface import BlazeFaceDetector

    shipped = BlazeFaceDetector(load_card(MODELS / "blazeface_short_range.json"))
    np.testing.assert_array_equal(shipped.anchors, ssd_anchors())
    without = BlazeFaceDetector(
        load_card(blazeface_card_with(tmp_path, lambda r: r.pop("anchors")))
    )
    np.testing.assert_array_equal(without.anchors, ssd_anchors())  # MediaPipe's defaults
    assert ssd_anchors(128, (8, 16, 16, 16), offset=0.0)[0] == pytest.approx([0.0, 0.0])


# --------------------------------------------------------------------------- TFLite runtime


def test_runtime_name():
    assert runtime_name() in ("tflite_runtime", "ai_edge_litert")


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        TFLiteModel(tmp_path / "absent.tflite")
    with pytest.raises(ModelError, match="not found"):
        TFLiteModel(tmp_path)  # a folder is not a model file


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(np.random.default_rng(0).bytes(4096), id="random"),
        pytest.param(np.random.default_rng(1).bytes(50_000), id="random-large"),
        pytest.param(b"this is not a model\n" * 100, id="text"),
        pytest.param(bytes(4096), id="zeros"),
        pytest.param(b"", id="empty"),
    ],
)
def test_corrupt_model_file(tmp_path, data):
    # A *truncated* real model is deliberately not tested: the interpreter segfaults on it.
    path = tmp_path / "corrupt.tflite"
    path.write_bytes(data)
    with pytest.raises(ModelError, match="not a valid TFLite model") as info:
        TFLiteModel(path)
    assert str(path) in str(info.value)


@requires_models
def test_real_models_load_with_their_card_shapes():
    for name in ("blazeface_short_range", "fer_baseline"):
        card = load_card(MODELS / f"{name}.json")
        model = TFLiteModel(card.model_path)
        width, height = card.input_size
        assert model.input_shape == (1, height, width, card.channels)
        outputs = model.run(np.zeros(model.input_shape, np.float32))
        assert all(o.dtype == np.float32 and np.all(np.isfinite(o)) for o in outputs)


@requires_models
def test_classifier_refuses_card_that_disagrees_with_model(tmp_path):
    card = json.loads((MODELS / "fer_baseline.json").read_text())
    shutil.copy(MODELS / card["file"], tmp_path / card["file"])
    card["input"]["size"] = [48, 48]
    with pytest.raises(ModelError, match="card says input"):
        EmotionClassifier(load_card(write_card(tmp_path, card, "wrong_size.json")))
    card["input"]["size"] = [64, 64]
    card["labels"] = card["labels"][:5]
    with pytest.raises(ModelError, match="7 values for 5 labels"):
        EmotionClassifier(load_card(write_card(tmp_path, card, "wrong_labels.json")))


# ------------------------------------------------------------------------------------ Haar


def pasted_face_frame(path: Path) -> np.ndarray:
    face = cv2.resize(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), (200, 200))
    frame = np.full((480, 640), 128, np.uint8)
    frame[140:340, 220:420] = face
    return frame


def inside(face: Face, width: int = 640, height: int = 480) -> bool:
    x, y, w, h = face.box
    return x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= width and y + h <= height


def test_haar_on_fixture_faces_returns_faces_inside_the_frame():
    detector = HaarDetector()
    paths = sorted(FIXTURE_FACES.glob("*/*.jpg"))[::5]
    assert paths, f"no fixture faces in {FIXTURE_FACES}"
    for path in paths:
        gray = pasted_face_frame(path)
        for frame in (gray, cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)):
            faces = detector.detect(frame)
            assert isinstance(faces, list)
            for face in faces:
                assert isinstance(face, Face)
                assert face.detector == "haar"
                assert inside(face)
                assert min(face.box[2:]) >= detector.min_face_px


def test_haar_roi_results_are_in_frame_coordinates():
    detector = HaarDetector()
    face_path = sorted(FIXTURE_FACES.glob("*/*.jpg"))[0]
    frame = cv2.cvtColor(pasted_face_frame(face_path), cv2.COLOR_GRAY2BGR)
    roi = (160, 80, 320, 320)
    for face in detector.detect(frame, roi):
        x, y, w, h = face.box
        assert inside(face)
        assert roi[0] <= x and x + w <= roi[0] + roi[2]
        assert roi[1] <= y and y + h <= roi[1] + roi[3]
    assert detector.detect(frame, (700, 500, 10, 10)) == []  # an empty region


def test_haar_finds_nothing_in_a_blank_frame():
    assert HaarDetector().detect(np.full((480, 640, 3), 128, np.uint8)) == []


def test_model_card_is_frozen(tmp_path):
    card = load_card(write_card(tmp_path, VALID_CARD))
    assert isinstance(card, ModelCard)
    with pytest.raises(AttributeError):
        card.name = "other"  # type: ignore[misc]


@requires_models
@pytest.mark.parametrize("keep", [1000, 50_000])
def test_truncated_model_behind_a_card_is_refused_before_loading(tmp_path, keep):
    """tflite_runtime segfaults on truncated files; the card's sha256 must stop them first."""
    raw = json.loads((MODELS / "fer_baseline.json").read_text())
    data = (MODELS / raw["file"]).read_bytes()
    (tmp_path / raw["file"]).write_bytes(data[:keep])
    (tmp_path / "card.json").write_text(json.dumps(raw))
    with pytest.raises(ModelError, match="does not match the sha256"):
        EmotionClassifier(load_card(tmp_path / "card.json"))


@pytest.mark.parametrize("labels", ["happy", 5, ["ok", ""], [True]])
def test_malformed_labels_are_a_model_error(tmp_path, labels):
    raw = json.loads((MODELS / "fer_baseline.json").read_text())
    raw["labels"] = labels
    (tmp_path / "card.json").write_text(json.dumps(raw))
    with pytest.raises(ModelError, match="labels"):
        load_card(tmp_path / "card.json")


def test_crop_face_margin_and_shift():
    from appliance.vision.preprocess import crop_face

    frame = np.arange(480 * 640, dtype=np.uint32).reshape(480, 640)
    plain = crop_face(frame, (200, 200, 100, 100), 0.0)
    assert plain.shape == (100, 100) and plain[0, 0] == frame[200, 200]
    wide = crop_face(frame, (200, 200, 100, 100), 0.1)
    assert wide.shape == (120, 120) and wide[0, 0] == frame[190, 190]
    up = crop_face(frame, (200, 200, 100, 100), 0.0, shift=0.1)
    assert up.shape == (100, 100) and up[0, 0] == frame[190, 200]
    edge = crop_face(frame, (0, 0, 100, 100), 0.2, shift=0.1)  # padded, still square
    assert edge.shape == (140, 140) and edge[0, 0] == frame[0, 0]


def test_crop_face_at_the_frame_edge_is_padded_not_cut():
    """A crop cut short by the frame edge was stretched to the model's square input."""
    from appliance.vision.preprocess import crop_face

    frame = np.arange(480 * 640, dtype=np.uint32).reshape(480, 640)
    crop = crop_face(frame, (600, 200, 40, 100), 0.08, shift=0.08)
    # side 116 around centre (620, 242): columns 562..677, rows 184..299
    assert crop.shape == (116, 116)
    np.testing.assert_array_equal(crop[:, :78], frame[184:300, 562:640])
    np.testing.assert_array_equal(crop[:, 78:], np.repeat(frame[184:300, 639:640], 38, axis=1))
    corner = crop_face(frame, (0, 0, 100, 100), 0.2, shift=0.1)  # 30 rows above, 20 left
    np.testing.assert_array_equal(corner[30:, 20:], frame[:110, :120])
    np.testing.assert_array_equal(corner[:30, 20:], np.repeat(frame[:1, :120], 30, axis=0))
    np.testing.assert_array_equal(corner[30:, :20], np.repeat(frame[:110, :1], 20, axis=1))
    assert (corner[:30, :20] == frame[0, 0]).all()


@pytest.mark.parametrize(
    "box",
    [(0, 0, 40, 40), (620, 0, 20, 60), (0, 440, 60, 40), (600, 400, 40, 80), (600, 200, 40, 100)],
)
def test_crop_face_of_an_edge_box_keeps_a_round_face_round(box):
    """A disc drawn in the box stays a disc in the model input (BGR and gray frames)."""
    from appliance.vision.preprocess import crop_face, prepare_face

    card = load_card(MODELS / "fer_baseline.json")
    x, y, w, h = box
    for channels in (3, 1):
        frame = np.full((480, 640, channels), 200, np.uint8).squeeze()
        cv2.circle(frame, (x + w // 2, y + h // 2), min(w, h) // 4, (0, 0, 0)[:channels], -1)
        crop = crop_face(frame, box, 0.08, shift=0.08)
        assert abs(crop.shape[0] - crop.shape[1]) <= 1 and crop.shape[2:] == frame.shape[2:]
        dark = prepare_face(crop, card)[..., 0] < 0
        rows, cols = np.nonzero(dark)
        height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
        assert abs(height - width) <= 1, (height, width)


def test_crop_face_of_an_empty_box_outside_the_frame_is_empty():
    from appliance.vision.preprocess import crop_face

    assert crop_face(np.zeros((480, 640, 3), np.uint8), (640, 480, 0, 0), 0.1).size == 0


def test_region_of_clips_an_overhanging_roi():
    from appliance.vision.faces import region_of

    frame = np.zeros((480, 640, 3), np.uint8)
    region, x, y = region_of(frame, (600, -20, 100, 100))
    assert (x, y) == (600, 0) and region.shape[:2] == (80, 40)
    whole, x, y = region_of(frame, None)
    assert whole is frame and (x, y) == (0, 0)
