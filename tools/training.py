"""What both trainers share (tools/train_emotion.py, tools/train_va.py): FER2013
loading, the augmentations, class weights, the run's checks (batches, divergence,
finite weights), threads and time budget, resumable runs, scoring in a process without
TensorFlow, and installing a model with its card.

TensorFlow is imported inside the functions that need it: loading data and checking a
run work without it, and the daemon never imports this module.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from appliance.common.files import replace_together  # noqa: E402

log = logging.getLogger("training")

LABELS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
CSV_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # fer2013.csv
CSV_SPLITS = {"Training": "train", "PublicTest": "val"}
SIZE = 48
MEAN, STD = 127.5, 127.5  # model input = (pixel - MEAN) / STD, as in the card
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


@dataclass
class Dataset:
    images: np.ndarray  # N x SIZE x SIZE uint8
    labels: np.ndarray  # N int

    def __len__(self) -> int:
        return len(self.labels)


def load_folder(root: Path, split: str) -> Dataset:
    images, labels = [], []
    for index, label in enumerate(LABELS):
        folder = root / split / label
        if not folder.is_dir():
            raise SystemExit(f"{folder} missing: expected <root>/<split>/<class>/*.jpg")
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if image is None:
                log.warning("skipping unreadable %s", path)
                continue
            if image.shape != (SIZE, SIZE):
                image = cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
            images.append(image)
            labels.append(index)
    if not images:  # np.stack would fail with "need at least one array to stack"
        raise SystemExit(f"{root / split}: no images in any class folder ({', '.join(LABELS)})")
    return Dataset(np.stack(images), np.array(labels, dtype=np.int64))


def load_csv(path: Path) -> dict[str, Dataset]:
    """The classic fer2013.csv; rows with bad pixels are reported by line and skipped."""
    split_rows: dict[str, tuple[list, list]] = {"train": ([], []), "val": ([], [])}
    with path.open(newline="") as fh:
        for line_no, row in enumerate(csv.DictReader(fh), start=2):
            split = CSV_SPLITS.get(row.get("Usage", ""))
            if split is None:
                continue  # PrivateTest and unknown usages are never read
            try:
                pixels = np.array(row["pixels"].split(), dtype=np.uint8).reshape(SIZE, SIZE)
                label = LABELS.index(CSV_LABELS[int(row["emotion"])])
            except (KeyError, ValueError, IndexError) as exc:
                log.warning("%s:%d: skipped (%s)", path, line_no, exc)
                continue
            split_rows[split][0].append(pixels)
            split_rows[split][1].append(label)
    for usage, split in CSV_SPLITS.items():
        if not split_rows[split][0]:  # np.stack would fail with a bare numpy message
            raise SystemExit(
                f"{path}: no {usage} rows with readable pixels (columns emotion, pixels, "
                f"Usage; Usage Training -> train, PublicTest -> val)"
            )
    return {
        split: Dataset(np.stack(images), np.array(labels, dtype=np.int64))
        for split, (images, labels) in split_rows.items()
    }


def load_data(data: Path) -> dict[str, Dataset]:
    """Folders or fer2013.csv; a missing or empty source stops with a message, not a
    traceback."""
    if not data.exists():
        raise SystemExit(
            f"{data}: no such file or folder (expected <root>/train|val/<class>/*.jpg "
            "or fer2013.csv; see --data)"
        )
    if data.suffix.lower() == ".csv":
        return load_csv(data)
    return {split: load_folder(data, split) for split in ("train", "val")}


def count_macs(model) -> int:
    """Multiply-accumulates of the conv, depthwise and dense layers, nested models too
    (tools/train_va.py's MobileNetV3 body is one)."""
    from tensorflow import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += count_macs(layer)
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            h, w, c = layer.output.shape[1:]
            total += h * w * c * layer.kernel_size[0] * layer.kernel_size[1]
        elif isinstance(layer, keras.layers.Conv2D):
            h, w, c = layer.output.shape[1:]
            kh, kw = layer.kernel_size
            total += h * w * c * kh * kw * layer.input.shape[-1]
        elif isinstance(layer, keras.layers.Dense):
            total += layer.input.shape[-1] * layer.units
    return int(total)


def square_boxes(rng, side):
    """B x SIZE x SIZE masks: a square of `side` px (one per face) at a uniform random
    centre, clipped at the edges; random erasing and CutMix both cut these."""
    import tensorflow as tf

    batch = tf.shape(side)[0]
    cx = rng.uniform([batch], 0, SIZE)
    cy = rng.uniform([batch], 0, SIZE)
    grid = tf.range(SIZE, dtype=tf.float32)
    inside_x = tf.abs(grid[None, :] - cx[:, None]) < side[:, None] / 2
    inside_y = tf.abs(grid[None, :] - cy[:, None]) < side[:, None] / 2
    return tf.logical_and(inside_y[:, :, None], inside_x[:, None, :])


def warp(images, transform):
    """B x 48 x 48 x 1 faces through per-face projective transforms (8 numbers each,
    output -> input), bilinear, edges reflected: both augmenters' geometry."""
    import tensorflow as tf

    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transform,
        output_shape=[SIZE, SIZE],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )


