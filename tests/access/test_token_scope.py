"""An API token's scope bounds every write it reaches, "its owner may" rules included (issue #19
§6, crm_core/accounts/grants.py `check_token_scope`, docs/api.md "API tokens").

Each rule that lets a user act on what is theirs without a permission code is tried with a token
whose scope does not cover it (refused, nothing changed) and with one whose scope does (or with
a session). The other writes are guarded by permission codes or table levels, which a token's
scope already narrows; the sweep at the end checks that a token with no scope changes nothing
anywhere."""

from __future__ import annotations

import pytest

from handlers.routing import Authenticated
from tests.support.api import Account, Api, add_user
from tests.support.tokens import bearer, make_token


async def _table_shared_by(api: Api, granter: Account, to: Account) -> dict:
    await api.call(
        "POST",
        "/api/meta/tables",
        granter,
        expect=201,
        json={"key": "deals", "columns": [{"key": "n", "type": "integer"}]},
    )
    return await api.call(
        "POST",
        "/api/shares",
        granter,
        expect=201,
        json={"table": "deals", "user_id": to.user_id, "access": "read"},
    )


async def _shares(api: Api, account: Account) -> list[str]:
    listed = await api.call("GET", "/api/shares", account, expect=200)
    return [s["id"] for s in listed["granted"]]


# ---- shares: the granter revokes -------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "status"),
    [
        ({}, 403),
        ({"table_access": "read"}, 403),
        ({"table_access": "write"}, 403),
        ({"table_access": "manage"}, 204),
        ({"permissions": ["shares.manage"]}, 204),
    ],
)
async def test_a_granters_token_revokes_a_share_only_within_its_scope(
    api, client, owner, scope, status
):
    # the granter is a manager: no shares.manage, the table is theirs through ownership
    manager = await add_user(api, client, owner, "manager")
    viewer = await add_user(api, client, owner, "viewer")
    if "permissions" in scope:  # shares.manage must be the granter's own to give the token
        granter = owner
    else:
        granter = manager
    share = await _table_shared_by(api, granter, viewer)
    secret = (await make_token(api, granter, **scope))["token"]
    body = await api.call("DELETE", f"/api/shares/{share['id']}", bearer(secret), expect=status)
    if status == 403:
        assert body["error"]["code"] == "forbidden"
        assert "revoke a share" in body["error"]["message"]
        assert await _shares(api, granter) == [share["id"]]
        await api.call("GET", "/api/data/deals", viewer, expect=200)  # the share still works
    else:
        assert await _shares(api, granter) == []
        await api.call("GET", "/api/data/deals", viewer, expect=404)


async def test_the_granter_signed_in_still_revokes(api, client, owner):
    manager = await add_user(api, client, owner, "manager")
    viewer = await add_user(api, client, owner, "viewer")
    share = await _table_shared_by(api, manager, viewer)
    await api.call("DELETE", f"/api/shares/{share['id']}", manager, expect=204)
    assert await _shares(api, manager) == []


# ---- tokens: a token revokes only itself -----------------------------------------------------


async def test_a_token_cannot_revoke_its_users_other_tokens(api, owner):
    first = await make_token(api, owner, permissions=["leads.read"])
    second = await make_token(api, owner, permissions=["leads.read"], table_access="manage")
    body = await api.call(
        "DELETE", f"/api/tokens/{second['id']}", bearer(first["token"]), expect=403
    )
    assert body["error"]["code"] == "forbidden"
    assert "revoke another API token" in body["error"]["message"]
    await api.call("GET", "/api/leads", bearer(second["token"]), expect=200)
    # not even a token with the widest scope
    body = await api.call(
        "DELETE", f"/api/tokens/{first['id']}", bearer(second["token"]), expect=403
    )
    await api.call("GET", "/api/leads", bearer(first["token"]), expect=200)


async def test_a_token_revokes_itself_and_a_session_revokes_any(api, owner):
    first = await make_token(api, owner, permissions=["leads.read"])
    second = await make_token(api, owner, permissions=["leads.read"])
    await api.call("DELETE", f"/api/tokens/{first['id']}", bearer(first["token"]), expect=204)
    await api.call("GET", "/api/leads", bearer(first["token"]), expect=401)
    await api.call("DELETE", f"/api/tokens/{second['id']}", owner, expect=204)
    await api.call("GET", "/api/leads", bearer(second["token"]), expect=401)


# ---- sessions and the password: a signed-in session only --------------------------------------


async def test_a_token_cannot_end_its_users_sessions(api, owner):
    secret = (await make_token(api, owner))["token"]
    body = await api.call(
        "POST",
        "/api/auth/logout",
        bearer(secret),
        expect=403,
        json={"refresh_token": owner.refresh_token},
    )
    assert "end the user's sessions" in body["error"]["message"]
    assert "signed-in session" in body["error"]["message"]
    await api.call("GET", "/api/auth/me", owner, expect=200)  # the browser session lives on
    resp = await api.client.post("/api/auth/refresh", json={"refresh_token": owner.refresh_token})
    assert resp.status == 200
    # the session itself signs out
    fresh = await api.login(owner.email, owner.password)
    await api.call("POST", "/api/auth/logout", fresh, expect=204, json={})
    await api.call("GET", "/api/auth/me", fresh, expect=401)


