"""Roles, users, shares and aliases through HTTP (docs/api.md "Roles, users, shares, aliases")."""

from __future__ import annotations

from tests.support.api import add_user


async def abilities(api, account, key="deals"):
    """What the account can do with the table: list, create, change columns."""
    got = {}
    resp = await api.client.get(f"/api/data/{key}", headers=account.headers)
    got["read"] = resp.status
    resp = await api.client.post(f"/api/data/{key}", headers=account.headers, json={"n": 2})
    got["write"] = resp.status
    if resp.status == 201:
        row = await resp.json()
        await api.client.delete(f"/api/data/{key}/{row['id']}", headers=account.headers)
    resp = await api.client.patch(
        f"/api/meta/tables/{key}", headers=account.headers, json={"name": "Renamed"}
    )
    got["manage"] = resp.status
    return got


async def test_share_levels_allow_exactly_what_they_say(
    api, client, owner, create_table, create_rows
):
    await create_table(owner, "deals")
    await create_rows(owner, "deals", [{"n": 1}])
    viewer = await add_user(api, client, owner, "viewer")
    assert await abilities(api, viewer) == {"read": 404, "write": 404, "manage": 404}
    listed = await api.call("GET", "/api/meta/tables", viewer, expect=200)
    assert [t["key"] for t in listed["items"] if not t["builtin"]] == []
    expectations = {
        "read": {"read": 200, "write": 403, "manage": 403},
        "write": {"read": 200, "write": 201, "manage": 403},
        "manage": {"read": 200, "write": 201, "manage": 200},
    }
    share = None
    for level, expected in expectations.items():
        share = await api.call(
            "POST",
            "/api/shares",
            owner,
            expect=201,
            json={"table": "deals", "user_id": viewer.user_id, "access": level},
        )
        assert await abilities(api, viewer) == expected, level
        listed = await api.call("GET", "/api/meta/tables", viewer, expect=200)
        assert [t["key"] for t in listed["items"] if not t["builtin"]] == ["deals"]
    shares = await api.call("GET", "/api/shares", owner, expect=200)
    assert len(shares["granted"]) == 1  # sharing again changed the level, no duplicates
    received = await api.call("GET", "/api/shares", viewer, expect=200)
    assert [s["id"] for s in received["received"]] == [share["id"]]
    # revoking takes effect at once
    await api.call("DELETE", f"/api/shares/{share['id']}", owner, expect=204)
    assert await abilities(api, viewer) == {"read": 404, "write": 404, "manage": 404}


async def test_role_shares_reach_every_holder(api, client, owner, create_table, create_rows):
    await create_table(owner, "deals")
    await create_rows(owner, "deals", [{"n": 1}])
    first = await add_user(api, client, owner, "viewer")
    second = await add_user(api, client, owner, "viewer")
    manager = await add_user(api, client, owner, "manager")
    roles = await api.call("GET", "/api/roles", owner, expect=200)
    viewer_role = next(r["id"] for r in roles["items"] if r["key"] == "viewer")
    await api.call(
        "POST",
        "/api/shares",
        owner,
        expect=201,
        json={"table": "deals", "role_id": viewer_role, "access": "write"},
    )
    for account in (first, second):
        assert (await abilities(api, account))["write"] == 201
    assert (await abilities(api, manager))["read"] == 404


async def test_only_managers_of_a_table_share_it(api, client, owner, create_table, create_rows):
    await create_table(owner, "deals")
    await create_rows(owner, "deals", [{"n": 1}])
    viewer = await add_user(api, client, owner, "viewer")
    other = await add_user(api, client, owner, "viewer")
    await api.call(
        "POST",
        "/api/shares",
        owner,
        expect=201,
        json={"table": "deals", "user_id": viewer.user_id, "access": "write"},
    )
    body = await api.call(
        "POST",
        "/api/shares",
        viewer,
        expect=403,
        json={"table": "deals", "user_id": other.user_id, "access": "read"},
    )
    assert body["error"]["code"] == "forbidden"
    await api.call(
        "POST",
        "/api/shares",
        other,
        expect=404,
        json={"table": "deals", "user_id": other.user_id, "access": "read"},
    )
    await api.call(
        "POST", "/api/shares", owner, expect=400, json={"table": "deals", "access": "read"}
    )
    await api.call(
        "POST",
        "/api/shares",
        owner,
        expect=400,
        json={
            "table": "deals",
            "user_id": other.user_id,
            "role_id": other.user_id,
            "access": "read",
        },
    )
    await api.call(
        "POST",
        "/api/shares",
        owner,
        expect=400,
        json={"table": "deals", "user_id": other.user_id, "access": "admin"},
    )


