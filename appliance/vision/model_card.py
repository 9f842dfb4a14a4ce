"""Model cards: the JSON beside each .tflite that says how to feed it and what it claims.

The pipeline reads input size, channels, normalisation and labels from the card, so a
new emotion model ships as a file + card with no code change.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.vision.runtime import ModelError

CARD_SUFFIX = ".json"


@dataclass(frozen=True)
class ModelCard:
    """What a model expects and claims. `extra` keeps everything else in the JSON."""

    path: Path  # the card file
    name: str
    task: str
    file: str
    sha256: str
    input_size: tuple[int, int]  # width, height
    channels: int
    mean: float
    std: float
    labels: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    # per-crop standardisation before (x - mean) / std: each face minus its own mean, over
    # its own standard deviation floored at this many grey levels; None: fixed only
    per_crop_min_std: float | None = None

    @property
    def model_path(self) -> Path:
        return (self.path.parent / self.file).resolve()

    def check_file(self) -> Path:
        """The model file, after checking it exists and matches the card's sha256.

        The TFLite interpreter can crash the whole process (SIGSEGV) on a truncated
        file, so a half-copied or SD-corrupted model must be caught before it loads.
        """
        path = self.model_path
        if not path.is_file():
            raise ModelError(f"model file not found: {path} (run tools/fetch_models.py)")
        if not self.verify_sha256():
            raise ModelError(
                f"{path} does not match the sha256 in {self.path}: the file is damaged or "
                "not the one the card describes; re-run tools/fetch_models.py"
            )
        return path

    def verify_sha256(self) -> bool:
        """True when the model file exists and matches the card's hash."""
        try:
            data = self.model_path.read_bytes()
        except OSError:
            return False
        return hashlib.sha256(data).hexdigest() == self.sha256


def load_card(path: str | Path) -> ModelCard:
    """Parse and validate a card; every defect is a ModelError naming the file and field."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelError(f"model card not found: {path}") from exc
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: unreadable model card ({exc})") from exc
    if not isinstance(raw, dict):
        raise ModelError(f"{path}: a model card must be a JSON object")

    def need(key: str, kind: type | tuple[type, ...], where: dict[str, Any] = raw) -> Any:
        if key not in where:
            raise ModelError(f"{path}: model card lacks '{key}'")
        if not isinstance(where[key], kind) or isinstance(where[key], bool):
            raise ModelError(f"{path}: model card field '{key}' has the wrong type")
        return where[key]

    inp = need("input", dict)
    size = need("size", list, inp)
    if len(size) != 2 or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size
    ):
        raise ModelError(f"{path}: input.size must be [width, height] in pixels")
    channels = need("channels", int, inp)
    if channels not in (1, 3):
        raise ModelError(f"{path}: input.channels must be 1 (gray) or 3 (BGR->RGB)")
    norm = need("normalization", dict, inp)
    std = float(need("std", (int, float), norm))
    if std == 0:
        raise ModelError(f"{path}: input.normalization.std must not be 0")
    per_crop = norm.get("per_crop", False)
    if not isinstance(per_crop, bool):
        raise ModelError(f"{path}: input.normalization.per_crop must be true or false")
    min_std = None
    if per_crop:
        min_std = float(need("min_std", (int, float), norm))
        if not min_std > 0:
            raise ModelError(f"{path}: input.normalization.min_std must be > 0")
    labels = tuple(need("labels", list)) if "labels" in raw else ()
    if not all(isinstance(label, str) and label for label in labels):
        raise ModelError(f"{path}: labels must be a list of non-empty strings")
    known = {"name", "task", "file", "sha256", "input", "labels"}
    return ModelCard(
        path=path,
        name=need("name", str),
        task=need("task", str),
        file=need("file", str),
        sha256=need("sha256", str).lower(),
        input_size=(size[0], size[1]),
        channels=channels,
        mean=float(need("mean", (int, float), norm)),
        std=std,
        labels=labels,
        extra={k: v for k, v in raw.items() if k not in known},
        per_crop_min_std=min_std,
    )


def resolve_card(name_or_path: str, models_dir: Path) -> Path:
    """A config value is either a card name inside models_dir or a path to a card."""
    candidate = Path(name_or_path)
    if candidate.suffix == CARD_SUFFIX or candidate.is_absolute() or "/" in name_or_path:
        return candidate
    return models_dir / f"{name_or_path}{CARD_SUFFIX}"


def default_models_dir() -> Path:
    """The repo's models/ when running from a checkout, else the installed location."""
    checkout = Path(__file__).resolve().parents[2] / "models"
    return checkout if checkout.is_dir() else Path("/usr/share/emotion-appliance/models")