async def test_a_token_cannot_change_its_users_password(api, owner):
    secret = (await make_token(api, owner))["token"]
    body = await api.call(
        "POST",
        "/api/auth/password",
        bearer(secret),
        expect=403,
        json={"current_password": owner.password, "new_password": "a-new-password"},
    )
    assert "change the password" in body["error"]["message"]
    await api.login(owner.email, owner.password)  # unchanged
    await api.call("GET", "/api/auth/me", owner, expect=200)


# ---- the sweep: routes open to every signed-in user ---------------------------------------------


async def test_every_write_open_to_any_user_refuses_a_token_without_scope(api, client, owner):
    """The routes guarded by no permission code and no table level are where "its owner may"
    rules live. A token with no scope changes nothing through any of them: each answers 403
    or 404 (never a success), and the user's objects are all still there."""
    viewer = await add_user(api, client, owner, "viewer")
    share = await _table_shared_by(api, owner, viewer)
    other = await make_token(api, owner, permissions=["leads.read"])
    secret = (await make_token(api, owner))["token"]
    row = await api.call("POST", "/api/data/deals", owner, expect=201, json={"n": 1})
    await api.call("DELETE", f"/api/data/deals/{row['id']}", owner, expect=204)
    (item,) = (await api.call("GET", "/api/trash", owner, expect=200))["items"]
    bodies = {
        "/api/auth/logout": {},
        "/api/auth/password": {"current_password": owner.password, "new_password": "x-new-pass1"},
        "/api/shares": {"table": "deals", "user_id": viewer.user_id, "access": "read"},
        "/api/tokens": {"name": "more"},
        "/api/trash/restore": {"ids": [item["id"]]},
    }
    ids = {"share_id": share["id"], "token_id": other["id"], "item_id": item["id"]}
    open_writes = [
        route
        for route in _routes()
        if type(route.access) is Authenticated and route.method != "GET"
    ]
    assert {(r.method, r.openapi_path) for r in open_writes} == {
        ("POST", "/api/auth/logout"),
        ("POST", "/api/auth/password"),
        ("POST", "/api/files"),
        ("POST", "/api/shares"),
        ("DELETE", "/api/shares/{share_id}"),
        ("POST", "/api/tokens"),
        ("DELETE", "/api/tokens/{token_id}"),
        ("POST", "/api/trash/{item_id}/restore"),
        ("POST", "/api/trash/restore"),
        ("DELETE", "/api/trash/{item_id}"),
    }, "a new route open to every user: give it a check_token_scope rule and a case here"
    for route in open_writes:
        path = route.openapi_path.format(**ids)
        resp = await api.client.request(
            route.method, path, headers=bearer(secret).headers, json=bodies.get(path)
        )
        assert resp.status in (403, 404), (route.method, path, resp.status, await resp.text())
    assert await _shares(api, owner) == [share["id"]]
    tokens = await api.call("GET", "/api/tokens", owner, expect=200)
    assert len(tokens["items"]) == 2
    assert (await api.call("GET", "/api/trash", owner, expect=200))["total"] == 1
    await api.call("GET", "/api/auth/me", owner, expect=200)
    await api.login(owner.email, owner.password)


def _routes() -> list:
    from handlers.app import ROUTE_TABLES

    return [route for table in ROUTE_TABLES for route in table.routes]


# ---- a token never outlives its user's access ---------------------------------------------------


async def test_a_demoted_users_token_loses_what_the_user_lost_at_once(api, client, owner):
    admin = await add_user(api, client, owner, "admin")
    await api.call(  # the owner's table: the admin reaches it through tables.all
        "POST",
        "/api/meta/tables",
        owner,
        expect=201,
        json={"key": "deals", "columns": [{"key": "n", "type": "integer"}]},
    )
    secret = (
        await make_token(
            api, admin, permissions=["users.manage", "tables.all"], table_access="manage"
        )
    )["token"]
    await api.call("GET", "/api/data/deals", bearer(secret), expect=200)
    await api.call("GET", "/api/users", bearer(secret), expect=403)  # users.read not in scope
    roles = await api.call("GET", "/api/roles", owner, expect=200)
    viewer_role = next(r["id"] for r in roles["items"] if r["key"] == "viewer")
    await api.call(
        "PATCH", f"/api/users/{admin.user_id}", owner, expect=200, json={"role_ids": [viewer_role]}
    )
    await api.call("GET", "/api/data/deals", bearer(secret), expect=404)
    body = await api.call(
        "POST",
        "/api/users",
        bearer(secret),
        expect=403,
        json={"email": "x@example.com", "full_name": "X", "password": "user-password"},
    )
    assert body["error"]["code"] == "forbidden"
