"""tools/train_va.py: targets, the real-annotation CSV, and with TensorFlow a real run."""

from __future__ import annotations

import hashlib
import json
import shutil

import cv2
import numpy as np
import pytest
from support import (
    FIXTURE_FACES,
    MODELS,
    assert_a_crash_in_scoring_leaves_out_untouched,
    load_tool,
    requires_tensorflow,
)

from appliance.affect.va import VA_COORDINATES

train_emotion = load_tool("train_emotion")
train = load_tool("train_va")


@pytest.fixture(autouse=True)
def eager_train_steps(request):
    """Keras traces MobileNetV3's train step into a graph at the start of every fit: ~25 s
    of a two-step smoke run, against ~4 s for the steps run eagerly. These tests check
    what a run reads and writes, not graph execution (the emotion trainer's tests, and
    every real run, use graphs); the TFLite export traces its own graph either way."""
    if request.node.get_closest_marker("training") is None:
        yield
        return
    import tensorflow as tf

    tf.config.run_functions_eagerly(True)
    yield
    tf.config.run_functions_eagerly(False)


def fixture_data(root):
    for split in ("train", "val"):
        for label in train_emotion.LABELS:
            shutil.copytree(FIXTURE_FACES / label, root / split / label)
    return train_emotion.load_data(root)


def test_derived_targets_without_teacher_are_the_class_coordinates(tmp_path):
    sets = train.derived_targets(fixture_data(tmp_path), None, 0.5)
    for split in ("train", "val"):
        expected = [VA_COORDINATES[c] for c in sets[split].classes]
        assert sets[split].targets == pytest.approx(np.array(expected, np.float32))
    assert sets["val"].weights.tolist() == [1.0] * 35


def test_derived_targets_with_a_class_missing_from_train_have_finite_weights(tmp_path):
    data = fixture_data(tmp_path)
    keep = data["train"].labels != train_emotion.LABELS.index("disgust")
    data["train"] = train_emotion.Dataset(data["train"].images[keep], data["train"].labels[keep])
    sets = train.derived_targets(data, None, 0.5)
    assert np.isfinite(sets["train"].weights).all()
    assert sets["train"].weights.mean() == pytest.approx(1.0)


def test_a_train_set_smaller_than_one_batch_stops_before_training(tmp_path):
    fixture_data(tmp_path / "fer")
    args = ["--data", str(tmp_path / "fer"), "--work", str(tmp_path / "w")]
    args += ["--out", str(tmp_path / "o"), "--distill", "0"]
    with pytest.raises(SystemExit, match=r"8 training faces.*one batch of 16"):
        train.main([*args, "--limit", "8", "--batch-size", "16"])


def test_teacher_mixing_moves_train_targets_but_never_val(tmp_path):
    data = fixture_data(tmp_path)
    plain = train.derived_targets(data, None, 0.5)
    mixed = train.derived_targets(data, MODELS / "emotion_cnn_int8.json", 0.5)
    assert not np.allclose(plain["train"].targets, mixed["train"].targets)
    assert np.array_equal(plain["val"].targets, mixed["val"].targets)
    assert (np.abs(mixed["train"].targets) <= 1).all()


def test_labels_csv_reads_splits_and_reports_bad_rows(tmp_path, caplog):
    face = cv2.imread(str(next(FIXTURE_FACES.glob("happy/*.jpg"))), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(tmp_path / "a.png"), cv2.resize(face, (96, 96)))
    rows = [
        "path,valence,arousal,split",
        "a.png,0.5,0.1,train",
        "a.png,-0.25,0.3,val",
        "missing.png,0.1,0.1,train",  # line 4: unreadable
        "a.png,1.5,0.0,train",  # line 5: out of range
        "a.png,abc,0.0,train",  # line 6: not a number
    ]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    sets = train.load_labels_csv(tmp_path / "labels.csv", seed=0)
    assert sets["train"].targets.tolist() == [[0.5, pytest.approx(0.1)]]
    assert sets["val"].targets.tolist() == [[-0.25, pytest.approx(0.3)]]
    assert sets["train"].images.shape == (1, 48, 48)
    for line in (4, 5, 6):
        assert f"labels.csv:{line}" in caplog.text