async def test_tables_belong_to_their_creator(api, client, owner, create_table, create_rows):
    manager = await add_user(api, client, owner, "manager")
    other = await add_user(api, client, owner, "manager")
    await create_table(manager, "mine")
    await create_rows(manager, "mine", [{"n": 1}])
    assert (await abilities(api, manager, "mine"))["manage"] == 200
    assert (await abilities(api, other, "mine"))["read"] == 404
    # the owner reaches every table through tables.all
    assert (await abilities(api, owner, "mine"))["manage"] == 200
    viewer = await add_user(api, client, owner, "viewer")
    await api.call("POST", "/api/meta/tables", viewer, expect=403, json={"key": "nope"})


async def test_roles_crud_and_owner_protection(api, client, owner):
    catalogue = await api.call("GET", "/api/permissions", owner, expect=200)
    codes = {p["code"] for p in catalogue["items"]}
    assert {
        "users.manage",
        "roles.manage",
        "tables.create",
        "tables.all",
        "leads.read",
        "leads.write",
        "sms.send",
        "aliases.manage",
    } <= codes
    roles = (await api.call("GET", "/api/roles", owner, expect=200))["items"]
    assert {r["key"] for r in roles if r["builtin"]} == {"owner", "admin", "manager", "viewer"}
    owner_role = next(r for r in roles if r["key"] == "owner")
    await api.call(
        "PATCH", f"/api/roles/{owner_role['id']}", owner, expect=409, json={"name": "Boss"}
    )
    await api.call("DELETE", f"/api/roles/{owner_role['id']}", owner, expect=409)
    bad = await api.call(
        "POST",
        "/api/roles",
        owner,
        expect=400,
        json={"name": "X", "permissions": ["leads.read", "nuke.everything"]},
    )
    assert bad["error"]["details"][0]["field"] == "permissions.1"
    role = await api.call(
        "POST",
        "/api/roles",
        owner,
        expect=201,
        json={"name": "Sales", "permissions": ["leads.read", "leads.write"]},
    )
    changed = await api.call(
        "PATCH", f"/api/roles/{role['id']}", owner, expect=200, json={"permissions": ["leads.read"]}
    )
    assert changed["permissions"] == ["leads.read"]
    # a role someone holds cannot be deleted
    await api.call(
        "POST",
        "/api/users",
        owner,
        expect=201,
        json={
            "email": "s@example.com",
            "full_name": "S",
            "password": "password1",
            "role_ids": [role["id"]],
        },
    )
    await api.call("DELETE", f"/api/roles/{role['id']}", owner, expect=409)
    # an admin cannot grant what it does not hold
    admin = await add_user(api, client, owner, "admin")
    await api.call(
        "POST",
        "/api/roles",
        admin,
        expect=403,
        json={"name": "Boss", "permissions": ["tenant.manage"]},
    )
    spare = await api.call("POST", "/api/roles", admin, expect=201, json={"name": "Spare"})
    await api.call("DELETE", f"/api/roles/{spare['id']}", admin, expect=204)
    await api.call("GET", f"/api/roles/{spare['id']}", admin, expect=404)


