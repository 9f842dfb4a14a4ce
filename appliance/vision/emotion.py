"""Emotion classifier driven entirely by its model card.

Two card fields shape its probabilities: `test_time_flip` (the face and its mirror image
in one invoke, as a batch of two, their probabilities averaged) and `temperature` (the
logits divided by it before the softmax: fitted on the validation set, so a reported
0.7 is right about 70% of the time; it never changes which label wins). A subset of the
card's labels (`[emotion] classes`) can be asked for: the probabilities are then
renormalised over it, and `labels` is that subset, so everything downstream (smoothing,
VA from the probabilities, events, status, history) sees only those classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from appliance.vision.model_card import ModelCard
from appliance.vision.preprocess import prepare_face
from appliance.vision.runtime import ModelError, TFLiteModel


class EmotionClassifier:
    """Class probabilities for one face crop, in the card's label order."""

    def __init__(self, card: ModelCard, threads: int = 1, classes: Sequence[str] = ()) -> None:
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
        self.outputs_logits = card.extra.get("output", "probabilities") == "logits"
        temperature = card.extra.get("temperature", 1.0)
        if isinstance(temperature, bool) or not isinstance(temperature, int | float):
            raise ModelError(f"{card.path}: temperature must be a number")
        if not (0.05 <= temperature <= 20.0):
            raise ModelError(f"{card.path}: temperature {temperature} is outside 0.05..20")
        if temperature != 1.0 and not self.outputs_logits:
            raise ModelError(f'{card.path}: a temperature needs "output": "logits"')
        self.temperature = float(temperature)
        self.model = TFLiteModel(
            card.check_file(), threads=threads, batch=2 if self.test_time_flip else 1
        )
        expected = (1, card.input_size[1], card.input_size[0], card.channels)
        if self.model.input_shape != expected:
            raise ModelError(
                f"{card.path}: card says input {expected}, model has {self.model.input_shape}"
            )
        outputs = int(np.prod(self.model.output_shapes[0][1:]))
        if outputs != len(card.labels):
            raise ModelError(
                f"{card.path}: model outputs {outputs} values for {len(card.labels)} labels"
            )

    def classify(self, face: np.ndarray) -> np.ndarray:
        """Probabilities (sum 1) for a face image (gray or BGR, any size)."""
        return self.classify_input(prepare_face(face, self.card))

    def classify_input(self, x: np.ndarray) -> np.ndarray:
        """Probabilities for an already prepared H x W x C input.

        With `"test_time_flip": true` in the card, the mirrored face goes in the same
        invoke (a batch of two) and the two distributions are averaged: faces are
        near-symmetric, so this buys accuracy for much less than a second inference.
        """
        views = self.raw_outputs(x)
        probs = np.mean([self._probabilities(view) for view in views], axis=0)
        if len(self._subset) == probs.size:
            return probs
        picked = probs[self._subset]
        total = picked.sum()
        return picked / total if total > 0 else np.full(picked.size, 1.0 / picked.size)

    def raw_outputs(self, x: np.ndarray) -> np.ndarray:
        """The model's outputs (logits or probabilities, dequantised) for each view of a
        prepared input: V x the card's labels (all of them), V = 2 with test-time flip."""
        if self.test_time_flip:
            return self.model.run(np.stack([x, x[:, ::-1]]))[0].reshape(2, -1)
        return self.model.run(np.ascontiguousarray(x[None]))[0].reshape(1, -1)

    def _probabilities(self, out: np.ndarray) -> np.ndarray:
        out = out.astype(np.float64)
        if self.outputs_logits:
            out = out / self.temperature
            out = np.exp(out - out.max())
        out = np.clip(out, 0.0, None)
        total = out.sum()
        return out / total if total > 0 else np.full(out.size, 1.0 / out.size)
