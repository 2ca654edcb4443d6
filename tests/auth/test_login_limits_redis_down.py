"""Redis down: the login limits fall back to counting in the process (issue #19 §4,
crm_core/accounts/ratelimit.py, docs/operations.md "Failed-login throttling"); never a 500.

The module runs its own redis-server, stops it mid-test and starts it again on the same port."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
from redis.asyncio import Redis

from crm_core.platform.breaker import breaker_for
from tests.support.api import Api, make_settings
from tests.support.tools import free_port

LIMIT = 3


class RedisProcess:
    """A private, killable redis-server."""

    def __init__(self, workdir: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            message = "redis-server is not on the PATH: the Redis-down login test did NOT run"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)
        self.binary, self.workdir = binary, workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.workdir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def redis_process(tmp_path) -> Iterator[RedisProcess]:
    server = RedisProcess(str(tmp_path))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings(redis_process):
    return make_settings(
        redis_url=redis_process.url,
        login_max_failures=LIMIT,
        login_max_failures_per_ip=1000,
        api_runs_tasks=False,  # no worker here: only the login limits use this Redis
    )


async def _wrong(api: Api, email: str) -> int:
    resp = await api.client.post("/api/auth/login", json={"email": email, "password": "wrong"})
    body = await resp.json() if resp.status != 200 else None
    if resp.status == 429:
        assert body["error"]["code"] == "rate_limited" and "Retry-After" in resp.headers
    return resp.status


async def _limit_keys(url: str) -> list[str]:
    redis = Redis.from_url(url)
    try:
        return [key.decode() for key in await redis.keys("crm:limits*")]
    finally:
        await redis.aclose()


async def test_with_redis_down_the_limits_count_in_the_process(api, owner, redis_process, caplog):
    assert [await _wrong(api, owner.email) for _ in range(2)] == [401, 401]
    assert any(owner.email in key for key in await _limit_keys(redis_process.url))

    redis_process.stop()
    with caplog.at_level(logging.WARNING, logger="crm_core.accounts.ratelimit"):
        # the process counts from zero: LIMIT failures, then 429; never a 500
        statuses = [await _wrong(api, owner.email) for _ in range(LIMIT + 2)]
        assert statuses == [401] * LIMIT + [429, 429]
        resp = await api.client.post(
            "/api/auth/login", json={"email": owner.email, "password": owner.password}
        )
        assert resp.status == 429  # the lock holds in the process too
        other = await api.register()  # another account signs in normally
        await api.login(other.email, other.password)
    warnings = [r.getMessage() for r in caplog.records if r.name == "crm_core.accounts.ratelimit"]
    assert len([w for w in warnings if "does not answer" in w]) == 1, warnings

    redis_process.start()  # an empty Redis again: counting goes back there
    breaker_for(redis_process.url).probe_now()  # not a probe interval later (breaker.py)
    with caplog.at_level(logging.WARNING, logger="crm_core.accounts.ratelimit"):
        assert await _wrong(api, "someone@example.com") == 401
    assert any("someone@example.com" in key for key in await _limit_keys(redis_process.url))
    assert any("answers again" in r.getMessage() for r in caplog.records)
