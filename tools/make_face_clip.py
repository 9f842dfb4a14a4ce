#!/usr/bin/env python3
"""Build a 640x480 test/demo clip by compositing FER2013 faces onto a plain room background.

FER crops are tight 48x48 faces: upscaled into a frame they are a hard case for a face
detector (no hair or chin context, low resolution), which makes them a useful stress test.
Each face is held for a few frames with small jitter and sensor noise, like a person
sitting still in front of a camera. A JSON sidecar lists every face's label and box.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger("make_face_clip")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


@dataclass
class Shot:
    """One face held on screen: where it came from, where it is, which frames show it."""

    image: str
    label: str
    box: tuple[int, int, int, int]
    first_frame: int
    frames: int


def list_faces(root: Path) -> list[tuple[Path, str]]:
    """(path, label) for every image in a <root>/<label>/*.jpg folder, sorted."""
    return sorted(
        (p, p.parent.name) for p in root.glob("*/*") if p.suffix.lower() in IMAGE_SUFFIXES
    )


def background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A plain room: a lit wall gradient, a door frame and a picture, fine texture."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    wall = 110 + 70 * (xx / width) + 25 * (yy / height)
    texture = cv2.GaussianBlur(rng.normal(0, 6, (height, width)).astype(np.float32), (0, 0), 2)
    gray = wall + texture
    door_x = int(rng.integers(width // 2, width - 80))
    gray[:, door_x : door_x + 10] -= 45  # door frame
    gray[int(height * 0.85) :, :] -= 30  # skirting / desk edge
    px, py = int(rng.integers(20, width // 2)), int(rng.integers(10, height // 3))
    cv2.rectangle(gray, (px, py), (px + 90, py + 60), float(gray[py, px] - 50), 3)  # picture
    tint = np.array([0.92, 1.0, 1.08], dtype=np.float32)  # BGR: slightly warm light
    return np.clip(gray[..., None] * tint, 0, 255).astype(np.uint8)


def compose(
    faces: list[tuple[Path, str]],
    out: Path,
    *,
    width: int = 640,
    height: int = 480,
    fps: int = 15,
    frames_per_face: int = 6,
    min_side: int = 120,
    max_side: int = 220,
    noise: float = 3.0,
    seed: int = 0,
) -> list[Shot]:
    """Write the clip (mp4v) and return what is where."""
    rng = np.random.default_rng(seed)
    wall = background(width, height, rng)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {out}")
    shots: list[Shot] = []
    frame_no = 0
    try:
        for path, label in faces:
            gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if gray is None:
                log.warning("skipping unreadable %s", path)
                continue
            side = int(rng.integers(min_side, max_side + 1))
            face = cv2.resize(gray, (side, side), interpolation=cv2.INTER_CUBIC)
            face = cv2.cvtColor(face, cv2.COLOR_GRAY2BGR)
            x = int(rng.integers(8, width - side - 8))
            y = int(rng.integers(8, height - side - 8))
            shots.append(Shot(str(path), label, (x, y, side, side), frame_no, frames_per_face))
            for _ in range(frames_per_face):
                dx, dy = (int(v) for v in rng.integers(-3, 4, size=2))
                frame = wall.copy()
                frame[y + dy : y + dy + side, x + dx : x + dx + side] = face
                # sensor noise; float32 draws: a third of the time of float64's per frame
                jitter = rng.standard_normal(frame.shape, dtype=np.float32)
                jitter *= noise
                jitter += frame
                writer.write(np.clip(jitter, 0, 255, out=jitter).astype(np.uint8))
                frame_no += 1
    finally:
        writer.release()
    return shots


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("faces", type=Path, help="folder in <label>/*.jpg layout")
    parser.add_argument("out", type=Path, help="output .mp4")
    parser.add_argument("--count", type=int, default=0, help="random sample of N faces (0: all)")
    parser.add_argument("--per-class", type=int, default=0, help="N faces of each label")
    parser.add_argument("--frames-per-face", type=int, default=6)
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    faces = list_faces(args.faces)
    if not faces:
        log.error("no images under %s/<label>/", args.faces)
        return 2
    picker = random.Random(args.seed)
    if args.per_class:
        by_label: dict[str, list] = {}
        for item in faces:
            by_label.setdefault(item[1], []).append(item)
        faces = [
            f
            for label in sorted(by_label)
            for f in picker.sample(by_label[label], min(args.per_class, len(by_label[label])))
        ]
        picker.shuffle(faces)
    elif args.count:
        faces = picker.sample(faces, min(args.count, len(faces)))
    shots = compose(
        faces, args.out, fps=args.fps, frames_per_face=args.frames_per_face, seed=args.seed
    )
    sidecar = args.out.with_suffix(".json")
    sidecar.write_text(json.dumps({"fps": args.fps, "shots": [asdict(s) for s in shots]}, indent=1))
    log.info(
        "%s: %d faces, %d frames; %s", args.out, len(shots), sum(s.frames for s in shots), sidecar
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
