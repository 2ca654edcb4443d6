"""The client's view of the API in tests: test settings, a registered `Account`, the `Api`
helper that calls the service over HTTP, `Factories` that make objects through it, and the
readers of what a tenant has stored."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Any

from aiohttp.test_utils import TestClient

from crm_core.platform.settings import Settings
from crm_core.platform.storage import OperationFailure
from handlers.routing import SERVICES
from tests.support.waits import DEADLINE, until

TEST_SECRET = "test-secret-key-that-is-long-enough-0123456789"
_counter = itertools.count()


def unique_number() -> int:
    """A number no other call in this process answered: for unique emails, keys and names."""
    return next(_counter)


# The real driver's waits in tests (mongoeco is one Python process, slow on a loaded CI
# machine): they only bound a hang, so a busy server is never taken for a gone one (2 s, the
# default, answered 503 mid-test under load). Tests of an outage set short ones themselves.
PATIENT_DATABASE: dict[str, int] = {
    "mongodb_server_selection_timeout_ms": 60_000,
    "mongodb_connect_timeout_ms": 60_000,  # also the driver's heartbeat wait
    "mongodb_socket_timeout_ms": 120_000,
}


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        **PATIENT_DATABASE,
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
        # the generated suites upload many files as one owner (tests of the limit set it)
        "import_max_pending": 10_000,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


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
        email = email or f"owner{unique_number()}@example.com"
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


USER_PASSWORD = "user-password"


async def add_user_with_roles(
    api: Api, owner: Account, role_ids: list[str], email: str | None = None, name: str = "User"
) -> Account:
    """A user of the owner's company holding `role_ids`, created and signed in through the API
    (password `USER_PASSWORD`)."""
    email = email or f"user{unique_number()}@example.com"
    await api.call(
        "POST",
        "/api/users",
        owner,
        expect=201,
        json={"email": email, "full_name": name, "password": USER_PASSWORD, "role_ids": role_ids},
    )
    return await api.login(email, USER_PASSWORD)


async def add_user(
    api: Api, client: TestClient, owner: Account, role_key: str, email: str | None = None
) -> Account:
    """A user of the owner's company with a built-in role, created and signed in through the
    API."""
    roles = await api.call("GET", "/api/roles", owner, expect=200)
    role_id = next(r["id"] for r in roles["items"] if r["key"] == role_key)
    return await add_user_with_roles(api, owner, [role_id], email, role_key.title())


async def user_with_permissions(
    api: Api, owner: Account, permissions: list[str], name: str = "Custom"
) -> tuple[Account, dict[str, Any]]:
    """A signed-in user holding exactly `permissions` through a new custom role: (the user,
    the role as the API answered it)."""
    role = await api.call(
        "POST", "/api/roles", owner, expect=201, json={"name": name, "permissions": permissions}
    )
    return await add_user_with_roles(api, owner, [role["id"]], name=name), role


async def sent_campaign(api: Api, account: Account) -> tuple[str, str]:
    """A one-message campaign, waited for until sent: (campaign id, message id)."""
    campaign = await api.call(
        "POST",
        "/api/sms/campaigns",
        account,
        expect=202,
        json={"name": "c", "text": "t", "recipients": [{"phone": "+79161234567"}]},
    )

    async def sent() -> str | None:
        page = await api.call(
            "GET", f"/api/sms/campaigns/{campaign['id']}/messages", account, expect=200
        )
        message = page["items"][0]
        return str(message["id"]) if message["status"] == "sent" else None

    return campaign["id"], await until(sent, "the campaign's message to be sent")


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


async def wait_done(api: Api, account: Account, campaign_id: str, timeout: float = DEADLINE) -> Any:
    """The campaign once it is completed or cancelled with nothing left pending or sending
    (`timeout` only bounds a hang, tests/support/waits.py)."""

    last: list[Any] = [None]

    async def done() -> Any:
        campaign = await api.call("GET", f"/api/sms/campaigns/{campaign_id}", account, expect=200)
        last[0] = campaign
        settled = campaign["status"] in ("completed", "cancelled") and not (
            campaign["counts"]["pending"] or campaign["counts"]["sending"]
        )
        return campaign if settled else None

    try:
        return await until(done, f"campaign {campaign_id} to be done", timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen: {last[0]}") from None


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
        body = {"name": f"Role {unique_number()}", "permissions": permissions or ["leads.read"]}
        return await self.api.call("POST", "/api/roles", account, expect=201, json=body)

    async def campaign(self, account: Account, wait: bool = True, **body: Any) -> Any:
        """An SMS campaign (default: one recipient); with `wait`, answered once it is done."""
        body = {"name": "c", "text": "t", "recipients": [{"phone": "+79161234567"}], **body}
        created = await self.api.call("POST", "/api/sms/campaigns", account, expect=202, json=body)
        return await wait_done(self.api, account, created["id"]) if wait else created


async def database_names(storage: Any) -> list[str]:
    """The server's databases; mongoeco's `listDatabases` fails once a database holds a
    Decimal128 (it sizes every document), so then the system database and each tenant's."""
    try:
        return list(await storage.client.list_database_names())
    except OperationFailure:
        tenants = storage.system_db["tenants"].find({}, {"_id": 1})
        names = [storage.tenant_db_name(str(t["_id"])) async for t in tenants]
        return [storage.system_db.name, *names]
