"""Shared fixtures: an app from the factory with test settings, a fresh in-memory database per
test, and an `api` helper that registers tenants and calls the service as a client would."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from crm_core.platform.settings import Settings
from handlers.app import create_app
from handlers.routing import SERVICES

TEST_SECRET = "test-secret-key-that-is-long-enough-0123456789"
_counter = itertools.count()


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "crm_env": "test",
        "secret_key": TEST_SECRET,
        "bcrypt_rounds": 4,
        # the real-driver lane (scripts/test-mongoeco) points this at a mongoeco server
        "mongodb_url": os.environ.get("CRM_TEST_MONGODB_URL") or None,
        "redis_url": None,
        # webhooks: tests deliver to local receivers (tests/webhooks/test_webhooks.py checks
        # the guard)
        "webhook_allow_private_addresses": True,
        "webhook_retry_base_seconds": 0.01,
        "webhook_sweep_seconds": 0.02,
        # files: the generated suites upload many files as one owner (tests of the limit set it)
        "import_max_pending": 10_000,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@dataclass
class Account:
    """A registered tenant owner (or any user) as a client sees it."""

    email: str
    password: str
    access_token: str
    refresh_token: str
    me: dict[str, Any] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}

    @property
    def tenant_id(self) -> str:
        return self.me["tenant"]["id"]

    @property
    def user_id(self) -> str:
        return self.me["user"]["id"]


class Api:
    """Thin helpers over the test client; every call goes through HTTP."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    async def register(
        self, email: str | None = None, password: str = "correct-horse", company: str = "Acme"
    ) -> Account:
        email = email or f"owner{next(_counter)}@example.com"
        resp = await self.client.post(
            "/api/auth/register",
            json={
                "company_name": company,
                "email": email,
                "password": password,
                "full_name": "Owner",
            },
        )
        assert resp.status == 201, await resp.text()
        tokens = await resp.json()
        account = Account(email, password, tokens["access_token"], tokens["refresh_token"])
        me = await self.client.get("/api/auth/me", headers=account.headers)
        account.me = await me.json()
        return account

    async def login(self, email: str, password: str) -> Account:
        resp = await self.client.post(
            "/api/auth/login", json={"email": email, "password": password}
        )
        assert resp.status == 200, await resp.text()
        tokens = await resp.json()
        account = Account(email, password, tokens["access_token"], tokens["refresh_token"])
        me = await self.client.get("/api/auth/me", headers=account.headers)
        account.me = await me.json()
        return account

    async def call(
        self,
        method: str,
        path: str,
        account: Account | None = None,
        expect: int | None = None,
        **kwargs: Any,
    ) -> Any:
        headers = kwargs.pop("headers", {})
        if account is not None:
            headers.update(account.headers)
        resp = await self.client.request(method, path, headers=headers, **kwargs)
        text = await resp.text()
        if expect is not None:
            assert resp.status == expect, f"{method} {path}: {resp.status} {text}"
        return await resp.json() if text and resp.content_type == "application/json" else None


@pytest.fixture
async def client(aiohttp_client, settings) -> AsyncIterator[TestClient]:
    test_client = await aiohttp_client(create_app(settings))
    yield test_client
    if settings.mongodb_url:  # a shared server: each test leaves it empty for the next
        from handlers.routing import SERVICES

        storage = test_client.app[SERVICES].storage
        if storage.client is not None:
            for name in await storage.client.list_database_names():
                if name.startswith(settings.crm_db_prefix):
                    await storage.client.drop_database(name)


@pytest.fixture
def api(client) -> Api:
    return Api(client)


@pytest.fixture
async def owner(api) -> Account:
    return await api.register()


async def add_user(
    api: Api, client: TestClient, owner: Account, role_key: str, email: str | None = None
) -> Account:
    """A user of the owner's company with a built-in role, created and signed in through the
    API."""
    roles = await api.call("GET", "/api/roles", owner, expect=200)
    role_id = next(r["id"] for r in roles["items"] if r["key"] == role_key)
    email = email or f"user{next(_counter)}@example.com"
    await api.call(
        "POST",
        "/api/users",
        owner,
        expect=201,
        json={
            "email": email,
            "full_name": role_key.title(),
            "password": "user-password",
            "role_ids": [role_id],
        },
    )
    return await api.login(email, "user-password")


async def sent_campaign(api: Api, account: Account) -> tuple[str, str]:
    """A one-message campaign, waited for until sent: (campaign id, message id)."""
    import asyncio

    campaign = await api.call(
        "POST",
        "/api/sms/campaigns",
        account,
        expect=202,
        json={"name": "c", "text": "t", "recipients": [{"phone": "+79161234567"}]},
    )
    for _ in range(200):
        page = await api.call(
            "GET", f"/api/sms/campaigns/{campaign['id']}/messages", account, expect=200
        )
        if page["items"][0]["status"] == "sent":
            return campaign["id"], page["items"][0]["id"]
        await asyncio.sleep(0.01)
    raise AssertionError("the campaign was not sent")


