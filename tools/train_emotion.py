#!/usr/bin/env python3
"""Train the appliance's int8 emotion CNN on FER2013 and write the .tflite + model card.

    pip install -e .[train]
    python tools/train_emotion.py --data ../shared/data/fer2013 --out models/

Reads a Kaggle folder layout `<root>/<split>/<class>/*.jpg` (splits `train` and `val`)
or the classic `fer2013.csv` (emotion, pixels, Usage: Training -> train, PublicTest ->
val; PrivateTest is never read). Trains on a 2-core CPU within `--time-budget-min`,
keeps the epoch with the best val accuracy, then exports a float TFLite reference and a
full-integer int8 TFLite (representative data from train), evaluates both through the
daemon's own preprocessing and runtime, and writes the model card.

Why this network: on a Pi-class ARM core and on x86, TFLite's int8 3x3 convolutions run
several times more MACs per second than depthwise-separable blocks, and TF trains them
faster on CPU too (measured here: a 33 M-MAC separable net ran 1.9 ms, a 30 M-MAC plain
VGG-style net 0.57 ms). So the net is a small VGG-style stack of 3x3 conv + BN + ReLU
with global average pooling, sized for the per-face latency budget: the 48x48 and 24x24
stages stay narrow (16 and 48 channels, one conv each) and the capacity sits at 12x12 and
6x6. Measured with untrained weights: 32/64/128/192 with two convs in stage 2 ran 1.4 ms,
this 0.9 ms. Trained for 150 epochs it scored 67.9% int8 on val, against 66.95% for the
wider net after 60 epochs (the longer schedule, not the narrower net, is the likely gain).
Tried and not adopted (same seed, 150 epochs): `--l2 2.5e-4 --ema 0.998` scored 67.6% int8,
`--teacher models/emotion_cnn_int8.json` (distilling the shipped model) 67.3%,
`--cutmix 0.5` 66.4% and `--head gdconv` 67.7%, against the default's 67.9%
(models/README.md lists the runs).

The defaults are the shipped v2's recipe (16/48/96/192, 160 epochs, the robust
augmentation, per-crop normalisation): ~3.9 h on a 2-core CPU, so a run stops at
--time-budget-min and goes on with `--resume --work DIR` (models/README.md, issue 19).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))  # evaluate.py, also when imported as a module

from training import (  # noqa: E402  (the code both trainers share)
    BASIC_AUGMENTATION,
    EXPOSURE_HELP,
    LABELS,
    PER_CROP_MIN_STD,
    ROBUST_AUGMENTATION,
    SIZE,
    Dataset,
    TimeBudget,
    augmenter,
    backup_epoch,
    best_epoch,
    card_normalization,
    check_batches,
    check_weights_finite,
    class_weights,
    count_macs,
    exposure_mean_arg,
    install,
    load_data,
    normaliser,
    read_history,
    robust_augmenter,
    run_in_fresh_process,
    sha256,
    square_boxes,
    tensor_quantization,
    truncate_history,
    use_threads,
)

from appliance.vision.emotion import EmotionClassifier  # noqa: E402
from appliance.vision.model_card import Card, ModelError, load_card, members_of  # noqa: E402

log = logging.getLogger("train_emotion")


HEADS = {
    "gap": "global average pooling",
    "gdconv": "global depthwise conv (one learned weight per channel and position) + BN",
}


def build_model(
    widths: tuple[int, ...],
    depths: tuple[int, ...],
    dropout: float,
    l2: float,
    head: str = "gap",
):
    """VGG-style: per stage `depth` x (3x3 conv, BN, ReLU), then 2x2 max-pool; then a
    pooling head (`HEADS`), dropout and the dense logits.

    `gdconv` is MobileFaceNet's global depthwise conv: unlike average pooling it can
    weigh where on the (roughly aligned) face a feature fires, mouth corners vs brows,
    for 36 weights a channel."""
    from tensorflow import keras

    layers = keras.layers
    inputs = keras.Input((SIZE, SIZE, 1), name="face")
    x = inputs
    for stage, (width, depth) in enumerate(zip(widths, depths, strict=True)):
        for _ in range(depth):
            x = layers.Conv2D(
                width,
                3,
                padding="same",
                use_bias=False,
                kernel_regularizer=keras.regularizers.l2(l2),
            )(x)
            x = layers.BatchNormalization()(x)
            x = layers.ReLU()(x)
        if stage < len(widths) - 1:
            x = layers.MaxPool2D()(x)
    if head == "gdconv":
        x = layers.DepthwiseConv2D(x.shape[1:3], padding="valid", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Flatten()(x)
    elif head == "gap":
        x = layers.GlobalAveragePooling2D()(x)
    else:
        raise ValueError(f"head {head!r}: one of {', '.join(HEADS)}")
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(len(LABELS), name="logits")(x)
    return keras.Model(inputs, outputs, name="emotion_cnn")


def cutmixer(seed: int, probability: float):
    """CutMix: on `probability` of the faces, paste a random box from another face of the
    batch and mix the targets (and class weights) by the pasted area, so the net cannot
    lean on one region and learns from blended expressions. In the TF graph, after
    `augmenter`."""
    import tensorflow as tf

    rng = tf.random.Generator.from_seed(seed + 1)

    def mix(images: tf.Tensor, targets: tf.Tensor, weights: tf.Tensor):
        batch = tf.shape(images)[0]
        partner = tf.roll(tf.range(batch), 1, axis=0)  # the batch is already shuffled
        side = SIZE * tf.sqrt(rng.uniform([batch]))  # box area uniform in 0..1 of the face
        box = square_boxes(rng, side)
        box = tf.logical_and(box, (rng.uniform([batch]) < probability)[:, None, None])
        images = tf.where(box[..., None], tf.gather(images, partner), images)
        pasted = tf.reduce_mean(tf.cast(box, tf.float32), axis=[1, 2])  # true area, clipped
        targets = (1 - pasted)[:, None] * targets + pasted[:, None] * tf.gather(targets, partner)
        weights = (1 - pasted) * weights + pasted * tf.gather(weights, partner)
        return images, targets, weights

    return mix


def teacher_targets(card: Card, images: np.ndarray, temperature: float) -> np.ndarray:
    """Soft targets (N x 7, LABELS order) from a shipped model, for distillation.

    The teacher reads each face through the daemon's own classifier with test-time flip
    on (its best reading: face and mirror image averaged); its probabilities are softened
    with `temperature` (p ** (1 / T), renormalised) so the student learns which wrong
    classes are near misses, not only the argmax.
    """
    classifier = EmotionClassifier(replace(card, extra={**card.extra, "test_time_flip": True}))
    missing = set(LABELS) - set(classifier.labels)
    if missing:
        raise SystemExit(f"{card.path}: teacher lacks labels {sorted(missing)}")
    order = [classifier.labels.index(label) for label in LABELS]
    probs = np.stack([classifier.classify(image)[order] for image in images])
    softened = np.power(np.clip(probs, 1e-12, None), 1.0 / temperature)
    return (softened / softened.sum(axis=1, keepdims=True)).astype(np.float32)


def train(args, data: dict[str, Dataset], soft: np.ndarray | None = None):
    """Fit and return (model with the best val epoch's weights, best epoch, epochs run,
    a divergence note for the card or "").

    `soft` (N x 7 teacher targets) is mixed into the one-hot labels with weight
    `args.distill`; class weights still follow the hard label.

    The state after every epoch (weights, optimizer, epoch) is kept in --work/backup, so
    `--resume` continues a run that a time budget, a reboot or a kill stopped: the
    learning-rate schedule picks up where it was, history.csv is appended to, and the
    best checkpoint is only replaced by a better epoch than all earlier segments'.
    """
    import tensorflow as tf
    from tensorflow import keras

    backup = args.work / "backup"
    start_epoch = backup_epoch(backup)
    keras.utils.set_random_seed(args.seed + start_epoch)  # a resumed segment draws anew
    use_threads(args.threads)
    train_set, val_set = data["train"], data["val"]
    weights = class_weights(train_set.labels).astype(np.float32)
    log.info("class weights %s", dict(zip(LABELS, np.round(weights, 2), strict=True)))
    augment = (robust_augmenter if args.augment == "robust" else augmenter)(args.seed + start_epoch)
    cutmix = cutmixer(args.seed, args.cutmix) if args.cutmix > 0 else None
    normalise = normaliser(args.norm)

    def train_batches():
        onehot = np.eye(len(LABELS), dtype=np.float32)[train_set.labels]
        targets = onehot if soft is None else (1 - args.distill) * onehot + args.distill * soft
        ds = tf.data.Dataset.from_tensor_slices(
            (train_set.images[..., None].astype(np.float32), targets, train_set.labels)
        )
        ds = ds.shuffle(len(train_set), seed=args.seed, reshuffle_each_iteration=True)
        ds = ds.batch(args.batch_size, drop_remainder=True)

        def prepare(images, targets, labels):
            images, sample_weights = augment(images), tf.gather(weights, labels)
            if cutmix is not None:
                images, targets, sample_weights = cutmix(images, targets, sample_weights)
            return normalise(images), targets, sample_weights

        return ds.map(prepare, num_parallel_calls=1).prefetch(2)

    val_x = normalise(tf.constant(val_set.images[..., None].astype(np.float32)))
    val_y = tf.one_hot(val_set.labels, len(LABELS))
    model = build_model(args.widths, args.depths, args.dropout, args.l2, args.head)
    use_ema = args.ema > 0
    steps = len(train_set) // args.batch_size
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=args.lr * 0.1,
        decay_steps=steps * (args.epochs - args.warmup),
        warmup_target=args.lr,
        warmup_steps=steps * args.warmup,
        alpha=0.01,
    )
    model.compile(
        optimizer=keras.optimizers.SGD(
            schedule,
            momentum=0.9,
            nesterov=True,
            use_ema=use_ema,
            ema_momentum=args.ema,
        ),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
        metrics=[keras.metrics.CategoricalAccuracy(name="acc")],
        weighted_metrics=[],
    )
    model.summary(print_fn=log.info)
    best = args.work / "best.weights.h5"
    history_path = args.work / "history.csv"
    earlier = read_history(history_path) if start_epoch else {}
    if start_epoch:
        # a kill between the backup and the CSV line leaves the CSV one epoch ahead or
        # behind: keep exactly the epochs the backup holds
        earlier = {key: values[:start_epoch] for key, values in earlier.items()}
        truncate_history(history_path, start_epoch)
        log.info("resuming after epoch %d of %d", start_epoch, args.epochs)
    finite_before = [v for v in earlier.get("val_acc", []) if np.isfinite(v)]
    history = model.fit(
        train_batches(),
        epochs=args.epochs,
        validation_data=(val_x, val_y),
        verbose=1 if sys.stderr.isatty() else 2,
        callbacks=[
            # first: restores weights, optimizer and epoch before the others start
            keras.callbacks.BackupAndRestore(
                backup, double_checkpoint=True, delete_checkpoint=False
            ),
            # EMA weights (when on) are what validation, checkpoints and early stopping see
            *([keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if use_ema else []),
            keras.callbacks.ModelCheckpoint(
                best,
                monitor="val_acc",
                mode="max",
                save_best_only=True,
                save_weights_only=True,
                initial_value_threshold=max(finite_before) if finite_before else None,
            ),
            keras.callbacks.EarlyStopping(monitor="val_acc", mode="max", patience=args.patience),
            TimeBudget(args.time_budget_min * 60),
            keras.callbacks.CSVLogger(history_path, append=bool(start_epoch)),
            keras.callbacks.TerminateOnNaN(),
        ],
    )
    merged = read_history(history_path) or history.history
    kept, diverged = best_epoch(merged, "val_acc", "max", ("loss", "val_loss"))
    if diverged:
        log.warning("%s", diverged)
    model.load_weights(best)
    check_weights_finite(model.get_weights(), best)
    return model, kept, len(merged["val_acc"]), diverged


def export(
    model, train_set: Dataset, work: Path, name: str, seed: int, norm: str = "fixed"
) -> tuple[Path, Path]:
    """Float reference and full-integer int8 TFLite (int8 in/out), both in the work dir:
    `install` puts the int8 file and its card into --out once both are final."""
    import tensorflow as tf

    float_path = work / f"{name}_float.tflite"
    float_path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    rng = np.random.default_rng(seed)
    # Representative data: 500 train faces, stratified so rare classes are seen too.
    picks = np.concatenate(
        [
            rng.choice(members, min(72, len(members)), replace=False)
            for c in range(len(LABELS))
            if len(members := np.flatnonzero(train_set.labels == c))
        ]
    )[:500]

    normalise = normaliser(norm)
    faces = train_set.images[picks][..., None].astype(np.float32)
    # half of them as the robust augmentation corrupts them, so the int8 ranges also
    # cover noisy, dark and overexposed faces
    corrupt = robust_augmenter(seed)(tf.constant(faces[1::2])).numpy()
    faces[1::2] = corrupt
    inputs = normalise(tf.constant(faces)).numpy()

    def representative():
        for x in inputs:
            yield [x[None]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    int8_path = work / f"{name}_int8.tflite"
    int8_path.write_bytes(converter.convert())
    return float_path, int8_path


def _classifier(card_path: Path, flip: bool | None = None) -> EmotionClassifier:
    """The daemon's classifier for a card; `flip` overrides the card's test_time_flip."""
    card = load_card(card_path)
    if flip is not None:
        card = replace(card, extra={**card.extra, "test_time_flip": flip})
    return EmotionClassifier(card)


def _truth(classifier: EmotionClassifier, dataset: Dataset) -> list[int]:
    index = [classifier.labels.index(label) for label in LABELS]
    return [index[int(label)] for label in dataset.labels]


def evaluate(card_path: Path, dataset: Dataset, flip: bool | None = None) -> dict:
    """Accuracy, macro-F1 and recall per class through the daemon's classifier, using
    tools/evaluate.py's scoring, so card and evaluation tool cannot disagree."""
    import evaluate as evaluation  # tools/evaluate.py, beside this script

    classifier = _classifier(card_path, flip)
    truth = _truth(classifier, dataset)
    confusion = evaluation.confusion_of(classifier, list(dataset.images), truth)
    report = evaluation.scores(confusion, classifier.labels)
    report["per_class_recall"] = report.pop("per_class")
    return report


