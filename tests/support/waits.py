"""Waiting for a condition in tests: the one place for how long a test may wait.

A test waits for what it needs to be true (a job finished, a span ended, a line written), never
for a length of time. The deadline only bounds a hang: it is generous enough for a loaded
2-core CI machine (the mongoeco lane and the fuzz beside), so it never decides whether a test
passes, only how long a broken one takes to say so. Polls are counted in time, not in rounds:
a fixed number of rounds is a deadline that shrinks as the machine slows down.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

# seconds: bounds a hang; a condition that holds is seen long before. TEST_WAIT_DEADLINE
# shortens it to see a broken test fail sooner (never to make one pass)
DEADLINE = float(os.environ.get("TEST_WAIT_DEADLINE") or 300.0)
POLL = 0.02  # seconds between two looks at a condition


async def until(
    condition: Callable[[], Awaitable[T]],
    what: str,
    timeout: float = DEADLINE,
    interval: float = POLL,
) -> T:
    """Await `condition()` until it answers a true value, and answer that value; an
    AssertionError naming `what` (and the last answer) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        answer = await condition()
        if answer:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}: {answer!r}")
        await asyncio.sleep(interval)


def until_sync(
    condition: Callable[[], T],
    what: str,
    timeout: float = DEADLINE,
    interval: float = POLL,
) -> T:
    """`until` for a plain function, from synchronous code (or a thread)."""
    deadline = time.monotonic() + timeout
    while True:
        answer = condition()
        if answer:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}: {answer!r}")
        time.sleep(interval)
