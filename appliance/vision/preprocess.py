"""The one preprocessing path from pixels to model input, shared by daemon and tools.

Evaluation, training exports and the daemon all call these, so an accuracy figure in a
model card describes exactly what runs on the Pi.
"""

from __future__ import annotations

import cv2
import numpy as np

from appliance.vision.faces import square_around
from appliance.vision.model_card import ModelCard

# A crop darker than its card's exposure_mean / this is mostly sensor noise: brightening
# it further only amplifies that.
MAX_EXPOSURE_GAIN = 8.0


def prepare_face(face: np.ndarray, card: ModelCard) -> np.ndarray:
    """A face image (gray or BGR, any size) -> float32 H x W x C model input per the card."""
    if card.channels == 1:
        if face.ndim == 3:
            face = cv2.cvtColor(face, cv2.COLOR_BGR2GRAY)
    elif face.ndim == 2:
        face = cv2.cvtColor(face, cv2.COLOR_GRAY2RGB)
    else:
        face = cv2.cvtColor(face, cv2.COLOR_BGR2RGB)
    width, height = card.input_size
    if face.shape[1] != width or face.shape[0] != height:
        shrinking = face.shape[0] > height
        face = cv2.resize(
            face, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        )
    x = face.astype(np.float32)
    if card.exposure_mean is not None:
        # a face in a dim room or against a window, brought to the exposure the model was
        # trained at (what a camera's auto-exposure would do for the face alone)
        gain = min(card.exposure_mean / max(_mean(x), 1e-3), MAX_EXPOSURE_GAIN)
        x = np.minimum(x * gain, 255.0)  # grey levels and the gain are >= 0
    if card.per_crop_min_std is not None:
        mean, std = _mean_and_std(x)
        x = (x - mean) * np.float32(1.0 / max(std, card.per_crop_min_std))
    if card.mean != 0.0 or card.std != 1.0:
        x = (x - card.mean) / card.std
    return x.reshape(height, width, card.channels)


def _mean(x: np.ndarray) -> float:
    """Over every pixel (OpenCV's for a gray crop: numpy's call overhead is the cost at
    48 x 48; cv2.mean would give channel 0's alone for a colour one)."""
    return cv2.mean(x)[0] if x.ndim == 2 else float(x.mean())


def _mean_and_std(x: np.ndarray) -> tuple[float, float]:
    """Over every pixel: OpenCV's one pass for a gray crop (a quarter of numpy's mean and
    std at 48 x 48, where the call overhead is the cost), numpy's across channels."""
    if x.ndim == 2:
        mean, std = cv2.meanStdDev(x)
        return float(mean[0, 0]), float(std[0, 0])
    return float(x.mean()), float(x.std())


def crop_face(
    frame: np.ndarray, box: tuple[int, int, int, int], margin: float, shift: float = 0.0
) -> np.ndarray:
    """The square crop around a detected face: `margin` of its side added on each side,
    centre moved up by `shift` of its height (detector boxes and training crops frame a
    face differently; see detection.margin and detection.crop_shift).

    Where the square reaches past the frame edge, the missing part repeats the edge pixels
    (like cv2.BORDER_REPLICATE) instead of the crop being cut short: a non-square crop
    would be stretched by the resize in `prepare_face`, distorting the expression.
    """
    height, width = frame.shape[:2]
    bx, by, bw, bh = box
    x, y, w, h = square_around((bx, round(by - shift * bh), bw, bh), margin)
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, width), min(y + h, height)
    if x1 <= x0 or y1 <= y0:  # no part of the square in the frame (an empty box)
        return frame[0:0, 0:0]
    crop = frame[y0:y1, x0:x1]
    pad = ((y0 - y, y + h - y1), (x0 - x, x + w - x1))
    if any(sum(p) for p in pad):
        crop = np.pad(crop, pad + ((0, 0),) * (crop.ndim - 2), mode="edge")
    return crop