def robustness(card_path: Path, dataset: Dataset, seed: int = 0) -> dict[str, float]:
    """The seed paper's perturbations (tools/evaluate.py), on the val images, read as
    the card says (with its test-time flip)."""
    import evaluate as evaluation  # tools/evaluate.py, beside this script

    classifier = _classifier(card_path)
    truth = _truth(classifier, dataset)
    return {
        name: evaluation.scores(
            evaluation.confusion_of(classifier, list(dataset.images), truth, perturb),
            classifier.labels,
        )["accuracy"]
        for name, perturb in evaluation.perturbations(seed).items()
    }


def calibrate(card_path: Path, dataset: Dataset) -> dict:
    """Temperature scaling on val, through the daemon's classifier as the card runs it
    (flip included): tools/evaluate.py's calibration()."""
    import evaluate as evaluation  # tools/evaluate.py, beside this script

    classifier = _classifier(card_path)
    logits = evaluation.view_logits(classifier, list(dataset.images))
    return evaluation.calibration(logits, np.asarray(_truth(classifier, dataset)))


def _measure(float_card: Path, int8_card: Path, val: Dataset) -> tuple[dict, dict, dict]:
    """Float and int8 as the card runs them (test-time flip), the int8 model's single
    view beside, and the int8 model's robustness."""
    int8 = evaluate(int8_card, val)
    int8["single_view_accuracy"] = evaluate(int8_card, val, flip=False)["accuracy"]
    return evaluate(float_card, val), int8, robustness(int8_card, val)


