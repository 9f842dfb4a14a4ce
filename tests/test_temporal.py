"""tools/train_temporal.py (issue 23's LSTM question): the labelled clips, the measures,
and, in the training stage, a tiny end-to-end run that trains, converts to int8 and
writes the comparison."""

from __future__ import annotations

import json

import numpy as np
import pytest
from support import FER_VAL, load_tool, requires_fer_val, requires_tensorflow

from appliance.affect.smoothing import UNCERTAIN
from appliance.config.schema import SmoothingConfig

temporal = load_tool("train_temporal")
LABELS = ["happy", "sad", "neutral"]


def one_hot_faces(k: int, faces: int = 4, variants: int = 3, p: float = 0.9) -> np.ndarray:
    probs = np.full((faces, variants, len(LABELS)), (1 - p) / (len(LABELS) - 1), np.float32)
    probs[:, :, k] = p
    return probs


def test_clips_are_labelled_segments_of_faces_of_that_class():
    by_class = [one_hot_faces(k) for k in range(len(LABELS))]
    clips = temporal.make_clips(by_class, 5, 30.0, np.random.default_rng(0), fps=5)
    assert clips.probs.shape == (5, 150, 3) and clips.truth.shape == (5, 150)
    assert (clips.probs.argmax(axis=2) == clips.truth).all()  # each frame from its class
    for truth in clips.truth:
        changes = np.nonzero(np.diff(truth))[0] + 1
        lengths = np.diff([0, *changes, len(truth)])
        assert (lengths[:-1] >= 10).all()  # segments of 2 s and more (the last may be cut)


def test_windows_see_the_frames_before_each_frame():
    probs = np.arange(2 * 4 * 1, dtype=np.float32).reshape(2, 4, 1)
    x = temporal.windows(probs, 3)
    assert x.shape == (8, 3, 1)
    assert x[0, :, 0].tolist() == [0, 0, 0]  # the first frame repeated before the start
    assert x[3, :, 0].tolist() == [1, 2, 3]
    assert x[4, :, 0].tolist() == [4, 4, 4]  # the next clip starts afresh


def test_measures_accuracy_flips_and_lag():
    fps = temporal.FPS
    truth = np.array([[0] * 20 + [1] * 20 + [0] * 20])  # changes at 4 s and 8 s
    names = np.asarray(LABELS, dtype=object)
    late = names[truth].copy()
    late[0, 20:25] = "happy"  # the change to sad seen 1 s late
    late[0, 40:] = "sad"  # the change back never seen
    m = temporal.measure(late, truth, LABELS, fps)
    start = round(temporal.WARMUP_S * fps)
    assert m["accuracy"] == pytest.approx((60 - start - 5 - 20) / (60 - start))
    assert m["lag_median_s"] == pytest.approx(1.0) and m["missed_changes"] == 1
    assert m["changes"] == 2 and m["flips_per_min"] == pytest.approx(1 / ((60 - start) / fps / 60))
    flicker = names[truth].copy()
    flicker[0, 30] = UNCERTAIN
    m = temporal.measure(flicker, truth, LABELS, fps)
    assert m["uncertain_share"] == pytest.approx(1 / (60 - start)) and m["lag_median_s"] == 0.0


def test_the_filter_and_the_hold_on_clean_clips():
    by_class = [one_hot_faces(k) for k in range(len(LABELS))]
    clips = temporal.make_clips(by_class, 3, 30.0, np.random.default_rng(1))
    settings = SmoothingConfig()
    shipped = temporal.measure(temporal.filter_labels(clips, LABELS, settings), clips.truth, LABELS)
    held = temporal.held_labels(clips.probs, LABELS, settings)
    held_m = temporal.measure(held, clips.truth, LABELS)
    assert shipped["missed_changes"] == held_m["missed_changes"] == 0
    # clean per-frame input: the hold delays each change by hold_s (to the next frame),
    # the filter by as much or more
    step = 1 / temporal.FPS
    assert settings.hold_s <= held_m["lag_median_s"] <= settings.hold_s + step + 1e-9
    assert shipped["lag_median_s"] >= held_m["lag_median_s"]
    assert shipped["flips_per_min"] == pytest.approx(held_m["true_changes_per_min"])
    assert temporal.beats(held_m, shipped) == (held_m["accuracy"] > shipped["accuracy"])


@requires_fer_val
@requires_tensorflow
def test_a_tiny_training_run_writes_the_int8_model_and_the_comparison(tmp_path):
    out = tmp_path / "temporal"
    assert (
        temporal.main(
            [
                "--data",
                str(FER_VAL.parent),
                "--out",
                str(out),
                "--train-split",
                "val-half",
                "--train-faces",
                "8",
                "--variants",
                "2",
                "--train-clips",
                "8",
                "--test-clips",
                "4",
                "--seconds",
                "20",
                "--epochs",
                "1",
            ]
        )
        == 0
    )
    report = json.loads((out / "comparison.json").read_text())
    assert (out / "temporal_lstm_int8.tflite").stat().st_size == report["lstm"]["tflite_bytes"]
    names = list(report["results"])
    assert names[0].startswith("CNN top class") and names[1].startswith("exponential filter")
    assert any("int8 TFLite" in n for n in names) and "| frame accuracy |" in report["table"]
    assert isinstance(report["lstm_beats_filter"], bool)
