"""Ensemble cards: several emotion models averaged, each with its own preprocessing."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import cv2
import numpy as np
import pytest
from support import FIXTURE_FACES, MODELS, load_tool

from appliance.config import load_config
from appliance.pipeline import build_classifier, build_va
from appliance.vision.emotion import EmotionClassifier
from appliance.vision.model_card import EnsembleCard, load_card, load_model_card, members_of
from appliance.vision.runtime import ModelError

ENSEMBLE = MODELS / "emotion_ensemble_int8.json"
STAGES = json.loads(ENSEMBLE.read_text())["cascade"]
V2, V1 = "emotion_cnn_int8.json", "emotion_cnn_v1_int8.json"
LABELS = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]


def faces(count: int = 12) -> list[np.ndarray]:
    paths = sorted(FIXTURE_FACES.glob("*/*.jpg"))[:count]
    return [cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) for path in paths]


def models_copy(tmp_path):
    """The shipped models folder (BlazeFace aside), to change a card or file in."""
    folder = tmp_path / "models"
    shutil.copytree(MODELS, folder, ignore=shutil.ignore_patterns("blazeface*", "fer_*"))
    return folder


def write_ensemble(folder, **changes):
    raw = json.loads(ENSEMBLE.read_text())
    raw.update(changes)
    raw = {k: v for k, v in raw.items() if v is not ...}
    path = folder / "mine.json"
    path.write_text(json.dumps(raw))
    return path


def flipped_members(card: EnsembleCard) -> list[EmotionClassifier]:
    """Each member alone, with the ensemble's flip, as the ensemble runs it."""
    return [
        EmotionClassifier(replace(member, extra={**member.extra, "test_time_flip": True}))
        for member in card.members
    ]


def member_views(card: EnsembleCard, face: np.ndarray) -> list[np.ndarray]:
    """Each member's calibrated probabilities for the face and its mirror image (2 x C),
    from the member alone."""
    views = []
    for member, classifier in zip(card.members, flipped_members(card), strict=True):
        z = classifier.logits(face) / member.extra.get("temperature", 1.0)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        views.append(z / z.sum(axis=1, keepdims=True))
    return views


def test_the_shipped_ensemble_is_a_cascade_of_single_views_calibrated_where_it_stops():
    """v2's face, v1's face, v1's mirror, v2's mirror, each alone in its invoke, until the
    running average is confident enough; the stage it stopped at calibrates it."""
    card = load_card(ENSEMBLE)
    assert isinstance(card, EnsembleCard) and len(card.members) == 2
    assert sum(card.weights) == pytest.approx(1.0)
    ensemble = EmotionClassifier(card)
    assert ensemble.test_time_flip and all(model.batch == 1 for model in ensemble.models)
    names = [member.path.name for member in card.members]
    stages = card.extra["cascade"]
    assert [(s["member"], s["view"]) for s in stages] == [
        ("emotion_cnn_int8.json", "face"),
        ("emotion_cnn_v1_int8.json", "face"),
        ("emotion_cnn_v1_int8.json", "mirror"),
        ("emotion_cnn_int8.json", "mirror"),
    ]
    stopped = []
    for face in faces(24):
        views = member_views(card, face)
        total, weight, run = np.zeros(len(LABELS)), 0.0, 0
        for stage in stages:
            member = names.index(stage["member"])
            share = card.weights[member] / 2  # a member's weight, shared by its two views
            total += share * views[member][int(stage["view"] == "mirror")]
            weight += share
            run += 1
            if total.max() >= stage.get("stop_confidence", 2.0) * weight:
                break
        expected = (total / weight) ** (1 / stage["temperature"])
        assert np.allclose(ensemble.classify(face), expected / expected.sum(), atol=1e-6)
        assert ensemble.stages_run == ensemble.views_run == run
        assert ensemble.members_run == len({s["member"] for s in stages[:run]})
        stopped.append(run)
        # the calibration input: the log of what classify gives (no card temperature)
        assert np.allclose(np.exp(ensemble.logits(face)[0]), ensemble.classify(face))
    assert len(set(stopped)) >= 3  # the fixture has easy faces and doubtful ones


