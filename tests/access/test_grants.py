"""Nobody grants what they do not hold (issue #10 §1): one case per route that changes what
someone may do, each with a caller whose role holds less than the change would give."""

from __future__ import annotations

import pytest

from models.accounts import User
from tests.support.api import add_user, user_with_permissions


async def role_ids(api, owner) -> dict[str, str]:
    roles = await api.call("GET", "/api/roles", owner, expect=200)
    return {r["key"] or r["name"]: r["id"] for r in roles["items"]}


async def user_with(api, owner, permissions: list[str], name: str):
    """A signed-in user holding exactly `permissions` through a custom role."""
    account, role = await user_with_permissions(api, owner, permissions, name)
    return account, role["id"]


def _forbidden(body, *codes):
    assert body["error"]["code"] == "forbidden"
    for code in codes:
        assert code in body["error"]["message"]


@pytest.fixture
async def helpdesk(api, owner):
    """Holds users.manage and users.read, nothing else."""
    account, _ = await user_with(api, owner, ["users.manage", "users.read"], "Helpdesk")
    return account


async def test_helpdesk_cannot_give_itself_the_admin_role(api, client, owner, helpdesk):
    roles = await role_ids(api, owner)
    before = await api.call("GET", "/api/auth/me", helpdesk, expect=200)
    body = await api.call(
        "PATCH",
        f"/api/users/{helpdesk.user_id}",
        helpdesk,
        expect=403,
        json={"role_ids": [*before["user"]["role_ids"], roles["admin"]]},
    )
    _forbidden(body, "tables.all", "roles.manage")
    after = await api.call("GET", "/api/auth/me", helpdesk, expect=200)
    assert after["permissions"] == before["permissions"] == ["users.manage", "users.read"]
    # dropping one's own role is no grant
    await api.call(
        "PATCH", f"/api/users/{helpdesk.user_id}", helpdesk, expect=200, json={"full_name": "H"}
    )


async def test_helpdesk_cannot_create_a_user_with_more(api, client, owner, helpdesk):
    roles = await role_ids(api, owner)
    for key in ("admin", "manager", "viewer", "owner"):
        body = await api.call(
            "POST",
            "/api/users",
            helpdesk,
            expect=403,
            json={
                "email": f"new-{key}@example.com",
                "full_name": "New",
                "password": "new-password",
                "role_ids": [roles[key]],
            },
        )
        assert body["error"]["code"] == "forbidden"
        assert await User.find(User.email == f"new-{key}@example.com").count() == 0
    # a role within what the helpdesk holds is fine
    _, reader_role = await user_with(api, owner, ["users.read"], "Reader")
    await api.call(
        "POST",
        "/api/users",
        helpdesk,
        expect=201,
        json={
            "email": "reader@example.com",
            "full_name": "Reader",
            "password": "new-password",
            "role_ids": [reader_role],
        },
    )


async def test_helpdesk_cannot_raise_or_manage_users_above_it(api, client, owner, helpdesk):
    roles = await role_ids(api, owner)
    _, reader_role = await user_with(api, owner, ["users.read"], "Reader")
    reader, _ = await user_with(api, owner, ["users.read"], "Reader2")
    # raising another user's roles
    body = await api.call(
        "PATCH",
        f"/api/users/{reader.user_id}",
        helpdesk,
        expect=403,
        json={"role_ids": [roles["manager"]]},
    )
    _forbidden(body, "leads.read")
    # a viewer holds leads.read, which the helpdesk lacks: not the helpdesk's to manage
    viewer = await add_user(api, client, owner, "viewer")
    for change in ({"is_active": False}, {"role_ids": [reader_role]}, {"full_name": "X"}):
        body = await api.call(
            "PATCH", f"/api/users/{viewer.user_id}", helpdesk, expect=403, json=change
        )
        _forbidden(body, "leads.read")
    await api.call("DELETE", f"/api/users/{viewer.user_id}", helpdesk, expect=403)
    stored = await User.get(viewer.user_id)
    assert (
        stored.is_active and stored.role_ids == [roles["viewer"]] and stored.full_name == "Viewer"
    )
    # within its reach it works
    await api.call(
        "PATCH", f"/api/users/{reader.user_id}", helpdesk, expect=200, json={"is_active": False}
    )


