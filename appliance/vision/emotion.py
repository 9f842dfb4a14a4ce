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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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


def _stop_confidence(card: Card) -> float | None:
    stop = card.extra.get("stop_confidence")
    if stop is None:
        return None
    if not isinstance(card, EnsembleCard):
        raise ModelError(f"{card.path}: stop_confidence is for an ensemble card (members)")
    if isinstance(stop, bool) or not isinstance(stop, int | float) or not 0 < stop <= 1:
        raise ModelError(f"{card.path}: stop_confidence must be a number in (0, 1]")
    return float(stop)


def _temperature(card: Card) -> float:
    temperature = card.extra.get("temperature", 1.0)
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise ModelError(f"{card.path}: temperature must be a number")
    if not (0.05 <= temperature <= 20.0):
        raise ModelError(f"{card.path}: temperature {temperature} is outside 0.05..20")
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
        self._stop_confidence = _stop_confidence(card)
        self._members_run = 0
        weights = card.weights if ensemble else (1.0,)
        self._members = tuple(
            self._load(member, weight, threads)
            for member, weight in zip(members_of(card), weights, strict=True)
        )

    def _load(self, card: ModelCard, weight: float, threads: int) -> _Member:
        outputs_logits = card.extra.get("output", "probabilities") == "logits"
        temperature = _temperature(card)
        if temperature != 1.0 and not outputs_logits:
            raise ModelError(f'{card.path}: a temperature needs "output": "logits"')
        model = TFLiteModel(
            card.check_file(), threads=threads, batch=2 if self.test_time_flip else 1
        )
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
        near-symmetric, so this buys accuracy for much less than a second inference.
        """
        probs = self._average(inputs)
        if self._ensemble_temperature != 1.0:
            probs = _normalised(
                np.power(np.clip(probs, 1e-12, None), 1 / self._ensemble_temperature)
            )
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
        cascade's over the members it ran (their weights renormalised)."""
        probs = np.zeros(len(self.card.labels))
        weight = 0.0
        self._members_run = 0
        for member in self._members:
            views = self._run(member, inputs[input_key(member.card)])
            probs += member.weight * np.mean([self._probabilities(member, v) for v in views], 0)
            weight += member.weight
            self._members_run += 1
            if self._stop_confidence is not None and probs.max() >= self._stop_confidence * weight:
                break
        return probs / weight

    def _run(self, member: _Member, x: np.ndarray) -> np.ndarray:
        """The model's outputs (logits or probabilities, dequantised) for each view of a
        prepared input: V x the card's labels, V = 2 with test-time flip."""
        if self.test_time_flip:
            return member.model.run(np.stack([x, x[:, ::-1]]))[0].reshape(2, -1)
        return member.model.run(np.ascontiguousarray(x[None]))[0].reshape(1, -1)

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
