"""Valence-arousal regressor driven by its model card (task "va", outputs valence, arousal)."""

from __future__ import annotations

import numpy as np

from appliance.vision.model_card import ModelCard
from appliance.vision.preprocess import prepare_face
from appliance.vision.runtime import ModelError, TFLiteModel

OUTPUTS = ("valence", "arousal")


class VARegressor:
    """(valence, arousal) in [-1, 1] for one face crop."""

    def __init__(self, card: ModelCard, threads: int = 1) -> None:
        if card.task != "va":
            raise ModelError(f"{card.path}: task is '{card.task}', a VA model card needs 'va'")
        if tuple(card.extra.get("outputs", ())) != OUTPUTS:
            raise ModelError(f'{card.path}: a VA model card needs "outputs": {list(OUTPUTS)}')
        self.card = card
        self.model = TFLiteModel(card.check_file(), threads=threads)
        expected = (1, card.input_size[1], card.input_size[0], card.channels)
        if self.model.input_shape != expected:
            raise ModelError(
                f"{card.path}: card says input {expected}, model has {self.model.input_shape}"
            )
        if int(np.prod(self.model.output_shapes[0])) != len(OUTPUTS):
            raise ModelError(f"{card.path}: model must output 2 values (valence, arousal)")

    def predict(self, face: np.ndarray) -> tuple[float, float]:
        """VA for a face image (gray or BGR, any size)."""
        return self.predict_input(prepare_face(face, self.card))

    def predict_input(self, x: np.ndarray) -> tuple[float, float]:
        """VA for an already prepared H x W x C input (see `prepare_face`)."""
        out = self.model.run(np.ascontiguousarray(x[None]))[0].reshape(-1)
        valence, arousal = np.clip(out.astype(np.float64), -1.0, 1.0)
        return float(valence), float(arousal)
