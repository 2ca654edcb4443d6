"""Fixtures for the fault and many-process tests: real servers (tests/support/servers.py) and
an `Api` over plain HTTP to a `crm serve` subprocess."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, ClientTimeout

from tests.conftest import TEST_SECRET, Api
from tests.support.servers import CrmServe, MongoecoServer, RedisServer, TcpProxy


class RemoteClient:
    """The few methods of aiohttp's TestClient that `Api` uses, against a real server."""

    def __init__(self, session: ClientSession, base_url: str) -> None:
        self.session = session
        self.base_url = base_url

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.session.request(method, self.base_url + path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)


def crm_env(**settings: Any) -> dict[str, str]:
    """Environment for `crm serve` / `crm worker` in these tests (test settings, cheap
    bcrypt), plus `settings` by their environment names."""
    env = {"CRM_ENV": "test", "SECRET_KEY": TEST_SECRET, "BCRYPT_ROUNDS": "4"}
    env.update({key.upper(): str(value) for key, value in settings.items()})
    return env


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
    server.terminate()


@pytest.fixture
async def http() -> AsyncIterator[ClientSession]:
    async with ClientSession(timeout=ClientTimeout(total=60)) as session:
        yield session


def remote_api(http: ClientSession, server: CrmServe) -> Api:
    return Api(RemoteClient(http, server.url))  # type: ignore[arg-type]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """`item.rep_call`: the call's report, for fixtures that print logs when a test failed."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
