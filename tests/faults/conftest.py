"""Fixtures for the fault and many-process tests: real servers (tests/support/servers.py); the
`Api` over plain HTTP to a `crm serve` subprocess is tests/support/remote.py."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import ClientSession, ClientTimeout

from tests.support.servers import MongoecoServer, RedisServer, TcpProxy
from tests.support.waits import DEADLINE


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    """The folder every process of the test logs to (printed when the test fails)."""
    folder = tmp_path / "logs"
    folder.mkdir()
    return folder


@pytest.fixture
def mongoeco(logs: Path) -> Iterator[MongoecoServer]:
    server = MongoecoServer(logs / "mongoeco.log")
    server.start()
    yield server
    server.terminate()


@pytest.fixture
def db_proxy(mongoeco: MongoecoServer) -> Iterator[TcpProxy]:
    """A TCP proxy in front of mongoeco: `cut()` is the outage, the data stays."""
    proxy = TcpProxy(mongoeco.port).start()
    yield proxy
    proxy.close()


@pytest.fixture
def redis_server(logs: Path) -> Iterator[RedisServer]:
    server = RedisServer(logs / "redis.log")
    server.start()
    yield server
    server.signal(signal.SIGCONT)  # a test may leave it stopped
    server.terminate()


@pytest.fixture
async def http() -> AsyncIterator[ClientSession]:
    async with ClientSession(timeout=ClientTimeout(total=DEADLINE)) as session:
        yield session


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """`item.rep_call`: the call's report, for fixtures that print logs when a test failed."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
