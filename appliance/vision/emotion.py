"""Emotion classifier driven entirely by its model card.

Two card fields shape its probabilities: `test_time_flip` (the face and its mirror image
in one invoke, as a batch of two, their probabilities averaged) and `temperature` (the
logits divided by it before the softmax: fitted on the validation set, so a reported
0.7 is right about 70% of the time; it never changes which label wins). A subset of the
card's labels (`[emotion] classes`) can be asked for: the probabilities are then
renormalised over it, and `labels` is that subset, so everything downstream (smoothing,
VA from the probabilities, events, status, history) sees only those classes.

An ensemble card (model_card.EnsembleCard) runs each member with its own preprocessing
and temperature and averages their probabilities with the card's weights; the
ensemble's `test_time_flip` applies to every member, and its `temperature` re-sharpens
the average (an average of calibrated models is less confident than it is right).

An ensemble's `stop_confidence` makes it a cascade: members run in card order, and once
the weighted average of those run so far gives some label at least that probability, the
rest are skipped. Most faces are easy; only the doubtful ones pay for every member.

Its `cascade` does the same one view at a time: a list of stages, each one member's face
or mirror image (one invoke of a batch of one) with the `stop_confidence` checked after
it. A batch of two costs nearly two views on XNNPACK, so stopping after a single view is
where the time per face is saved. A stage's `temperature` calibrates the average where
the cascade stops there: a face that stops after one confident view is otherwise
over-confident, one that needed all four views under-confident.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from appliance.vision.model_card import Card, EnsembleCard, ModelCard, members_of
from appliance.vision.preprocess import prepare_face
from appliance.vision.runtime import ModelError, TFLiteModel

# What makes two cards' inputs the same tensor: one preprocessing pass serves both.
InputKey = tuple


def input_key(card: ModelCard) -> InputKey:
    return (
        card.input_size,
        card.channels,
        card.mean,
        card.std,
        card.per_crop_min_std,
        card.exposure_mean,
    )


VIEWS = ("face", "mirror")
STAGE_KEYS = {"member", "view", "stop_confidence", "temperature"}


def _confidence(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ModelError(f"{where}: stop_confidence must be a number in (0, 1]")
    return float(value)


@dataclass(frozen=True)
class _Stage:
    """One step of the plan: a member's views (True: the mirror image), then a check."""

    member: int
    mirrored: tuple[bool, ...]
    stop: float | None
    temperature: float = 1.0


def _plan(card: Card, flip: bool) -> tuple[_Stage, ...]:
    """The order a card's models and views run in, and where it may stop early."""
    stop, cascade = card.extra.get("stop_confidence"), card.extra.get("cascade")
    for key, value in (("stop_confidence", stop), ("cascade", cascade)):
        if value is not None and not isinstance(card, EnsembleCard):
            raise ModelError(f"{card.path}: {key} is for an ensemble card (members)")
    views = (False, True) if flip else (False,)
    members = members_of(card)
    if cascade is None:
        threshold = None if stop is None else _confidence(stop, str(card.path))
        return tuple(_Stage(i, views, threshold) for i in range(len(members)))
    if stop is not None:
        raise ModelError(f"{card.path}: stop_confidence or cascade, not both")
    if not isinstance(cascade, list) or not cascade:
        raise ModelError(f"{card.path}: cascade must be a non-empty list of {{member, view}}")
    names = {member.path.resolve(): i for i, member in enumerate(members)}
    stages, seen = [], set()
    for number, entry in enumerate(cascade, 1):
        where = f"{card.path}: cascade[{number}]"
        if not isinstance(entry, dict):
            raise ModelError(f"{where} must be an object {{member, view, stop_confidence}}")
        unknown = sorted(set(entry) - STAGE_KEYS)
        if unknown:
            raise ModelError(f"{where}: unknown key {unknown[0]!r} (known: "
                             f"{', '.join(sorted(STAGE_KEYS))})")  # fmt: skip
        name = entry.get("member")
        try:
            index = names.get((card.path.parent / name).resolve()) if name else None
        except (TypeError, ValueError, OSError):  # not a path: a number, a NUL byte
            index = None
        if index is None:
            known = ", ".join(member.path.name for member in members)
            raise ModelError(f"{where}: member {name!r} is not one of the members ({known})")
        view = entry.get("view", "face")
        if view not in VIEWS:
            raise ModelError(f"{where}: view must be 'face' or 'mirror', not {view!r}")
        if view == "mirror" and not flip:
            raise ModelError(f'{where}: a mirror view needs "test_time_flip": true')
        if (index, view) in seen:
            raise ModelError(f"{where}: {name} {view} is already a stage")
        seen.add((index, view))
        threshold = entry.get("stop_confidence")
        if threshold is not None:
            if number == len(cascade):
                raise ModelError(f"{where}: the last stage has nothing left to stop")
            threshold = _confidence(threshold, where)
        temperature = _temperature_value(entry.get("temperature", 1.0), where)
        stages.append(_Stage(index, (view == "mirror",), threshold, temperature))
    for index, member in enumerate(members):
        if not any(stage.member == index for stage in stages):
            raise ModelError(
                f"{card.path}: member {member.path.name} is in no cascade stage (it would "
                "never run): add a stage or remove the member"
            )
    return tuple(stages)