def augmenter(seed: int):
    """Flips, small rotation/shift/scale, brightness/contrast, mild noise and blur, and
    random erasing, all in the TF graph so the 2 cores are not starved by Python."""
    import tensorflow as tf

    rng = tf.random.Generator.from_seed(seed)
    blur = tf.constant(
        cv2.getGaussianKernel(3, 0.8) @ cv2.getGaussianKernel(3, 0.8).T, dtype=tf.float32
    )[:, :, None, None]

    def augment(images: tf.Tensor) -> tf.Tensor:  # B x 48 x 48 x 1, float 0..255
        batch = tf.shape(images)[0]
        flip = rng.uniform([batch]) < 0.5
        images = tf.where(flip[:, None, None, None], tf.image.flip_left_right(images), images)
        angle = rng.uniform([batch], -0.17, 0.17)  # +-10 degrees
        scale = rng.uniform([batch], 0.9, 1.1)
        shift = rng.uniform([batch, 2], -0.08, 0.08) * SIZE
        cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
        centre = (SIZE - 1) / 2.0
        tx = centre - cos * centre + sin * centre - shift[:, 0]
        ty = centre - sin * centre - cos * centre - shift[:, 1]
        transform = tf.stack(
            [cos, -sin, tx, sin, cos, ty, tf.zeros([batch]), tf.zeros([batch])], axis=1
        )
        images = warp(images, transform)
        contrast = rng.uniform([batch, 1, 1, 1], 0.75, 1.25)
        brightness = rng.uniform([batch, 1, 1, 1], -30.0, 30.0)
        mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
        images = (images - mean) * contrast + mean + brightness
        noisy = rng.uniform([batch, 1, 1, 1]) < 0.3
        noise = rng.normal(tf.shape(images)) * rng.uniform([batch, 1, 1, 1], 0.0, 8.0)
        images = tf.where(noisy, images + noise, images)
        blurred = rng.uniform([batch, 1, 1, 1]) < 0.15
        images = tf.where(blurred, tf.nn.conv2d(images, blur, 1, "SAME"), images)
        # random erasing: one gray square of 8-20 px on half the faces
        box = square_boxes(rng, rng.uniform([batch], 8, 20))[..., None]
        erase = tf.logical_and(box, (rng.uniform([batch]) < 0.5)[:, None, None, None])
        images = tf.where(erase, MEAN, images)
        return tf.clip_by_value(images, 0.0, 255.0)

    return augment


