"""Fixtures and pytest hooks only: an app from the factory with test settings, a fresh in-memory
database per test, an `api` that registers tenants and calls the service as a client would, and
the servers some suites need. The helpers they are built from live in tests/support/."""

from __future__ import annotations

import logging
import shutil
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from crm_core.platform import logs
from crm_core.platform.settings import Settings
from crm_core.platform.storage import QueryLog, recording
from handlers.app import create_app
from handlers.routing import SERVICES
from tests.support.api import Account, Api, Factories, database_names, make_settings
from tests.support.servers import RedisServer
from tests.support.sms_gateway import FakeGateway
from tests.support.tools import NOT_RUN, missing_tool
from tests.support.webhook_receiver import Receiver


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> AsyncIterator[TestClient]:
    test_client = await aiohttp_client(create_app(settings))
    yield test_client
    if settings.mongodb_url:  # a shared server: each test leaves it empty for the next
        storage = test_client.app[SERVICES].storage
        if storage.client is not None:
            for name in await database_names(storage):
                if name.startswith(settings.crm_db_prefix):
                    await storage.client.drop_database(name)


@pytest.fixture
def api(client: TestClient) -> Api:
    return Api(client)


@pytest.fixture
async def owner(api: Api) -> Account:
    return await api.register()


@pytest.fixture
async def gateway(aiohttp_server: Any) -> FakeGateway:
    """A fake SMS.ru gateway on a loopback port (tests/support/sms_gateway.py)."""
    fake = FakeGateway()
    server = await aiohttp_server(fake.app())
    fake.url = str(server.make_url("")).rstrip("/")
    return fake


# ---- factories (tests/support/api.py) --------------------------------------------------------


@pytest.fixture
def factories(api: Api) -> Factories:
    return Factories(api)


@pytest.fixture
def create_table(factories: Factories) -> Any:
    return factories.table


@pytest.fixture
def create_rows(factories: Factories) -> Any:
    return factories.rows


@pytest.fixture
def create_user(factories: Factories) -> Any:
    return factories.user


@pytest.fixture
def create_campaign(factories: Factories) -> Any:
    return factories.campaign


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def module_client() -> AsyncIterator[TestClient]:
    """One app (test settings, embedded database) and client for a whole test module, on the
    module's event loop: its tests must be marked `pytest.mark.asyncio(loop_scope="module")`.
    The app's database then lives as long as the module: the module keeps its cases
    independent (throwaway objects for writes, see tests/support/objects.py `TenantObjects`)."""
    client = TestClient(TestServer(create_app(make_settings())))  # a free port
    await client.start_server()
    yield client
    await client.close()


# ---- `crm` commands configure process-wide logging; undo it after each test -----------------


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    access = logging.getLogger(logs.ACCESS_LOGGER)
    saved = (root.handlers[:], root.level, access.handlers[:], access.propagate, access.disabled)
    yield
    logs.stop_access_log()
    for handler in root.handlers:
        if handler not in saved[0]:
            handler.close()
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    access.handlers[:] = saved[2]
    access.propagate, access.disabled = saved[3], saved[4]


# ---- tests that need a tool from the system (tests/support/tools.py `missing_tool`) ----------


@pytest.hookimpl(trylast=True)  # after the durations: just above the closing summary line
def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line per missing tool, with how many tests it kept from running, at the end of the
    run: a skip for a missing tool is never silent."""
    counts: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        if NOT_RUN in reason:
            reason = reason[reason.index(NOT_RUN) :]
            counts[reason] = counts.get(reason, 0) + 1
    for reason, n in counts.items():
        terminalreporter.write_sep("!", f"{n} test(s) {reason}", red=True, bold=True)


# ---- Redis for the SMS, metrics and shutdown suites -------------------------------------------


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server for the module (without one: fails under CI, else skipped and
    listed at the end of the run)."""
    if shutil.which("redis-server") is None:
        missing_tool(
            "redis-server",
            "the Redis-backed SMS, metrics and shutdown tests",
            "apt-get install redis-server, or run ./scripts/test",
        )
    # started once its log says it is ready, on a port that moves if another process took it
    # first (tests/support/servers.py)
    server = RedisServer(tmp_path_factory.mktemp("redis") / "redis.log")
    server.start()
    yield server.url
    server.terminate()


@pytest.fixture
async def clean_redis(redis_url: str) -> str:
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    await client.flushall()
    await client.aclose()
    return redis_url


# ---- integrations: webhooks ------------------------------------------------------------------


@pytest.fixture
async def receiver(aiohttp_server: Any) -> Receiver:
    """A local webhook receiver on a free loopback port (tests/support/webhook_receiver.py)."""
    fake = Receiver()
    server = await aiohttp_server(fake.app())
    fake.url = str(server.make_url("")).rstrip("/")
    return fake


# ---- query audit: each distinct query shape of the session, checked against the declared
# indexes by tests/platform/test_query_audit.py, which runs last


@pytest.fixture(scope="session", autouse=True)
def session_queries() -> Iterator[QueryLog]:
    with recording(distinct=True) as log:
        yield log


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.nodeid.startswith("tests/platform/test_query_audit.py"))