def _temperature(card: Card) -> float:
    return _temperature_value(card.extra.get("temperature", 1.0), str(card.path))


def _temperature_value(temperature: Any, where: str) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise ModelError(f"{where}: temperature must be a number")
    if not (0.05 <= temperature <= 20.0):
        raise ModelError(f"{where}: temperature {temperature} is outside 0.05..20")
    return float(temperature)


@dataclass(frozen=True)
class _Member:
    card: ModelCard
    weight: float
    model: TFLiteModel
    temperature: float
    outputs_logits: bool


class EmotionClassifier:
    """Class probabilities for one face crop, in the card's label order."""

    def __init__(self, card: Card, threads: int = 1, classes: Sequence[str] = ()) -> None:
        if not card.labels:
            raise ModelError(f"{card.path}: an emotion model card needs 'labels'")
        self.card = card
        unknown = [name for name in classes if name not in card.labels]
        if unknown:
            raise ModelError(
                f"[emotion] classes: {', '.join(map(repr, unknown))} not among the labels of "
                f"{card.path.name} ({', '.join(card.labels)})"
            )
        self.labels: tuple[str, ...] = tuple(classes) or card.labels
        self._subset = [card.labels.index(name) for name in self.labels]
        self.test_time_flip = bool(card.extra.get("test_time_flip", False))
        ensemble = isinstance(card, EnsembleCard)
        # an ensemble's temperature applies to the average of its members' probabilities
        self._ensemble_temperature = _temperature(card) if ensemble else 1.0
        self._plan = _plan(card, self.test_time_flip)
        self._members_run = self._views_run = self._stages_run = 0
        weights = card.weights if ensemble else (1.0,)
        # a member whose face and mirror run in one stage is invoked as a batch of two
        batches = [
            max((len(s.mirrored) for s in self._plan if s.member == i), default=1)
            for i in range(len(weights))
        ]
        self._members = tuple(
            self._load(member, weight, batch, threads)
            for member, weight, batch in zip(members_of(card), weights, batches, strict=True)
        )

    def _load(self, card: ModelCard, weight: float, batch: int, threads: int) -> _Member:
        outputs_logits = card.extra.get("output", "probabilities") == "logits"
        temperature = _temperature(card)
        if temperature != 1.0 and not outputs_logits:
            raise ModelError(f'{card.path}: a temperature needs "output": "logits"')
        model = TFLiteModel(card.check_file(), threads=threads, batch=batch)
        expected = (1, card.input_size[1], card.input_size[0], card.channels)
        if model.input_shape != expected:
            raise ModelError(
                f"{card.path}: card says input {expected}, model has {model.input_shape}"
            )
        outputs = int(np.prod(model.output_shapes[0][1:]))
        if outputs != len(card.labels):
            raise ModelError(
                f"{card.path}: model outputs {outputs} values for {len(card.labels)} labels"
            )
        return _Member(card, weight, model, temperature, outputs_logits)

    @property
    def threads(self) -> int:
        """TFLite threads each model runs with (status, benchmarks)."""
        return self._members[0].model.threads

    @property
    def models(self) -> tuple[TFLiteModel, ...]:
        """The loaded models, one per member (benchmarks read their graphs)."""
        return tuple(member.model for member in self._members)

    @property
    def members_run(self) -> int:
        """How many members the last classification ran (fewer than all: a cascade's
        early stop)."""
        return self._members_run

    @property
    def views_run(self) -> int:
        """How many views (a face or its mirror image, through one member) the last
        classification ran."""
        return self._views_run

    @property
    def stages_run(self) -> int:
        """How many stages of the card's plan (a member, or one view of a member in a
        `cascade`) the last classification ran: the last is where it stopped."""
        return self._stages_run

    @property
    def input_keys(self) -> tuple[InputKey, ...]:
        """The distinct preprocessings the models need, in member order."""
        return tuple(dict.fromkeys(input_key(m.card) for m in self._members))

    def prepare(self, face: np.ndarray) -> dict[InputKey, np.ndarray]:
        """The model inputs for a face image, one per distinct preprocessing (the
        pipeline hands a matching one to the VA model too)."""
        inputs: dict[InputKey, np.ndarray] = {}
        for member in self._members:
            key = input_key(member.card)
            if key not in inputs:
                inputs[key] = prepare_face(face, member.card)
        return inputs

    def classify(self, face: np.ndarray) -> np.ndarray:
        """Probabilities (sum 1) for a face image (gray or BGR, any size)."""
        return self.classify_prepared(self.prepare(face))

    def classify_prepared(self, inputs: dict[InputKey, np.ndarray]) -> np.ndarray:
        """Probabilities for the inputs `prepare` made.

        With `"test_time_flip": true` in the card, the mirrored face goes in the same
        invoke (a batch of two) and the two distributions are averaged: faces are
        near-symmetric, so this buys accuracy for less than a second inference. A
        `cascade` runs the views one at a time instead, and only as many as it needs.
        """
        probs = _sharpened(self._average(inputs), self._ensemble_temperature)
        if len(self._subset) == probs.size:
            return probs
        return _normalised(probs[self._subset])

    def logits(self, face: np.ndarray) -> np.ndarray:
        """What the card's temperature divides, V x the card's labels: a logits model's
        outputs for each view (V = 2 with test-time flip); for an ensemble, the log of its
        members' average (V = 1). Calibration fits the temperature on these."""
        inputs = self.prepare(face)
        if isinstance(self.card, EnsembleCard):
            return np.log(np.clip(self._average(inputs), 1e-12, None))[None]
        member = self._members[0]
        if not member.outputs_logits:
            raise ModelError(f"{self.card.path}: a probabilities model has no logits")
        return self._run(member, inputs[input_key(member.card)])

    def _average(self, inputs: dict[InputKey, np.ndarray]) -> np.ndarray:
        """The members' probabilities (over views), weighted, before any subset; a
        cascade's over the views it ran (each member's weight shared by its views, the
        weights run renormalised), calibrated by the temperature of the stage it stopped
        at."""
        probs = np.zeros(len(self.card.labels))
        weight = 0.0
        members_run: set[int] = set()
        self._views_run = self._stages_run = 0
        view_share = 2 if self.test_time_flip else 1
        for stage in self._plan:
            member = self._members[stage.member]
            outputs = self._run(member, inputs[input_key(member.card)], stage.mirrored)
            for out in outputs:
                probs += member.weight / view_share * self._probabilities(member, out)
            weight += member.weight / view_share * len(outputs)
            members_run.add(stage.member)
            self._views_run += len(outputs)
            self._stages_run += 1
            if stage.stop is not None and probs.max() >= stage.stop * weight:
                break
        self._members_run = len(members_run)
        return _sharpened(probs / weight, stage.temperature)

    def _run(
        self, member: _Member, x: np.ndarray, mirrored: tuple[bool, ...] = (False, True)
    ) -> np.ndarray:
        """The model's outputs (logits or probabilities, dequantised) for views of a
        prepared input: one row per view, the face and/or its mirror image (True)."""
        if not self.test_time_flip:
            mirrored = (False,)
        batch = np.stack([x[:, ::-1] if mirror else x for mirror in mirrored])
        return member.model.run(batch)[0].reshape(len(mirrored), -1)

    @staticmethod
    def _probabilities(member: _Member, out: np.ndarray) -> np.ndarray:
        out = out.astype(np.float64)
        if member.outputs_logits:
            out = out / member.temperature
            out = np.exp(out - out.max())
        return _normalised(np.clip(out, 0.0, None))


def _normalised(values: np.ndarray) -> np.ndarray:
    total = values.sum()
    return values / total if total > 0 else np.full(values.size, 1.0 / values.size)


def _sharpened(probs: np.ndarray, temperature: float) -> np.ndarray:
    """p^(1/T), renormalised: a temperature for probabilities (an average's logits are
    gone)."""
    if temperature == 1.0:
        return probs
    return _normalised(np.power(np.clip(probs, 1e-12, None), 1 / temperature))
