"""Retry policy: exponential backoff with full jitter, and how an HTTP result is classified."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from enum import Enum
from functools import cached_property


class Verdict(Enum):
    OK = "ok"
    RETRY = "retry"  # transient: 408, 429, 5xx, timeouts, connection errors
    PERMANENT = "permanent"  # other 4xx: a few tries, then dead
    DEAD = "dead"  # never worth retrying (e.g. 410 Gone)


def classify(status: int | None) -> Verdict:
    if status is None:
        return Verdict.RETRY
    if 200 <= status < 300:
        return Verdict.OK
    if status == 410:
        return Verdict.DEAD
    if status in (408, 425, 429) or status >= 500:
        return Verdict.RETRY
    return Verdict.PERMANENT


@dataclass(frozen=True)
class RetryPolicy:
    initial_s: float = 10.0
    max_s: float = 6 * 3600.0
    budget_s: float = 72 * 3600.0
    permanent_attempts: int = 3

    def _base(self, attempt: int) -> float:
        return min(self.max_s, self.initial_s * 2.0 ** min(max(0, attempt - 1), 60))

    def delay(self, attempt: int) -> float:
        """Delay before the next try after ``attempt`` failed tries (1-based), with jitter in [50%, 100%]."""
        return self._base(attempt) * (0.5 + random.random() / 2)

    @cached_property
    def max_attempts(self) -> int:
        """Attempts that fit in the budget when every wait is its shortest (so the budget is at least met)."""
        total, n = 0.0, 0
        while total < self.budget_s:
            n += 1
            step = self._base(n) * 0.5
            if self._base(n) >= self.max_s:  # from here on every wait is the same: count them at once
                n += max(0, math.ceil((self.budget_s - total) / step) - 1)
                break
            total += step
        return n + 1

    def next_step(self, verdict: Verdict, attempts_so_far: int) -> float | None:
        """Seconds to wait before the next try, or None when the message is dead."""
        tries = attempts_so_far + 1
        if verdict is Verdict.DEAD:
            return None
        if verdict is Verdict.PERMANENT and tries >= self.permanent_attempts:
            return None
        if tries >= self.max_attempts:
            return None
        return self.delay(tries)
