"""The permission matrix: every declared route, called by each built-in role, answers what its
declaration says. Generated from the route declarations, so a new route joins by itself."""

from __future__ import annotations

import re

import pytest

from crm_core.permissions import BUILTIN_ROLES
from crm_core.tables.access import Level
from handlers.app import all_routes
from handlers.routing import Authenticated, Permission, Public, RouteSpec, TableAccess
from tests.conftest import add_user, sent_campaign

ROLES = ["viewer", "manager", "admin", "owner"]
# what each role reaches of a custom table that the owner created and shared with nobody
TABLE_LEVEL = {
    "viewer": Level.NONE,
    "manager": Level.NONE,
    "admin": Level.MANAGE,
    "owner": Level.MANAGE,
}
ROUTES = [r for r in all_routes() if r.in_schema and not isinstance(r.access, Public)]


def expected(route: RouteSpec, role: str) -> str:
    permissions = set(BUILTIN_ROLES[role][1])
    access = route.access
    if isinstance(access, Permission):
        return "allowed" if access.code in permissions else "403"
    if isinstance(access, TableAccess):
        if access.permission and access.permission not in permissions:
            return "403"
        if access.fixed_table:  # a built-in entity: reached through its own permissions
            entity = access.fixed_table
            if "tables.all" in permissions or f"{entity}.write" in permissions:
                return "allowed"
            if f"{entity}.read" in permissions:
                return "allowed" if access.level <= Level.READ else "403"
            return "403"
        level = TABLE_LEVEL[role]
        if level == Level.NONE:
            return "404"
        return "allowed" if level >= access.level else "403"
    assert type(access) is Authenticated, f"{route.path}: undeclared access kind {access}"
    return "allowed"


def test_every_route_declares_its_access():
    for route in all_routes():
        assert isinstance(route.access, Public | Authenticated | Permission | TableAccess), route


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.openapi_path}")
async def test_matrix(api, client, route):
    owner = await api.register()
    accounts = {"owner": owner}
    for role in ("viewer", "manager", "admin"):
        accounts[role] = await add_user(api, client, owner, role)
    custom_role = await api.call(
        "POST",
        "/api/roles",
        owner,
        expect=201,
        json={"name": "Custom", "permissions": ["leads.read"]},
    )
    await api.call(
        "POST",
        "/api/meta/tables",
        owner,
        expect=201,
        json={"key": "shared_one", "columns": [{"key": "n", "type": "integer"}]},
    )
    share = await api.call(
        "POST",
        "/api/shares",
        owner,
        expect=201,
        json={"table": "shared_one", "role_id": custom_role["id"], "access": "read"},
    )
    for role in ROLES:
        table = f"m_{role}"
        entity_rows = {}
        for key, body in (
            ("leads", {"title": "Deal"}),
            ("legal_entities", {"name": "ООО Ромашка"}),
            ("individuals", {"last_name": "Иванов"}),
        ):
            entity_rows[key] = (
                await api.call("POST", f"/api/data/{key}", owner, json=body, expect=201)
            )["id"]
        await api.call(
            "POST",
            "/api/meta/tables",
            owner,
            expect=201,
            json={"key": table, "columns": [{"key": "n", "type": "integer"}]},
        )
        row = await api.call("POST", f"/api/data/{table}", owner, json={"n": 1}, expect=201)
        campaign_id, message_id = await sent_campaign(api, owner)
        values = {
            "campaign_id": campaign_id,
            "message_id": message_id,
            "table": table,
            "row_id": row["id"],
            "column": "n",
            "user_id": accounts["viewer"].user_id,
            "role_id": custom_role["id"],
            "share_id": share["id"],
        }
        fixed = getattr(route.access, "fixed_table", None)
        if fixed:
            values["row_id"] = entity_rows[fixed]
        if "import_id" in route.path_params:  # an uploaded file in the route's table
            upload = await client.post(
                f"/api/data/{fixed or table}/imports",
                data=b"n\n1\n",
                headers={**owner.headers, "Content-Type": "text/csv"},
            )
            assert upload.status == 201, await upload.text()
            values["import_id"] = (await upload.json())["id"]
        path = route.openapi_path
        for name in route.path_params:
            path = path.replace(f"{{{name}}}", values[name])
        resp = await client.request(
            route.method,
            path,
            headers=accounts[role].headers,
            json={} if route.body is not None else None,
        )
        want = expected(route, role)
        body = await resp.text()
        assert resp.status < 500, (role, resp.status, body)
        if want == "allowed":
            assert resp.status not in (401, 403, 404) or (
                resp.status == 404 and re.search("Role not found|Share not found", body)
            ), (role, resp.status, body)
        else:
            assert resp.status == int(want), (role, resp.status, body)