def test_labels_csv_never_reads_test_rows_and_refuses_unknown_splits(tmp_path, caplog):
    """A `test` row used to fall into the unsplit pool, and 90% of those were trained on."""
    face = cv2.imread(str(next(FIXTURE_FACES.glob("happy/*.jpg"))), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(tmp_path / "a.png"), face)
    rows = [
        "path,valence,arousal,split",
        "a.png,0.5,0.1,Train",
        "a.png,0.4,0.1, TRAIN ",
        "a.png,-0.25,0.3,validation",
        "a.png,-0.5,0.3,VAL",
        *[f"secret{i}.png,0.9,0.9,test" for i in range(20)],  # held out: never opened
        *[f"secret{i}.png,0.9,0.9,Test" for i in range(20)],
    ]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    sets = train.load_labels_csv(tmp_path / "labels.csv", seed=0)
    assert sets["train"].targets[:, 0].tolist() == pytest.approx([0.5, 0.4])
    assert sets["val"].targets[:, 0].tolist() == pytest.approx([-0.25, -0.5])
    assert "secret" not in caplog.text
    (tmp_path / "bad.csv").write_text("\n".join([*rows[:3], "a.png,0.1,0.1,holdout"]) + "\n")
    with pytest.raises(SystemExit, match=r"bad\.csv:4: split 'holdout'.*train, val"):
        train.load_labels_csv(tmp_path / "bad.csv", seed=0)


def test_labels_csv_without_split_holds_out_a_tenth_and_names_missing_columns(tmp_path):
    face = cv2.imread(str(next(FIXTURE_FACES.glob("sad/*.jpg"))), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(tmp_path / "a.png"), face)
    lines = ["path,valence,arousal"] + [f"a.png,{i / 40:.3f},0" for i in range(20)]
    (tmp_path / "l.csv").write_text("\n".join(lines) + "\n")
    sets = train.load_labels_csv(tmp_path / "l.csv", seed=0)
    assert (len(sets["train"]), len(sets["val"])) == (18, 2)
    (tmp_path / "bad.csv").write_text("file,valence\na.png,0.1\n")
    with pytest.raises(SystemExit, match="arousal, path"):
        train.load_labels_csv(tmp_path / "bad.csv", seed=0)


def test_a_missing_labels_csv_stops_with_a_message(tmp_path):
    with pytest.raises(SystemExit, match=r"missing\.csv: no such file"):
        train.load_labels_csv(tmp_path / "missing.csv", seed=0)


def test_card_text_says_fer2013_only_for_fer2013_and_the_export_note_only_when_exporting(
    tmp_path,
):
    (tmp_path / "w.h5").write_bytes(b"")
    init = str(tmp_path / "w.h5")
    labelled = train.parse_args(["--labels", "affect.csv", "--export-only", "--init", init])
    text = train.provenance(labelled, n_train=90, n_val=10)
    assert "FER2013" not in json.dumps(text) and "PrivateTest" not in json.dumps(text)
    assert "affect.csv" in text["data"] and "90 train, 10 val" in text["data"]
    assert "affect.csv" in text["licence"]
    assert "class weights" not in text["loss"]
    assert "w.h5" in text["note"] and "after fixing" not in text["note"]
    fer2013 = train.provenance(train.parse_args([]), n_train=100, n_val=20)
    assert "PublicTest" in fer2013["data"] and "FER2013" in fer2013["licence"]
    assert "class weights" in fer2013["loss"] and "training-only head" in fer2013["loss"]
    assert "note" not in fer2013


def test_init_from_the_runs_own_checkpoint_is_copied_and_hashed_before_training(
    tmp_path, monkeypatch
):
    """`--init .cache/train_va/best.weights.h5` (the documented example) is the file
    ModelCheckpoint rewrites after epoch 1: the start weights were lost and the card,
    hashing --init after training, recorded the new weights' sha256 as the start."""
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    (work / "best.weights.h5").write_bytes(b"original weights")
    args = train.parse_args(["--work", str(work), "--init", "work/best.weights.h5"])
    train.pin_init(args)
    (work / "best.weights.h5").write_bytes(b"epoch 1 weights")  # the checkpoint, later
    assert args.init == work / "init.weights.h5"
    assert args.init.read_bytes() == b"original weights"
    record = train.init_record(args)["init"]
    assert record.startswith("work/best.weights.h5 (sha256 ")
    assert hashlib.sha256(b"original weights").hexdigest()[:16] in record
    assert "init.weights.h5" in record and "fine-tuning" in record
    # weights from elsewhere are used in place, and --export-only writes no checkpoint
    (tmp_path / "other.weights.h5").write_bytes(b"other")
    args = train.parse_args(["--work", str(work), "--init", "other.weights.h5"])
    train.pin_init(args)
    assert str(args.init) == "other.weights.h5"
    assert train.init_record(args)["init"] == (
        f"other.weights.h5 (sha256 {hashlib.sha256(b'other').hexdigest()[:16]}): "
        "training started from these weights (fine-tuning)"
    )
    init = ["--init", "work/best.weights.h5", "--export-only"]
    args = train.parse_args(["--work", str(work), *init])
    train.pin_init(args)
    assert str(args.init) == "work/best.weights.h5"
    assert "the weights exported" in train.init_record(args)["init"]
    assert train.init_record(train.parse_args([])) == {}


