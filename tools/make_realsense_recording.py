#!/usr/bin/env python3
"""Write a RealSense recording (.db3) of faces in a synthetic depth scene.

It goes through the real pyrealsense2: a `software_device` with a D435-like colour and
depth sensor, recorded by `rs.recorder`, so playback, alignment and depth units are
librealsense's own. pyrealsense2 2.59 records rosbag2 `.db3` only (it plays `.bag` too).

The scene is laid out in the colour camera's pixels: FER face images pasted (enlarged)
onto a room background, each with a depth shape behind it, in front of a flat wall.

    face:D[:X,Y[:SIDE]]    a face-shaped relief at D metres (its eyes and cheeks at D:
                           a head curving 9 cm back by its outline, a 2.5 cm nose,
                           1 cm eye sockets), the face image centred at colour pixel X,Y,
                           SIDE pixels across
    card:D[:X,Y[:SIDE]]    a flat photo of a face at D metres (a card 1.3x the face with a
                           pale border); --tilt turns cards about the vertical axis
    person:D[:X,Y[:SIDE]]  the same relief as `face`, meant far away (a passer-by)

--relief changes the shape of `face` and `person`: `head` (the default, above),
`dome:H` (half an ellipsoid H metres high over the face image) or `bump:H` (a Gaussian
bump H metres high, its sigma half the face's half-width): the shapes the flat-face
check's threshold was measured on. --card-margin sets a card's side over its face's (1.3).

The depth sensor (848x480, 90 degrees across) sits 15 mm from the colour camera (640x480,
55 degrees), so depth must be aligned to colour to be read at a face's pixels; it sees
the scene from its own place (a forward projection with a depth buffer), with noise
growing with the square of the distance, as a stereo camera's does, and a few holes.
With --aligned the depth stream has the colour stream's size and place instead, and no
extrinsics are recorded (a recording made that way elsewhere). A JSON sidecar (OUT.json)
lists every object with its face box in colour pixels.

    python tools/make_realsense_recording.py out.db3 face:0.8:160,240:150 card:0.8:480,240
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_face_clip import background, list_faces  # noqa: E402

log = logging.getLogger("make_realsense_recording")

FACES = ROOT / "tests" / "fixtures" / "faces"
KINDS = ("face", "card", "person")
COLOR = (640, 480, 615.0)  # width, height, focal length in pixels: a D435 at 640x480
DEPTH = (848, 480, 425.0)  # its depth stream at 848x480
BASELINE_M = 0.015  # depth camera to colour camera, along x (rs extrinsics: depth->colour)
HEAD_DEPTH_M = 0.09  # how far a head curves back from its front by its outline
NOSE_M = 0.025
EYE_SOCKET_M = 0.01
CARD_MARGIN = 1.3  # a photo card's side / the face's side
DEFAULT_LABELS = ("happy", "neutral", "surprise", "fear", "disgust")


@dataclass
class SceneObject:
    kind: str
    distance_m: float
    center: tuple[int, int]
    side: int
    image: str = ""
    label: str = ""

    @property
    def box(self) -> tuple[int, int, int, int]:
        """The pasted face image, (x, y, w, h) in colour pixels."""
        half = self.side // 2
        return self.center[0] - half, self.center[1] - half, self.side, self.side


def parse_object(text: str, index: int, width: int, height: int) -> SceneObject:
    """KIND:D[:X,Y[:SIDE]] (see the module doc); placed left to right when X,Y is left out."""
    parts = text.split(":")
    if parts[0] not in KINDS or not 2 <= len(parts) <= 4:
        raise ValueError(f"{text!r}: expected KIND:D[:X,Y[:SIDE]] with KIND one of {KINDS}")
    distance = float(parts[1])
    if not 0.2 <= distance <= 10:
        raise ValueError(f"{text!r}: distance must be 0.2..10 m")
    if len(parts) >= 3:
        x, y = (int(v) for v in parts[2].split(","))
    else:
        x, y = width // 6 + index * width // 3, height // 2
    side = int(parts[3]) if len(parts) == 4 else 150
    return SceneObject(parts[0], distance, (x, y), side)


def relief_shape(relief: str, nx: np.ndarray, ny: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Depth behind the face's plane (m; negative: in front of it) at normalised face
    coordinates (-1..1 across the face image), and where the object is. `relief` is
    head, dome:H or bump:H (see the module doc)."""
    name, _, height = relief.partition(":")
    if name == "head" and not height:
        return head_relief(nx, ny)
    if name in ("dome", "bump") and height:
        h = float(height)
        r2 = nx**2 + (ny / 1.2) ** 2
        if name == "dome":
            inside = r2 < 1.0
            return -h * np.sqrt(np.clip(1.0 - r2, 0.0, 1.0)), inside
        return -h * np.exp(-(nx**2 + ny**2) / (2 * 0.5**2)), r2 < 1.0
    raise ValueError(f"--relief {relief!r}: expected head, dome:H or bump:H (H in metres)")


