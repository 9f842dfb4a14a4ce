"""The emotion classifier, driven by its model card, on real FER images."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from support import FIXTURE_FACES, MODELS, requires_models

from appliance.vision.emotion import EmotionClassifier
from appliance.vision.model_card import load_card
from appliance.vision.runtime import ModelError


def accuracy(classifier: EmotionClassifier, root) -> tuple[float, int]:
    correct = total = 0
    for path in sorted(root.glob("*/*.jpg")):
        probs = classifier.classify(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE))
        correct += classifier.labels[int(np.argmax(probs))] == path.parent.name
        total += 1
    return correct / total, total


@requires_models
def test_fixture_faces_give_probabilities_in_card_order():
    classifier = EmotionClassifier(load_card(MODELS / "fer_baseline.json"))
    acc, n = accuracy(classifier, FIXTURE_FACES)
    assert n == 35
    assert acc > 1 / 7 * 2  # well above chance even on 35 faces
    probs = classifier.classify(cv2.imread(str(next(FIXTURE_FACES.glob("happy/*.jpg")))))
    assert probs.shape == (7,) and probs.sum() == pytest.approx(1.0) and (probs >= 0).all()


@requires_models
def test_swapping_cards_needs_no_code(tmp_path):
    """A card is all the classifier knows: relabelled card -> relabelled output."""
    raw = json.loads((MODELS / "fer_baseline.json").read_text())
    shutil.copy(MODELS / raw["file"], tmp_path / raw["file"])
    raw["labels"] = [f"c{i}" for i in range(7)]
    raw["output"] = "logits"  # treat outputs as logits: still a distribution
    (tmp_path / "other.json").write_text(json.dumps(raw))
    classifier = EmotionClassifier(load_card(tmp_path / "other.json"))
    assert classifier.labels == tuple(f"c{i}" for i in range(7))
    probs = classifier.classify(np.full((48, 48), 128, np.uint8))
    assert probs.sum() == pytest.approx(1.0)


@requires_models
def test_card_that_disagrees_with_model_is_refused(tmp_path):
    raw = json.loads((MODELS / "fer_baseline.json").read_text())
    shutil.copy(MODELS / raw["file"], tmp_path / raw["file"])
    raw["input"]["size"] = [48, 48]
    (tmp_path / "bad.json").write_text(json.dumps(raw))
    with pytest.raises(ModelError, match="input"):
        EmotionClassifier(load_card(tmp_path / "bad.json"))
    raw["input"]["size"] = [64, 64]
    raw["labels"] = ["a", "b"]
    (tmp_path / "bad.json").write_text(json.dumps(raw))
    with pytest.raises(ModelError, match="7 values for 2 labels"):
        EmotionClassifier(load_card(tmp_path / "bad.json"))


@requires_models
def test_test_time_flip_averages_the_face_and_its_mirror(tmp_path):
    raw = json.loads((MODELS / "fer_baseline.json").read_text())
    shutil.copy(MODELS / raw["file"], tmp_path / raw["file"])
    (tmp_path / "plain.json").write_text(json.dumps(raw))
    (tmp_path / "flip.json").write_text(json.dumps({**raw, "test_time_flip": True}))
    plain = EmotionClassifier(load_card(tmp_path / "plain.json"))
    flip = EmotionClassifier(load_card(tmp_path / "flip.json"))
    face = cv2.imread(str(next(FIXTURE_FACES.glob("happy/*.jpg"))), cv2.IMREAD_GRAYSCALE)
    expected = (plain.classify(face) + plain.classify(face[:, ::-1])) / 2
    assert np.allclose(flip.classify(face), expected, atol=1e-6)
    symmetric = np.hstack([face[:, :24], face[:, :24][:, ::-1]])
    assert np.allclose(flip.classify(symmetric), plain.classify(symmetric), atol=1e-6)


def shipped_copy(tmp_path, **changes) -> EmotionClassifier:
    """The shipped emotion card (our int8 logits model) with some fields changed."""
    raw = json.loads((MODELS / "emotion_cnn_int8.json").read_text())
    shutil.copy(MODELS / raw["file"], tmp_path / raw["file"])
    raw.update(changes)
    path = tmp_path / f"card{len(list(tmp_path.glob('card*.json')))}.json"
    path.write_text(json.dumps(raw))
    return EmotionClassifier(load_card(path))


def test_flip_runs_both_views_in_one_invoke_with_the_same_result(tmp_path):
    """The mirror goes in the same invoke as a batch of two: cheaper than a second
    inference, and bit-for-bit what two invokes give."""
    plain = shipped_copy(tmp_path, test_time_flip=False)
    flip = shipped_copy(tmp_path, test_time_flip=True)
    assert flip.models[0].batch == 2 and plain.models[0].batch == 1
    for path in sorted(FIXTURE_FACES.glob("*/*.jpg"))[:10]:
        face = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        expected = (plain.classify(face) + plain.classify(face[:, ::-1])) / 2
        assert np.array_equal(flip.classify(face), expected)


def test_temperature_softens_without_changing_the_winner(tmp_path):
    plain = shipped_copy(tmp_path)
    warm = shipped_copy(tmp_path, temperature=2.0)
    face = cv2.imread(str(next(FIXTURE_FACES.glob("happy/*.jpg"))), cv2.IMREAD_GRAYSCALE)
    p, q = plain.classify(face), warm.classify(face)
    assert np.argmax(p) == np.argmax(q) and q.max() < p.max()
    assert q.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("temperature", [0.0, -1.0, 100.0, "2", True])
def test_a_bad_temperature_is_a_model_error(tmp_path, temperature):
    with pytest.raises(ModelError, match="temperature"):
        shipped_copy(tmp_path, temperature=temperature)


def test_per_crop_normalisation_ignores_exposure(tmp_path):
    """A per-crop card standardises each face by its own mean and deviation, so the
    same face darker or brighter (unclipped) gives the same input."""
    raw = json.loads((MODELS / "emotion_cnn_int8.json").read_text())
    raw["input"]["normalization"] = {"mean": 0.0, "std": 1.0, "per_crop": True, "min_std": 4.0}
    (tmp_path / "per_crop.json").write_text(json.dumps(raw))
    card = load_card(tmp_path / "per_crop.json")
    from appliance.vision.preprocess import prepare_face

    face = cv2.imread(str(next(FIXTURE_FACES.glob("sad/*.jpg"))), cv2.IMREAD_GRAYSCALE)
    dim = (face.astype(np.float32) * 0.5).astype(np.float32)
    x, y = prepare_face(face.astype(np.float32), card), prepare_face(dim, card)
    assert np.allclose(x, y, atol=1e-4)
    assert abs(float(x.mean())) < 1e-4 and float(x.std()) == pytest.approx(1.0, abs=1e-3)
    flat = prepare_face(np.full((48, 48), 77, np.uint8), card)
    assert np.isfinite(flat).all() and np.abs(flat).max() == 0.0  # no division blow-up
    raw["input"]["normalization"]["min_std"] = 0
    (tmp_path / "bad.json").write_text(json.dumps(raw))
    with pytest.raises(ModelError, match="min_std"):
        load_card(tmp_path / "bad.json")


def test_a_colour_cards_exposure_and_per_crop_statistics_are_the_whole_crops(tmp_path):
    """Over every channel together, as for a gray crop: one channel's mean would tint."""
    from appliance.vision.preprocess import prepare_face

    raw = json.loads((MODELS / "emotion_cnn_int8.json").read_text())
    raw["input"]["channels"] = 3
    raw["input"]["normalization"] = {
        "mean": 0.0, "std": 1.0, "per_crop": True, "min_std": 4.0, "exposure_mean": 120.0,
    }  # fmt: skip
    (tmp_path / "colour.json").write_text(json.dumps(raw))
    card = load_card(tmp_path / "colour.json")
    rng = np.random.default_rng(4)
    bgr = np.clip(rng.normal((30, 60, 90), 10, (48, 48, 3)), 0, 255).astype(np.uint8)
    x = prepare_face(bgr, card)
    assert x.shape == (48, 48, 3)
    assert abs(float(x.mean())) < 1e-4 and float(x.std()) == pytest.approx(1.0, abs=1e-3)
    rgb = x.reshape(-1, 3).mean(axis=0)  # channels keep their order and differences
    assert rgb[0] > rgb[1] > rgb[2]
    del raw["input"]["normalization"]["per_crop"], raw["input"]["normalization"]["min_std"]
    (tmp_path / "exposure.json").write_text(json.dumps(raw))
    lifted = prepare_face(bgr, load_card(tmp_path / "exposure.json"))
    assert float(lifted.mean()) == pytest.approx(120.0, abs=0.5)  # the crop's mean, not red's


