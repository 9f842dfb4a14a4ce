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