def robust_augmenter(seed: int):
    """What real sensors and rooms do to a face, in the TF graph (see ROBUST_AUGMENTATION):
    geometry (flip, rotation, scale, shift, head yaw), low resolution, defocus/motion
    blur, exposure/gamma/contrast, occluders and erasing, JPEG, Gaussian and impulse
    noise. Each corruption hits a share of the faces, so about a third stay clean."""
    import tensorflow as tf

    rng = tf.random.Generator.from_seed(seed)
    taps = tf.range(-3.0, 4.0)  # 7x7 blur kernels
    kv, ku = tf.meshgrid(taps, taps, indexing="ij")
    grid = tf.range(SIZE, dtype=tf.float32)

    def chance(batch, p):
        return rng.uniform([batch]) < p

    def per_face(mask):
        return mask[:, None, None, None]

    def geometry(images, batch):
        flip = chance(batch, 0.5)
        images = tf.where(per_face(flip), tf.image.flip_left_right(images), images)
        angle = rng.uniform([batch], -0.26, 0.26)  # +-15 degrees
        scale = rng.uniform([batch], 0.85, 1.15)
        shift = rng.uniform([batch, 2], -0.08, 0.08) * SIZE
        # head yaw towards three-quarter view: one side foreshortened (perspective) and
        # the face narrower, on 30% of faces
        yaw = chance(batch, 0.3)
        persp = tf.where(yaw, rng.uniform([batch], -0.008, 0.008), 0.0)
        squeeze = tf.where(yaw, rng.uniform([batch], 0.8, 1.0), 1.0)
        cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
        c = (SIZE - 1) / 2.0
        zeros, ones = tf.zeros([batch]), tf.ones([batch])
        # output -> input: p_in = T(c + shift) . P . T(-c) p_out, P = [[A, 0], [persp, 0, 1]]
        a00, a01 = cos / squeeze, -sin
        a10, a11 = sin / squeeze, cos
        p = tf.stack(
            [
                tf.stack([a00, a01, zeros], 1),
                tf.stack([a10, a11, zeros], 1),
                tf.stack([persp, zeros, ones], 1),
            ],
            1,
        )
        t_in = tf.stack(
            [
                tf.stack([ones, zeros, c + shift[:, 0]], 1),
                tf.stack([zeros, ones, c + shift[:, 1]], 1),
                tf.stack([zeros, zeros, ones], 1),
            ],
            1,
        )
        t_out = tf.constant([[1.0, 0.0, -c], [0.0, 1.0, -c], [0.0, 0.0, 1.0]])
        m = tf.matmul(tf.matmul(t_in, p), tf.broadcast_to(t_out, [batch, 3, 3]))
        m = m / m[:, 2:3, 2:3]
        transform = tf.reshape(m, [batch, 9])[:, :8]
        return warp(images, transform)

    def low_resolution(images, batch):
        # a face 20-40 px across in the camera frame, upsampled to 48 by the daemon
        side = rng.uniform([], 20, 41, dtype=tf.int32)
        small = tf.image.resize(images, tf.stack([side, side]), method="area")
        again = tf.image.resize(small, [SIZE, SIZE], method="bilinear")
        return tf.where(per_face(chance(batch, 0.1)), again, images)

    def blur(images, batch):
        # defocus (Gaussian sigma 0.5-1.4) or motion (a line 2-6 px long at any angle) on
        # 15%: a 7x7 kernel per face
        sigma = rng.uniform([batch, 1, 1], 0.5, 1.4)
        gauss = tf.exp(-(ku**2 + kv**2)[None] / (2 * sigma**2))
        theta = rng.uniform([batch, 1, 1], 0.0, math.pi)
        length = rng.uniform([batch, 1, 1], 2.0, 6.0)
        across = tf.abs(-tf.sin(theta) * ku + tf.cos(theta) * kv)
        along = tf.abs(tf.cos(theta) * ku + tf.sin(theta) * kv)
        motion = tf.nn.relu(1 - across) * tf.clip_by_value(length / 2 + 0.5 - along, 0, 1)
        kind = rng.uniform([batch, 1, 1]) < 0.5
        kernel = tf.where(kind, gauss, motion)
        blurred = chance(batch, 0.15)
        identity = tf.cast((ku == 0) & (kv == 0), tf.float32)[None]
        kernel = tf.where(blurred[:, None, None], kernel, identity)
        kernel = kernel / tf.reduce_sum(kernel, axis=[1, 2], keepdims=True)
        # one depthwise conv with the batch as channels: a kernel per face
        x = tf.transpose(images, [3, 1, 2, 0])  # 1 x H x W x B
        x = tf.pad(x, [[0, 0], [3, 3], [3, 3], [0, 0]], mode="REFLECT")
        k = tf.transpose(kernel, [1, 2, 0])[:, :, :, None]  # 7 x 7 x B x 1
        out = tf.nn.depthwise_conv2d(x, k, [1, 1, 1, 1], "VALID")
        return tf.transpose(out, [3, 1, 2, 0])

    def photometric(images, batch):
        # exposure x0.4-1.6 (log-uniform) on 40%, gamma 0.6-1.6 on 30%, then mild
        # contrast/brightness on all. A colour cast before the gray conversion is, on these
        # gray faces, a gain of the luminance: covered by the exposure range.
        gain = tf.exp(rng.uniform([batch, 1, 1, 1], math.log(0.4), math.log(1.6)))
        images = tf.where(per_face(chance(batch, 0.4)), images * gain, images)
        images = tf.clip_by_value(images, 0.0, 255.0)
        gamma = tf.exp(rng.uniform([batch, 1, 1, 1], math.log(0.6), math.log(1.6)))
        curved = 255.0 * tf.pow(images / 255.0 + 1e-6, gamma)
        images = tf.where(per_face(chance(batch, 0.3)), curved, images)
        contrast = rng.uniform([batch, 1, 1, 1], 0.75, 1.25)
        brightness = rng.uniform([batch, 1, 1, 1], -25.0, 25.0)
        mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
        return tf.clip_by_value((images - mean) * contrast + mean + brightness, 0.0, 255.0)

    def occlusion(images, batch):
        # a hand or microphone: an ellipse of one tone (with texture), mostly over the lower
        # face, on 12%; random erasing (a gray square of 8-20 px) on 25%
        cx = rng.uniform([batch, 1, 1], 0, SIZE)
        cy = rng.uniform([batch, 1, 1], 0.35 * SIZE, SIZE)
        ax = rng.uniform([batch, 1, 1], 5, 16)
        ay = rng.uniform([batch, 1, 1], 4, 13)
        phi = rng.uniform([batch, 1, 1], 0, math.pi)
        dx, dy = grid[None, None, :] - cx, grid[None, :, None] - cy
        u = (tf.cos(phi) * dx + tf.sin(phi) * dy) / ax
        v = (-tf.sin(phi) * dx + tf.cos(phi) * dy) / ay
        inside = (u**2 + v**2 <= 1.0) & chance(batch, 0.12)[:, None, None]
        tone = rng.uniform([batch, 1, 1, 1], 0, 255) + rng.normal([batch, SIZE, SIZE, 1]) * 6
        images = tf.where(inside[..., None], tone, images)
        side = rng.uniform([batch], 8, 20)
        ex = rng.uniform([batch], 0, SIZE)
        ey = rng.uniform([batch], 0, SIZE)
        in_x = tf.abs(grid[None, :] - ex[:, None]) < side[:, None] / 2
        in_y = tf.abs(grid[None, :] - ey[:, None]) < side[:, None] / 2
        box = in_y[:, :, None] & in_x[:, None, :] & chance(batch, 0.25)[:, None, None]
        return tf.clip_by_value(tf.where(box[..., None], MEAN, images), 0.0, 255.0)

    def jpeg(images, batch):
        quality = rng.uniform([batch], 15, 76, dtype=tf.int32)
        pixels = tf.cast(tf.round(images), tf.uint8)
        coded = tf.map_fn(
            lambda item: tf.image.adjust_jpeg_quality(item[0], item[1]),
            (pixels, quality),
            fn_output_signature=tf.uint8,
        )
        return tf.where(per_face(chance(batch, 0.1)), tf.cast(coded, tf.float32), images)

    def sensor_noise(images, batch):
        # additive Gaussian, sigma 2-60 grey levels, on 25%; salt-and-pepper, 0.5-10% of
        # the pixels, on 12% (exclusive)
        pick = rng.uniform([batch])
        sigma = rng.uniform([batch, 1, 1, 1], 2.0, 60.0)
        gaussian = images + rng.normal(tf.shape(images)) * sigma
        images = tf.where(per_face(pick < 0.25), gaussian, images)
        amount = rng.uniform([batch, 1, 1, 1], 0.005, 0.1)
        hit = rng.uniform(tf.shape(images)) < amount
        salt = rng.uniform(tf.shape(images)) < 0.5
        impulse = tf.where(hit, tf.where(salt, 255.0, 0.0), images)
        images = tf.where(per_face((pick >= 0.25) & (pick < 0.37)), impulse, images)
        return tf.clip_by_value(images, 0.0, 255.0)

    def augment(images):  # B x 48 x 48 x 1, float 0..255
        batch = tf.shape(images)[0]
        images = geometry(images, batch)
        images = low_resolution(images, batch)
        images = blur(images, batch)
        images = photometric(images, batch)
        images = occlusion(images, batch)
        images = jpeg(images, batch)
        return sensor_noise(images, batch)

    return augment