async def test_admin_cannot_assign_the_owner_role(api, client, owner):
    roles = await role_ids(api, owner)
    admin = await add_user(api, client, owner, "admin")
    viewer = await add_user(api, client, owner, "viewer")
    for target in (admin, viewer):
        body = await api.call(
            "PATCH",
            f"/api/users/{target.user_id}",
            admin,
            expect=403,
            json={"role_ids": [roles["owner"]]},
        )
        assert "owner" in body["error"]["message"]
    await api.call(
        "POST",
        "/api/users",
        admin,
        expect=403,
        json={
            "email": "boss@example.com",
            "full_name": "Boss",
            "password": "boss-password",
            "role_ids": [roles["owner"]],
        },
    )
    assert roles["owner"] not in (await User.get(admin.user_id)).role_ids
    # the owner can
    await api.call(
        "PATCH",
        f"/api/users/{admin.user_id}",
        owner,
        expect=200,
        json={"role_ids": [roles["owner"]]},
    )


async def test_role_manager_cannot_grant_or_reshape_roles_above_it(api, client, owner):
    roles = await role_ids(api, owner)
    shaper, own_role = await user_with(api, owner, ["roles.manage"], "Shaper")
    body = await api.call(
        "POST",
        "/api/roles",
        shaper,
        expect=403,
        json={"name": "Wide", "permissions": ["roles.manage", "tables.all"]},
    )
    _forbidden(body, "tables.all")
    assert body["error"]["details"] == [{"field": "permissions", "message": "not held: tables.all"}]
    # widening its own role
    await api.call(
        "PATCH",
        f"/api/roles/{own_role}",
        shaper,
        expect=403,
        json={"permissions": ["roles.manage", "users.manage"]},
    )
    # reshaping a role that holds more than the caller (the admin role), even by removing
    await api.call(
        "PATCH", f"/api/roles/{roles['admin']}", shaper, expect=403, json={"permissions": []}
    )
    stored = await api.call("GET", f"/api/roles/{roles['admin']}", owner, expect=200)
    assert "tables.all" in stored["permissions"]
    me = await api.call("GET", "/api/auth/me", shaper, expect=200)
    assert me["permissions"] == ["roles.manage"]
    # within its reach it works
    narrow = await api.call(
        "POST", "/api/roles", shaper, expect=201, json={"name": "N", "permissions": []}
    )
    await api.call(
        "PATCH",
        f"/api/roles/{narrow['id']}",
        shaper,
        expect=200,
        json={"permissions": ["roles.manage"]},
    )


async def _table(api, owner):
    await api.call(
        "POST",
        "/api/meta/tables",
        owner,
        expect=201,
        json={"key": "deals", "columns": [{"key": "n", "type": "integer"}]},
    )


@pytest.mark.parametrize(
    ("own", "wanted"), [("read", "write"), ("read", "manage"), ("write", "manage")]
)
async def test_sharer_cannot_share_above_its_own_level(api, client, owner, own, wanted):
    await _table(api, owner)
    sharer, _ = await user_with(api, owner, ["shares.manage"], "Sharer")
    other = await add_user(api, client, owner, "viewer")
    await api.call(
        "POST",
        "/api/shares",
        owner,
        expect=201,
        json={"table": "deals", "user_id": sharer.user_id, "access": own},
    )
    body = await api.call(
        "POST",
        "/api/shares",
        sharer,
        expect=403,
        json={"table": "deals", "user_id": other.user_id, "access": wanted},
    )
    assert body["error"]["details"] == [
        {"field": "access", "message": f"above your own access ({own})"}
    ]
    # and not to itself either
    await api.call(
        "POST",
        "/api/shares",
        sharer,
        expect=403,
        json={"table": "deals", "user_id": sharer.user_id, "access": wanted},
    )
    assert (await api.client.get("/api/data/deals", headers=other.headers)).status == 404
    shares = await api.call("GET", "/api/shares", sharer, expect=200)
    assert [s["access"] for s in shares["received"]] == [own]
    # at its own level it may share
    await api.call(
        "POST",
        "/api/shares",
        sharer,
        expect=201,
        json={"table": "deals", "user_id": other.user_id, "access": own},
    )


async def test_two_owners_stepping_down_at_once_leave_one(api, client, owner):
    import asyncio

    roles = await role_ids(api, owner)
    second = await add_user(api, client, owner, "admin")
    await api.call(
        "PATCH",
        f"/api/users/{second.user_id}",
        owner,
        expect=200,
        json={"role_ids": [roles["owner"]]},
    )
    for _ in range(5):
        responses = await asyncio.gather(
            *[
                client.patch(
                    f"/api/users/{account.user_id}",
                    headers=account.headers,
                    json={"role_ids": [roles["admin"]]},
                )
                for account in (owner, second)
            ]
        )
        owners = await User.find(User.role_ids == roles["owner"], User.is_active == True).count()  # noqa: E712
        assert owners >= 1
        assert sorted(r.status for r in responses)[0] in (200, 409)
        if owners == 1:
            break
