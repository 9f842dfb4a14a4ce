"""Face finding for a video stream: coarse search, verification, tracking between frames.

Letterboxing a 640x480 frame into BlazeFace's 128x128 input leaves a typical face only
25-45 px wide, where the model's scores are weak. So a full search takes low-scoring
candidates from the whole frame and re-runs BlazeFace on a region twice each candidate's
size, where the face is large and the real threshold applies. Once a face is found, the
next frames only search around it (one cheap call), and a full search runs again every
`redetect_s` or when the track is lost, so new faces are still picked up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from appliance.vision.faces import Face, square_with_margin


class RegionDetector(Protocol):
    """Anything that finds faces in a frame or a region of it (BlazeFace, Haar)."""

    name: str

    def detect(
        self, frame: np.ndarray, roi: tuple[int, int, int, int] | None = None
    ) -> list[Face]: ...


@dataclass
class FinderSettings:
    min_score: float = 0.5  # verified faces must reach this
    candidate_score: float = 0.1  # coarse full-frame candidates
    max_candidates: int = 3
    max_faces: int = 1
    min_face_px: int = 40
    roi_scale: float = 2.0  # search region side / face side
    redetect_s: float = 1.0  # full search at least this often while tracking
    duplicate_overlap: float = 0.3  # share of the smaller box two detections may overlap


@dataclass
class FaceFinder:
    """Stateful per-stream face finder. `find(frame, t)` returns faces, largest first.

    Works with any region detector: BlazeFace normally, OpenCV's Haar cascade when the
    BlazeFace model is absent or unusable (its scores are all 1.0, so verification just
    re-finds).
    """

    detector: RegionDetector
    settings: FinderSettings = field(default_factory=FinderSettings)
    detector_error: str | None = None  # why the configured detector is not the one in use
    _tracked: list[Face] = field(default_factory=list, init=False)
    _last_search_t: float = field(default=float("-inf"), init=False)

    def reset(self) -> None:
        """Forget tracks (new source, camera reconnect)."""
        self._tracked.clear()
        self._last_search_t = float("-inf")

    def find(self, frame: np.ndarray, t: float) -> list[Face]:
        faces: list[Face] = []
        due = t - self._last_search_t >= self.settings.redetect_s or t < self._last_search_t
        if self._tracked and not due:
            faces = self._follow(frame)
            if len(faces) < len(self._tracked):
                faces = []  # a face was lost: search the whole frame now
        if not faces:
            faces = self._search(frame)
            self._last_search_t = t
        self._tracked = self._keep(faces)
        return list(self._tracked)

    def _verify(self, frame: np.ndarray, face: Face, *, same_face: bool) -> Face | None:
        """Re-run the detector on a region around `face`: the real face there that overlaps
        it most (then the most confident). The region is twice the face's size, so a
        neighbour's face may be in it too, and may score higher: following a track picks
        only a face that overlaps it (`same_face`), else the track is lost and a full
        search runs; a coarse candidate takes the best overlapping one, or the best."""
        height, width = frame.shape[:2]
        roi = square_with_margin(face.box, (self.settings.roi_scale - 1) / 2, width, height)
        found = [f for f in self.detector.detect(frame, roi) if f.score >= self.settings.min_score]
        overlapping = [f for f in found if _iou(f.box, face.box) > 0]
        if overlapping:
            return max(overlapping, key=lambda f: (_iou(f.box, face.box), f.score))
        if same_face:
            return None
        return max(found, key=lambda f: f.score, default=None)

    def _follow(self, frame: np.ndarray) -> list[Face]:
        return [f for track in self._tracked if (f := self._verify(frame, track, same_face=True))]

    def _search(self, frame: np.ndarray) -> list[Face]:
        candidates = [
            c
            for tile in square_tiles(frame.shape[1], frame.shape[0])
            for c in self.detector.detect(frame, tile)
            if c.score >= self.settings.candidate_score
        ]
        candidates.sort(key=lambda c: -c.score)
        verified = []
        for cand in candidates[: self.settings.max_candidates]:
            if any(_overlap_of_smaller(cand.box, v.box) > 0.5 for v in verified):
                continue  # the same face seen from another tile
            if face := self._verify(frame, cand, same_face=False):
                verified.append(face)
        return verified

    def _keep(self, faces: list[Face]) -> list[Face]:
        """Drop tiny boxes and duplicates (the less confident of two boxes that share
        most of the smaller one's area), then largest first, at most max_faces."""
        faces = sorted(
            (f for f in faces if min(f.box[2], f.box[3]) >= self.settings.min_face_px),
            key=lambda f: -f.score,
        )
        kept: list[Face] = []
        for face in faces:
            if not any(
                _overlap_of_smaller(face.box, k.box) > self.settings.duplicate_overlap for k in kept
            ):
                kept.append(face)
        kept.sort(key=lambda f: -f.area)
        return kept[: self.settings.max_faces]


def square_tiles(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """Overlapping square regions covering the frame along its long side.

    A 640x480 frame becomes two 480x480 tiles: faces reach the model a third larger
    than with one letterboxed pass, for one extra call on search frames only.
    """
    side = min(width, height)
    count = -(-max(width, height) // side)  # ceil
    if count == 1:
        return [(0, 0, width, height)]
    step = (max(width, height) - side) / (count - 1)
    if width >= height:
        return [(round(i * step), 0, side, side) for i in range(count)]
    return [(0, round(i * step), side, side) for i in range(count)]


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two boxes (0.0 when they do not touch)."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    union = a[2] * a[3] + b[2] * b[3] - ix * iy
    return ix * iy / union if union else 0.0


def _overlap_of_smaller(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over the smaller box's area: 1.0 when one box holds the other."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    smaller = min(a[2] * a[3], b[2] * b[3])
    return ix * iy / smaller if smaller else 0.0
