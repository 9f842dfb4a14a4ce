"""tools/train_emotion.py: data loading (both formats) and, with TensorFlow, a real run."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from support import (
    FIXTURE_FACES,
    MODELS,
    assert_a_crash_in_scoring_leaves_out_untouched,
    load_tool,
    requires_tensorflow,
)

train = load_tool("train_emotion")
training = load_tool("training")  # the code both trainers share (tools/training.py)


def write_csv(path, rows) -> None:
    path.write_text("emotion,pixels,Usage\n" + "".join(f"{e},{p},{u}\n" for e, p, u in rows))


def pixels(value: int) -> str:
    return " ".join([str(value)] * 48 * 48)


def test_csv_maps_classic_labels_and_splits_and_never_reads_private_test(tmp_path):
    csv_path = tmp_path / "fer2013.csv"
    write_csv(
        csv_path,
        [
            (0, pixels(10), "Training"),  # angry
            (6, pixels(20), "Training"),  # neutral in the CSV's numbering
            (4, pixels(30), "PublicTest"),  # sad
            (3, pixels(40), "PrivateTest"),  # held back: must be ignored
        ],
    )
    data = train.load_data(csv_path)
    assert [train.LABELS[i] for i in data["train"].labels] == ["angry", "neutral"]
    assert [train.LABELS[i] for i in data["val"].labels] == ["sad"]
    assert data["train"].images.shape == (2, 48, 48)
    assert data["val"].images[0, 0, 0] == 30


def test_csv_bad_rows_are_reported_with_line_numbers_and_skipped(tmp_path, caplog):
    csv_path = tmp_path / "fer2013.csv"
    write_csv(
        csv_path,
        [
            (3, pixels(40), "Training"),
            (3, "1 2 3", "Training"),  # wrong pixel count
            (9, pixels(40), "Training"),  # no such emotion
            (5, pixels(50), "PublicTest"),
        ],
    )
    data = train.load_data(csv_path)
    assert len(data["train"]) == 1 and len(data["val"]) == 1
    assert "fer2013.csv:3" in caplog.text and "fer2013.csv:4" in caplog.text


def fixture_split_folders(tmp_path):
    """The fixture faces as both train and val, in the Kaggle layout the script reads."""
    data = tmp_path / "fer"
    for split in ("train", "val"):
        for label in train.LABELS:
            shutil.copytree(FIXTURE_FACES / label, data / split / label)
    return data


def test_folder_layout(tmp_path):
    data = train.load_data(fixture_split_folders(tmp_path))
    assert len(data["train"]) == 35 and data["train"].images.shape[1:] == (48, 48)
    assert np.bincount(data["val"].labels).tolist() == [5] * 7


def test_missing_or_empty_data_stops_with_a_message_not_a_traceback(tmp_path):
    with pytest.raises(SystemExit, match=r"missing\.csv: no such file"):
        train.load_data(tmp_path / "missing.csv")
    csv_path = tmp_path / "fer2013.csv"
    write_csv(csv_path, [(3, pixels(40), "Training"), (3, pixels(40), "PrivateTest")])
    with pytest.raises(SystemExit, match=r"fer2013\.csv: no PublicTest rows"):
        train.load_data(csv_path)
    data = fixture_split_folders(tmp_path)
    for label in train.LABELS:
        shutil.rmtree(data / "val" / label)
        (data / "val" / label).mkdir()
    with pytest.raises(SystemExit, match=r"val: no images in any class folder"):
        train.load_data(data)


def test_class_weights_favour_rare_classes():
    labels = np.array([0] * 100 + [1] * 400 + [2] * 25)
    weights = train.class_weights(np.concatenate([labels, np.arange(3, 7)]))
    assert weights[2] > weights[0] > weights[1]
    counts = np.bincount(np.concatenate([labels, np.arange(3, 7)]))
    assert (weights * counts).sum() == pytest.approx(counts.sum())  # mean sample weight 1


def test_a_class_without_faces_gets_weight_zero_not_nan():
    """`--limit 64` or an empty disgust/ folder: one NaN weight made every weight NaN."""
    labels = np.array([0] * 30 + [2] * 10 + [3] * 60 + [4] * 20 + [5] * 15 + [6] * 5)
    weights = train.class_weights(labels)
    assert np.isfinite(weights).all()
    assert weights[1] == 0
    assert weights[6] > weights[0] > weights[3]
    counts = np.bincount(labels, minlength=7)
    assert (weights * counts).sum() == pytest.approx(counts.sum())  # mean 1 over the faces


def test_a_train_set_smaller_than_one_batch_stops_before_training(tmp_path):
    data = fixture_split_folders(tmp_path)
    args = ["--data", str(data), "--work", str(tmp_path / "w"), "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit, match=r"8 training faces.*one batch of 16"):
        train.main([*args, "--limit", "8", "--batch-size", "16"])
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


NAN = float("nan")


def test_a_late_nan_exports_the_best_finite_epoch_and_says_where_it_diverged():
    """A NaN at epoch 3 stopped the whole export ("nothing exported") although the
    checkpoint held epoch 2's finite weights; argmin/argmax could also pick the NaN row."""
    keys = ("loss", "val_loss", "val_va_loss")
    history = {"loss": [0.9, 0.7, NAN], "val_loss": [0.5, 0.4, NAN]}
    best, diverged = train.best_epoch(history, "val_loss", "min", keys)
    assert best == 2
    assert "epoch 3" in diverged and "loss" in diverged and "epoch 2" in diverged
    # max mode (train_emotion's val_acc): a diverged net's accuracy can still be finite
    history = {"loss": [1.2, 1.0, NAN], "val_loss": [1.1, 1.0, NAN], "val_acc": [0.3, 0.4, 0.14]}
    assert train.best_epoch(history, "val_acc", "max", ("loss", "val_loss"))[0] == 2
    # NaN never counts as best, also where it is not the last row
    assert train.best_epoch({"val_loss": [NAN, 0.6, 0.7]}, "val_loss", "min", ())[0] == 2
    # a clean run: the checkpoint's epoch (first of equal bests), no divergence note
    clean = {"loss": [1.0, 0.9, 0.8], "val_acc": [0.2, 0.3, 0.3]}
    assert train.best_epoch(clean, "val_acc", "max", ("loss", "val_acc")) == (2, "")


