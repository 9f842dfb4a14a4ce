"""Valence-arousal coordinates of the basic emotions, and VA from class probabilities.

The table places each FER2013 class on Russell's valence (pleasant +) / arousal
(activated +) plane, both in [-1, 1]. Values: the pleasure and arousal ratings of the
emotion terms in Russell & Mehrabian (1977), "Evidence for a three-factor theory of
emotions", J. Research in Personality 11:273-294, as commonly reproduced in affective
computing (they were taken from secondary sources, not re-checked against the original
table); neutral is put at the origin. The VA model is trained against these targets and
the daemon falls back to them when it runs without a VA model, so both agree by design.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

VA_COORDINATES: Mapping[str, tuple[float, float]] = {
    "angry": (-0.51, 0.59),
    "disgust": (-0.60, 0.35),
    "fear": (-0.64, 0.60),
    "happy": (0.81, 0.51),
    "neutral": (0.0, 0.0),
    "sad": (-0.63, -0.27),
    "surprise": (0.40, 0.67),
}
VA_SOURCE = (
    "Russell & Mehrabian (1977) pleasure/arousal ratings of emotion terms, as commonly "
    "reproduced; neutral = origin"
)

POSITIVE = ("happy", "surprise")  # valence-sign classes used by the VA evaluation
NEGATIVE = ("angry", "disgust", "fear", "sad")


def coordinates_for(labels: Sequence[str]) -> np.ndarray:
    """len(labels) x 2 array of (valence, arousal); an unknown label is an error, not 0."""
    unknown = [label for label in labels if label not in VA_COORDINATES]
    if unknown:
        raise ValueError(
            f"no valence-arousal coordinates for {', '.join(unknown)}; "
            f"known: {', '.join(VA_COORDINATES)}"
        )
    return np.array([VA_COORDINATES[label] for label in labels], dtype=np.float64)


class ProbabilityVA:
    """VA as the probability-weighted mean of the class coordinates (the fallback when
    no VA model runs). One-hot in -> exactly that class's coordinates out."""

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = tuple(labels)
        self._coords = coordinates_for(self.labels)

    def __call__(self, probs: Sequence[float] | np.ndarray) -> tuple[float, float]:
        p = np.asarray(probs, dtype=np.float64)
        total = p.sum()
        if p.shape != (len(self.labels),) or total <= 0:
            raise ValueError(f"expected {len(self.labels)} non-negative probabilities")
        valence, arousal = (p / total) @ self._coords
        return float(valence), float(arousal)
