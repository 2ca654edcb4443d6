"""Tenant isolation from the outside: tenant B calls every endpoint that takes an id with
tenant A's ids; each answers 404 and nothing of A changes."""

from __future__ import annotations

import pytest

from handlers.app import all_routes
from handlers.routing import SERVICES, Public
from models.accounts import User
from tests.conftest import add_user, sent_campaign

# bodies that pass validation, so the answer is about the ids (default: {})
VALID_BODIES = {"move_row": {"before_id": None}, "resolve_message": {"outcome": "sent"}}
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


async def build_tenant_a(api, client):
    a = await api.register(company="A")
    member = await add_user(api, client, a, "manager")
    role = await api.call(
        "POST", "/api/roles", a, expect=201, json={"name": "A role", "permissions": ["leads.read"]}
    )
    for key in ("iso", "only_a"):
        await api.call(
            "POST",
            "/api/meta/tables",
            a,
            expect=201,
            json={"key": key, "columns": [{"key": "n", "type": "integer"}]},
        )
    row = await api.call("POST", "/api/data/iso", a, json={"n": 1}, expect=201)
    share = await api.call(
        "POST",
        "/api/shares",
        a,
        expect=201,
        json={"table": "iso", "role_id": role["id"], "access": "read"},
    )
    await api.call("PUT", "/api/aliases/iso", a, expect=200, json={"table": "Изоляция"})
    campaign_id, message_id = await sent_campaign(api, a)
    upload = await client.post(
        "/api/data/iso/imports", data=b"n\n1\n", headers={**a.headers, "Content-Type": "text/csv"}
    )
    assert upload.status == 201, await upload.text()
    ids = {
        "import_id": (await upload.json())["id"],
        "campaign_id": campaign_id,
        "message_id": message_id,
        "table": "only_a",
        "row_id": row["id"],
        "column": "n",
        "user_id": member.user_id,
        "role_id": role["id"],
        "share_id": share["id"],
    }
    return a, member, ids


@pytest.mark.parametrize("route", ID_ROUTES, ids=lambda r: f"{r.method} {r.openapi_path}")
async def test_other_tenants_ids_are_404(api, client, route):
    a, _member, ids = await build_tenant_a(api, client)
    b = await api.register(company="B")
    # B has a table with the same key as A's, so row ids are tried against B's own table
    await api.call(
        "POST",
        "/api/meta/tables",
        b,
        expect=201,
        json={"key": "iso", "columns": [{"key": "n", "type": "integer"}]},
    )
    before = await snapshot(client, a)
    values = dict(ids)
    if "row_id" in route.path_params or "import_id" in route.path_params:
        values["table"] = "iso"
    path = route.openapi_path
    for name in route.path_params:
        path = path.replace(f"{{{name}}}", values[name])
    payload = VALID_BODIES.get(route.handler.__name__, {}) if route.body is not None else None
    resp = await client.request(route.method, path, headers=b.headers, json=payload)
    body = await resp.json()
    assert resp.status == 404, (path, resp.status, body)
    assert body["error"]["code"] == "not_found"
    assert await snapshot(client, a) == before


async def test_lists_show_only_own_tenant(api, client):
    _a, _member, ids = await build_tenant_a(api, client)
    b = await api.register(company="B")
    users = await api.call("GET", "/api/users", b, expect=200)
    assert [u["email"] for u in users["items"]] == [b.email]
    roles = await api.call("GET", "/api/roles", b, expect=200)
    assert ids["role_id"] not in [r["id"] for r in roles["items"]]
    tables = (await api.call("GET", "/api/meta/tables", b, expect=200))["items"]
    assert [t["key"] for t in tables if not t["builtin"]] == []
    assert await api.call("GET", "/api/shares", b, expect=200) == {"granted": [], "received": []}
    assert (await api.call("GET", "/api/aliases", b, expect=200))["items"] == []


async def test_other_tenants_ids_in_bodies_are_400(api, client):
    a, member, ids = await build_tenant_a(api, client)
    b = await api.register(company="B")
    await api.call(
        "POST",
        "/api/meta/tables",
        b,
        expect=201,
        json={"key": "mine", "columns": [{"key": "n", "type": "integer"}]},
    )
    before = await snapshot(client, a)
    body = await api.call(
        "POST",
        "/api/shares",
        b,
        expect=400,
        json={"table": "mine", "user_id": member.user_id, "access": "read"},
    )
    assert body["error"]["details"][0]["field"] == "user_id"
    body = await api.call(
        "POST",
        "/api/shares",
        b,
        expect=400,
        json={"table": "mine", "role_id": ids["role_id"], "access": "read"},
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
            "role_ids": [ids["role_id"]],
        },
    )
    assert body["error"]["details"][0]["field"] == "role_ids.0"
    await api.call(
        "POST",
        "/api/shares",
        b,
        expect=404,
        json={"table": "only_a", "role_id": ids["role_id"], "access": "read"},
    )
    assert await snapshot(client, a) == before