def head_relief(nx: np.ndarray, ny: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Depth behind a face's front (m) at normalised face coordinates (-1..1 across the
    face image), and where the head is."""
    r2 = nx**2 + (ny / 1.25) ** 2
    inside = r2 < 1.0
    z = HEAD_DEPTH_M * (1.0 - np.sqrt(np.clip(1.0 - r2, 0.0, 1.0)))
    z -= NOSE_M * np.exp(-(nx**2 / (2 * 0.12**2) + (ny - 0.05) ** 2 / (2 * 0.2**2)))
    for ex in (-0.35, 0.35):
        z += EYE_SOCKET_M * np.exp(-((nx - ex) ** 2 + (ny + 0.25) ** 2) / (2 * 0.12**2))
    return z, inside


def render(
    objects: list[SceneObject],
    faces: dict[str, np.ndarray],
    *,
    wall_m: float,
    tilt_deg: float,
    seed: int,
    relief: str = "head",
    card_margin: float = CARD_MARGIN,
) -> tuple[np.ndarray, np.ndarray]:
    """The colour image (BGR) and the scene's depth at each colour pixel (m)."""
    width, height, fx = COLOR
    rng = np.random.default_rng(seed)
    image = background(width, height, rng)
    z = np.full((height, width), wall_m, np.float64)
    vv, uu = np.mgrid[0:height, 0:width].astype(np.float64)
    for obj in sorted(objects, key=lambda o: -o.distance_m):  # far first: near ones cover
        cx, cy = obj.center
        half = obj.side / 2
        nx, ny = (uu - cx) / half, (vv - cy) / half
        if obj.kind == "card":
            c_half = half * card_margin
            on = (np.abs(uu - cx) <= c_half) & (np.abs(vv - cy) <= c_half)
            x_m = (uu - cx) / fx * obj.distance_m
            shape = obj.distance_m + np.tan(np.radians(tilt_deg)) * x_m
            x0, y0 = round(cx - c_half), round(cy - c_half)
            x1, y1 = round(cx + c_half), round(cy + c_half)
            cv2.rectangle(image, (x0, y0), (x1, y1), (225, 228, 230), -1)  # the photo's paper
        else:
            offset, on = relief_shape(relief, nx, ny)
            shape = obj.distance_m + offset
        z = np.where(on & (shape < z), shape, z)
        _paste(image, faces[obj.image], obj.box)
    noise = rng.normal(0, 2.0, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8), z


def _paste(image: np.ndarray, face: np.ndarray, box: tuple[int, int, int, int]) -> None:
    x, y, w, h = box
    big = cv2.cvtColor(cv2.resize(face, (w, h), interpolation=cv2.INTER_CUBIC), cv2.COLOR_GRAY2BGR)
    ix0, iy0 = max(x, 0), max(y, 0)
    ix1, iy1 = min(x + w, image.shape[1]), min(y + h, image.shape[0])
    image[iy0:iy1, ix0:ix1] = big[iy0 - y : iy1 - y, ix0 - x : ix1 - x]


def depth_view(
    z_color: np.ndarray,
    wall_m: float,
    noise_m: float,
    holes: float,
    rng: np.random.Generator,
    aligned: bool = False,
) -> np.ndarray:
    """What the depth camera sees (Z16 in mm): every colour pixel's scene point carried to
    the depth camera, the nearest kept; the wall where the colour camera does not look.
    `aligned`: the depth camera is where the colour camera is, with its intrinsics."""
    cw, ch, cf = COLOR
    dw, dh, df = COLOR if aligned else DEPTH
    baseline = 0.0 if aligned else BASELINE_M
    vv, uu = np.mgrid[0:ch, 0:cw].astype(np.float64)
    zc = z_color
    x = (uu - cw / 2) / cf * zc - baseline  # colour -> depth: minus the translation
    y = (vv - ch / 2) / cf * zc
    du = np.floor(x / zc * df + dw / 2 + 0.5).astype(int)
    dv = np.floor(y / zc * df + dh / 2 + 0.5).astype(int)
    ok = (du >= 0) & (du < dw) & (dv >= 0) & (dv < dh)
    z = np.full(dh * dw, wall_m)
    np.minimum.at(z, dv[ok] * dw + du[ok], zc[ok])
    z = z.reshape(dh, dw)
    z = z + rng.normal(0, 1, z.shape) * noise_m * z**2
    mm = np.clip(np.round(z * 1000), 0, 65535).astype(np.uint16)
    mm[rng.random(mm.shape) < holes] = 0
    return mm