ROBUST_AUGMENTATION = (
    "h-flip, rotation +-15 deg, scale 0.85-1.15, shift +-8%, head yaw (perspective + "
    "narrowing, 30%), low resolution (20-40 px upsampled, 10%), defocus or motion blur "
    "(15%), exposure x0.4-1.6 (40%), gamma 0.6-1.6 (30%), contrast 0.75-1.25, brightness "
    "+-25, hand/microphone occluder ellipse (12%), random erasing 8-20 px (25%), JPEG "
    "quality 15-75 (10%), Gaussian noise sigma 2-60 (25%) or salt-and-pepper 0.5-10% (12%)"
)


BASIC_AUGMENTATION = (
    "h-flip, rotation +-10 deg, shift +-8%, scale 0.9-1.1, brightness +-30, contrast "
    "0.75-1.25, gaussian noise (30%), blur (15%), random erasing 8-20 px (50%)"
)


def class_weights(labels: np.ndarray) -> np.ndarray:
    """Square-root inverse frequency, mean 1: disgust (436 faces) counts ~4x, happy ~0.5x.
    Full inverse frequency over-predicts the rare classes and costs overall accuracy.

    A class without faces (`--limit`, an empty folder) gets weight 0: its infinite
    inverse frequency times 0 faces made every weight NaN, and training ran on NaN loss."""
    counts = np.bincount(labels, minlength=len(LABELS)).astype(np.float64)
    present = counts > 0
    weights = np.zeros(len(counts))
    weights[present] = np.sqrt(counts.sum() / (present.sum() * counts[present]))
    return weights / (weights * counts).sum() * counts.sum()