def measure_without_tensorflow(
    float_card: Path, int8_card: Path, val: Dataset
) -> tuple[dict, dict, dict]:
    """Score the exported files in a fresh process that never imported TensorFlow.

    With TensorFlow loaded beside tflite-runtime, a few int8 results came out differently
    (2 of 3,589 val faces here); the card must describe the daemon's runtime alone.
    """
    return run_in_fresh_process(_measure, float_card, int8_card, val)


def write_card(
    path: Path,
    model_file: Path,
    extra: dict,
    norm: str = "fixed",
    exposure_mean: float | None = None,
) -> None:
    card = {
        "name": path.stem,
        "task": "emotion",
        "file": model_file.name,
        "sha256": sha256(model_file),
        "input": {
            "size": [SIZE, SIZE],
            "channels": 1,
            "normalization": card_normalization(norm, exposure_mean),
        },
        "labels": list(LABELS),
        "output": "logits",
        "file_size_bytes": model_file.stat().st_size,
        **extra,
    }
    path.write_text(json.dumps(card, indent=2) + "\n")


RESUMABLE = ("--time-budget-min", "--threads", "--out")  # may change between segments


def resolve_run(parser: argparse.ArgumentParser, args, argv: list[str]):
    """A new run records its arguments in --work/run.json (and refuses a --work that holds
    another run's state); `--resume` re-parses the recorded arguments, with only the
    RESUMABLE options taken from this command line."""
    run_file = args.work / "run.json"
    if not args.resume:
        if backup_epoch(args.work / "backup"):
            parser.error(
                f"--work {args.work} holds a run stopped after epoch "
                f"{backup_epoch(args.work / 'backup')}: add --resume to continue it, or "
                "name another --work to start a new one"
            )
        args.recorded_argv = argv
        args.work.mkdir(parents=True, exist_ok=True)
        run_file.write_text(json.dumps({"argv": argv}, indent=2) + "\n")
        (args.work / "segments.json").unlink(missing_ok=True)
        (args.work / "history.csv").unlink(missing_ok=True)
        (args.work / "best.weights.h5").unlink(missing_ok=True)
        return args
    try:
        recorded = json.loads(run_file.read_text())["argv"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        parser.error(f"--resume: {run_file} unreadable ({exc}); nothing to resume")
    given = [a.split("=")[0] for a in argv if a.startswith("--")]
    foreign = sorted(set(given) - {"--resume", "--work", *RESUMABLE})
    if foreign:
        parser.error(
            f"--resume continues the recorded run ({' '.join(recorded)}); only "
            f"{', '.join(RESUMABLE)} may be given again, not {', '.join(foreign)}"
        )
    again = parser.parse_args([*recorded, *argv])
    again.recorded_argv = recorded
    return again


def record_segment(args, first_epoch: int, epochs_done: int, seconds: float) -> list[dict]:
    """Append this segment (epochs, seconds, machine) to --work/segments.json; all of
    them, for the card: a resumed run's training time is the sum."""
    path = args.work / "segments.json"
    try:
        segments = json.loads(path.read_text()) if args.resume else []
    except (OSError, ValueError):
        segments = []
    if epochs_done <= first_epoch:
        return segments  # a finished run exported again: no training in this segment
    segments.append(
        {
            "epochs": [first_epoch + 1, epochs_done],
            "seconds": round(seconds),
            "ended": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU threads",
            "threads": args.threads,
        }
    )
    path.write_text(json.dumps(segments, indent=2) + "\n")
    return segments


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=ROOT.parent / "shared/data/fer2013",
        help="Kaggle folder root (train/ val/) or fer2013.csv",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "models")
    parser.add_argument("--name", default="emotion_cnn")
    parser.add_argument(
        "--work", type=Path, default=ROOT / ".cache/train_emotion", help="checkpoints and history"
    )
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 48, 96, 192])
    parser.add_argument("--depths", type=int, nargs="+", default=[1, 1, 2, 2])
    parser.add_argument(
        "--head", choices=sorted(HEADS), default="gap", help="pooling before the logits"
    )
    parser.add_argument("--dropout", type=float, default=0.4)
    parser.add_argument("--epochs", type=int, default=160)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--l2", type=float, default=5e-5, help="L2 on conv kernels")
    parser.add_argument(
        "--ema", type=float, default=0.0, help="weight EMA momentum (0: off), e.g. 0.998"
    )
    parser.add_argument(
        "--teacher",
        type=Path,
        help="model card of a trained emotion model to distil from (e.g. the shipped one)",
    )
    parser.add_argument(
        "--distill", type=float, default=0.5, help="weight of the teacher's soft targets"
    )
    parser.add_argument(
        "--temperature", type=float, default=2.0, help="softening of the teacher's targets"
    )
    parser.add_argument(
        "--cutmix", type=float, default=0.0, help="share of faces given a CutMix box (0: off)"
    )
    parser.add_argument("--patience", type=int, default=30)
    parser.add_argument("--seed", type=int, default=2013)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--time-budget-min", type=float, default=110.0)
    parser.add_argument("--limit", type=int, default=0, help="use N train faces (smoke tests)")
    parser.add_argument(
        "--augment",
        choices=("robust", "basic"),
        default="robust",
        help="robust: what real cameras and rooms do to faces (noise, exposure, blur, JPEG, "
        "low resolution, yaw, occluders); basic: the first model's recipe",
    )
    parser.add_argument(
        "--norm",
        choices=("fixed", "per-crop"),
        default="per-crop",
        help="input normalisation: fixed (x - 127.5) / 127.5, or per-crop mean/std",
    )
    parser.add_argument("--exposure-mean", type=exposure_mean_arg, default=None, help=EXPOSURE_HELP)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --work (its recorded arguments; only --time-budget-min, "
        "--threads and --out may be given anew); on a finished run, export again",
    )
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args = resolve_run(parser, args, argv)
    if not 0.0 <= args.ema < 1.0:
        parser.error(f"--ema {args.ema}: a momentum in [0, 1), e.g. 0.998 (0 turns it off)")
    if not 0.0 <= args.cutmix <= 1.0:
        parser.error(f"--cutmix {args.cutmix}: a share in [0, 1], e.g. 0.5 (0 turns it off)")
    if not 0.0 < args.distill <= 1.0:
        parser.error(f"--distill {args.distill}: a weight in (0, 1], e.g. 0.5")
    if args.temperature <= 0:
        parser.error(f"--temperature {args.temperature}: must be > 0, e.g. 2")
    if args.teacher and not args.teacher.is_file():
        parser.error(f"--teacher {args.teacher}: no such model card")
    args.widths, args.depths = tuple(args.widths), tuple(args.depths)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    data = load_data(args.data)
    if args.limit:
        keep = np.random.default_rng(args.seed).permutation(len(data["train"]))[: args.limit]
        data["train"] = Dataset(data["train"].images[keep], data["train"].labels[keep])
    log.info(
        "data: %d train, %d val faces from %s", len(data["train"]), len(data["val"]), args.data
    )
    soft, teacher = None, ""
    if args.teacher:
        # noted now: with --out models/ the export overwrites a shipped teacher's files
        try:
            card = load_card(args.teacher)
            hashes = " + ".join(model.sha256[:16] for model in members_of(card))  # ensembles too
            teacher = f"{args.teacher.name}, sha256 {hashes}"
            # before TensorFlow is imported: the teacher runs on the daemon's runtime alone
            soft = teacher_targets(card, data["train"].images, args.temperature)
        except ModelError as exc:
            raise SystemExit(f"--teacher: {exc}") from None
        agree = float(np.mean(soft.argmax(axis=1) == data["train"].labels))
        log.info("teacher %s agrees with %.1f%% of train labels", args.teacher, 100 * agree)
    check_batches(len(data["train"]), args.batch_size)  # after the teacher: a bad card first
    first_epoch = backup_epoch(args.work / "backup")
    model, kept_epoch, epochs_run, diverged = train(args, data, soft)
    segments = record_segment(args, first_epoch, epochs_run, time.monotonic() - started)
    float_path, int8_path = export(model, data["train"], args.work, args.name, args.seed, args.norm)

    common = {
        "architecture": {
            "kind": "VGG-style CNN: per stage N x (3x3 conv, BN, ReLU), 2x2 max-pool, "
            f"{HEADS[args.head]}, dropout, dense",
            "widths": list(args.widths),
            "depths": list(args.depths),
            "why": "int8 3x3 convolutions are the fastest MACs in TFLite on ARM and x86; "
            "depthwise blocks measured 3x slower per MAC here. The default widths keep "
            "the 48x48 and 24x24 stages narrow (16, 48 channels, one conv each) and put "
            "the capacity at 12x12 and 6x6, for <=1 ms per face on one core",
        },
        "params": int(model.count_params()),
        "macs": count_macs(model),
        "preprocessing": "gray, resize to 48x48 (FER crops are already 48x48), "
        + (
            "(x - 127.5) / 127.5"
            if args.norm == "fixed"
            else f"minus the crop's mean, over its standard deviation (at least "
            f"{PER_CROP_MIN_STD:g} grey levels)"
        )
        + "; in the daemon the crop is the detected face squared with detection.margin "
        "and detection.crop_shift",
        "training": {
            "data": f"FER2013 Training split ({len(data['train'])} faces) from {args.data.name}; "
            "val = FER2013 PublicTest (model selection and early stopping); "
            "PrivateTest never read",
            "epochs_run": epochs_run,
            "best_epoch": kept_epoch,
            **({"diverged": diverged} if diverged else {}),
            "batch_size": args.batch_size,
            "optimizer": f"SGD nesterov momentum 0.9, lr {args.lr} cosine, "
            f"{args.warmup} warm-up epochs, L2 {args.l2:g}"
            + (f", weight EMA {args.ema:g} (validated and exported)" if args.ema > 0 else ""),
            "loss": "cross-entropy, label smoothing 0.1, sqrt inverse-frequency class weights"
            + (
                f"; targets {1 - args.distill:g} x one-hot + {args.distill:g} x the teacher's "
                f"flip-averaged probabilities at temperature {args.temperature:g} "
                f"(teacher: {teacher})"
                if args.teacher
                else ""
            ),
            "augmentation": (
                ROBUST_AUGMENTATION if args.augment == "robust" else BASIC_AUGMENTATION
            )
            + (
                f", CutMix on {args.cutmix:.0%} (box area uniform, targets and class "
                "weights mixed by pasted area)"
                if args.cutmix > 0
                else ""
            ),
            "seed": args.seed,
            "training_time_s": round(sum(seg["seconds"] for seg in segments)),
            "segments": segments,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU threads, "
            f"TensorFlow {__import__('tensorflow').__version__}",
            "command": "python tools/train_emotion.py " + " ".join(args.recorded_argv),
        },
        "licence": "model weights: this project's; trained on FER2013 (research use)",
        # the face and its mirror image in one invoke (a batch of two), averaged
        "test_time_flip": True,
    }
    float_card = args.work / f"{args.name}_float.json"
    int8_card = args.work / f"{args.name}_int8.json"  # installed into --out when final
    write_card(
        float_card,
        float_path,
        {**common, "quantization": {"input": None}},
        args.norm,
        args.exposure_mean,
    )
    write_card(
        int8_card,
        int8_path,
        {**common, "quantization": tensor_quantization(int8_path)},
        args.norm,
        args.exposure_mean,
    )
    # the temperature is fitted to the int8 model as the daemon runs it (flip on), then
    # written into its card before the card is scored
    calibrated = run_in_fresh_process(calibrate, int8_card, data["val"])
    raw = json.loads(int8_card.read_text())
    raw.update(temperature=calibrated["temperature"], calibration=calibrated)
    int8_card.write_text(json.dumps(raw, indent=2) + "\n")
    metrics_float, metrics_int8, robust = measure_without_tensorflow(
        float_card, int8_card, data["val"]
    )
    metrics = {
        "fer2013_val": {
            **metrics_int8,
            "float_accuracy": metrics_float["accuracy"],
            "float_macro_f1": metrics_float["macro_f1"],
            "robustness": robust,
            "measured_with": "tools/train_emotion.py evaluate() in a process without "
            "TensorFlow: the appliance's preprocessing and TFLite runtime, test-time flip on as "
            "the card says (single_view_accuracy: without it)",
        }
    }
    for card_path, own in ((float_card, metrics_float), (int8_card, None)):
        raw = json.loads(card_path.read_text())
        raw["metrics"] = {"fer2013_val": own} if own else metrics
        card_path.write_text(json.dumps(raw, indent=2) + "\n")
    install([int8_path, int8_card], args.out)
    log.info(
        "float val accuracy %.4f, int8 %.4f (macro-F1 %.4f), %d bytes, %.0f s",
        metrics_float["accuracy"],
        metrics_int8["accuracy"],
        metrics_int8["macro_f1"],
        int8_path.stat().st_size,
        time.monotonic() - started,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
