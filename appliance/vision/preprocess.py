"""The one preprocessing path from pixels to model input, shared by daemon and tools.

Evaluation, training exports and the daemon all call these, so an accuracy figure in a
model card describes exactly what runs on the Pi.
"""

from __future__ import annotations

import cv2
import numpy as np

from appliance.vision.faces import square_with_margin
from appliance.vision.model_card import ModelCard


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
    x = (face.astype(np.float32) - card.mean) / card.std
    return x.reshape(height, width, card.channels)


def crop_face(
    frame: np.ndarray, box: tuple[int, int, int, int], margin: float, shift: float = 0.0
) -> np.ndarray:
    """The square crop around a detected face: `margin` of its side added on each side,
    centre moved up by `shift` of its height (detector boxes and training crops frame a
    face differently; see detection.margin and detection.crop_shift)."""
    height, width = frame.shape[:2]
    bx, by, bw, bh = box
    x, y, w, h = square_with_margin((bx, round(by - shift * bh), bw, bh), margin, width, height)
    return frame[y : y + h, x : x + w]