def test_a_cascade_by_members_runs_each_pair_in_card_order(tmp_path):
    """stop_confidence instead of cascade: v2's pair first, v1's too where v2 is doubtful."""
    path = write_ensemble(models_copy(tmp_path), cascade=..., stop_confidence=0.7, temperature=0.9)
    card = load_card(path)
    ensemble = EmotionClassifier(card)
    assert all(model.batch == 2 for model in ensemble.models)  # face and mirror in one invoke
    members = flipped_members(card)
    ran = []
    for face in faces(24):
        first = members[0].classify(face)
        if first.max() >= 0.7:
            average, expected_run = first, 1
        else:
            average = sum(w * m.classify(face) for w, m in zip(card.weights, members, strict=True))
            expected_run = 2
        expected = average ** (1 / 0.9)
        assert np.allclose(ensemble.classify(face), expected / expected.sum(), atol=1e-9)
        assert ensemble.members_run == ensemble.stages_run == expected_run
        assert ensemble.views_run == 2 * expected_run
        ran.append(expected_run)
        logits = ensemble.logits(face)
        assert logits.shape == (1, len(LABELS))
        soft = np.exp(logits[0] / 0.9)
        assert np.allclose(soft / soft.sum(), ensemble.classify(face), atol=1e-9)
    assert set(ran) == {1, 2}


def test_without_a_cascade_every_member_runs_every_time(tmp_path):
    card = load_card(write_ensemble(models_copy(tmp_path), cascade=...))
    ensemble, members = EmotionClassifier(card), flipped_members(card)
    for face in faces(8):
        average = sum(w * m.classify(face) for w, m in zip(card.weights, members, strict=True))
        assert np.allclose(ensemble.classify(face), average, atol=1e-9)
        assert ensemble.members_run == 2 and ensemble.views_run == 4


def test_a_stop_confidence_of_one_stops_only_at_certainty(tmp_path):
    path = write_ensemble(models_copy(tmp_path), cascade=..., stop_confidence=1)
    every = EmotionClassifier(load_card(path))
    for face in faces(8):
        every.classify(face)
        assert every.members_run == 2


def test_a_cascade_may_leave_views_out(tmp_path):
    """Only the faces, no mirror images: two views at most, each a batch of one."""
    stages = [
        {"member": "emotion_cnn_int8.json", "view": "face", "stop_confidence": 0.6},
        {"member": "emotion_cnn_v1_int8.json", "view": "face"},
    ]
    ensemble = EmotionClassifier(load_card(write_ensemble(models_copy(tmp_path), cascade=stages)))
    for face in faces(12):
        ensemble.classify(face)
        assert ensemble.views_run == ensemble.stages_run in (1, 2)


@pytest.mark.parametrize(("key", "value"), [("stop_confidence", 0.7), ("cascade", STAGES)])
def test_a_cascade_on_a_single_model_card_is_refused(tmp_path, key, value):
    folder = models_copy(tmp_path)
    raw = json.loads((folder / "emotion_cnn_int8.json").read_text())
    path = folder / "single.json"
    path.write_text(json.dumps({**raw, key: value}))
    with pytest.raises(ModelError, match=f"{key} is for an ensemble") as info:
        EmotionClassifier(load_card(path))
    assert str(path) in str(info.value)


def test_members_with_different_preprocessing_each_get_their_own_input():
    ensemble = EmotionClassifier(load_card(ENSEMBLE))
    assert len(ensemble.input_keys) == 2  # v1: fixed normalisation, v2: per-crop
    face = faces(1)[0]
    inputs = ensemble.prepare(face)
    assert set(inputs) == set(ensemble.input_keys)
    first, second = inputs.values()
    assert not np.allclose(first, second)
    assert np.array_equal(ensemble.classify_prepared(inputs), ensemble.classify(face))


