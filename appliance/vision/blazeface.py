"""MediaPipe BlazeFace (short range): anchors, box decoding and weighted NMS, in numpy.

The .tflite only outputs raw regressions for 896 SSD anchors; everything else MediaPipe
does in C++ graph calculators, reproduced here from its published graph settings
(face_detection_short_range.pbtxt: 4 layers, strides 8/16/16/16, fixed anchor size,
sigmoid scores clipped at 100, weighted NMS with IoU 0.3).
"""

from __future__ import annotations

import cv2
import numpy as np

from appliance.vision.faces import Face, clip_box, iou, region_of
from appliance.vision.model_card import ModelCard
from appliance.vision.runtime import ModelError, TFLiteModel

NUM_KEYPOINTS = 6
_SCORE_CLIP = 100.0


DEFAULT_STRIDES = (8, 16, 16, 16)  # face_detection_short_range.pbtxt


def ssd_anchors(
    input_size: int = 128, strides: tuple[int, ...] = DEFAULT_STRIDES, offset: float = 0.5
) -> np.ndarray:
    """Anchor centres (N x 2, normalised) in the order the model's outputs use.

    With fixed anchor size and aspect ratio 1, each layer contributes two anchors per
    cell (its scale and the interpolated one); layers sharing a stride share cells.
    """
    centres = []
    layer = 0
    while layer < len(strides):
        stride = strides[layer]
        same = sum(1 for s in strides[layer:] if s == stride)
        per_cell = 2 * same
        cells = int(np.ceil(input_size / stride))
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        grid = np.stack([(xs + offset) / cells, (ys + offset) / cells], axis=-1).reshape(-1, 2)
        centres.append(np.repeat(grid, per_cell, axis=0))
        layer += same
    return np.concatenate(centres).astype(np.float32)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list:
    """MediaPipe's weighted NMS: overlapping boxes are averaged, weighted by score.

    Boxes (x0, y0, x1, y1) with no area are dropped first: one has IoU 0 even with itself,
    so its group would be empty and its average 0/0 (NaN).
    """
    valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # False for NaN too
    boxes, scores = boxes[valid], scores[valid]
    order = np.argsort(-scores)
    boxes, scores = boxes[order], scores[order]
    kept = []
    alive = np.ones(len(scores), dtype=bool)
    for i in range(len(scores)):
        if not alive[i]:
            continue
        overlap = iou(boxes[i], boxes) > iou_threshold
        group = overlap & alive
        alive &= ~group
        weights = np.maximum(scores[group][:, None], 1e-12)
        kept.append(((boxes[group] * weights).sum(0) / weights.sum(), float(scores[i])))
    return kept