def test_labels_run_from_fer2013_weights_keeps_fer2013_terms_in_the_licence(tmp_path):
    (tmp_path / "w.h5").write_bytes(b"")
    args = train.parse_args(["--labels", "affect.csv", "--init", str(tmp_path / "w.h5")])
    args.init_fer2013 = True  # load_init found the FER2013 run's class head in the file
    licence = train.provenance(args, n_train=90, n_val=10)["licence"]
    assert "affect.csv" in licence and "FER2013" in licence and "research use" in licence
    assert "fine-tuned from" in licence and "w.h5" in licence
    args.init_fer2013 = False  # no class head: where the weights came from is not known
    licence = train.provenance(args, n_train=90, n_val=10)["licence"]
    assert "FER2013" not in licence and "those weights were trained on applies" in licence


def test_init_must_exist_and_export_only_needs_it(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.main(["--init", str(tmp_path / "missing.weights.h5"), "--data", str(tmp_path)])
    assert "--init" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main(["--export-only", "--data", str(tmp_path)])
    assert "--export-only needs --init" in capsys.readouterr().err


def test_export_only_reads_a_history_that_ended_in_nan(tmp_path):
    """--export-only --init best.weights.h5 was refused because history.csv's last row
    was NaN, though the checkpoint held the best finite epoch."""
    (tmp_path / "history.csv").write_text(
        "epoch,loss,val_loss,val_va_loss\n0,0.9,0.6,0.5\n1,0.7,0.5,0.4\n2,nan,nan,nan\n"
    )
    history = train.read_history(tmp_path / "history.csv")
    assert history["val_va_loss"][:2] == [0.5, 0.4] and np.isnan(history["val_va_loss"][2])
    best, diverged = train_emotion.best_epoch(history, "val_va_loss", "min", ("loss",))
    assert best == 2 and "diverged at epoch 3" in diverged


@requires_tensorflow
def test_init_weights_are_where_training_starts(tmp_path):
    """--init was read only by --export-only; a training run silently started afresh."""
    small = ["--alpha", "0.35", "--upsample", "32", "--batch-size", "16", "--epochs", "1"]
    init = tmp_path / "init.weights.h5"
    model = train.build_model(0.35, 32, 0.2, aux_classes=len(train_emotion.LABELS))
    kernel = model.get_layer("va").kernel
    kernel.assign(np.full(kernel.shape, 0.0123, np.float32))
    model.save_weights(init)
    args = train.parse_args(
        [*small, "--warmup", "0", "--lr", "0", "--work", str(tmp_path), "--init", str(init)]
    )
    sets = train.derived_targets(fixture_data(tmp_path / "fer"), None, 0.5)
    trained, *_ = train.train(args, sets)
    np.testing.assert_allclose(trained.get_layer("va").kernel.numpy(), 0.0123)  # lr 0


@requires_tensorflow
def test_export_only_exports_the_checkpoint_of_a_run_that_ended_in_nan(tmp_path):
    model = train.build_model(0.35, 32, 0.2, aux_classes=len(train_emotion.LABELS))
    model.save_weights(tmp_path / "best.weights.h5")
    (tmp_path / "history.csv").write_text(
        "epoch,loss,val_loss,val_va_loss\n0,0.9,0.6,0.5\n1,0.7,0.5,0.4\n2,nan,nan,nan\n"
    )
    small = ["--alpha", "0.35", "--upsample", "32", "--work", str(tmp_path), "--export-only"]
    args = train.parse_args([*small, "--init", str(tmp_path / "best.weights.h5")])
    _, best, epochs, diverged = train.reload(args)
    assert (best, epochs) == (2, 3) and "diverged at epoch 3" in diverged
    kernel = model.get_layer("va").kernel
    kernel.assign(np.full(kernel.shape, np.nan, np.float32))
    model.save_weights(tmp_path / "nan.weights.h5")
    args = train.parse_args([*small, "--init", str(tmp_path / "nan.weights.h5")])
    with pytest.raises(SystemExit, match=r"nan\.weights\.h5: 1 of .* NaN/inf.*nothing exported"):
        train.reload(args)


@requires_tensorflow
def test_init_from_a_fer2013_run_loads_into_a_labels_model_and_back(tmp_path):
    """The default run's weights have a training-only class head; Keras matched the
    layers by position and refused them for a --labels model (no head)."""
    fer_run = train.build_model(0.35, 32, 0.2, aux_classes=len(train_emotion.LABELS))
    kernel = fer_run.get_layer("va").kernel
    kernel.assign(np.full(kernel.shape, 0.0123, np.float32))
    path = tmp_path / "fer.weights.h5"
    fer_run.save_weights(path)
    labels_run = train.build_model(0.35, 32, 0.2)
    assert train.load_init(labels_run, path) is True  # it came from a FER2013 run
    expected = train.va_head(fer_run).get_weights()
    for got, want in zip(labels_run.get_weights(), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    labels_run.save_weights(path)
    again = train.build_model(0.35, 32, 0.2, aux_classes=len(train_emotion.LABELS))
    assert train.load_init(again, path) is False
    np.testing.assert_allclose(again.get_layer("va").kernel.numpy(), 0.0123)
    with pytest.raises(SystemExit, match=r"--alpha and --upsample must match"):
        train.load_init(train.build_model(0.5, 32, 0.2), path)


@requires_tensorflow
def test_a_run_that_fails_after_calibration_leaves_out_untouched(tmp_path, monkeypatch):
    """The int8 candidates were written over --out's model before the card: a crash
    left a new model beside the old card's sha256, and the daemon refused the VA model.
    Conversion and calibration are the point here, not training (the real run below
    trains): --export-only from freshly built weights saves the minute fit() takes."""
    fixture_data(tmp_path / "fer")
    out, work = tmp_path / "models", tmp_path / "work"
    work.mkdir()
    model = train.build_model(0.35, 32, 0.2, aux_classes=len(train_emotion.LABELS))
    model.save_weights(work / "run.weights.h5")
    (work / "history.csv").write_text("epoch,loss,val_loss,val_va_loss\n0,0.9,0.6,0.5\n")
    small = ["--alpha", "0.35", "--upsample", "32", "--distill", "0", "--export-only"]
    paths = ["--data", str(tmp_path / "fer"), "--out", str(out), "--work", str(work)]
    argv = [*paths, *small, "--init", str(work / "run.weights.h5")]
    assert_a_crash_in_scoring_leaves_out_untouched(
        train, monkeypatch, out, "va_mobilenetv3_int8", argv
    )


@requires_tensorflow
def test_a_short_real_training_run_writes_a_consistent_card(tmp_path):
    fixture_data(tmp_path / "fer")
    out, work = tmp_path / "models", tmp_path / "work"
    small = ["--epochs", "1", "--warmup", "0", "--batch-size", "16", "--alpha", "0.35"]
    paths = ["--data", str(tmp_path / "fer"), "--out", str(out), "--work", str(work)]
    code = train.main([*paths, *small, "--upsample", "64", "--exposure-mean", "131.2"])
    assert code == 0
    card = json.loads((out / "va_mobilenetv3_int8.json").read_text())
    assert card["input"]["normalization"] == {"mean": 127.5, "std": 127.5, "exposure_mean": 131.2}
    model = out / card["file"]
    assert card["task"] == "va" and card["outputs"] == ["valence", "arousal"]
    assert card["file_size_bytes"] == model.stat().st_size
    assert card["quantization"]["output"]["dtype"] == "int8"
    metrics = card["metrics"]["fer2013_val"]
    assert metrics["n"] == 35 and metrics["valence_sign_n"] == 30
    assert "fallback_from_emotion_probabilities" in metrics
    assert {"params", "macs", "training", "architecture", "coordinates_source"} <= set(card)


@pytest.mark.parametrize("value", ["0", "255", "-5", "bright"])
def test_a_bad_exposure_mean_stops_the_trainers_before_any_training(value, capsys):
    """Caught at the command line, not by the card's check after hours of training."""
    for trainer in (train_emotion.main, train.parse_args):
        with pytest.raises(SystemExit) as info:
            trainer(["--exposure-mean", value])
        assert info.value.code == 2
        assert "--exposure-mean" in capsys.readouterr().err