def test_a_subset_of_classes_is_renormalised_over_the_ensemble(tmp_path):
    full = EmotionClassifier(load_card(ENSEMBLE))
    five = ("angry", "happy", "sad", "surprise", "neutral")
    subset = EmotionClassifier(load_card(ENSEMBLE), classes=five)
    assert subset.labels == five
    for face in faces(5):
        p, q = full.classify(face), subset.classify(face)
        picked = p[[LABELS.index(name) for name in five]]
        assert np.allclose(q, picked / picked.sum(), atol=1e-9)


def test_the_default_config_runs_the_ensemble_and_the_va_model_beside_it(tmp_path):
    config = load_config(None, [f"storage.state_dir={tmp_path}"])
    assert config.models.emotion == "emotion_ensemble_int8"
    classifier = build_classifier(config, threads=1)
    assert classifier.card.name == "emotion_ensemble_int8" and classifier.labels == tuple(LABELS)
    assert build_va(config, threads=1).model is not None


def test_a_va_setting_that_names_an_ensemble_is_a_clear_reason_not_a_crash(tmp_path):
    config = load_config(None, ["models.va=emotion_ensemble_int8", f"storage.state_dir={tmp_path}"])
    choice = build_va(config, threads=1)
    assert choice.model is None and choice.failed
    assert "emotion_ensemble_int8.json" in choice.reason and "ensemble" in choice.reason
    with pytest.raises(ModelError, match="ensemble"):
        load_model_card(ENSEMBLE)


def test_a_damaged_member_file_is_refused_naming_it(tmp_path):
    folder = models_copy(tmp_path)
    member = members_of(load_card(folder / "emotion_ensemble_int8.json"))[0]
    data = bytearray(member.model_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    member.model_path.write_bytes(bytes(data))
    config = load_config(None, [f"models.dir={folder}", f"storage.state_dir={tmp_path}"])
    with pytest.raises(ModelError, match=member.model_path.name):
        build_classifier(config, threads=1)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"members": []}, "non-empty list"),
        ({"members": "emotion_cnn_int8.json"}, "non-empty list"),
        ({"members": [{"weight": 1}]}, r"members\[1\] needs a 'card'"),
        ({"members": [{"card": "absent.json"}]}, "absent.json"),
        ({"members": [{"card": "emotion_cnn_int8.json", "weight": 0}]}, "'weight'"),
        ({"members": [{"card": "emotion_cnn_int8.json", "weight": True}]}, "'weight'"),
        ({"members": [{"card": "emotion_cnn_int8.json", "weight": "1"}]}, "'weight'"),
        ({"members": [{"card": "emotion_cnn_int8.json", "weight": float("inf")}]}, "'weight'"),
        ({"members": [{"card": "emotion_cnn_int8.json", "weight": float("nan")}]}, "'weight'"),
        ({"members": [{"card": "emotion_cnn_int8.json"}] * 9}, "at most 8"),
        ({"members": [{"card": ""}]}, "unreadable"),
        ({"members": [{"card": "va_mobilenetv3_int8.json"}]}, "'va' model"),
        ({"members": [{"card": "emotion_ensemble_int8.json"}]}, "is an ensemble"),
        ({"members": [{"card": "mine.json"}]}, "this card itself"),
        ({"labels": ["happy", "sad"]}, "share the labels"),
        ({"task": "va"}, "only emotion models"),
        ({"name": ...}, "'name'"),
        ({"temperature": 0}, "temperature"),
        ({"cascade": ..., "stop_confidence": 0}, r"stop_confidence must be a number in \(0, 1\]"),
        ({"cascade": ..., "stop_confidence": 1.5}, "stop_confidence must be"),
        ({"cascade": ..., "stop_confidence": "high"}, "stop_confidence must be"),
        ({"cascade": ..., "stop_confidence": True}, "stop_confidence must be"),
        ({"cascade": ..., "stop_confidence": float("nan")}, "stop_confidence must be"),
        ({"stop_confidence": 0.7}, "stop_confidence or cascade, not both"),
        ({"cascade": []}, "cascade must be a non-empty list"),
        ({"cascade": "v2 first"}, "cascade must be a non-empty list"),
        ({"cascade": ["v2"]}, r"cascade\[1\] must be an object"),
        ({"cascade": [{**STAGES[0], "stop_confidance": 0.5}, *STAGES[1:]]}, "'stop_confidance'"),
        ({"cascade": [{"member": "absent.json"}, *STAGES[1:]]}, "'absent.json' is not one of"),
        ({"cascade": [{"member": 2}, *STAGES[1:]]}, "is not one of the members"),
        ({"cascade": [{"member": "a\x00b"}, *STAGES[1:]]}, "is not one of the members"),
        ({"cascade": [{"member": ["x"]}, *STAGES[1:]]}, "is not one of the members"),
        ({"cascade": [{"member": V2, "view": "side"}, *STAGES[1:]]}, "view must be 'face' or"),
        ({"test_time_flip": False}, "a mirror view needs"),
        ({"cascade": [STAGES[0], *STAGES]}, r"cascade\[2\]: emotion_cnn_int8.json face is alre"),
        ({"cascade": [*STAGES[:3], {**STAGES[3], "stop_confidence": 0.5}]}, "nothing left"),
        ({"cascade": [{**STAGES[0], "stop_confidence": 0}, *STAGES[1:]]}, "stop_confidence must"),
        ({"cascade": [{**STAGES[0], "stop_confidence": "hi"}, *STAGES[1:]]}, "stop_confidence"),
        ({"cascade": [{**STAGES[0], "temperature": 0}, *STAGES[1:]]}, r"cascade\[1\]: temper"),
        ({"cascade": [{**STAGES[0], "temperature": "warm"}, *STAGES[1:]]}, "temperature must"),
        ({"cascade": [{"member": V2, "view": "mirror"}]}, "emotion_cnn_v1_int8.json is in no"),
    ],
)
def test_ensemble_card_errors_name_the_file_and_what_is_wrong(tmp_path, changes, message):
    folder = models_copy(tmp_path)
    path = write_ensemble(folder, **changes)
    with pytest.raises(ModelError, match=message) as info:
        EmotionClassifier(load_card(path))
    assert str(path) in str(info.value)


