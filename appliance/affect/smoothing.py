"""From noisy per-frame class probabilities and valence-arousal to a calm, reportable
emotional state."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from appliance.affect.filters import ExponentialFilter, LabelHysteresis
from appliance.config.schema import SmoothingConfig

# The reported label while a face is seen but no class is confident: the smoothed top
# probability has stayed below smoothing.min_confidence for smoothing.hold_s. Reporting
# the last confident label instead (as before) read as a confident reading to status,
# the timeline and the music.
UNCERTAIN = "uncertain"


@dataclass(frozen=True)
class AffectState:
    """The smoothed state after one frame."""

    t: float
    emotion: str | None  # the reported label, UNCERTAIN, or None while no face is present
    # smoothed probability of `emotion` given a face (of the top label when UNCERTAIN; of
    # "no face" when None)
    confidence: float
    face_presence: float  # 1 - smoothed probability of "no face"
    probs: dict[str, float]  # smoothed emotion probabilities given a face
    valence: float | None = None  # smoothed valence in [-1, 1]; None while no face
    arousal: float | None = None  # smoothed arousal in [-1, 1]; None while no face


class EmotionSmoother:
    """Exponential filter over the labels plus a "no face" state, then hysteresis.

    Frames without a face pull the belief towards "no face" with their own time
    constant, so the last label fades out instead of freezing. A face whose smoothed top
    class stays below min_confidence is reported as UNCERTAIN after hold_s, like any
    other change of label, not as the last confident label. Valence and arousal go
    through the same time-based filter (tau_s) on face frames and hold still while the
    face is away, so a look aside does not drag the mood towards neutral.
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
        self._va = ExponentialFilter(np.zeros(2))

    def update(
        self, t: float, probs: np.ndarray | None, va: tuple[float, float] | None = None
    ) -> AffectState:
        """Advance to time t with this frame's probabilities and (valence, arousal);
        None: no face in the frame."""
        if probs is None:
            p = self._filter.update(t, self._absent, self.settings.no_face_tau_s)
            self._va.update(t, self._va.value, self.settings.tau_s)  # hold
        else:
            sample = np.append(np.asarray(probs, dtype=np.float64), 0.0)
            p = self._filter.update(t, sample, self.settings.tau_s)
            self._va.update(t, self._va.value if va is None else va, self.settings.tau_s)
        presence = float(1.0 - p[self._no_face])
        given_face = p[: self._no_face] / presence if presence > 1e-9 else p[: self._no_face]
        leader = int(np.argmax(p))
        if leader == self._no_face:
            reported = self._hysteresis.update(t, None)
        else:
            strong = given_face[leader] >= self.settings.min_confidence
            reported = self._hysteresis.update(t, self.labels[leader] if strong else UNCERTAIN)
        if reported is None:
            confidence = float(p[self._no_face])
            valence = arousal = None
        else:
            if reported == UNCERTAIN:
                confidence = float(given_face.max())
            else:
                confidence = float(given_face[self.labels.index(reported)])
            valence, arousal = (round(float(v), 4) for v in self._va.value)
        return AffectState(
            t=t,
            emotion=reported,
            confidence=round(confidence, 4),
            face_presence=round(presence, 4),
            probs={
                label: round(float(v), 4) for label, v in zip(self.labels, given_face, strict=True)
            },
            valence=valence,
            arousal=arousal,
        )
