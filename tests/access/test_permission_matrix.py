"""The permission matrix: every declared route, called by each built-in role, answers what its
declaration says. Generated from the route declarations, so a new route joins by itself.

The company and its users are built once for the module (`world`). Cases stay independent:
reads (GET) reach objects made once and never changed; any other method reaches throwaway
objects made for that call (a deleted table, user or role is never seen again), and the
world's sign-ins are checked after it, so a route that ends sessions cannot leak into later
cases (the world is then built again)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from aiohttp.test_utils import TestClient

from crm_core.accounts.permissions import BUILTIN_ROLES
from crm_core.tables.access import Level
from handlers.admin import Superadmin
from handlers.app import all_routes
from handlers.routing import Authenticated, Permission, Public, RouteSpec, TableAccess
from tests.support.api import Account, Api, Factories
from tests.support.objects import TenantObjects

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
    """The /admin pages (Superadmin: a panel session, no bearer token) have their own
    generated suite in tests/admin/test_admin.py."""
    for route in all_routes():
        assert isinstance(
            route.access, Public | Authenticated | Permission | TableAccess | Superadmin
        ), route


@dataclass
class World:
    factories: Factories
    accounts: dict[str, Account]
    reads: dict[str, TenantObjects]  # what GET routes reach, by role: made once, never changed
    broken: bool = False

    @property
    def owner(self) -> Account:
        return self.accounts["owner"]


async def build_world(client: TestClient) -> World:
    factories = Factories(Api(client))
    owner = await factories.api.register()
    accounts = {"owner": owner}
    for role in ("viewer", "manager", "admin"):
        accounts[role] = await factories.user(owner, role)
    reads = {role: TenantObjects(factories, owner, account) for role, account in accounts.items()}
    return World(factories, accounts, reads)


@pytest.fixture(scope="module")
def world_box() -> dict[str, World]:
    return {}


async def get_world(client: TestClient, box: dict[str, World]) -> World:
    if "world" not in box or box["world"].broken:
        box["world"] = await build_world(client)
    return box["world"]


async def still_signed_in(world: World) -> bool:
    for account in world.accounts.values():
        resp = await world.factories.api.client.get("/api/auth/me", headers=account.headers)
        if resp.status != 200:
            return False
    return True


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.openapi_path}")
async def test_matrix(module_client, world_box, route):
    world = await get_world(module_client, world_box)
    world.broken = True  # until this case ends cleanly
    for role in ROLES:
        # each role's call reaches its own objects: what one role deletes, the next still has
        caller = world.accounts[role]
        if route.method == "GET":
            objects = world.reads[role]
        else:
            objects = TenantObjects(world.factories, world.owner, caller)
        path = await objects.path(route)
        resp = await module_client.request(
            route.method,
            path,
            headers=caller.headers,
            json={} if route.body is not None else None,
        )
        want = expected(route, role)
        body = await resp.text()
        assert resp.status < 500, (role, resp.status, body)
        if want == "allowed":
            assert resp.status not in (401, 403, 404) or (
                resp.status == 404
                and re.search("Role not found|Share not found|Trash item not found", body)
            ), (role, resp.status, body)
        else:
            assert resp.status == int(want), (role, resp.status, body)
    world.broken = route.method != "GET" and not await still_signed_in(world)