@pytest.fixture
async def gateway(aiohttp_server):
    """A fake SMS.ru gateway on a loopback port (tests/support/sms_gateway.py)."""
    from tests.support.sms_gateway import FakeGateway

    fake = FakeGateway()
    server = await aiohttp_server(fake.app())
    fake.url = str(server.make_url("")).rstrip("/")
    return fake


# ---- factories and worlds (tests area, issue #11 §5) ----------------------------------------
# Every test module makes its objects through these: the `create_*` fixtures below, or a
# `Factories` built on a module-scoped client (`module_client`) for suites that build their
# world once. Tests import helpers from here (or tests/support/), never from each other.

# the table that tests/tables/test_tables.py and others build: every common column kind
CONTRACTS: dict[str, Any] = {
    "key": "contracts",
    "columns": [
        {"key": "company_name", "type": "string", "required": True},
        {"key": "total_sum", "type": "float"},
        {"key": "doc_date", "type": "date"},
        {"key": "is_archived", "type": "boolean", "default": False},
        {
            "key": "status",
            "type": "select",
            "options": [{"label": "Active"}, {"id": 11, "label": "Signed"}],
        },
    ],
}
# a row of each built-in entity table, by the path key of its routes' `fixed_table`
ENTITY_ROWS: dict[str, dict[str, Any]] = {
    "leads": {"title": "Deal"},
    "legal_entities": {"name": "ООО Ромашка"},
    "individuals": {"last_name": "Иванов"},
}


def tenant_db(client: TestClient, account: Account) -> Any:
    """The account's tenant database, to check what is stored."""
    return client.app[SERVICES].storage.tenant_db(account.tenant_id)


async def rows_of(client: TestClient, account: Account, table_key: str) -> Any:
    """The collection of a table's rows (`rows.<table id>`, docs/storage.md)."""
    db = tenant_db(client, account)
    table = await db["_tables"].find_one({"key": table_key})
    assert table is not None, f"no table {table_key}"
    return db[table.get("collection") or table_key]


