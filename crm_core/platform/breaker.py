"""One circuit breaker per Redis (docs/operations.md "Faults: Redis and rate limits").

A stopped Redis (SIGSTOP) answers nothing: each call waits for its socket timeout before it
fails. Callers that have a way around Redis (the API limits and the sign-in limits count in
their own memory) ask the breaker first: after a failure the breaker is open and they go
around Redis at once; at most one call per `PROBE_SECONDS` (and one at a time) is let through
to probe Redis, and the first that succeeds closes the breaker. One WARNING when an outage
starts, one INFO when Redis answers again, whatever the number of callers.

Breakers are shared per Redis URL within the process (`breaker_for`): every user of one Redis
learns of its outage from the first failure, not each from its own timeout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

PROBE_SECONDS = 1.0


class Breaker:
    """Closed (calls go to Redis) or open (calls go around it, but for one probe at a time,
    at most one per `probe_seconds`)."""

    def __init__(
        self,
        name: str,
        probe_seconds: float = PROBE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.probe_seconds = probe_seconds
        self.clock = clock
        self.open = False
        self.probing = False
        self.opened_at = 0.0
        self.next_probe = 0.0
        self.attempts = 0  # calls let through to Redis (what tests count)
        self.outages = 0

    def allow(self) -> bool:
        """May this call go to Redis? While open: only the probe (the caller must then report
        `success` or `failure`)."""
        if not self.open:
            self.attempts += 1
            return True
        if self.probing or self.clock() < self.next_probe:
            return False
        self.probing = True
        self.attempts += 1
        return True

    def success(self) -> None:
        if self.open:
            self.open = False
            log.info(
                "%s: Redis answers again after %.1f s",
                self.name,
                self.clock() - self.opened_at,
            )
        self.probing = False

    def failure(self, error: BaseException) -> None:
        now = self.clock()
        if not self.open:
            self.open = True
            self.opened_at = now
            self.outages += 1
            log.warning("%s: Redis does not answer (%r); going around it", self.name, error)
        self.probing = False
        self.next_probe = now + self.probe_seconds

    def probe_now(self) -> None:
        """Let the next call probe Redis without waiting for the interval (Redis is known to
        be back: an operator's restart, a test)."""
        self.next_probe = 0.0

    def release(self) -> None:
        """A call let through ended with neither answer (cancelled): another may probe."""
        self.probing = False


_BREAKERS: dict[str, Breaker] = {}


def breaker_for(redis_url: str) -> Breaker:
    """The process's breaker of the Redis at `redis_url`."""
    breaker = _BREAKERS.get(redis_url)
    if breaker is None:
        breaker = _BREAKERS[redis_url] = Breaker(f"Redis {_without_password(redis_url)}")
    return breaker


def _without_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = rest.rpartition("@")[2]
    return f"{scheme}{sep}{rest}"
