"""Model cards: the JSON beside each .tflite that says how to feed it and what it claims.

The pipeline reads input size, channels, normalisation and labels from the card, so a
new emotion model ships as a file + card with no code change. An ensemble card names
member cards instead of a file: two models that err differently (one trained on clean
faces, one on what real cameras do to them) averaged beat either alone.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.vision.runtime import ModelError

CARD_SUFFIX = ".json"
MAX_MEMBERS = 8  # of an ensemble card


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
    # per-crop exposure before the rest: the crop's grey levels scaled so their mean is
    # this (see preprocess.prepare_face); None: as captured
    exposure_mean: float | None = None

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


@dataclass(frozen=True)
class EnsembleCard:
    """Several single-model cards whose probabilities are averaged with `weights`
    (normalised to sum 1). Same labels, same task; `extra` as in ModelCard (e.g.
    `test_time_flip` and `temperature`, which then apply to the ensemble)."""

    path: Path
    name: str
    task: str
    labels: tuple[str, ...]
    members: tuple[ModelCard, ...]
    weights: tuple[float, ...]
    extra: dict[str, Any] = field(default_factory=dict)

    def check_file(self) -> Path:
        """Every member's file checked (see ModelCard.check_file); the card's path."""
        for member in self.members:
            member.check_file()
        return self.path

    def verify_sha256(self) -> bool:
        return all(member.verify_sha256() for member in self.members)


Card = ModelCard | EnsembleCard


def members_of(card: Card) -> tuple[ModelCard, ...]:
    """The single-model cards behind a card: itself, or an ensemble's members."""
    return card.members if isinstance(card, EnsembleCard) else (card,)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelError(f"model card not found: {path}") from exc
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: unreadable model card ({exc})") from exc
    if not isinstance(raw, dict):
        raise ModelError(f"{path}: a model card must be a JSON object")
    return raw


def load_card(path: str | Path) -> Card:
    """Parse and validate a card (a single model, or an ensemble of member cards); every
    defect is a ModelError naming the file and field."""
    path = Path(path)
    raw = _read_json(path)
    if "members" in raw:
        return _load_ensemble(path, raw)
    return _load_model_card(path, raw)


def load_model_card(path: str | Path) -> ModelCard:
    """A single-model card (detector, VA, an ensemble's member): an ensemble is refused."""
    card = load_card(path)
    if isinstance(card, EnsembleCard):
        raise ModelError(f"{card.path}: an ensemble card, but one model file is needed here")
    return card


def _load_ensemble(path: Path, raw: dict[str, Any]) -> EnsembleCard:
    entries = raw["members"]
    if not isinstance(entries, list) or not entries:
        raise ModelError(f"{path}: 'members' must be a non-empty list of {{card, weight}}")
    if len(entries) > MAX_MEMBERS:  # each member is a model in memory and an invoke per face
        raise ModelError(f"{path}: {len(entries)} members; at most {MAX_MEMBERS}")
    members, weights = [], []
    for number, entry in enumerate(entries, 1):
        where = f"{path}: members[{number}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("card"), str):
            raise ModelError(f"{where} needs a 'card' (a card file beside this one)")
        weight = entry.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise ModelError(f"{where}: 'weight' must be a number > 0")
        if not (weight > 0 and math.isfinite(weight)):  # NaN and Infinity parse as JSON here
            raise ModelError(f"{where}: 'weight' must be a number > 0")
        member_path = path.parent / entry["card"]
        if member_path.resolve() == path.resolve():
            raise ModelError(f"{where} is this card itself")
        try:
            member_raw = _read_json(member_path)
            member = None if "members" in member_raw else _load_model_card(member_path, member_raw)
        except ModelError as exc:  # the member's own defect, said as this card's member
            raise ModelError(f"{where}: {exc}") from None
        if member is None:
            raise ModelError(f"{where}: {member_path.name} is an ensemble; members are models")
        members.append(member)
        weights.append(float(weight))
    for key in ("name", "task"):
        if not isinstance(raw.get(key), str):
            raise ModelError(f"{path}: model card lacks '{key}' (or it is not text)")
    if raw["task"] != "emotion":  # averaging probabilities is what an ensemble does
        raise ModelError(f"{path}: only emotion models can be ensembled, not {raw['task']!r}")
    labels = raw.get("labels", list(members[0].labels))
    if not isinstance(labels, list) or not all(isinstance(x, str) and x for x in labels):
        raise ModelError(f"{path}: labels must be a list of non-empty strings")
    for member in members:
        if member.task != raw["task"]:
            raise ModelError(f"{path}: member {member.path.name} is a {member.task!r} model, "
                             f"this card a {raw['task']!r} one")  # fmt: skip
        if member.labels != tuple(labels):
            raise ModelError(
                f"{path}: member {member.path.name} has labels {list(member.labels)}, the "
                f"ensemble {labels}: members must share the labels and their order"
            )
    total = sum(weights)
    known = {"name", "task", "members", "labels"}
    return EnsembleCard(
        path=path,
        name=raw["name"],
        task=raw["task"],
        labels=tuple(labels),
        members=tuple(members),
        weights=tuple(w / total for w in weights),
        extra={k: v for k, v in raw.items() if k not in known},
    )


def _load_model_card(path: Path, raw: dict[str, Any]) -> ModelCard:
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
    exposure_mean = None
    if "exposure_mean" in norm:
        exposure_mean = float(need("exposure_mean", (int, float), norm))
        if not 0 < exposure_mean < 255:
            raise ModelError(
                f"{path}: input.normalization.exposure_mean must be above 0 and below 255"
            )
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
        exposure_mean=exposure_mean,
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
