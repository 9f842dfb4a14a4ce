"""Time-based filters: they take timestamps, not frame counts, so 5 fps and 30 fps agree."""

from __future__ import annotations

import math

import numpy as np


class ExponentialFilter:
    """First-order low-pass on a vector with time constant tau (seconds).

    Each sample is taken to have stood since the previous one, and the filter is advanced
    exactly over that interval: x += (1 - exp(-dt/tau)) * (sample - x). A step response
    therefore reaches 63% tau after the step whatever the frame rate (give or take one
    frame interval), and a sample weighs as much as the time it covers, not the number of
    frames that repeated it. The first sample only sets the clock. Time going backwards
    (a recording replayed, a clock reset) restarts the clock without forgetting the state.
    """

    def __init__(self, initial: np.ndarray) -> None:
        self.value = np.asarray(initial, dtype=np.float64).copy()
        self.t: float | None = None

    def update(self, t: float, sample: np.ndarray, tau_s: float) -> np.ndarray:
        if self.t is not None and t > self.t:
            alpha = 1.0 - math.exp(-(t - self.t) / tau_s)
            self.value += alpha * (np.asarray(sample, dtype=np.float64) - self.value)
        self.t = t
        return self.value


class _Nothing:
    """No candidate pending: distinct from None, the "no face" candidate, so a drop to
    no face is held for `hold_s` like any other change."""


_NOTHING = _Nothing()


class LabelHysteresis:
    """A new label, or "no face" (None), is reported only after it has led for `hold_s`
    without interruption.

    One exception keeps an ambiguous face from passing as "no face": when nothing is
    reported (None) and face labels have led for `hold_s` - even taking turns, as two
    tied labels do - the current leader is reported.
    """

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        self.reported: str | None = None
        self._pending: str | _Nothing | None = _NOTHING
        self._since = 0.0
        self._labels_since: float | None = None  # face labels leading since (while None)

    def update(self, t: float, candidate: str | None, *, change: bool = True) -> str | None:
        """`candidate` is the current leader; `change=False` means it is too weak to count."""
        if t < self._since or (self._labels_since is not None and t < self._labels_since):
            self._since = t  # time went backwards: restart the timers
            self._labels_since = None if self._labels_since is None else t
        if candidate is None:
            self._labels_since = None
        elif self._labels_since is None:
            self._labels_since = t
        if not change or candidate == self.reported:
            self._pending = _NOTHING
            return self.reported
        if candidate != self._pending:
            self._pending, self._since = candidate, t
        appeared = (
            self.reported is None
            and self._labels_since is not None
            and t - self._labels_since >= self.hold_s
        )
        if t - self._since >= self.hold_s or appeared:
            self.reported, self._pending = candidate, _NOTHING
        return self.reported