def _intrinsics(rs, width: int, height: int, focal: float):
    intr = rs.intrinsics()
    intr.width, intr.height = width, height
    intr.ppx, intr.ppy = width / 2, height / 2
    intr.fx = intr.fy = focal
    intr.model = rs.distortion.none
    intr.coeffs = [0.0] * 5
    return intr


def _stream(rs, kind, uid: int, size: tuple[int, int, float], fps: int, fmt, bpp: int):
    stream = rs.video_stream()
    stream.type, stream.index, stream.uid = kind, 0, uid
    stream.width, stream.height, stream.fps = size[0], size[1], fps
    stream.bpp, stream.fmt = bpp, fmt
    stream.intrinsics = _intrinsics(rs, *size)
    return stream


def record(
    out: Path,
    frames: list[tuple[np.ndarray, np.ndarray]],
    *,
    fps: int,
    color_format: str = "bgr8",
    depth_units: float = 0.001,
    aligned: bool = False,
) -> None:
    """Write (BGR image, Z16 depth in mm) pairs through software_device + recorder.
    `depth_units` 0 leaves the units out of the file (a recording that lacks them);
    `aligned`: depth with the colour stream's size and intrinsics, no extrinsics."""
    import pyrealsense2 as rs

    out.unlink(missing_ok=True)
    device = rs.software_device()
    device.register_info(rs.camera_info.name, "Intel RealSense D435 (synthetic)")
    device.register_info(rs.camera_info.serial_number, "000000000001")
    depth_sensor = device.add_sensor("Stereo Module")
    color_sensor = device.add_sensor("RGB Camera")
    if depth_units > 0:
        depth_sensor.add_read_only_option(rs.option.depth_units, depth_units)
    fmt = {"bgr8": rs.format.bgr8, "rgb8": rs.format.rgb8}[color_format]
    depth_profile = depth_sensor.add_video_stream(
        _stream(rs, rs.stream.depth, 0, COLOR if aligned else DEPTH, fps, rs.format.z16, 2)
    )
    color_profile = color_sensor.add_video_stream(
        _stream(rs, rs.stream.color, 1, COLOR, fps, fmt, 3)
    )
    if not aligned:
        extrinsics = rs.extrinsics()
        extrinsics.rotation = [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]
        extrinsics.translation = [BASELINE_M, 0.0, 0.0]
        depth_profile.register_extrinsics_to(color_profile, extrinsics)
    device.create_matcher(rs.matchers.dlr_c)
    recorder = rs.recorder(str(out), device)
    sink = rs.frame_queue(2 * len(frames) + 2)
    depth_sensor.open(depth_profile)
    color_sensor.open(color_profile)
    depth_sensor.start(sink)
    color_sensor.start(sink)
    for number, (image, depth_mm) in enumerate(frames):
        stamp = number * 1000.0 / fps
        pixels = image[..., ::-1] if color_format == "rgb8" else image
        for sensor, profile, data, bpp in (
            (depth_sensor, depth_profile, np.ascontiguousarray(depth_mm), 2),
            (color_sensor, color_profile, np.ascontiguousarray(pixels), 3),
        ):
            frame = rs.software_video_frame()
            frame.pixels = data
            frame.bpp = bpp
            frame.stride = data.shape[1] * bpp
            frame.timestamp = stamp
            frame.domain = rs.timestamp_domain.hardware_clock
            frame.frame_number = number
            frame.profile = profile.as_video_stream_profile()
            if bpp == 2 and depth_units > 0:
                frame.depth_units = depth_units
            sensor.on_video_frame(frame)
    for sensor in (depth_sensor, color_sensor):
        sensor.stop()
        sensor.close()
    del recorder, depth_sensor, color_sensor, device  # the file is complete once released
    gc.collect()


