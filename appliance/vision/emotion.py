"""Emotion classifier driven entirely by its model card."""

from __future__ import annotations

import numpy as np

from appliance.vision.model_card import ModelCard
from appliance.vision.preprocess import prepare_face
from appliance.vision.runtime import ModelError, TFLiteModel


class EmotionClassifier:
    """Class probabilities for one face crop, in the card's label order."""

    def __init__(self, card: ModelCard, threads: int = 1) -> None:
        if not card.labels:
            raise ModelError(f"{card.path}: an emotion model card needs 'labels'")
        self.card = card
        self.labels = card.labels
        self.model = TFLiteModel(card.check_file(), threads=threads)
        expected = (1, card.input_size[1], card.input_size[0], card.channels)
        if self.model.input_shape != expected:
            raise ModelError(
                f"{card.path}: card says input {expected}, model has {self.model.input_shape}"
            )
        outputs = int(np.prod(self.model.output_shapes[0]))
        if outputs != len(self.labels):
            raise ModelError(
                f"{card.path}: model outputs {outputs} values for {len(self.labels)} labels"
            )
        self.outputs_logits = card.extra.get("output", "probabilities") == "logits"
        self.test_time_flip = bool(card.extra.get("test_time_flip", False))

    def classify(self, face: np.ndarray) -> np.ndarray:
        """Probabilities (sum 1) for a face image (gray or BGR, any size)."""
        return self.classify_input(prepare_face(face, self.card))

    def classify_input(self, x: np.ndarray) -> np.ndarray:
        """Probabilities for an already prepared H x W x C input.

        With `"test_time_flip": true` in the card, the mirrored face is classified too and
        the two distributions averaged: faces are near-symmetric, so this buys accuracy
        for a second inference.
        """
        probs = self._probabilities(x)
        if self.test_time_flip:
            probs = (probs + self._probabilities(x[:, ::-1])) / 2.0
        return probs

    def _probabilities(self, x: np.ndarray) -> np.ndarray:
        out = self.model.run(np.ascontiguousarray(x[None]))[0].reshape(-1).astype(np.float64)
        if self.outputs_logits:
            out = np.exp(out - out.max())
        out = np.clip(out, 0.0, None)
        total = out.sum()
        return out / total if total > 0 else np.full(out.size, 1.0 / out.size)