async def wait_done(api: Api, account: Account, campaign_id: str, timeout: float = 10.0) -> Any:
    """The campaign once it is completed or cancelled with nothing left pending or sending."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        campaign = await api.call("GET", f"/api/sms/campaigns/{campaign_id}", account, expect=200)
        if campaign["status"] in ("completed", "cancelled") and not (
            campaign["counts"]["pending"] or campaign["counts"]["sending"]
        ):
            return campaign
        assert loop.time() < deadline, campaign
        await asyncio.sleep(0.01)


class Factories:
    """Objects made through the API as a client would, each checked to be created."""

    def __init__(self, api: Api) -> None:
        self.api = api

    async def table(
        self,
        account: Account,
        key: str = "t",
        columns: list[dict[str, Any]] | None = None,
        **definition: Any,
    ) -> Any:
        """A custom table (default: one integer column `n`); answers its definition."""
        if columns is None:
            columns = [{"key": "n", "type": "integer"}]
        body = {"key": key, "columns": columns, **definition}
        return await self.api.call("POST", "/api/meta/tables", account, expect=201, json=body)

    async def rows(self, account: Account, table: str, items: list[dict[str, Any]]) -> list[Any]:
        """Rows created one by one (each answer is the stored row), in order."""
        return [
            await self.api.call("POST", f"/api/data/{table}", account, expect=201, json=item)
            for item in items
        ]

    async def user(
        self, account: Account, role: str = "viewer", email: str | None = None
    ) -> Account:
        """A signed-in user of the account's company with one built-in role."""
        return await add_user(self.api, self.api.client, account, role, email)

    async def role(self, account: Account, permissions: list[str] | None = None) -> Any:
        """A custom role (default: `leads.read`); answers the role."""
        body = {"name": f"Role {next(_counter)}", "permissions": permissions or ["leads.read"]}
        return await self.api.call("POST", "/api/roles", account, expect=201, json=body)

    async def campaign(self, account: Account, wait: bool = True, **body: Any) -> Any:
        """An SMS campaign (default: one recipient); with `wait`, answered once it is done."""
        body = {"name": "c", "text": "t", "recipients": [{"phone": "+79161234567"}], **body}
        created = await self.api.call("POST", "/api/sms/campaigns", account, expect=202, json=body)
        return await wait_done(self.api, account, created["id"]) if wait else created


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
    independent (throwaway objects for writes, see `TenantObjects`)."""
    client = TestClient(TestServer(create_app(make_settings())))  # a free port
    await client.start_server()
    yield client
    await client.close()


# How to make an existing object for each path parameter of the declared routes, in a tenant,
# for the generated permission-matrix and isolation suites. A route with a new `{name}` needs
# one maker here: an async function of (`TenantObjects`, the route's built-in entity or None)
# answering the value for the path. `in_table=True`: the object lives in the route's table
# (the `{table}` of the path, or the built-in entity of /api/leads/... routes), so it is made
# once per table.
PathMaker = Callable[["TenantObjects", str | None], Awaitable[str]]
PATH_PARAMS: dict[str, PathMaker] = {}
IN_TABLE: set[str] = set()


def path_param(name: str, in_table: bool = False) -> Callable[[PathMaker], PathMaker]:
    def register(maker: PathMaker) -> PathMaker:
        PATH_PARAMS[name] = maker
        if in_table:
            IN_TABLE.add(name)
        return maker

    return register


class TenantObjects:
    """Objects of one tenant, made by its `owner` on first use and kept: `await
    objects.get("row_id")` makes a table with a row the first time, answers the same id after.
    `caller` is who will call the route (for objects a user can only reach when they are its
    own, e.g. a personal token)."""

    def __init__(self, factories: Factories, owner: Account, caller: Account | None = None) -> None:
        self.factories = factories
        self.api = factories.api
        self.owner = owner
        self.caller = caller or owner
        self.values: dict[tuple[str | None, str], str] = {}

    async def get(self, name: str, entity: str | None = None) -> str:
        """The value of path parameter `name`; `entity`: the route's built-in entity table."""
        key = (entity if name in IN_TABLE else None, name)
        if key not in self.values:
            maker = PATH_PARAMS.get(name)
            assert maker is not None, f"no maker for path parameter {{{name}}} in PATH_PARAMS"
            self.values[key] = await maker(self, key[0])
        return self.values[key]

    async def table(self, entity: str | None) -> str:
        """The table an in-table object lives in."""
        return entity or await self.get("table")

    async def path(self, route: Any, **given: str) -> str:
        """The route's path with every parameter filled with an object of this tenant (or the
        value `given` for it)."""
        entity = getattr(route.access, "fixed_table", None)
        path = route.openapi_path
        for name in route.path_params:
            value = given[name] if name in given else await self.get(name, entity)
            path = path.replace(f"{{{name}}}", value)
        return path


@path_param("table")
async def _table(objects: TenantObjects, entity: str | None) -> str:
    return (await objects.factories.table(objects.owner, f"t{next(_counter)}"))["key"]


@path_param("column")
async def _column(objects: TenantObjects, entity: str | None) -> str:
    await objects.get("table")  # the table's one column
    return "n"


@path_param("row_id", in_table=True)
async def _row_id(objects: TenantObjects, entity: str | None) -> str:
    table = await objects.table(entity)
    item = ENTITY_ROWS[entity] if entity else {"n": 1}
    return (await objects.factories.rows(objects.owner, table, [item]))[0]["id"]


@path_param("revision_id", in_table=True)
async def _revision_id(objects: TenantObjects, entity: str | None) -> str:
    row_id = await objects.get("row_id", entity)
    table = await objects.table(entity)
    path = f"/api/data/{table}/{row_id}/history"
    page = await objects.api.call("GET", path, objects.owner, expect=200)
    return str(page["items"][0]["id"])


@path_param("item_id")
async def _item_id(objects: TenantObjects, entity: str | None) -> str:
    # a row of a table of its own, deleted: an item of the trash
    table = (await objects.factories.table(objects.owner, f"g{next(_counter)}"))["key"]
    (row,) = await objects.factories.rows(objects.owner, table, [{"n": 1}])
    await objects.api.call("DELETE", f"/api/data/{table}/{row['id']}", objects.owner, expect=204)
    page = await objects.api.call("GET", f"/api/trash?table={table}", objects.owner, expect=200)
    return str(page["items"][0]["id"])


@path_param("user_id")
async def _user_id(objects: TenantObjects, entity: str | None) -> str:
    return (await objects.factories.user(objects.owner, "viewer")).user_id


@path_param("role_id")
async def _role_id(objects: TenantObjects, entity: str | None) -> str:
    return (await objects.factories.role(objects.owner))["id"]


@path_param("share_id")
async def _share_id(objects: TenantObjects, entity: str | None) -> str:
    body = {"table": await objects.get("table"), "role_id": await objects.get("role_id")}
    share = await objects.api.call(
        "POST", "/api/shares", objects.owner, expect=201, json={**body, "access": "read"}
    )
    return share["id"]


