"""Attempt limits that an await cannot slip past (failed sign-ins per email and per address).

Each attempt reserves its slot atomically *before* the slow work (bcrypt): one atomic
increment (the `limits` package's fixed window: the window opens at a key's first attempt and
lasts `window_seconds`), so of N concurrent attempts at most the limit get through to the
password check and the rest answer 429 at once. A successful sign-in gives its slots back: the
email's window is cleared, the address's one slot is refunded (offices behind one address sign
in all day). With `REDIS_URL` the counters live in Redis, shared by every API process; without
it they live in this process (the embedded database is one process anyway).
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter

from crm_core.errors import RateLimited

KEY_PREFIX = "crm:limits"


def limit_storage(redis_url: str | None) -> Storage:
    """Redis (through redis-py's asyncio client, already used by the task broker) or memory."""
    if redis_url:
        return RedisStorage(f"async+{redis_url}", implementation="redispy", key_prefix=KEY_PREFIX)
    return MemoryStorage()


class AttemptLimit:
    """At most `max_attempts` per key within `window_seconds` of the key's first attempt."""

    def __init__(
        self, storage: Storage, name: str, max_attempts: int, window_seconds: int, message: str
    ) -> None:
        self.limiter = FixedWindowRateLimiter(storage)
        self.item = RateLimitItemPerSecond(max_attempts, window_seconds, namespace="crm")
        self.name = name
        self.message = message

    async def reserve(self, key: str) -> None:
        """Take one slot for `key` or raise RateLimited (429 with `Retry-After`)."""
        if await self.limiter.hit(self.item, self.name, key):
            return
        stats = await self.limiter.get_window_stats(self.item, self.name, key)
        retry = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimited(self.message, headers={"Retry-After": str(retry)})

    async def refund(self, key: str) -> None:
        """Give one reserved slot back (the attempt turned out not to count)."""
        await self.limiter.hit(self.item, self.name, key, cost=-1)

    async def release_all(self, key: str) -> None:
        """Forget every attempt of `key` (a successful sign-in ends its failures)."""
        await self.limiter.clear(self.item, self.name, key)


class LoginThrottle:
    """Failed sign-in attempts per email and per client address (LOGIN_MAX_FAILURES,
    LOGIN_MAX_FAILURES_PER_IP within LOGIN_LOCKOUT_SECONDS)."""

    MESSAGE = "Too many failed login attempts; try again later"

    def __init__(
        self, storage: Storage, per_email: int, per_address: int, window_seconds: int
    ) -> None:
        self.storage = storage
        self.email = AttemptLimit(storage, "login-email", per_email, window_seconds, self.MESSAGE)
        self.address = AttemptLimit(
            storage, "login-address", per_address, window_seconds, self.MESSAGE
        )

    async def reserve(self, email: str, address: str | None = None) -> None:
        """Count this attempt as a failure before checking the password; 429 past a limit."""
        if address is not None:
            await self.address.reserve(address)
        try:
            await self.email.reserve(email)
        except RateLimited:
            if address is not None:
                await self.address.refund(address)
            raise

    async def succeeded(self, email: str, address: str | None = None) -> None:
        await self.email.release_all(email)
        if address is not None:
            await self.address.refund(address)

    async def close(self) -> None:
        bridge = getattr(self.storage, "bridge", None)
        client = getattr(bridge, "storage", None)
        if client is not None and hasattr(client, "aclose"):
            await client.aclose()