def test_an_ensemble_can_be_a_distillation_teacher():
    """tools/train_emotion.py --teacher reads any emotion card: an ensemble's averaged,
    flip-on probabilities become the soft targets, in the training labels' order."""
    train = load_tool("train_emotion")
    images = np.stack([cv2.resize(face, (48, 48)) for face in faces(6)])
    soft = train.teacher_targets(load_card(ENSEMBLE), images, temperature=1.0)
    expected = np.stack([EmotionClassifier(load_card(ENSEMBLE)).classify(f) for f in images])
    order = [LABELS.index(label) for label in train.LABELS]
    np.testing.assert_allclose(soft, expected[:, order], atol=1e-5)


def test_the_per_model_benchmark_times_every_member_and_view():
    bench = load_tool("bench")
    result = bench.bench_model(str(ENSEMBLE), threads=1, runs=20)
    card = load_card(ENSEMBLE)
    assert result["model"] == "emotion_ensemble_int8" and result["models"] == 2
    assert result["batch"] == 1  # the cascade: one view per invoke
    assert result["xnnpack"]["partitions"] == 2 and not result["xnnpack"]["ops_outside"]
    assert result["file_size_bytes"] == sum(m.model_path.stat().st_size for m in card.members)
    assert result["macs"] == card.extra["macs"] and result["inference_ms"]["median"] > 0


def test_the_per_model_benchmark_times_a_cascade_on_real_faces():
    """A cascade's cost depends on the face: --faces cycles through real ones and says how
    many members and views ran on average (a random image would time one arbitrary path)."""
    bench = load_tool("bench")
    images = bench.face_images(str(FIXTURE_FACES), count=16)
    assert len(images) == 16
    result = bench.bench_model(str(ENSEMBLE), threads=1, runs=32, faces=images)
    assert result["faces"] == 16 and 1 < result["members_run_mean"] < 2
    assert 1 < result["views_run_mean"] < 4
    assert result["inference_mean_ms"] > 0
