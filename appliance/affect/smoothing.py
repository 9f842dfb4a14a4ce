"""From noisy per-frame class probabilities to a calm, reportable emotional state."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from appliance.affect.filters import ExponentialFilter, LabelHysteresis
from appliance.config.schema import SmoothingConfig


@dataclass(frozen=True)
class AffectState:
    """The smoothed state after one frame."""

    t: float
    emotion: str | None  # the reported label; None while no face is present
    confidence: float  # smoothed probability of `emotion` given a face (or of no face)
    face_presence: float  # 1 - smoothed probability of "no face"
    probs: dict[str, float]  # smoothed emotion probabilities given a face


class EmotionSmoother:
    """Exponential filter over the labels plus a "no face" state, then hysteresis.

    Frames without a face pull the belief towards "no face" with their own time
    constant, so the last label fades out instead of freezing.
    """

    def __init__(self, labels: Sequence[str], settings: SmoothingConfig) -> None:
        self.labels = tuple(labels)
        self.settings = settings
        self._no_face = len(self.labels)
        start = np.zeros(len(self.labels) + 1)
        start[self._no_face] = 1.0
        self._filter = ExponentialFilter(start)
        self._absent = start.copy()
        self._hysteresis = LabelHysteresis(settings.hold_s)

    def update(self, t: float, probs: np.ndarray | None) -> AffectState:
        """Advance to time t with this frame's probabilities (None: no face in the frame)."""
        if probs is None:
            p = self._filter.update(t, self._absent, self.settings.no_face_tau_s)
        else:
            sample = np.append(np.asarray(probs, dtype=np.float64), 0.0)
            p = self._filter.update(t, sample, self.settings.tau_s)
        presence = float(1.0 - p[self._no_face])
        given_face = p[: self._no_face] / presence if presence > 1e-9 else p[: self._no_face]
        leader = int(np.argmax(p))
        if leader == self._no_face:
            reported = self._hysteresis.update(t, None)
        else:
            strong = given_face[leader] >= self.settings.min_confidence
            reported = self._hysteresis.update(t, self.labels[leader], change=strong)
        if reported is None:
            confidence = float(p[self._no_face])
        else:
            confidence = float(given_face[self.labels.index(reported)])
        return AffectState(
            t=t,
            emotion=reported,
            confidence=round(confidence, 4),
            face_presence=round(presence, 4),
            probs={
                label: round(float(v), 4) for label, v in zip(self.labels, given_face, strict=True)
            },
        )