@pytest.mark.parametrize("bad", [NAN, float("inf")])
def test_a_run_without_a_finite_best_epoch_stops_before_export(bad):
    with pytest.raises(SystemExit, match=r"val_loss.*no finite epoch.*nothing exported"):
        train.best_epoch({"loss": [bad], "val_loss": [bad]}, "val_loss", "min", ("loss",))
    # the best val_acc came from the diverged epoch itself: its weights are not finite
    history = {"loss": [1.2, bad], "val_loss": [1.1, bad], "val_acc": [0.3, 0.5]}
    with pytest.raises(SystemExit, match=rf"loss was {bad} at epoch 2.*nothing exported"):
        train.best_epoch(history, "val_acc", "max", ("loss", "val_loss"))


def test_non_finite_best_weights_stop_before_export(tmp_path):
    good = [np.ones((3, 3), np.float32), np.zeros(4, np.float32), np.array(7, np.int64)]
    train.check_weights_finite(good, tmp_path / "best.weights.h5")
    with pytest.raises(SystemExit, match=r"best\.weights\.h5: 1 of 3 weight tensors.*nothing"):
        train.check_weights_finite([*good[:2], np.array([1.0, NAN])], tmp_path / "best.weights.h5")


def test_install_replaces_model_then_card_through_temp_files(tmp_path, monkeypatch):
    work, out = tmp_path / "work", tmp_path / "models"
    work.mkdir()
    out.mkdir()
    (work / "m_int8.tflite").write_bytes(b"new model")
    (work / "m_int8.json").write_text("new card")
    (out / "m_int8.tflite").write_bytes(b"old model")
    (out / "m_int8.json").write_text("old card")
    replaced = []
    real_replace = train.os.replace

    def replace(source, target):
        replaced.append((Path(source).parent, Path(target).name))
        real_replace(source, target)

    monkeypatch.setattr(train.os, "replace", replace)
    train.install([work / "m_int8.tflite", work / "m_int8.json"], out)
    assert replaced == [(out, "m_int8.tflite"), (out, "m_int8.json")]  # temp files in out
    assert (out / "m_int8.tflite").read_bytes() == b"new model"
    assert (out / "m_int8.json").read_text() == "new card"
    assert sorted(p.name for p in out.iterdir()) == ["m_int8.json", "m_int8.tflite"]