def test_exposure_brings_a_dim_or_bright_face_to_the_cards_mean(tmp_path):
    """The v1 and VA cards ask for test-time exposure: a face from a dim room or against
    a window reaches the model at the brightness it was trained at."""
    from appliance.vision.preprocess import MAX_EXPOSURE_GAIN, prepare_face

    card = load_card(MODELS / "emotion_cnn_v1_int8.json")
    target = card.exposure_mean
    assert target is not None and card.per_crop_min_std is None
    face = cv2.imread(str(next(FIXTURE_FACES.glob("happy/*.jpg"))), cv2.IMREAD_GRAYSCALE)
    for factor in (0.4, 0.7):
        x = prepare_face((face * factor).astype(np.float32), card)
        assert float(x.mean()) * card.std + card.mean == pytest.approx(target, abs=0.5)
        assert np.allclose(x, prepare_face(face, card), atol=0.02)  # the same face again
    bright = np.clip(face.astype(np.float32) * 1.5, 0, 255)  # against a window
    assert float(prepare_face(bright, card).mean()) * card.std + card.mean == pytest.approx(
        target, abs=0.5
    )
    black = prepare_face(np.zeros((48, 48), np.uint8), card)
    assert np.isfinite(black).all() and np.all(black == (0 - card.mean) / card.std)
    dark = prepare_face(np.full((48, 48), 2, np.uint8), card)  # gain capped: no blow-up
    assert float(dark.max()) * card.std + card.mean == pytest.approx(2 * MAX_EXPOSURE_GAIN)


@pytest.mark.parametrize("value", [0, 255, -3, "131", True, float("nan")])
def test_a_bad_exposure_mean_is_a_model_error_naming_the_card(tmp_path, value):
    raw = json.loads((MODELS / "emotion_cnn_v1_int8.json").read_text())
    raw["input"]["normalization"]["exposure_mean"] = value
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ModelError, match="exposure_mean") as info:
        load_card(path)
    assert str(path) in str(info.value)
