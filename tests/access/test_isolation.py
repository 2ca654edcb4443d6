"""Tenant isolation from the outside: tenant B calls every endpoint that takes an id with
tenant A's ids; each answers 404 and nothing of A changes.

Both tenants are built once for the module (`world`): every case checks that A is unchanged
afterwards, and a case that fails (A may have changed) has the next case build both again."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from aiohttp.test_utils import TestClient

from handlers.app import all_routes
from handlers.routing import SERVICES, Public
from models.accounts import User
from tests.support.api import Account, Api, Factories
from tests.support.objects import IN_TABLE, PATH_PARAMS, TenantObjects

# bodies that pass validation, so the answer is about the ids (default: {})
VALID_BODIES = {
    "move_row": {"before_id": None},
    "resolve_message": {"outcome": "sent"},
    "replay": {"since": "2025-01-01T00:00:00Z"},
}
ID_ROUTES = [
    r for r in all_routes() if r.in_schema and r.path_params and not isinstance(r.access, Public)
]


async def snapshot(client, account):
    storage = client.app[SERVICES].storage
    db = storage.tenant_db(account.tenant_id)
    state = {}
    for name in sorted(await db.list_collection_names()):
        state[name] = sorted(await db[name].find().to_list(None), key=lambda d: str(d["_id"]))
    users = (
        await User.get_motor_collection()
        .find({"tenant_id": account.me["tenant"]["id"]})
        .to_list(None)
    )
    state["users"] = sorted(users, key=lambda d: str(d["_id"]))
    return state


@dataclass
class World:
    api: Api
    a: Account
    member: Account  # a manager of A
    a_objects: TenantObjects  # A's objects for the path parameters
    only_a: str  # a table key that only A has
    b: Account  # B has a table with the key of A's table that holds A's rows
    broken: bool = False

    async def path_of(self, route) -> str:
        """The route's path with A's ids. Rows (and whatever lives in a table) are tried
        through B's own table of the same key; any other table route names a table only A
        has."""
        if IN_TABLE.isdisjoint(route.path_params):
            return await self.a_objects.path(route, table=self.only_a)
        return await self.a_objects.path(route)


async def build_world(client: TestClient) -> World:
    factories = Factories(Api(client))
    a = await factories.api.register(company="A")
    member = await factories.user(a, "manager")
    objects = TenantObjects(factories, a)
    for name in PATH_PARAMS:  # every kind of object A can have
        await objects.get(name)
    table = await objects.get("table")
    await factories.api.call("PUT", f"/api/aliases/{table}", a, expect=200, json={"table": "Изо"})
    only_a = (await factories.table(a, "only_a"))["key"]
    b = await factories.api.register(company="B")
    await factories.table(b, table)
    return World(factories.api, a, member, objects, only_a, b)


@pytest.fixture(scope="module")
def world_box() -> dict[str, World]:
    return {}


async def get_world(client: TestClient, box: dict[str, World]) -> World:
    if "world" not in box or box["world"].broken:
        box["world"] = await build_world(client)
    box["world"].broken = True  # until the case ends cleanly
    return box["world"]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("route", ID_ROUTES, ids=lambda r: f"{r.method} {r.openapi_path}")
async def test_other_tenants_ids_are_404(module_client, world_box, route):
    world = await get_world(module_client, world_box)
    path = await world.path_of(route)  # may make an object of A first
    before = await snapshot(module_client, world.a)
    payload = VALID_BODIES.get(route.handler.__name__, {}) if route.body is not None else None
    resp = await module_client.request(route.method, path, headers=world.b.headers, json=payload)
    body = await resp.json()
    assert resp.status == 404, (path, resp.status, body)
    assert body["error"]["code"] == "not_found"
    assert await snapshot(module_client, world.a) == before
    world.broken = False


@pytest.mark.asyncio(loop_scope="module")
async def test_lists_show_only_own_tenant(module_client, world_box):
    world = await get_world(module_client, world_box)
    api, b = world.api, world.b
    users = await api.call("GET", "/api/users", b, expect=200)
    assert [u["email"] for u in users["items"]] == [b.email]
    roles = await api.call("GET", "/api/roles", b, expect=200)
    assert await world.a_objects.get("role_id") not in [r["id"] for r in roles["items"]]
    tables = (await api.call("GET", "/api/meta/tables", b, expect=200))["items"]
    # B sees its own table of the same key as A's, owned by B, and nothing of A's
    custom = [t for t in tables if not t["builtin"]]
    assert [(t["key"], t["owner_id"]) for t in custom] == [
        (await world.a_objects.get("table"), b.user_id)
    ]
    assert await api.call("GET", "/api/shares", b, expect=200) == {"granted": [], "received": []}
    assert (await api.call("GET", "/api/aliases", b, expect=200))["items"] == []
    world.broken = False


@pytest.mark.asyncio(loop_scope="module")
async def test_other_tenants_ids_in_bodies_are_400(module_client, world_box):
    world = await get_world(module_client, world_box)
    api, b, role_id = world.api, world.b, await world.a_objects.get("role_id")
    mine = await world.a_objects.get("table")  # B's own table of that key
    before = await snapshot(module_client, world.a)
    body = await api.call(
        "POST",
        "/api/shares",
        b,
        expect=400,
        json={"table": mine, "user_id": world.member.user_id, "access": "read"},
    )
    assert body["error"]["details"][0]["field"] == "user_id"
    body = await api.call(
        "POST",
        "/api/shares",
        b,
        expect=400,
        json={"table": mine, "role_id": role_id, "access": "read"},
    )
    assert body["error"]["details"][0]["field"] == "role_id"
    body = await api.call(
        "POST",
        "/api/users",
        b,
        expect=400,
        json={
            "email": "x@example.com",
            "full_name": "X",
            "password": "password1",
            "role_ids": [role_id],
        },
    )
    assert body["error"]["details"][0]["field"] == "role_ids.0"
    await api.call(
        "POST",
        "/api/shares",
        b,
        expect=404,
        json={"table": world.only_a, "role_id": role_id, "access": "read"},
    )
    assert await snapshot(module_client, world.a) == before
    world.broken = False
