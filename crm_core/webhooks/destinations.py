"""Delivery isolation (docs/integrations.md "Isolation"): at most N requests in flight per
destination in one process, never waited for.

A destination is (scheme, host, port) of the webhook's URL, so two receivers on one host but
different ports are two destinations. A delivery that finds its destination full does not wait
(a slow receiver would then hold the worker's task slots that other companies' deliveries
need): it is put back and tried again shortly, not counted as an attempt.
"""

from __future__ import annotations

from collections import Counter

from yarl import URL


def destination(url: str) -> tuple[str, str, int]:
    parsed = URL(url)
    return parsed.scheme, (parsed.raw_host or "").lower(), parsed.port or 0


class DestinationGate:
    """Counts requests in flight per destination; `enter` never blocks."""

    def __init__(self, per_destination: int) -> None:
        self.per_destination = per_destination
        self.in_flight: Counter[tuple[str, str, int]] = Counter()

    def enter(self, key: tuple[str, str, int]) -> bool:
        """Take a slot for `key` if one is free; the caller must `leave` after its request."""
        if self.in_flight[key] >= self.per_destination:
            return False
        self.in_flight[key] += 1
        return True

    def leave(self, key: tuple[str, str, int]) -> None:
        self.in_flight[key] -= 1
        if self.in_flight[key] <= 0:
            del self.in_flight[key]
