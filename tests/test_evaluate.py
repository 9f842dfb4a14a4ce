"""tools/evaluate.py: the perturbations are what they claim, and the JSON contract holds."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from support import (
    FER_VAL,
    FIXTURE_FACES,
    MODELS,
    ROOT,
    load_tool,
    requires_fer_val,
    requires_models,
)

from appliance.vision.model_card import load_card, members_of

evaluate = load_tool("evaluate")


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (200, 200), dtype=np.uint8)


def test_gaussian_noise_has_the_stated_sigma():
    flat = np.full((400, 400), 128, np.uint8)  # mid-grey: clipping hardly matters
    noisy = evaluate.gaussian_noise(flat, 50.0, np.random.default_rng(1))
    diff = noisy.astype(np.float64) - 128
    assert diff.std() == pytest.approx(50.0, rel=0.03)
    assert abs(diff.mean()) < 1.0
    assert noisy.dtype == np.uint8


def test_gaussian_noise_is_clipped(image):
    noisy = evaluate.gaussian_noise(np.full_like(image, 250), 50.0, np.random.default_rng(2))
    assert noisy.max() == 255 and noisy.dtype == np.uint8


def test_impulse_noise_flips_the_stated_share_to_black_or_white():
    flat = np.full((500, 500), 128, np.uint8)
    noisy = evaluate.impulse_noise(flat, 0.05, np.random.default_rng(3))
    changed = noisy != 128
    assert changed.mean() == pytest.approx(0.05, abs=0.003)
    assert set(np.unique(noisy[changed])) == {0, 255}
    assert (noisy == 255).sum() == pytest.approx((noisy == 0).sum(), rel=0.1)


def test_illumination_scales_and_clips(image):
    bright = evaluate.illumination(image, 1.5)
    expected = np.clip(np.round(image * 1.5), 0, 255)
    assert np.array_equal(bright, expected.astype(np.uint8))
    assert evaluate.illumination(np.array([[200]], np.uint8), 1.5)[0, 0] == 255


def test_perturbations_are_reproducible(image):
    first = {k: f(image) for k, f in evaluate.perturbations(7).items()}
    second = {k: f(image) for k, f in evaluate.perturbations(7).items()}
    assert set(first) == {"gaussian50", "impulse0.05", "illum1.5"}
    assert all(np.array_equal(first[k], second[k]) for k in first)


def test_scores_from_a_known_confusion():
    confusion = np.array([[8, 2], [1, 9]])
    report = evaluate.scores(confusion, ("a", "b"))
    assert report["accuracy"] == 0.85 and report["n"] == 20
    assert report["per_class"] == {"a": 0.8, "b": 0.9}
    f1_a = 2 * 0.8 * (8 / 9) / (0.8 + 8 / 9)
    f1_b = 2 * 0.9 * (9 / 11) / (0.9 + 9 / 11)
    assert report["macro_f1"] == pytest.approx((f1_a + f1_b) / 2, abs=1e-4)


def test_macro_f1_counts_a_class_predicted_but_absent_from_the_truth():
    """truth [a, a, b, b], predicted [a, c, b, b]: F1 a 2/3, b 1, c 0 -> 0.5556 (sklearn's
    macro average over the labels in truth or prediction); class d, in neither, is out."""
    confusion = np.zeros((4, 4), dtype=np.int64)
    for truth, pred in [(0, 0), (0, 2), (1, 1), (1, 1)]:
        confusion[truth, pred] += 1
    report = evaluate.scores(confusion, ("a", "b", "c", "d"))
    assert report["macro_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3, abs=1e-4)
    assert report["accuracy"] == 0.75


@requires_models
def test_json_contract_and_plot(tmp_path):
    plot = tmp_path / "confusion.png"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "evaluate.py"),
            "--task",
            "emotion",
            "--data",
            str(FIXTURE_FACES),
            "--model",
            str(MODELS / "fer_baseline.json"),
            "--plot",
            str(plot),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"n", "accuracy", "macro_f1", "per_class", "confusion", "labels", "robustness"} <= set(
        report
    )
    assert report["n"] == 35 and len(report["confusion"]) == 7
    assert sum(map(sum, report["confusion"])) == 35
    assert set(report["robustness"]) == {"gaussian50", "impulse0.05", "illum1.5"}
    assert set(report["per_class"]) == set(report["labels"])
    picture = cv2.imread(str(plot))
    assert picture is not None and picture.shape[0] > 400 and picture.shape[1] > 400


def test_unknown_class_folder_is_a_clear_error(tmp_path):
    (tmp_path / "bored").mkdir()
    with pytest.raises(SystemExit, match="bored"):
        evaluate.list_images(tmp_path, ("happy", "sad"))


EMOTION_CARDS = sorted(
    p for p in MODELS.glob("*.json") if json.loads(p.read_text()).get("task") == "emotion"
)


@requires_fer_val
@pytest.mark.parametrize("card", EMOTION_CARDS, ids=lambda p: p.stem)
def test_card_accuracy_is_reproduced_on_val(card):
    """What a card claims for FER2013 val is what evaluate.py measures, to the image."""
    claimed = json.loads(card.read_text())["metrics"]["fer2013_val"]
    if not all(m.model_path.is_file() for m in members_of(load_card(card))):  # ensembles too
        pytest.skip(f"{card.stem}: model file absent (run tools/fetch_models.py)")
    report, _, _ = evaluate.evaluate_emotion(card, FER_VAL, robustness=False, seed=0)
    assert report["n"] == claimed["n"]
    assert report["accuracy"] == pytest.approx(claimed["accuracy"], abs=0.002)
    assert report["macro_f1"] == pytest.approx(claimed["macro_f1"], abs=0.003)


@requires_models
@requires_fer_val
def test_robustness_on_a_val_slice_degrades_but_stays_above_chance():
    report, _, _ = evaluate.evaluate_emotion(
        MODELS / "fer_baseline.json", FER_VAL, robustness=True, seed=0, limit=300
    )
    assert report["n"] == 300
    for name, accuracy in report["robustness"].items():
        assert 1 / 7 - 0.05 < accuracy <= report["accuracy"] + 0.03, name


def test_ece_of_a_calibrated_and_an_overconfident_model():
    rng = np.random.default_rng(1)
    n = 20000
    confidence = rng.uniform(0.4, 1.0, n)
    truth = np.zeros(n, dtype=int)
    correct = rng.random(n) < confidence  # right exactly as often as it says
    predicted = np.where(correct, 0, 1)
    probs = np.zeros((n, 2))
    probs[np.arange(n), predicted] = confidence
    probs[np.arange(n), 1 - predicted] = 1 - confidence
    assert evaluate.expected_calibration_error(probs, truth) < 0.02
    sharp = probs.copy()
    sharp[np.arange(n), predicted] = 1.0  # says 100% but is right ~70% of the time
    sharp[np.arange(n), 1 - predicted] = 0.0
    assert evaluate.expected_calibration_error(sharp, truth) > 0.25


def test_temperature_scaling_recovers_a_known_temperature():
    """Labels drawn from softmax(z / 2) and logits z: the fitted temperature is ~2, and
    both views of a flip pair are combined as the classifier combines them."""
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 3, (6000, 1, 5)).repeat(2, axis=1)
    probs = evaluate.view_probabilities(logits, 2.0)
    truth = np.array([rng.choice(5, p=p) for p in probs])
    assert evaluate.fit_temperature(logits, truth) == pytest.approx(2.0, rel=0.1)
    report = evaluate.calibration(logits, truth)
    assert report["temperature"] == pytest.approx(2.0, rel=0.1)
    assert report["ece_after"] < report["ece_before"] and report["nll_after"] < report["nll_before"]


def test_stage_calibration_recovers_a_temperature_per_stage():
    """Faces that stopped at stage 0 were drawn from softmax(z / 0.5), at stage 1 from
    softmax(z / 2): one temperature each, and both halves better calibrated after."""
    rng = np.random.default_rng(3)
    n = 8000
    stages = rng.integers(0, 2, n)
    logits = rng.normal(0, 2, (n, 5))
    truths = {0: 0.5, 1: 2.0}
    truth = np.array(
        [rng.choice(5, p=evaluate.view_probabilities(z[None, None], truths[k])[0])
         for z, k in zip(logits, stages, strict=True)]
    )  # fmt: skip
    probs = evaluate.view_probabilities(logits[:, None], 1.0)
    report = evaluate.stage_calibration(probs, stages, truth)
    assert report["stage_temperatures"] == [
        pytest.approx(0.5, rel=0.1),
        pytest.approx(2.0, rel=0.1),
    ]
    assert report["faces_per_stage"] == np.bincount(stages).tolist()
    assert report["ece_after"] < report["ece_before"] and report["nll_after"] < report["nll_before"]


@requires_models
def test_calibrate_fits_the_shipped_cascade_per_stage(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "evaluate.py"), "--data", str(FIXTURE_FACES),
         "--model", str(MODELS / "emotion_ensemble_int8.json"), "--calibrate", "--json"],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert len(report["stage_temperatures"]) == 4 and sum(report["faces_per_stage"]) == 35
    assert all(0.25 <= t <= 8 for t in report["stage_temperatures"])


def test_realistic_perturbations_are_what_they_say(image):
    realistic = evaluate.realistic_perturbations(0)
    assert set(realistic) == {
        "gaussian_sigma10", "gaussian_sigma20", "gaussian_sigma30", "dim0.4",
        "dim0.4_sigma10", "blur1.5", "face24px",
    }  # fmt: skip
    for name, perturb in realistic.items():
        out = perturb(image)
        assert out.shape == image.shape and out.dtype == np.uint8, name
    noisy = realistic["gaussian_sigma20"](np.full((400, 400), 128, np.uint8))
    assert noisy.std() == pytest.approx(20, rel=0.05)
    assert realistic["dim0.4"](image).mean() == pytest.approx(image.mean() * 0.4, rel=0.01)
    small = realistic["face24px"](image)  # detail finer than 24 px is gone
    assert small.std() < image.std() / 2
    assert np.array_equal(realistic["face24px"](image), small)
    again = evaluate.realistic_perturbations(0)["gaussian_sigma10"](image)
    assert np.array_equal(again, evaluate.realistic_perturbations(0)["gaussian_sigma10"](image))
