"""Valence-arousal: the coordinates, the fallback, the shipped model and its card."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
from support import FER_VAL, FIXTURE_FACES, MODELS, ROOT, load_tool, requires_fer_val

from appliance.affect.va import NEGATIVE, POSITIVE, VA_COORDINATES, ProbabilityVA
from appliance.vision.model_card import load_card
from appliance.vision.runtime import ModelError
from appliance.vision.va_regressor import VARegressor

evaluate = load_tool("evaluate")
VA_CARD = MODELS / "va_mobilenetv3_int8.json"
LABELS = tuple(VA_COORDINATES)


def test_fallback_gives_the_coordinates_on_one_hot_inputs():
    to_va = ProbabilityVA(LABELS)
    for i, label in enumerate(LABELS):
        one_hot = np.eye(len(LABELS))[i]
        assert to_va(one_hot) == pytest.approx(VA_COORDINATES[label])


def test_fallback_is_the_probability_weighted_mean_in_any_label_order():
    order = ("happy", "sad", "angry", "neutral", "surprise", "fear", "disgust")
    to_va = ProbabilityVA(order)
    probs = np.array([0.5, 0.5, 0, 0, 0, 0, 0])
    expected = (np.array(VA_COORDINATES["happy"]) + VA_COORDINATES["sad"]) / 2
    assert to_va(probs) == pytest.approx(tuple(expected))


def test_fallback_refuses_labels_without_coordinates_and_bad_probabilities():
    with pytest.raises(ValueError, match="contempt"):
        ProbabilityVA(("happy", "contempt"))
    with pytest.raises(ValueError):
        ProbabilityVA(LABELS)(np.zeros(len(LABELS)))
    with pytest.raises(ValueError):
        ProbabilityVA(LABELS)([1.0, 0.0])


def test_coordinates_agree_with_the_valence_sign_classes():
    assert set(POSITIVE) | set(NEGATIVE) | {"neutral"} == set(LABELS)
    assert all(VA_COORDINATES[c][0] > 0 for c in POSITIVE)
    assert all(VA_COORDINATES[c][0] < 0 for c in NEGATIVE)
    assert VA_COORDINATES["neutral"] == (0.0, 0.0)
    assert all(-1 <= v <= 1 and -1 <= a <= 1 for v, a in VA_COORDINATES.values())


def test_ccc_is_agreement_not_correlation():
    x = np.linspace(-1, 1, 50)
    assert evaluate.ccc(x, x) == pytest.approx(1.0)
    assert evaluate.ccc(x, -x) == pytest.approx(-1.0)
    assert evaluate.ccc(x, x + 0.5) < 0.9  # correlated but shifted: penalised
    assert evaluate.ccc(np.zeros(5), np.zeros(5)) == 0.0


def test_va_scores_sign_accuracy_excludes_neutral():
    classes = ["happy", "sad", "neutral", "angry"]
    target = np.array([VA_COORDINATES[c] for c in classes])
    pred = np.array([[0.5, 0.2], [0.3, 0.0], [0.9, 0.9], [-0.1, 0.4]])
    report = evaluate.va_scores(pred, target, classes)
    assert report["valence_sign_n"] == 3
    assert report["valence_sign_accuracy"] == pytest.approx(2 / 3, abs=1e-4)
    assert report["n"] == 4
    assert report["rmse_valence"] == pytest.approx(
        np.sqrt(np.mean((pred[:, 0] - target[:, 0]) ** 2)), abs=1e-4
    )


def test_shipped_va_card_matches_its_file():
    card = load_card(VA_CARD)
    raw = json.loads(VA_CARD.read_text())
    data = card.model_path.read_bytes()
    assert card.task == "va" and raw["outputs"] == ["valence", "arousal"]
    assert hashlib.sha256(data).hexdigest() == card.sha256
    assert raw["file_size_bytes"] == len(data) <= 2 * 1024 * 1024
    assert raw["quantization"]["input"]["dtype"] == "int8"
    assert "NOT real valence-arousal" in raw["trained_against"]
    assert raw["coordinates"] == {k: list(v) for k, v in VA_COORDINATES.items()}
    regressor = VARegressor(card)
    assert regressor.model.input_shape == (1, 48, 48, 1)


def test_a_happy_face_is_positive_and_an_angry_one_negative():
    regressor = VARegressor(load_card(VA_CARD))

    def valences(label: str) -> list[float]:
        paths = sorted((FIXTURE_FACES / label).glob("*.jpg"))
        return [regressor.predict(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE))[0] for p in paths]

    happy, angry = valences("happy"), valences("angry")
    assert sum(v > 0 for v in happy) >= 4, happy  # 5 fixture faces each
    assert sum(v < 0 for v in angry) >= 4, angry
    assert np.mean(happy) > 0.2 > -0.2 > np.mean(angry)
    for v, a in [regressor.predict(np.full((48, 48), 128, np.uint8))]:
        assert -1 <= v <= 1 and -1 <= a <= 1


def test_va_regressor_refuses_an_emotion_card_and_a_mismatched_one(tmp_path):
    with pytest.raises(ModelError, match="'va'"):
        VARegressor(load_card(MODELS / "emotion_cnn_int8.json"))
    raw = json.loads(VA_CARD.read_text())
    shutil.copy(MODELS / raw["file"], tmp_path / raw["file"])
    raw["input"]["size"] = [64, 64]
    (tmp_path / "bad.json").write_text(json.dumps(raw))
    with pytest.raises(ModelError, match="card says input"):
        VARegressor(load_card(tmp_path / "bad.json"))


VA_ARGS = (f"--data={FIXTURE_FACES}", f"--model={VA_CARD}")


def test_evaluate_va_cli_json_contract_on_fixture_faces():
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools/evaluate.py"), "--task=va", "--json", *VA_ARGS],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(out.stdout)
    assert {
        "n",
        "ccc_valence",
        "ccc_arousal",
        "rmse_valence",
        "rmse_arousal",
        "valence_sign_accuracy",
    } <= set(report)
    assert report["n"] == 35 and report["valence_sign_n"] == 30


def test_evaluate_va_scores_the_emotion_fallback_too():
    report = evaluate.evaluate_va(MODELS / "emotion_ensemble_int8.json", FIXTURE_FACES, seed=0)
    assert report["n"] == 35 and report["valence_sign_accuracy"] > 0.6


@requires_fer_val
def test_evaluate_on_a_val_slice_reproduces_the_card():
    """600 random val faces: the card's full-val figures within sampling noise."""
    card = json.loads(VA_CARD.read_text())["metrics"]["fer2013_val"]
    report = evaluate.evaluate_va(VA_CARD, FER_VAL, seed=3, limit=600)
    assert report["n"] == 600
    # sign accuracy ~0.9 on ~500 signed faces: binomial sd ~1.3 points
    assert report["valence_sign_accuracy"] == pytest.approx(card["valence_sign_accuracy"], abs=0.04)
    assert report["ccc_valence"] == pytest.approx(card["ccc_valence"], abs=0.06)
    assert report["rmse_arousal"] == pytest.approx(card["rmse_arousal"], abs=0.04)