def test_install_that_cannot_stage_every_file_leaves_out_untouched(tmp_path):
    """The model was replaced before the card was staged: a failure then left the new
    model beside the old card's sha256, and the daemon refused the pair."""
    work, out = tmp_path / "work", tmp_path / "models"
    work.mkdir()
    out.mkdir()
    (work / "m_int8.tflite").write_bytes(b"new model")
    (out / "m_int8.tflite").write_bytes(b"old model")
    (out / "m_int8.json").write_text("old card")
    with pytest.raises(SystemExit, match=r"missing\.json.*nothing installed"):
        train.install([work / "m_int8.tflite", work / "missing.json"], out)
    assert (out / "m_int8.tflite").read_bytes() == b"old model"
    assert (out / "m_int8.json").read_text() == "old card"
    assert sorted(p.name for p in out.iterdir()) == ["m_int8.json", "m_int8.tflite"]


def _die() -> None:
    """A scoring worker killed by the OOM killer or a segfault: gone without a reply."""
    os._exit(1)


def test_a_scoring_process_that_dies_stops_the_run_instead_of_hanging():
    """multiprocessing.Pool.apply waited forever for a worker that had died."""
    outcome: list[BaseException | None] = []

    def call() -> None:
        try:
            train.run_in_fresh_process(_die)
            outcome.append(None)
        except BaseException as exc:  # SystemExit is the expected one
            outcome.append(exc)

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "still waiting for a dead scoring process"
    assert isinstance(outcome[0], SystemExit)
    assert "scoring process died" in str(outcome[0]) and "nothing installed" in str(outcome[0])
    assert train.run_in_fresh_process(divmod, 7, 2) == (3, 1)


def test_teacher_targets_are_softened_flip_averaged_distributions_in_label_order():
    images = training.load_folder(FIXTURE_FACES.parent, FIXTURE_FACES.name).images
    card = train.load_card(MODELS / "emotion_cnn_int8.json")
    sharp = train.teacher_targets(card, images, temperature=1.0)
    soft = train.teacher_targets(card, images, temperature=4.0)
    assert sharp.shape == soft.shape == (len(images), len(train.LABELS))
    np.testing.assert_allclose(sharp.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-5)
    assert (soft.argmax(axis=1) == sharp.argmax(axis=1)).all()  # softening keeps the order
    assert (soft.max(axis=1) < sharp.max(axis=1)).all()

    classifier = train.EmotionClassifier(card)
    face = images[0]
    both = classifier.classify(face) + classifier.classify(np.ascontiguousarray(face[:, ::-1]))
    expected = both[[classifier.labels.index(label) for label in train.LABELS]] / 2
    np.testing.assert_allclose(sharp[0], expected, atol=1e-5)


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--ema", "1.0", "[0, 1)"),
        ("--cutmix", "1.5", "[0, 1]"),
        ("--head", "flatten", "gap"),
        ("--distill", "0", "(0, 1]"),
        ("--temperature", "0", "> 0"),
        ("--teacher", "missing.json", "no such model card"),
    ],
)
def test_bad_training_options_are_refused_with_the_valid_range(capsys, flag, value, says):
    with pytest.raises(SystemExit):
        train.main([flag, value])
    assert says in capsys.readouterr().err


def test_a_damaged_teacher_is_reported_before_training(tmp_path):
    data = fixture_split_folders(tmp_path)
    card = json.loads((MODELS / "emotion_cnn_int8.json").read_text())
    (tmp_path / card["file"]).write_bytes(b"not a model")
    (tmp_path / "teacher.json").write_text(json.dumps(card))
    with pytest.raises(SystemExit, match=r"--teacher: .*does not match the sha256"):
        train.main(["--data", str(data), "--teacher", str(tmp_path / "teacher.json"),
                    "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out")])  # fmt: skip