async def test_users_crud_and_deactivation(api, client, owner):
    admin = await add_user(api, client, owner, "admin")
    viewer = await add_user(api, client, owner, "viewer")
    listed = await api.call("GET", "/api/users", admin, expect=200)
    assert {u["email"] for u in listed["items"]} == {owner.email, admin.email, viewer.email}
    assert all("password_hash" not in u and "user-password" not in str(u) for u in listed["items"])
    await api.call(
        "POST",
        "/api/users",
        admin,
        expect=409,
        json={"email": viewer.email, "full_name": "Dup", "password": "password1"},
    )
    await api.call(
        "POST",
        "/api/users",
        admin,
        expect=400,
        json={"email": "short@example.com", "full_name": "X", "password": "short"},
    )
    await api.call("GET", "/api/users", viewer, expect=403)
    renamed = await api.call(
        "PATCH", f"/api/users/{viewer.user_id}", admin, expect=200, json={"full_name": "Renamed"}
    )
    assert renamed["full_name"] == "Renamed"
    # deactivation ends the tokens at the next request
    await api.call("DELETE", f"/api/users/{viewer.user_id}", admin, expect=200)
    await api.call("GET", "/api/auth/me", viewer, expect=401)
    resp = await client.post("/api/auth/refresh", json={"refresh_token": viewer.refresh_token})
    assert resp.status == 401
    resp = await client.post(
        "/api/auth/login", json={"email": viewer.email, "password": "user-password"}
    )
    assert resp.status == 401
    reactivated = await api.call(
        "PATCH", f"/api/users/{viewer.user_id}", admin, expect=200, json={"is_active": True}
    )
    assert reactivated["is_active"] is True
    await api.login(viewer.email, "user-password")


async def test_owner_is_protected(api, client, owner):
    admin = await add_user(api, client, owner, "admin")
    roles = (await api.call("GET", "/api/roles", owner, expect=200))["items"]
    owner_role = next(r["id"] for r in roles if r["key"] == "owner")
    admin_role = next(r["id"] for r in roles if r["key"] == "admin")
    # the admin can manage neither the owner nor the owner role
    await api.call(
        "PATCH", f"/api/users/{owner.user_id}", admin, expect=403, json={"is_active": False}
    )
    await api.call(
        "PATCH", f"/api/users/{admin.user_id}", admin, expect=403, json={"role_ids": [owner_role]}
    )
    # the last owner cannot lose the role, nor deactivate themselves
    await api.call(
        "PATCH", f"/api/users/{owner.user_id}", owner, expect=409, json={"role_ids": [admin_role]}
    )
    await api.call("DELETE", f"/api/users/{owner.user_id}", owner, expect=409)
    # with a second owner, the first may step down
    await api.call(
        "PATCH", f"/api/users/{admin.user_id}", owner, expect=200, json={"role_ids": [owner_role]}
    )
    await api.call(
        "PATCH", f"/api/users/{owner.user_id}", owner, expect=200, json={"role_ids": [admin_role]}
    )
    me = await api.call("GET", "/api/auth/me", owner, expect=200)
    assert "tenant.manage" not in me["permissions"]


async def test_aliases(api, client, owner, create_table, create_rows):
    await create_table(owner, "deals")
    await create_rows(owner, "deals", [{"n": 1}])
    alias = await api.call(
        "PUT",
        "/api/aliases/deals",
        owner,
        expect=200,
        json={"table": "Сделки", "columns": {"n": "Номер"}},
    )
    assert alias == {"table_key": "deals", "table": "Сделки", "columns": {"n": "Номер"}}
    table = await api.call("GET", "/api/meta/tables/deals", owner, expect=200)
    assert table["key"] == "deals" and table["display_name"] == "Сделки"
    assert table["columns"][0]["display_name"] == "Номер" and table["columns"][0]["key"] == "n"
    listed = await api.call("GET", "/api/meta/tables", owner, expect=200)
    deals = next(t for t in listed["items"] if t["key"] == "deals")
    assert deals["display_name"] == "Сделки"
    bad = await api.call(
        "PUT", "/api/aliases/deals", owner, expect=400, json={"columns": {"nope": "X"}}
    )
    assert bad["error"]["details"][0]["field"] == "columns.nope"
    # data stays where it is
    page = await api.call("GET", "/api/data/deals", owner, expect=200)
    assert page["items"][0]["n"] == 1
    manager = await add_user(api, client, owner, "manager")
    await api.call("PUT", "/api/aliases/deals", manager, expect=403, json={"table": "X"})
    await api.call("DELETE", "/api/aliases/deals", owner, expect=204)
    table = await api.call("GET", "/api/meta/tables/deals", owner, expect=200)
    assert table["display_name"] == "deals"
    assert (await api.call("GET", "/api/aliases", owner, expect=200))["items"] == []
