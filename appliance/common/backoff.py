"""The one retry delay of the appliance: exponential, capped, never overflowing.

Every caller that retries something remote or flaky (a camera reopening, the Spotify
sync, the VLM worker and its circuit breaker, the MQTT link, a failing disk) uses this,
so "how long until the next try" is decided in one place and can be tested without
waiting: a Backoff computes delays, it never sleeps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# A server's Retry-After (or any other floor a caller passes) is honoured up to this: one
# reply of "999999999" or "inf" must not pause a worker until the next restart.
DEFAULT_CEILING_S = 3600.0


@dataclass
class Backoff:
    """Delays `first`, `first * factor`, ... up to `cap`; `reset()` after a success.

    `failures` counts the delays handed out since the last reset. The exponent is
    clamped, so days of failures never overflow a float (2.0 ** 1100 does)."""

    first: float
    cap: float
    factor: float = 2.0
    ceiling: float = field(default=DEFAULT_CEILING_S)
    failures: int = 0

    def __post_init__(self) -> None:
        if not (self.first > 0 and self.cap >= self.first and self.factor >= 1):
            raise ValueError(f"backoff needs 0 < first <= cap and factor >= 1, got {self}")
        self.ceiling = max(self.ceiling, self.cap)

    def peek(self) -> float:
        """The delay the next failure will get, without counting it."""
        steps = math.log(self.cap / self.first, self.factor) if self.factor > 1 else 0.0
        exponent = min(self.failures, math.ceil(steps) + 1)
        return min(self.cap, self.first * self.factor**exponent)

    def next(self, at_least: float | None = None) -> float:
        """Count a failure and return how long to wait before the next try: the
        exponential delay, or `at_least` (a Retry-After, a longer pause the caller wants)
        when that is longer, never more than `ceiling`. A non-finite or negative
        `at_least` is ignored."""
        delay = self.peek()
        self.failures += 1
        if at_least is not None and math.isfinite(at_least) and at_least > delay:
            delay = min(at_least, self.ceiling)
        return delay

    def reset(self) -> None:
        self.failures = 0