@requires_tensorflow
def test_cutmix_pastes_a_partner_box_and_mixes_targets_and_weights_by_its_area():
    import tensorflow as tf

    shade = np.arange(8, dtype=np.float32) * 10  # face i is flat gray 10 * i
    images = tf.constant(np.broadcast_to(shade[:, None, None, None], (8, 48, 48, 1)))
    targets = tf.one_hot(np.arange(8) % 7, 7)
    weights = tf.constant(np.arange(1, 9, dtype=np.float32))
    mixed, mixed_targets, mixed_weights = train.cutmixer(seed=1, probability=1.0)(
        images, targets, weights
    )
    for i in range(8):
        partner = (i - 1) % 8  # each face borrows from the previous one in the batch
        pasted = np.mean(mixed.numpy()[i] == shade[partner])
        assert np.mean(mixed.numpy()[i] == shade[i]) == pytest.approx(1 - pasted)
        expected = (1 - pasted) * targets.numpy()[i] + pasted * targets.numpy()[partner]
        np.testing.assert_allclose(mixed_targets.numpy()[i], expected, atol=1e-5)
        assert mixed_weights.numpy()[i] == pytest.approx(
            (1 - pasted) * (i + 1) + pasted * (partner + 1)
        )
    assert 0 < np.mean(mixed.numpy() != images.numpy()) < 1

    untouched = train.cutmixer(seed=1, probability=0.0)(images, targets, weights)
    for before, after in zip((images, targets, weights), untouched, strict=True):
        np.testing.assert_array_equal(before.numpy(), after.numpy())


@requires_tensorflow
def test_a_run_that_fails_after_conversion_leaves_out_untouched(tmp_path, monkeypatch):
    """The int8 file was written into --out first: a crash before the card left a new
    model beside the old card's sha256, and the daemon refused it."""
    data = fixture_split_folders(tmp_path)
    out, work = tmp_path / "models", tmp_path / "work"
    small = ["--epochs", "1", "--warmup", "0", "--batch-size", "16", "--widths", "8", "16"]
    argv = [*small, "--depths", "1", "1", "--data", str(data), "--out", str(out),
            "--work", str(work)]  # fmt: skip
    assert_a_crash_in_scoring_leaves_out_untouched(
        train, monkeypatch, out, "emotion_cnn_int8", argv
    )


@requires_tensorflow
def test_a_short_real_training_run_writes_a_consistent_card(tmp_path):
    data = fixture_split_folders(tmp_path)
    out, work = tmp_path / "models", tmp_path / "work"
    code = train.main(
        [
            "--data",
            str(data),
            "--out",
            str(out),
            "--work",
            str(work),
            "--epochs",
            "1",
            "--warmup",
            "0",
            "--batch-size",
            "16",
            "--widths",
            "8",
            "16",
            "--depths",
            "1",
            "1",
            "--ema",  # the optional weight averaging path: validated and exported weights
            "0.9",
            "--teacher",  # and distillation from the shipped model
            str(MODELS / "emotion_cnn_int8.json"),
            "--cutmix",  # and CutMix
            "0.5",
            "--head",  # and the global depthwise conv head
            "gdconv",
            "--exposure-mean",  # and a test-time exposure, written into the card
            "131.2",
        ]
    )
    assert code == 0
    card = json.loads((out / "emotion_cnn_int8.json").read_text())
    assert "weight EMA 0.9" in card["training"]["optimizer"]
    assert "teacher: emotion_cnn_int8.json" in card["training"]["loss"]
    assert "CutMix on 50%" in card["training"]["augmentation"]
    assert "global depthwise conv" in card["architecture"]["kind"]
    # 3x3 convs 48x48x8x1 and 24x24x16x8, a 24x24 depthwise head on 16 channels, dense 16x7
    assert card["macs"] == 48 * 48 * 8 * 9 + 24 * 24 * 16 * 9 * 8 + 24 * 24 * 16 + 16 * 7
    model = out / card["file"]
    assert card["labels"] == list(train.LABELS)
    assert card["input"]["normalization"]["exposure_mean"] == 131.2
    assert "--exposure-mean 131.2" in card["training"]["command"]
    assert card["file_size_bytes"] == model.stat().st_size
    assert card["quantization"]["input"]["dtype"] == "int8"
    assert card["metrics"]["fer2013_val"]["n"] == 35
    assert {"params", "macs", "training", "architecture"} <= set(card)
    assert set(card["metrics"]["fer2013_val"]["robustness"]) == {
        "gaussian50",
        "impulse0.05",
        "illum1.5",
    }
    # issue 19: the shipped card runs the flip in one invoke, carries a fitted
    # temperature and its calibration figures, and its accuracy is the flip's
    assert card["test_time_flip"] is True
    assert card["temperature"] == card["calibration"]["temperature"] > 0
    assert {"ece_before", "ece_after", "nll_before", "nll_after"} <= set(card["calibration"])
    assert "single_view_accuracy" in card["metrics"]["fer2013_val"]
    assert card["training"]["segments"][0]["epochs"] == [1, 1]


