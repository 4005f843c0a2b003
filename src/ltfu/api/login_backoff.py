"""Backoff after failed logins, per key (a client name, a remote address).

A key gets ``free`` failures; after that each further try must wait, the wait doubling with each
failure from ``base_s`` up to ``max_s``. A key with no failure for ``forget_s`` starts afresh. The
state is in memory, per process: each replica throttles on its own, which bounds guessing to
(replicas x rate) and needs no shared store. Rate-limit libraries (``limits``, ``pyrate-limiter``)
count requests in windows; what is wanted here is a lockout that grows with consecutive failures and
ends on success, which is a few lines.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0
    until: float = 0.0


class FailureBackoff:
    def __init__(
        self,
        free: int,
        *,
        base_s: float = 1.0,
        max_s: float = 300.0,
        forget_s: float | None = None,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free = free
        self.base_s = base_s
        self.max_s = max_s
        self.forget_s = forget_s if forget_s is not None else max(900.0, 3 * max_s)
        self.max_keys = max_keys
        self.clock = clock
        self._keys: OrderedDict[str, _Failures] = OrderedDict()

    def wait(self, key: str) -> float:
        """Seconds ``key`` must still wait before its next try (0: it may try now)."""
        entry = self._current(key)
        return max(0.0, entry.until - self.clock()) if entry else 0.0

    def failed(self, key: str) -> None:
        now = self.clock()
        entry = self._current(key) or _Failures()
        entry.count += 1
        entry.last = now
        if entry.count >= self.free:
            entry.until = now + min(self.max_s, self.base_s * 2 ** (entry.count - self.free))
        self._keys[key] = entry
        self._keys.move_to_end(key)
        while len(self._keys) > self.max_keys:  # least recently failed first
            self._keys.popitem(last=False)

    def succeeded(self, key: str) -> None:
        self._keys.pop(key, None)

    def _current(self, key: str) -> _Failures | None:
        entry = self._keys.get(key)
        if entry is not None and self.clock() - entry.last > self.forget_s:
            del self._keys[key]
            return None
        return entry
