"""Per-tenant sending rate: each message takes the next free slot, `1 / rate` seconds after the
previous one. With Redis the slots are shared by every worker (one atomic script); without it
they are kept in the process (embedded mode is one process)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

# KEYS[1]: the tenant's next free slot; ARGV: now, interval (seconds, as text)
_TAKE_SLOT = """
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local slot = tonumber(redis.call('GET', KEYS[1]) or '0')
if slot < now then slot = now end
local ttl = math.ceil((slot - now + interval) * 1000) + 1000
redis.call('SET', KEYS[1], tostring(slot + interval), 'PX', ttl)
return tostring(slot)
"""


class SlotLimiter:
    def __init__(self, rate_per_second: float, redis: Any = None) -> None:
        self.interval = 1.0 / rate_per_second
        self.redis = redis
        self._next: dict[str, float] = {}
        self._script = redis.register_script(_TAKE_SLOT) if redis is not None else None

    async def _take(self, tenant_id: str) -> float:
        now = time.time()
        if self._script is not None:
            slot = await self._script(
                keys=[f"crm:sms:slot:{tenant_id}"], args=[repr(now), repr(self.interval)]
            )
            return float(slot)
        slot = max(now, self._next.get(tenant_id, 0.0))
        self._next[tenant_id] = slot + self.interval
        return slot

    async def wait(self, tenant_id: str) -> None:
        """Return when this tenant may send its next message."""
        delay = await self._take(tenant_id) - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
