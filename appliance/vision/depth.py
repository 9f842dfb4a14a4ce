"""What a depth map says about a face: how far away it is, and whether it has relief.

The depth map is aligned to the colour image (a RealSense's `rs.align`), so a face box
found in colour pixels covers the face in depth too. A detector's box is not the face's
outline, though: it may reach past it (BlazeFace's box for a tightly cropped face can be
half as large again as the face), onto the wall behind or past the edge of a photo.

- distance: the median of the valid samples (0 is "measured nothing") in the box's
  central CORE (its middle half across and down: the face, whatever the box's edges hold),
  refined as the median of the samples of the INNER region (its middle 80%) that lie
  within WINDOW_M of it: the face's samples, not the wall behind or a hand in front.
- relief: the INNER region is cut into a GRID x GRID grid of blocks; each block that is
  mostly face gives one point, its face samples' median; a plane is fitted to the points
  by least squares, which takes out the tilt of a card held at an angle; the relief is the
  spread of the points about that plane, its 90th percentile minus its 10th. A face's
  nose, eye sockets and cheeks curving away give centimetres; a printed photo or a phone
  screen, flat at any angle, gives the sensor's noise, which the block medians shrink
  (README, Sources: the measured numbers behind `detection.min_relief_m`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CORE = 0.5  # share of the box's width and height that is surely face (centred)
INNER = 0.8  # share of the box's width and height read for the face's samples
GRID = 6  # blocks per side of the INNER region
WINDOW_M = 0.2  # samples farther than this from the face's distance are not the face
MIN_VALID_SHARE = 0.3  # fewer valid samples than this share of the CORE: no reading
MIN_BLOCKS = 12  # of GRID * GRID: fewer blocks that are mostly face, no relief
MIN_SAMPLES = 16


@dataclass(frozen=True, slots=True)
class FaceDepth:
    """What depth says about one face: None where it says nothing (no depth map, or too
    few valid samples in the box)."""

    distance_m: float | None = None
    relief_m: float | None = None


NO_DEPTH = FaceDepth()


def central_region(
    box: tuple[int, int, int, int], share: float, width: int, height: int
) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the middle `share` of the box across and down, inside a
    width x height map (empty when the box is off the map)."""
    x, y, w, h = box
    x0 = min(width, max(0, round(x + w * (1 - share) / 2)))
    y0 = min(height, max(0, round(y + h * (1 - share) / 2)))
    x1 = max(x0, min(width, round(x + w * (1 + share) / 2)))
    y1 = max(y0, min(height, round(y + h * (1 + share) / 2)))
    return x0, y0, x1, y1


def _valid(region: np.ndarray) -> np.ndarray:
    return np.isfinite(region) & (region > 0)


def measure_face(depth: np.ndarray | None, box: tuple[int, int, int, int]) -> FaceDepth:
    """The distance (m) and relief (m) of the face in `box` (x, y, w, h in the depth
    map's pixels, which are the colour image's) of an aligned depth map in metres."""
    if depth is None:
        return NO_DEPTH
    height, width = depth.shape[:2]
    x0, y0, x1, y1 = central_region(box, CORE, width, height)
    core = np.asarray(depth[y0:y1, x0:x1], dtype=np.float32)
    valid = _valid(core)
    if core.size == 0 or valid.sum() < max(MIN_SAMPLES, MIN_VALID_SHARE * core.size):
        return NO_DEPTH
    anchor = float(np.median(core[valid]))
    x0, y0, x1, y1 = central_region(box, INNER, width, height)
    region = np.asarray(depth[y0:y1, x0:x1], dtype=np.float32)
    face = _valid(region) & (np.abs(region - anchor) <= WINDOW_M)
    if face.sum() < MIN_SAMPLES:  # the core is split between near and far: no surface
        return FaceDepth(round(anchor, 4), None)
    distance = float(np.median(region[face]))
    relief = _relief(region, face)
    return FaceDepth(round(distance, 4), None if relief is None else round(relief, 4))


def _relief(region: np.ndarray, face: np.ndarray) -> float | None:
    """Spread (P90 - P10) of the block medians about their least-squares plane."""
    rows = np.linspace(0, region.shape[0], GRID + 1).round().astype(int)
    cols = np.linspace(0, region.shape[1], GRID + 1).round().astype(int)
    points = []
    for i in range(GRID):
        for j in range(GRID):
            block = region[rows[i] : rows[i + 1], cols[j] : cols[j + 1]]
            keep = face[rows[i] : rows[i + 1], cols[j] : cols[j + 1]]
            if block.size and keep.sum() * 2 >= block.size:  # at least half is face
                points.append(((j + 0.5) / GRID, (i + 0.5) / GRID, np.median(block[keep])))
    if len(points) < MIN_BLOCKS:
        return None
    xyz = np.asarray(points, dtype=np.float64)
    design = np.column_stack([xyz[:, 0], xyz[:, 1], np.ones(len(xyz))])
    coef, *_ = np.linalg.lstsq(design, xyz[:, 2], rcond=None)
    residual = xyz[:, 2] - design @ coef
    low, high = np.percentile(residual, [10, 90])
    return float(high - low)