class BlazeFaceDetector:
    """Finds faces in a BGR frame (or a region of it) with BlazeFace short-range."""

    name = "blazeface"

    def __init__(
        self, card: ModelCard, threads: int = 1, min_score: float = 0.5, iou_threshold: float = 0.3
    ) -> None:
        self.card = card
        width, height = card.input_size
        if width != height or card.channels != 3:
            raise ModelError(f"{card.path}: BlazeFace needs a square 3-channel input")
        self.model = TFLiteModel(card.check_file(), threads=threads)
        self.size = width
        self.min_score = min_score
        self.iou_threshold = iou_threshold
        if self.model.input_shape != (1, self.size, self.size, 3):
            raise ModelError(
                f"{card.path}: card says input (1, {self.size}, {self.size}, 3), "
                f"model has {self.model.input_shape}"
            )
        self.anchors = ssd_anchors(self.size, *_anchor_layout(card))
        self._check_outputs()
        self._buf = np.empty((1, self.size, self.size, 3), dtype=np.float32)

    def _check_outputs(self) -> None:
        """One regressor and one score output per anchor, or a ModelError naming the card:
        a model with another anchor layout would otherwise fail mid-stream."""
        widths = {shape[-1]: shape for shape in self.model.output_shapes}
        expected = {4 + 2 * NUM_KEYPOINTS: "regressors", 1: "scores"}
        for width, what in expected.items():
            shape = widths.get(width)
            if shape is None or len(shape) != 3 or shape[:2] != (1, len(self.anchors)):
                raise ModelError(
                    f"{self.card.path}: expected {what} shaped (1, {len(self.anchors)}, {width}) "
                    f"for the card's anchors, model outputs {self.model.output_shapes}"
                )

    def detect(self, frame: np.ndarray, roi: tuple[int, int, int, int] | None = None) -> list[Face]:
        """Faces above min_score in frame pixels, best first. `roi` limits the search."""
        height, width = frame.shape[:2]
        region, rx, ry = region_of(frame, roi)
        if region.size == 0:
            return []
        rh, rw = region.shape[:2]
        # Letterbox: scale the longer side to the input, pad the rest (keeps aspect).
        scale = self.size / max(rw, rh)
        sw, sh = max(1, round(rw * scale)), max(1, round(rh * scale))
        resized = cv2.resize(region, (sw, sh), interpolation=cv2.INTER_AREA)
        pad_x, pad_y = (self.size - sw) // 2, (self.size - sh) // 2
        buf = self._buf
        buf.fill(0.0)  # 0 == mid-gray after normalisation
        rgb = resized[:, :, ::-1].astype(np.float32)
        buf[0, pad_y : pad_y + sh, pad_x : pad_x + sw] = (rgb - self.card.mean) / self.card.std
        regressors, logits = self._outputs(self.model.run(buf))
        logits = np.clip(logits.astype(np.float64), -_SCORE_CLIP, _SCORE_CLIP)
        scores = 1.0 / (1.0 + np.exp(-logits))
        keep = scores >= self.min_score
        if not keep.any():
            return []
        raw, anchors = regressors[keep], self.anchors[keep]
        centre = raw[:, 0:2] / self.size + anchors
        half = raw[:, 2:4] / self.size / 2.0
        boxes = np.concatenate([centre - half, centre + half], axis=1)  # normalised x0y0x1y1
        faces = []
        for box, score in weighted_nms(boxes, scores[keep], self.iou_threshold):
            # input-normalised -> region pixels -> frame pixels
            x0 = (box[0] * self.size - pad_x) / scale + rx
            y0 = (box[1] * self.size - pad_y) / scale + ry
            x1 = (box[2] * self.size - pad_x) / scale + rx
            y1 = (box[3] * self.size - pad_y) / scale + ry
            clipped = clip_box(x0, y0, x1 - x0, y1 - y0, width, height)
            if clipped[2] > 1 and clipped[3] > 1:
                faces.append(Face(clipped, score, self.name))
        return faces

    def _outputs(self, outputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(896 x 16 regressors, 896 scores) whatever order the runtime lists outputs in."""
        by_width = {o.shape[-1]: o for o in outputs}
        return by_width[4 + 2 * NUM_KEYPOINTS][0], by_width[1][0, :, 0]


def _anchor_layout(card: ModelCard) -> tuple[tuple[int, ...], float]:
    """(strides, offset) from the card's "anchors" (MediaPipe's defaults where absent)."""
    anchors = card.extra.get("anchors", {})
    if not isinstance(anchors, dict):
        raise ModelError(f"{card.path}: 'anchors' must be an object")
    strides = anchors.get("strides", list(DEFAULT_STRIDES))
    offset = anchors.get("offset", 0.5)
    if (
        not isinstance(strides, list)
        or not strides
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in strides)
    ):
        raise ModelError(f"{card.path}: anchors.strides must be a list of positive integers")
    if not isinstance(offset, (int, float)) or isinstance(offset, bool) or not 0 <= offset <= 1:
        raise ModelError(f"{card.path}: anchors.offset must be a number in 0..1")
    if anchors.get("fixed_size", True) is not True:
        raise ModelError(f"{card.path}: only fixed-size anchors (anchors.fixed_size) are supported")
    return tuple(strides), float(offset)
