"""OpenCV's bundled Haar cascade: the fallback face detector when BlazeFace is absent."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from appliance.vision.faces import Face, clip_box, region_of
from appliance.vision.runtime import ModelError

CASCADE = "haarcascade_frontalface_default.xml"


class HaarDetector:
    """Viola-Jones frontal faces; slower and less accurate, but needs no model download."""

    name = "haar"

    def __init__(self, min_face_px: int = 40, scale_factor: float = 1.1, min_neighbors: int = 5):
        path = Path(cv2.data.haarcascades) / CASCADE
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise ModelError(f"OpenCV Haar cascade missing or unreadable: {path}")
        self.min_face_px = min_face_px
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors

    def detect(self, frame: np.ndarray, roi: tuple[int, int, int, int] | None = None) -> list[Face]:
        height, width = frame.shape[:2]
        region, rx, ry = region_of(frame, roi)
        if region.size == 0:
            return []
        gray = region if region.ndim == 2 else cv2.cvtColor(region, cv2.COLOR_BGR2GRAY)
        found = self._cascade.detectMultiScale(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(self.min_face_px, self.min_face_px),
        )
        return [
            Face(clip_box(x + rx, y + ry, w, h, width, height), 1.0, self.name)
            for x, y, w, h in found
        ]
