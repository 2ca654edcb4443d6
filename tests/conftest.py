"""Shared fixtures: an app from the factory with test settings, a fresh in-memory database per
test, and an `api` helper that registers tenants and calls the service as a client would."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from crm_core.settings import Settings
from handlers.app import create_app

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
    """A fake SMS.ru gateway on a loopback port (tests/sms_gateway.py)."""
    from tests.sms_gateway import FakeGateway

    fake = FakeGateway()
    server = await aiohttp_server(fake.app())
    fake.url = str(server.make_url("")).rstrip("/")
    return fake


# ---- query audit (storage): each distinct query shape of the session, checked against the
# declared indexes by tests/test_query_audit.py, which runs last
@pytest.fixture(scope="session", autouse=True)
def session_queries():
    from crm_core.storage import recording

    with recording(distinct=True) as log:
        yield log


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: item.nodeid.startswith("tests/test_query_audit.py"))
