"""Shared helpers for the benchmark scripts: a real server on loopback with embedded defaults."""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from crm_core.platform.settings import Settings
from crm_core.tables.columns import Column, default_column_types
from handlers.app import create_app
from handlers.routing import SERVICES

TEN_COLUMNS: list[dict[str, Any]] = [
    {"key": "company_name", "type": "string", "required": True},
    {"key": "total_sum", "type": "float", "indexed": True},
    {"key": "quantity", "type": "integer"},
    {"key": "doc_date", "type": "date"},
    {"key": "call_at", "type": "time"},
    {"key": "is_archived", "type": "boolean"},
    {
        "key": "status",
        "type": "select",
        "options": [
            {"id": 1, "label": "New"},
            {"id": 2, "label": "Won"},
            {"id": 3, "label": "Lost"},
        ],
    },
    {"key": "email", "type": "email"},
    {"key": "phone", "type": "phone"},
    {"key": "site", "type": "url"},
]


def random_rows(count: int, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    types = default_column_types()
    return [
        {c["key"]: types.get(c["type"]).random_value(Column.from_doc(c), rng) for c in TEN_COLUMNS}
        for _ in range(count)
    ]


class Client:
    def __init__(self, session: ClientSession, base: str) -> None:
        self.session = session
        self.base = base
        self.headers: dict[str, str] = {}
        self.app_services: Any = None
        self.tenant_id = ""

    async def call(self, method: str, path: str, expect: int = 200, **kw: Any) -> Any:
        async with self.session.request(
            method, self.base + path, headers=self.headers, **kw
        ) as resp:
            body = await resp.json() if resp.content_type == "application/json" else None
            if resp.status != expect:
                raise RuntimeError(f"{method} {path}: {resp.status} {body}")
            return body

    async def register(self) -> None:
        tokens = await self.call(
            "POST",
            "/api/auth/register",
            201,
            json={
                "company_name": "Bench",
                "email": f"bench{random.randint(0, 10**9)}@example.com",
                "password": "bench-password",
                "full_name": "Bench",
            },
        )
        self.headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        self.tenant_id = (await self.call("GET", "/api/auth/me"))["tenant"]["id"]

    async def rows_collection(self, table_key: str) -> Any:
        """The collection holding a table's rows (`rows.<table id>`, docs/storage.md), for
        benchmarks that write rows straight to the database."""
        db = self.app_services.storage.tenant_db(self.tenant_id)
        table = await db["_tables"].find_one({"key": table_key})
        if table is None:
            raise RuntimeError(f"no table {table_key}")
        return db[table.get("collection") or table_key]


def bench_settings(**overrides: Any) -> Settings:
    """The service's settings for a benchmark: test mode, cheap bcrypt, quiet logs."""
    values: dict[str, Any] = {
        "crm_env": "test",
        "secret_key": "b" * 40,
        "bcrypt_rounds": 4,
        "log_level": "WARNING",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@contextlib.asynccontextmanager
async def running_service(**overrides: Any) -> AsyncIterator[Client]:
    logging.basicConfig(level=logging.WARNING)
    settings = bench_settings(**overrides)
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        async with ClientSession() as session:
            client = Client(session, str(server.make_url("")).rstrip("/"))
            client.app_services = server.app[SERVICES]
            await client.register()
            yield client
    finally:
        await server.close()


# ---- a fake SMS.ru gateway ---------------------------------------------------------------------


class FakeSmsGateway:
    """An SMS.ru gateway on loopback that accepts every message (docs/sms.md): `sms/send` with
    `to[NUMBER]=text` for up to 100 numbers, answered per number. The benchmarks' own, so they
    import nothing from the tests."""

    def __init__(self) -> None:
        self.accepted: list[str] = []  # the phone of each accepted message, in order
        self.requests = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/sms/send", self.send)
        return app

    async def send(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.requests += 1
        sms: dict[str, Any] = {}
        for key in form:
            if key.startswith("to["):
                phone = key[3:-1]
                self.accepted.append(phone)
                sms[phone] = {
                    "status": "OK",
                    "status_code": 100,
                    "sms_id": f"000000-{len(self.accepted)}",
                }
        return web.json_response({"status": "OK", "status_code": 100, "sms": sms, "balance": 1.0})

    def accepted_per_phone(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for phone in self.accepted:
            counts[phone] = counts.get(phone, 0) + 1
        return counts


# ---- database operation counts -----------------------------------------------------
# What a real server's cost follows: operations issued and documents returned, counted on the
# embedded database's collection methods (wrapped for the benchmarks only). The test double's
# own full scans are not in these figures.

OPERATIONS = (
    "find",
    "find_one",
    "find_one_and_update",
    "update_one",
    "update_many",
    "insert_one",
    "insert_many",
    "count_documents",
    "aggregate",
    "bulk_write",
    "delete_one",
    "delete_many",
)


class OperationCounter:
    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.operations = 0
        self.returned = 0
        self._installed = False

    def reset(self) -> None:
        self.operations = self.returned = 0

    def install(self) -> None:
        """Count operations on collections whose name starts with `prefix`, and documents
        returned by cursors."""
        if self._installed:
            return
        from mongomock.collection import Collection, Cursor  # noqa: TID251 (benchmark probe)

        counter = self
        depth = [0]  # mongomock's find_one calls its own find: count the outer call only

        def counted(method: Any) -> Any:
            def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
                if not depth[0] and self.name.startswith(counter.prefix):
                    counter.operations += 1
                depth[0] += 1
                try:
                    return method(self, *args, **kwargs)
                finally:
                    depth[0] -= 1

            return wrapper

        for name in OPERATIONS:
            setattr(Collection, name, counted(getattr(Collection, name)))
        next_document = Cursor.__next__

        def returned(self: Any) -> Any:
            document = next_document(self)
            counter.returned += 1
            return document

        Cursor.__next__ = returned  # type: ignore[method-assign]
        # the embedded client reads a cursor's page without its __next__
        # (crm_core/platform/storage/embedded.py)
        from crm_core.platform.storage import embedded as storage

        read_cursor = storage._read_cursor

        def read_counted(inner: Any) -> list[Any]:
            documents = read_cursor(inner)
            counter.returned += len(documents)
            return documents

        storage._read_cursor = read_counted
        self._installed = True
