"""Per-tenant sending rate: each message takes the next free slot, `1 / rate` seconds after the
previous one. With Redis the slots are shared by every worker (one atomic script); without it
they are kept in the process (embedded mode is one process).

A sender takes the slots of a whole claim at once (`wait(tenant, count)`): the slots are
consecutive, the call returns when the first one has come, and each message then waits for its
own slot."""

from __future__ import annotations

import asyncio
import time
from typing import Any

# KEYS[1]: the tenant's next free slot; ARGV: now, interval (seconds, as text), count
_TAKE_SLOTS = """
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local count = tonumber(ARGV[3])
local slot = tonumber(redis.call('GET', KEYS[1]) or '0')
if slot < now then slot = now end
local ttl = math.ceil((slot - now + interval * count) * 1000) + 1000
redis.call('SET', KEYS[1], tostring(slot + interval * count), 'PX', ttl)
return tostring(slot)
"""


class SlotLimiter:
    def __init__(self, rate_per_second: float, redis: Any = None) -> None:
        self.interval = 1.0 / rate_per_second
        self.redis = redis
        self._next: dict[str, float] = {}
        self._script = redis.register_script(_TAKE_SLOTS) if redis is not None else None

    async def _take(self, tenant_id: str, count: int) -> float:
        now = time.time()
        if self._script is not None:
            slot = await self._script(
                keys=[f"crm:sms:slot:{tenant_id}"],
                args=[repr(now), repr(self.interval), str(count)],
            )
            return float(slot)
        slot = max(now, self._next.get(tenant_id, 0.0))
        self._next[tenant_id] = slot + self.interval * count
        return slot

    async def wait(self, tenant_id: str, count: int = 1) -> list[float]:
        """Take `count` consecutive slots of this tenant; return their times (`time.time()`
        scale) once the first has come."""
        first = await self._take(tenant_id, count)
        delay = first - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        return [first + i * self.interval for i in range(count)]


async def until(slot: float) -> None:
    """Sleep until a slot returned by `SlotLimiter.wait`."""
    delay = slot - time.time()
    if delay > 0:
        await asyncio.sleep(delay)
