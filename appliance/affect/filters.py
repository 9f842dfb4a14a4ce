"""Time-based filters: they take timestamps, not frame counts, so 5 fps and 30 fps agree."""

from __future__ import annotations

import math

import numpy as np


class ExponentialFilter:
    """First-order low-pass on a vector with time constant tau (seconds).

    Each sample is held until the next one (zero-order hold) and the filter is advanced
    exactly: x += (1 - exp(-dt/tau)) * (sample - x). A step response therefore reaches
    63% after tau whatever the frame rate, and the weight of a sample is proportional to
    how long it stood, not to how many frames repeated it.
    """

    def __init__(self, initial: np.ndarray) -> None:
        self.value = np.asarray(initial, dtype=np.float64).copy()
        self.t: float | None = None

    def update(self, t: float, sample: np.ndarray, tau_s: float) -> np.ndarray:
        if self.t is not None:
            dt = max(0.0, t - self.t)
            alpha = 1.0 - math.exp(-dt / tau_s)
            self.value += alpha * (np.asarray(sample, dtype=np.float64) - self.value)
        self.t = t if self.t is None else max(self.t, t)
        return self.value


class LabelHysteresis:
    """A new label is reported only after it has led for `hold_s` without interruption.

    One exception keeps an ambiguous face from passing as "no face": when nothing is
    reported (None) and face labels have led for `hold_s` - even taking turns, as two
    tied labels do - the current leader is reported.
    """

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        self.reported: str | None = None
        self._pending: str | None = None
        self._since = 0.0
        self._labels_since: float | None = None  # face labels leading since (while None)

    def update(self, t: float, candidate: str | None, *, change: bool = True) -> str | None:
        """`candidate` is the current leader; `change=False` means it is too weak to count."""
        if candidate is None:
            self._labels_since = None
        elif self._labels_since is None:
            self._labels_since = t
        if not change or candidate == self.reported:
            self._pending = None
            return self.reported
        if candidate != self._pending:
            self._pending, self._since = candidate, t
        appeared = (
            self.reported is None
            and self._labels_since is not None
            and t - self._labels_since >= self.hold_s
        )
        if t - self._since >= self.hold_s or appeared:
            self.reported, self._pending = candidate, None
        return self.reported