def make(
    out: Path,
    objects: list[SceneObject],
    *,
    faces_dir: Path = FACES,
    frames: int = 10,
    fps: int = 30,
    wall_m: float = 4.0,
    tilt_deg: float = 0.0,
    relief: str = "head",
    noise_m: float = 0.002,
    holes: float = 0.01,
    seed: int = 0,
    color_format: str = "bgr8",
    depth_units: float = 0.001,
    card_margin: float = CARD_MARGIN,
    aligned: bool = False,
) -> dict:
    """Render the scene, record it, write the sidecar; returns the sidecar's content."""
    available = list_faces(faces_dir)
    if not available:
        raise ValueError(f"no face images under {faces_dir}/<label>/")
    # by default, faces of the classes BlazeFace finds every time in the fixtures
    preferred = [f for f in available if f[1] in DEFAULT_LABELS] or available
    images: dict[str, np.ndarray] = {}
    for i, obj in enumerate(objects):
        if not obj.image:
            obj.image, obj.label = (str(v) for v in preferred[(seed + 5 * i) % len(preferred)])
        elif not obj.label:
            obj.label = Path(obj.image).parent.name
        gray = cv2.imread(obj.image, cv2.IMREAD_GRAYSCALE)
        if gray is None:
            raise ValueError(f"cannot read face image {obj.image}")
        images[obj.image] = gray
    image, z_color = render(
        objects, images, wall_m=wall_m, tilt_deg=tilt_deg, seed=seed, relief=relief,
        card_margin=card_margin,
    )  # fmt: skip
    rng = np.random.default_rng(seed + 1)
    pairs = [
        (image, depth_view(z_color, wall_m, noise_m, holes, rng, aligned)) for _ in range(frames)
    ]  # the same still scene; the depth noise is drawn anew for every frame
    record(out, pairs, fps=fps, color_format=color_format, depth_units=depth_units, aligned=aligned)
    sidecar = {
        "fps": fps,
        "frames": frames,
        "wall_m": wall_m,
        "tilt_deg": tilt_deg,
        "relief": relief,
        "card_margin": card_margin,
        "aligned": aligned,
        "noise_m_at_1m": noise_m,
        "color_format": color_format,
        "depth_units": depth_units,
        "objects": [{**asdict(o), "box": list(o.box)} for o in objects],
    }
    out.with_suffix(".json").write_text(json.dumps(sidecar, indent=1))
    return sidecar


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]),
    )  # fmt: skip
    parser.add_argument("out", type=Path, help="the recording to write: .db3 (rosbag2)")
    parser.add_argument("objects", nargs="+", help="KIND:D[:X,Y[:SIDE]], KIND face|card|person")
    parser.add_argument("--faces", type=Path, default=FACES, help="folder in <label>/*.jpg layout")
    parser.add_argument("--face", action="append", default=[], help="face image per object")
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--wall", type=float, default=4.0, help="background distance (m)")
    parser.add_argument("--tilt", type=float, default=0.0, help="cards turned by (degrees)")
    parser.add_argument("--relief", default="head", help="head, dome:H or bump:H (metres)")
    parser.add_argument("--card-margin", type=float, default=CARD_MARGIN, help="card / face side")
    parser.add_argument(
        "--aligned", action="store_true", help="depth at colour's size and place, no extrinsics"
    )
    parser.add_argument("--noise", type=float, default=0.002, help="depth noise (m) at 1 m")
    parser.add_argument("--holes", type=float, default=0.01, help="share of pixels with no depth")
    parser.add_argument("--color-format", choices=("bgr8", "rgb8"), default="bgr8")
    parser.add_argument(
        "--depth-units", type=float, default=0.001, help="metres per Z16 step; 0: not recorded"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        import pyrealsense2  # noqa: F401
    except ImportError as exc:
        log.error("pyrealsense2 is needed (pip install pyrealsense2; x86_64 wheels): %s", exc)
        return 2
    width, height, _ = COLOR
    if args.out.suffix.lower() != ".db3":
        log.error("%s: pyrealsense2 2.59 records .db3 (rosbag2) files only", args.out)
        return 2
    try:
        objects = [parse_object(text, i, width, height) for i, text in enumerate(args.objects)]
        for obj, face in zip(objects, args.face, strict=False):
            obj.image = face
        sidecar = make(
            args.out, objects, faces_dir=args.faces, frames=args.frames, fps=args.fps,
            wall_m=args.wall, tilt_deg=args.tilt, relief=args.relief, noise_m=args.noise,
            holes=args.holes, card_margin=args.card_margin, aligned=args.aligned,
            seed=args.seed, color_format=args.color_format, depth_units=args.depth_units,
        )  # fmt: skip
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    except RuntimeError as exc:  # librealsense's own refusal
        log.error("cannot record %s: %s", args.out, exc)
        return 1
    for obj in sidecar["objects"]:
        log.info("%s at %.2f m, face box %s (%s)", obj["kind"], obj["distance_m"], obj["box"],
                 obj["label"])  # fmt: skip
    log.info("%s: %d frames at %d fps; %s", args.out, args.frames, args.fps,
             args.out.with_suffix(".json"))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