@requires_tensorflow
def test_a_stopped_run_resumes_where_it_was_and_the_card_counts_every_segment(tmp_path):
    """A run may stop (a time budget, a reboot) and be resumed later with --resume: the
    recorded arguments are used, the epochs go on from the last one kept, and the card
    records the total time and each segment."""
    data = fixture_split_folders(tmp_path)
    out, work = tmp_path / "models", tmp_path / "work"
    first = [
        "--data", str(data), "--out", str(out), "--work", str(work), "--epochs", "3",
        "--warmup", "0", "--batch-size", "16", "--widths", "8", "16", "--depths", "1", "1",
        "--norm", "per-crop", "--time-budget-min", "0.0001",  # stops after one epoch
    ]  # fmt: skip
    assert train.main(first) == 0
    assert training.backup_epoch(work / "backup") == 1
    with pytest.raises(SystemExit):  # the same --work again without --resume: refused
        train.main(first)
    with pytest.raises(SystemExit):  # a training argument changed on resume: refused
        train.main(["--work", str(work), "--resume", "--epochs", "9"])
    assert train.main(["--work", str(work), "--resume", "--time-budget-min", "60"]) == 0
    assert training.backup_epoch(work / "backup") == 3
    history = training.read_history(work / "history.csv")
    assert history["epoch"] == [0.0, 1.0, 2.0]  # each epoch once, in order
    card = json.loads((out / "emotion_cnn_int8.json").read_text())
    segments = card["training"]["segments"]
    assert [s["epochs"] for s in segments] == [[1, 1], [2, 3]]
    assert card["training"]["training_time_s"] == sum(s["seconds"] for s in segments)
    assert card["training"]["epochs_run"] == 3
    assert "--time-budget-min 0.0001" in card["training"]["command"]  # the recorded one
    assert card["input"]["normalization"]["per_crop"] is True
    # resuming a finished run exports again and adds no segment
    assert train.main(["--work", str(work), "--resume"]) == 0
    again = json.loads((out / "emotion_cnn_int8.json").read_text())
    assert len(again["training"]["segments"]) == 2


def test_the_robust_augmentation_is_what_the_card_says():
    """The card's text names every corruption the augmenter applies."""
    for word in ("noise", "salt-and-pepper", "exposure", "gamma", "JPEG", "blur",
                 "low resolution", "yaw", "occluder"):  # fmt: skip
        assert word in training.ROBUST_AUGMENTATION


@requires_tensorflow
def test_the_robust_augmentation_corrupts_a_share_and_leaves_a_share_clean():
    """On 512 copies of one face: some come out noisy (sigma up to ~60), some dark or
    bright (exposure), some blurred; about a third stay close to the original."""
    import cv2
    import tensorflow as tf

    face = cv2.imread(str(next(FIXTURE_FACES.glob("happy/*.jpg"))), 0)
    face = cv2.GaussianBlur(face, (5, 5), 1.5).astype(np.float32)  # smooth: noise shows
    batch = tf.constant(np.repeat(face[None, ..., None], 512, axis=0))
    out = training.robust_augmenter(7)(batch).numpy()[..., 0]
    assert out.shape == (512, 48, 48) and out.min() >= 0 and out.max() <= 255
    high_freq = np.abs(np.diff(out, axis=2)).mean(axis=(1, 2))
    base = np.abs(np.diff(face, axis=1)).mean()
    assert (high_freq > 2.5 * base).mean() > 0.1  # noisy faces
    brightness = out.mean(axis=(1, 2))
    assert (brightness < 0.7 * face.mean()).mean() > 0.05  # dark ones
    assert (brightness > 1.2 * face.mean()).mean() > 0.05  # bright ones
    assert (high_freq < 0.8 * base).mean() > 0.03  # blurred or low-resolution ones
