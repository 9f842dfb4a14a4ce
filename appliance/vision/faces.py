"""Face boxes as every detector reports them, and the crop the classifiers share."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Face:
    """A face in frame pixels: box (x, y, w, h) clipped to the frame."""

    box: tuple[int, int, int, int]
    score: float
    detector: str  # "blazeface", "haar" or "track"

    @property
    def area(self) -> int:
        return self.box[2] * self.box[3]


def clip_box(x: float, y: float, w: float, h: float, width: int, height: int) -> tuple[int, ...]:
    """Integer box inside a width x height frame (may be empty: w or h == 0)."""
    x0 = round(min(max(x, 0.0), width))
    y0 = round(min(max(y, 0.0), height))
    x1 = round(min(max(x + w, 0.0), width))
    y1 = round(min(max(y + h, 0.0), height))
    return x0, y0, x1 - x0, y1 - y0


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of one box a (x0, y0, x1, y1) against boxes b (N x 4)."""
    ix0 = np.maximum(a[0], b[:, 0])
    iy0 = np.maximum(a[1], b[:, 1])
    ix1 = np.minimum(a[2], b[:, 2])
    iy1 = np.minimum(a[3], b[:, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-9)


def square_around(box: tuple[int, int, int, int], margin: float) -> tuple[int, int, int, int]:
    """Square box around a face, grown by `margin` of its side on each side, NOT clipped:
    near an edge it reaches outside the frame (see `square_with_margin` for the clipped one).

    Classifiers are trained on square crops with a little context around the face;
    squaring first keeps the aspect ratio so the resize does not distort expressions.
    """
    x, y, w, h = box
    side = max(w, h) * (1.0 + 2.0 * margin)
    cx, cy = x + w / 2.0, y + h / 2.0
    left, top = cx - side / 2.0, cy - side / 2.0
    x0, y0 = round(left), round(top)
    return x0, y0, round(left + side) - x0, round(top + side) - y0


def square_with_margin(
    box: tuple[int, int, int, int], margin: float, width: int, height: int
) -> tuple[int, int, int, int]:
    """`square_around`, clipped to the frame: a search region, which may be any shape.
    Crops for the classifiers use `preprocess.crop_face`, which pads instead."""
    return clip_box(*square_around(box, margin), width, height)


def region_of(
    frame: np.ndarray, roi: tuple[int, int, int, int] | None
) -> tuple[np.ndarray, int, int]:
    """The part of `frame` a detector should search, and its offset in the frame.

    The region is clipped to the frame, so callers size things from its real shape.
    """
    if roi is None:
        return frame, 0, 0
    height, width = frame.shape[:2]
    x, y, w, h = clip_box(*roi, width, height)
    return frame[y : y + h, x : x + w], x, y
