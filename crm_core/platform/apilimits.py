"""Request limits for API use: per API token, per user and per company (docs/api.md "Rate
limits").

Each authenticated request takes one slot in every budget that applies to it, before any other
work: the API token's (requests made with one), its user's (sessions and tokens together) and
its company's. A budget is `LIMIT` requests per window (`API_RATE_LIMIT_PER_TOKEN` and the
others, in the `limits` notation: `3000/minute`). Windows are fixed and aligned to the clock
(a minute window resets at every full minute), so every process agrees on when a window ends
without asking the store, and taking a slot is one increment per budget.

A request past a budget is refused with 429 `rate_limited`, `Retry-After` (seconds until that
window ends) and nothing counted: the slots it took in the budgets checked before are given
back. Every answer of a limited route carries the IETF headers (draft-ietf-httpapi-ratelimit-
headers): `RateLimit-Policy` (each budget: quota `q`, window `w`) and `RateLimit` (each
budget: remaining `r`, seconds to reset `t`).

With `REDIS_URL` the counters live in Redis (through `limits`' storage), so every process
shares one budget; when Redis does not answer, each process counts in its own memory until it
answers again, as the sign-in limits do. The process's breaker of that Redis (crm_core/platform/
breaker.py, docs/operations.md "Faults: Redis and rate limits") decides: after a failure the
counters go to memory at once, one call per second probes Redis, and the first answer brings
the counting back to Redis (one WARNING per outage, one INFO on recovery). Without
`REDIS_URL`, in this process's memory.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.errors import StorageError

from crm_core.platform.breaker import Breaker, breaker_for
from crm_core.platform.errors import RateLimited

log = logging.getLogger(__name__)

KEY_PREFIX = "crm:apilimits"
REDIS_TIMEOUT_SECONDS = 1.0
SCOPES = ("token", "user", "company")  # most specific first: a refusal gives back less
T = TypeVar("T")


def parse_limit(text: str) -> RateLimitItem:
    """`3000/minute`, `50 per second`... (the `limits` notation); ValueError if not one."""
    item = parse(text)
    if item.amount < 1:
        raise ValueError("the amount must be at least 1")
    return item


def limit_storage(redis_url: str | None, key_prefix: str = KEY_PREFIX) -> Storage:
    """Counters in Redis (through redis-py's asyncio client, already used by the task broker)
    under `key_prefix`, or in this process's memory without `redis_url`. A Redis that hangs
    costs a call at most REDIS_TIMEOUT_SECONDS, and only the breaker's probe pays it: every
    failure of Redis, and every call while the breaker is open, is one StorageError."""
    if redis_url:
        return GuardedRedisStorage(f"async+{redis_url}", breaker_for(redis_url), key_prefix)
    return MemoryStorage()


class GuardedRedisStorage(RedisStorage):
    """`limits`' Redis storage behind a breaker: while it is open, the counter calls fail at
    once (StorageError) instead of waiting for a Redis that does not answer."""

    def __init__(self, uri: str, breaker: Breaker, key_prefix: str) -> None:
        super().__init__(
            uri,
            implementation="redispy",
            key_prefix=key_prefix,
            wrap_exceptions=True,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
        )
        self.breaker = breaker

    async def _guarded(self, call: Callable[[], Awaitable[T]]) -> T:
        if not self.breaker.allow():
            raise StorageError(ConnectionError("Redis is gone around while it does not answer"))
        try:
            value = await call()
        except (StorageError, OSError, TimeoutError) as exc:
            self.breaker.failure(exc)
            raise
        except BaseException:
            self.breaker.release()
            raise
        self.breaker.success()
        return value

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return await self._guarded(
            lambda: super(GuardedRedisStorage, self).incr(key, expiry, amount)
        )

    async def get(self, key: str) -> int:
        return await self._guarded(lambda: super(GuardedRedisStorage, self).get(key))

    async def get_expiry(self, key: str) -> float:
        return await self._guarded(lambda: super(GuardedRedisStorage, self).get_expiry(key))

    async def clear(self, key: str) -> None:
        await self._guarded(lambda: super(GuardedRedisStorage, self).clear(key))


@dataclass(frozen=True)
class Budget:
    """One limit: `quota` requests per `window` seconds for each identifier of `scope`."""

    scope: str
    quota: int
    window: int

    @classmethod
    def of(cls, scope: str, text: str) -> Budget:
        item = parse_limit(text)
        return cls(scope, item.amount, item.get_expiry())

    @property
    def policy(self) -> str:
        return f'"{self.scope}";q={self.quota};w={self.window}'


@dataclass(frozen=True)
class Taken:
    budget: Budget
    count: int
    reset: int  # seconds until the window ends (at least 1)

    @property
    def remaining(self) -> int:
        return max(0, self.budget.quota - self.count)

    @property
    def state(self) -> str:
        return f'"{self.budget.scope}";r={self.remaining};t={self.reset}'


class ApiLimiter:
    """The budgets of the module docstring over `storage` (Redis or memory)."""

    def __init__(self, storage: Storage, per_token: str, per_user: str, per_company: str) -> None:
        self.storage = storage
        self.fallback = storage if isinstance(storage, MemoryStorage) else MemoryStorage()
        self.degraded = False
        self.budgets = {
            "token": Budget.of("token", per_token),
            "user": Budget.of("user", per_user),
            "company": Budget.of("company", per_company),
        }
        self.clock = time.time

    def policy(self, scopes: tuple[str, ...]) -> str:
        return ", ".join(self.budgets[scope].policy for scope in scopes)

    async def reserve(self, company: str, user: str, token: str | None = None) -> dict[str, str]:
        """Take one slot in each budget of this request; the RateLimit headers of the answer.
        RateLimited (429, with the same headers and `Retry-After`) when a budget is spent:
        then no slot stays taken."""
        identifiers = {"token": token, "user": user, "company": company}
        scopes = tuple(scope for scope in SCOPES if identifiers[scope] is not None)
        now = self.clock()
        taken: list[tuple[str, Taken]] = []  # (key, slot)
        for scope in scopes:
            budget = self.budgets[scope]
            window_index = int(now // budget.window)
            key = f"{scope}:{identifiers[scope]}:{budget.window}:{window_index}"
            reset = max(1, math.ceil((window_index + 1) * budget.window - now))
            count = await self._incr(key, budget.window + 1, 1)
            slot = Taken(budget, count, reset)
            if count > budget.quota:
                for taken_key, taken_slot in [*taken, (key, slot)]:
                    await self._incr(taken_key, taken_slot.budget.window + 1, -1)
                states = [t.state for _, t in taken] + [Taken(budget, budget.quota, reset).state]
                raise RateLimited(
                    TOO_MANY[scope].format(quota=budget.quota, window=budget.window, reset=reset),
                    details=[{"limit": scope, "quota": budget.quota, "window": budget.window}],
                    headers={
                        "Retry-After": str(reset),
                        "RateLimit-Policy": self.policy(scopes),
                        "RateLimit": ", ".join(states),
                    },
                )
            taken.append((key, slot))
        return {
            "RateLimit-Policy": self.policy(scopes),
            "RateLimit": ", ".join(t.state for _, t in taken),
        }

    async def _incr(self, key: str, expiry: int, amount: int) -> int:
        try:
            value = await self.storage.incr(key, expiry, amount)
        except (StorageError, OSError, TimeoutError):
            # the breaker logged the outage (one WARNING); memory until Redis answers again
            self.degraded = True
            return await self.fallback.incr(key, expiry, amount)
        self.degraded = False
        return value

    async def close(self) -> None:
        bridge = getattr(self.storage, "bridge", None)
        client = getattr(bridge, "storage", None)
        if client is not None and hasattr(client, "aclose"):
            await client.aclose()


# one whole message per scope, so each is a msgid of its own (docs/api.md "Languages")
AGAIN = "({quota} per {window} s); try again in {reset} s"
TOO_MANY = {
    "token": "Too many requests for this API token " + AGAIN,
    "user": "Too many requests for this user " + AGAIN,
    "company": "Too many requests for this company " + AGAIN,
}