def check_batches(faces: int, batch_size: int) -> None:
    """Stop when the train set fills no batch: batches drop the remainder, so Keras would
    run zero steps and fail with a traceback (or divide by zero in the LR schedule)."""
    if faces < batch_size:
        raise SystemExit(
            f"{faces} training faces: fewer than one batch of {batch_size}, so no training "
            "step would run; lower --batch-size, raise --limit or add data"
        )


def best_epoch(
    history: dict[str, list[float]], monitor: str, mode: str, keys: tuple[str, ...]
) -> tuple[int, str]:
    """(the epoch, from 1, whose weights ModelCheckpoint(save_best_only) kept, a note for
    the card when training diverged or "").

    The kept epoch is the first with the best finite `monitor` ("min" or "max"): NaN/inf
    never improves on anything, so a late NaN loss (TerminateOnNaN ends that epoch) does
    not lose the epochs before it; those are exported and the note says where it
    diverged (the first epoch with a non-finite value in `keys`). Stops when no epoch
    has a finite `monitor` (nothing was checkpointed), or when the best one is the
    diverged epoch or later (an accuracy can look finite on NaN weights)."""
    values = np.asarray(history.get(monitor) or [], dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        raise SystemExit(
            f"training diverged: {monitor} had no finite epoch in {len(values)}; "
            "nothing exported (try a lower --lr, or check the data)"
        )
    worst = np.inf if mode == "min" else -np.inf
    masked = np.where(finite, values, worst)
    best = int(np.argmin(masked) if mode == "min" else np.argmax(masked)) + 1
    for epoch in range(1, len(values) + 1):
        bad = [
            (key, history[key][epoch - 1])
            for key in keys
            if len(history.get(key) or ()) >= epoch and not np.isfinite(history[key][epoch - 1])
        ]
        if not bad:
            continue
        key, value = bad[0]
        if best >= epoch:
            raise SystemExit(
                f"training diverged: {key} was {value} at epoch {epoch}, and the best "
                f"{monitor} is from epoch {best}; nothing exported (try a lower --lr, or "
                "check the data)"
            )
        return best, (
            f"training diverged at epoch {epoch} ({key} was {value}), which ended it; "
            f"exported epoch {best}, the best before it"
        )
    return best, ""


def check_weights_finite(weights: list[np.ndarray], source: Path) -> None:
    """Stop before export when the weights to be exported hold NaN/inf: exporting them
    would replace a working model with one that outputs NaN."""
    bad = sum(not np.isfinite(np.asarray(w)).all() for w in weights)
    if bad:
        raise SystemExit(
            f"{source}: {bad} of {len(weights)} weight tensors hold NaN/inf (training "
            "diverged); nothing exported (try a lower --lr, or check the data)"
        )


def use_threads(threads: int) -> None:
    """Run TensorFlow on `threads` threads. Once TF has run an op in this process (a
    notebook, a test, a second run) the setting is fixed: keep it and say so."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        log.warning(
            "TensorFlow already initialised in this process: --threads %d not applied", threads
        )


class TimeBudget:
    """Keras callback: stop cleanly when the next epoch would overrun the budget."""

    def __new__(cls, budget_s: float):
        from tensorflow import keras

        class _TimeBudget(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.start = time.monotonic()

            def on_epoch_end(self, epoch, logs=None):
                elapsed = time.monotonic() - self.start
                if elapsed / (epoch + 1) * (epoch + 2) > budget_s:
                    log.warning("time budget reached after %d epochs", epoch + 1)
                    self.model.stop_training = True

        return _TimeBudget()


PER_CROP_MIN_STD = 4.0  # grey levels: a flat crop is not blown up into noise


def normaliser(kind: str):
    """Pixels (float, 0..255, ... x 48 x 48 x 1) -> model input, as the card will say.

    `fixed`: (x - 127.5) / 127.5. `per-crop`: each face minus its mean, over its standard
    deviation (at least PER_CROP_MIN_STD), so exposure and contrast matter less; the
    daemon's prepare_face does the same from the card's `normalization.per_crop`."""
    import tensorflow as tf

    if kind == "fixed":
        return lambda images: (images - MEAN) / STD
    if kind != "per-crop":
        raise ValueError(f"normalisation {kind!r}: fixed or per-crop")

    def per_crop(images):
        mean = tf.reduce_mean(images, axis=[-3, -2, -1], keepdims=True)
        std = tf.math.reduce_std(images, axis=[-3, -2, -1], keepdims=True)
        return (images - mean) / tf.maximum(std, PER_CROP_MIN_STD)

    return per_crop


def card_normalization(kind: str, exposure_mean: float | None = None) -> dict:
    """The card's input.normalization; `exposure_mean` (test time only, like the flip:
    the training crops are not rescaled) has the daemon bring each crop to that mean."""
    if kind == "per-crop":
        norm = {"mean": 0.0, "std": 1.0, "per_crop": True, "min_std": PER_CROP_MIN_STD}
    else:
        norm = {"mean": MEAN, "std": STD}
    return norm if exposure_mean is None else {**norm, "exposure_mean": exposure_mean}


def exposure_mean_arg(text: str) -> float:
    """--exposure-mean, checked before hours of training rather than by the card after."""
    value = float(text)
    if not 0 < value < 255:
        raise argparse.ArgumentTypeError(f"{text}: a mean grey level above 0 and below 255")
    return value


EXPOSURE_HELP = (
    "test-time exposure: the card has the daemon scale each face crop's grey levels to "
    "this mean before normalising (FER2013 training crops average 131); applied at "
    "inference and in this script's evaluation, not to the training crops"
)


def read_history(path: Path) -> dict[str, list[float]]:
    """history.csv (CSVLogger) as columns; every segment of a resumed run appends to it."""
    if not path.is_file():
        return {}
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {key: [float(row[key]) for row in rows] for key in (rows[0] if rows else {})}


def backup_epoch(backup: Path) -> int:
    """Epochs completed by the run whose BackupAndRestore state is in `backup` (0: none)."""
    try:
        return int(json.loads((backup / "training_metadata.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def truncate_history(path: Path, epochs: int) -> None:
    """Keep the header and the first `epochs` rows of history.csv."""
    lines = path.read_text().splitlines(keepends=True) if path.is_file() else []
    if len(lines) > epochs + 1:
        path.write_text("".join(lines[: epochs + 1]))


def install(files: list[Path], out: Path) -> list[Path]:
    """Put finished files into `out` as one change, in order (model, then card), through
    the project's one atomic replacement (appliance/common/files.py): all are staged
    and fsynced first, then renamed back to back, so a crash while converting or scoring
    never leaves a new model beside the old card's sha256 (the daemon would refuse it),
    and a failure while staging leaves `out` as it was."""
    out.mkdir(parents=True, exist_ok=True)
    try:
        replace_together([(out / source.name, source.read_bytes()) for source in files])
    except OSError as exc:
        raise SystemExit(f"installing into {out} failed ({exc}); nothing installed") from None
    installed = [out / source.name for source in files]
    for target in installed:
        log.info("installed %s", target)
    return installed


def run_in_fresh_process(fn, *args):
    """fn(*args) in a fresh spawned process (no TensorFlow loaded); its result.

    multiprocessing.Pool.apply waited forever when the worker died (OOM killer, a
    segfault in the runtime): the pool replaced it and the task was lost. A dead worker
    now stops the run, before anything is installed."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            return pool.submit(fn, *args).result()
        except BrokenProcessPool:
            raise SystemExit(
                "scoring process died (killed for memory? crashed?); nothing installed"
            ) from None


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tensor_quantization(path: Path) -> dict:
    from appliance.vision.runtime import interpreter_class

    interp = interpreter_class()(model_path=str(path))
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    return {
        "input": {
            "dtype": np.dtype(inp["dtype"]).name,
            "scale": float(inp["quantization"][0]),
            "zero_point": int(inp["quantization"][1]),
        },
        "output": {
            "dtype": np.dtype(out["dtype"]).name,
            "scale": float(out["quantization"][0]),
            "zero_point": int(out["quantization"][1]),
        },
    }
