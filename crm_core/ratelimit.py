"""Failed-login throttling: a sliding window of failures per key (email, client address).

Kept in process memory: with several API processes each keeps its own window, which still
bounds guessing per process; a shared store (Redis) is the documented next step.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from crm_core.errors import RateLimited


class FailureWindow:
    def __init__(
        self, max_failures: int, window_seconds: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str) -> deque[float]:
        now = self._clock()
        failures = self._failures.get(key)
        if failures is None:
            return deque()
        while failures and failures[0] <= now - self.window_seconds:
            failures.popleft()
        if not failures:
            del self._failures[key]
        return failures

    def check(self, key: str) -> None:
        failures = self._recent(key)
        if len(failures) >= self.max_failures:
            retry = max(1, math.ceil(failures[0] + self.window_seconds - self._clock()))
            raise RateLimited(
                "Too many failed login attempts; try again later",
                headers={"Retry-After": str(retry)},
            )

    def record_failure(self, key: str) -> None:
        self._failures.setdefault(key, deque()).append(self._clock())
        if len(self._failures) > 100_000:  # bound memory under a spray of distinct keys
            oldest = next(iter(self._failures))
            del self._failures[oldest]

    def reset(self, key: str) -> None:
        self._failures.pop(key, None)