@path_param("campaign_id")
async def _campaign_id(objects: TenantObjects, entity: str | None) -> str:
    campaign = await objects.factories.campaign(objects.owner)
    assert campaign["counts"]["sent"] == 1, campaign
    return campaign["id"]


@path_param("message_id")
async def _message_id(objects: TenantObjects, entity: str | None) -> str:
    campaign_id = await objects.get("campaign_id")
    page = await objects.api.call(
        "GET", f"/api/sms/campaigns/{campaign_id}/messages", objects.owner, expect=200
    )
    return page["items"][0]["id"]


# ---- ops: `crm` commands configure process-wide logging; undo it after each test ----------


@pytest.fixture(autouse=True)
def _restore_logging():
    import logging

    from crm_core.platform import logs

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


# ---- Redis for the SMS, metrics and shutdown suites (moved here from test_sms_redis by ops) ----


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---- tests that need a tool from the system (scripts/install-system installs them) ----------

NOT_RUN = "NOT RUN, missing tool:"  # marks the skips the terminal summary lists


def missing_tool(tool: str, what: str, how: str) -> NoReturn:
    """A test that cannot run without `tool`: under CI=true it fails; elsewhere it is skipped
    and listed, loudly, at the end of the run (pytest_terminal_summary below)."""
    message = f"{NOT_RUN} {tool}: {what} did NOT run ({how})"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.hookimpl(trylast=True)  # after the durations: just above the closing summary line
def pytest_terminal_summary(terminalreporter):
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


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    """A private redis-server for the module (without one: fails under CI, else skipped and
    listed at the end of the run)."""
    binary = shutil.which("redis-server")
    if binary is None:
        missing_tool(
            "redis-server",
            "the Redis-backed SMS, metrics and shutdown tests",
            "apt-get install redis-server, or run ./scripts/test",
        )
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
async def clean_redis(redis_url):
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    await client.flushall()
    await client.aclose()
    return redis_url


def redis_settings(redis_url: str, gateway: Any, **overrides: Any) -> Settings:
    """Settings for SMS through Redis and the fake gateway, with short timeouts."""
    values = {
        "redis_url": redis_url,
        "sms_rate_per_second": 20,
        "sms_batch_size": 10,
        "sms_send_timeout_seconds": 0.2,
        "sms_max_attempts": 2,
        "sms_retry_base_seconds": 0.05,
        "sms_redelivery_seconds": 1.0,
        "api_runs_tasks": False,
    }
    values.update(overrides)
    from tests.support.sms_gateway import gateway_settings

    return gateway_settings(gateway, **values)


# ---- integrations: webhooks and API tokens ---------------------------------------------------


@pytest.fixture
async def receiver(aiohttp_server):
    """A local webhook receiver on a free loopback port (tests/support/webhook_receiver.py)."""
    from tests.support.webhook_receiver import Receiver

    fake = Receiver()
    server = await aiohttp_server(fake.app())
    fake.url = str(server.make_url("")).rstrip("/")
    return fake


@path_param("webhook_id")
async def _webhook_id(objects: TenantObjects, entity: str | None) -> str:
    # on a table of its own that nothing writes to: no delivery ever changes the world
    table = (await objects.factories.table(objects.owner, f"w{next(_counter)}"))["key"]
    body = {"name": "w", "url": "http://127.0.0.1:9/", "events": ["row.deleted"]}
    hook = await objects.api.call(
        "POST", "/api/webhooks", objects.owner, expect=201, json={**body, "tables": [table]}
    )
    return str(hook["id"])


@path_param("token_id")
async def _token_id(objects: TenantObjects, entity: str | None) -> str:
    # a personal token: only its maker reaches it, so it is made by the route's caller
    token = await objects.api.call(
        "POST", "/api/tokens", objects.caller, expect=201, json={"name": "t"}
    )
    return str(token["id"])


# files: an uploaded CSV waiting in the route's table (state `uploaded`)
@path_param("import_id", in_table=True)
async def _import_id(objects: TenantObjects, entity: str | None) -> str:
    table = await objects.table(entity)
    resp = await objects.api.client.post(
        f"/api/data/{table}/imports",
        data=b"n\n1\n",
        headers={**objects.owner.headers, "Content-Type": "text/csv"},
    )
    assert resp.status == 201, await resp.text()
    return (await resp.json())["id"]


# ---- query audit (storage): each distinct query shape of the session, checked against the
# declared indexes by tests/platform/test_query_audit.py, which runs last
@pytest.fixture(scope="session", autouse=True)
def session_queries():
    from crm_core.platform.storage import recording

    with recording(distinct=True) as log:
        yield log


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: item.nodeid.startswith("tests/platform/test_query_audit.py"))
