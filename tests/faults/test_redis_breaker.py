"""The rate limits while Redis is stopped (docs/operations.md "Faults: Redis and rate limits"):
with a real redis-server SIGSTOPped (it answers nothing and closes nothing), only the first
request pays the Redis timeout; the others count in memory without asking Redis, one probe a
second looks again, and after SIGCONT the counting goes back to Redis by itself. Attempts are
counted at `limits`' Redis storage (what every Redis call of the limits goes through), never
by the clock. Without `redis-server` these tests fail under CI=true (tests/support/servers.py).
"""

from __future__ import annotations

import logging
import signal
from typing import Any

import pytest
from limits.aio.storage import RedisStorage
from redis.asyncio import Redis

from crm_core.platform import breaker
from crm_core.platform.settings import Settings
from handlers.ratelimits import API_LIMITER
from tests.support.api import make_settings
from tests.support.servers import RedisServer

REQUESTS = 10


@pytest.fixture
def settings(redis_server: RedisServer) -> Settings:
    return make_settings(redis_url=redis_server.url)


@pytest.fixture
def redis_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every counter increment that reaches `limits`' Redis storage (a stopped Redis makes
    each wait for its socket timeout)."""
    calls: list[str] = []
    original = RedisStorage.incr

    async def counted(self: RedisStorage, key: str, expiry: int, amount: int = 1) -> int:
        calls.append(key)
        return await original(self, key, expiry, amount)

    monkeypatch.setattr(RedisStorage, "incr", counted)
    return calls


async def _user_count_in_redis(url: str) -> int:
    client = Redis.from_url(url)
    try:
        keys = [k async for k in client.scan_iter(match="*apilimits*user:*")]
        values = [await client.get(k) for k in keys]
        return sum(int(v or 0) for v in values)
    finally:
        await client.aclose()


async def test_a_stopped_redis_costs_one_timeout_not_one_per_request(
    api, redis_server, redis_calls, caplog
):
    caplog.set_level(logging.INFO)
    owner = await api.register()
    limiter = api.client.app[API_LIMITER]
    await api.call("GET", "/api/auth/me", owner, expect=200)
    shared_before = await _user_count_in_redis(redis_server.url)
    assert shared_before >= 1 and not limiter.degraded

    gate = breaker.breaker_for(redis_server.url)
    now = [1000.0]
    gate.clock = lambda: now[0]  # the probe interval never passes unless the test moves it
    redis_server.signal(signal.SIGSTOP)
    redis_calls.clear()
    for _ in range(REQUESTS):
        await api.call("GET", "/api/auth/me", owner, expect=200)
    # the first request's first budget waited for Redis; nothing after it asked Redis
    assert len(redis_calls) == 1
    assert gate.open and limiter.degraded
    # a probe interval later: exactly one request probes (and pays), the others go around
    now[0] += breaker.PROBE_SECONDS
    for _ in range(3):
        await api.call("GET", "/api/auth/me", owner, expect=200)
    assert len(redis_calls) == 2 and gate.open

    redis_server.signal(signal.SIGCONT)
    now[0] += breaker.PROBE_SECONDS
    redis_calls.clear()
    for _ in range(3):
        await api.call("GET", "/api/auth/me", owner, expect=200)
    # the probe found Redis: every budget of every request counted there again
    assert not gate.open and not limiter.degraded
    assert len(redis_calls) >= 3
    # the three counted in Redis (plus, at most, the increments that timed out while it was
    # stopped: a stopped Redis still runs what sat in its socket once it continues)
    shared_after = await _user_count_in_redis(redis_server.url)
    assert shared_before + 3 <= shared_after <= shared_before + 3 + 2
    warnings = [r for r in caplog.records if "does not answer" in r.getMessage()]
    recovered = [r for r in caplog.records if "answers again" in r.getMessage()]
    assert [r.levelno for r in warnings] == [logging.WARNING]
    assert [r.levelno for r in recovered] == [logging.INFO]


async def test_one_breaker_per_redis_is_shared_by_its_users(redis_server):
    from crm_core.accounts.ratelimit import login_limit_storage
    from crm_core.platform.apilimits import limit_storage

    api_storage: Any = limit_storage(redis_server.url)
    login_storage: Any = login_limit_storage(redis_server.url)
    assert api_storage.breaker is login_storage.breaker is breaker.breaker_for(redis_server.url)
    assert breaker.breaker_for("redis://127.0.0.1:1/0") is not api_storage.breaker
