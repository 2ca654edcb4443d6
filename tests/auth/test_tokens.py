"""API tokens: shown once and stored hashed, scoped to a subset of the user's permissions,
never beyond the user's current access, dying with the user's sessions (docs/integrations.md)."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta

from bson import ObjectId

from models.tokens import ApiToken
from tests.support.api import USER_PASSWORD, Account, Api, add_user, user_with_permissions
from tests.support.tokens import bearer, make_token


async def member_with(api: Api, owner: Account, permissions: list[str]) -> tuple[dict, Account]:
    member, role = await user_with_permissions(api, owner, permissions, name="R")
    return role, member


async def test_the_secret_is_shown_once_and_stored_hashed(api, owner):
    created = await make_token(api, owner, permissions=["leads.read", "leads.read"])
    secret = created["token"]
    assert secret.startswith("crm_pat_") and len(secret) > 40
    assert created["prefix"] == secret[:12] and created["permissions"] == ["leads.read"]
    stored = await ApiToken.get(ObjectId(created["id"]))
    assert stored is not None
    assert stored.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in str(stored.model_dump())
    listed = await api.call("GET", "/api/tokens", owner, expect=200)
    assert [t["id"] for t in listed["items"]] == [created["id"]]
    assert "token" not in listed["items"][0]
    one = await api.call("GET", f"/api/tokens/{created['id']}", owner, expect=200)
    assert "token" not in one and one["name"] == "sync"


async def test_a_token_acts_within_its_scope(api, owner):
    secret = (await make_token(api, owner, permissions=["leads.read"]))["token"]
    me = await api.call("GET", "/api/auth/me", bearer(secret), expect=200)
    assert me["user"]["id"] == owner.user_id and me["permissions"] == ["leads.read"]
    await api.call("GET", "/api/leads", bearer(secret), expect=200)
    body = await api.call("POST", "/api/leads", bearer(secret), expect=403, json={"title": "x"})
    assert body["error"]["code"] == "forbidden"
    await api.call("GET", "/api/users", bearer(secret), expect=403)
    # tables reached through ownership follow table_access (none by default)
    await api.call(
        "POST",
        "/api/meta/tables",
        owner,
        expect=201,
        json={"key": "mine", "columns": [{"key": "n", "type": "integer"}]},
    )
    await api.call("GET", "/api/data/mine", bearer(secret), expect=404)
    tables = await api.call("GET", "/api/meta/tables", bearer(secret), expect=200)
    assert [t["key"] for t in tables["items"]] == ["leads"]
    reader = (await make_token(api, owner, table_access="read"))["token"]
    await api.call("GET", "/api/data/mine", bearer(reader), expect=200)
    await api.call("POST", "/api/data/mine", bearer(reader), expect=403, json={"n": 1})


async def test_nobody_gives_a_token_more_than_they_hold(api, client, owner):
    manager = await add_user(api, client, owner, "manager")
    body = await make_token(api, manager, expect=403, permissions=["leads.read", "users.manage"])
    assert body["error"]["details"] == [
        {"field": "permissions", "message": "not held: users.manage"}
    ]
    body = await make_token(api, manager, expect=400, permissions=["no.such"])
    assert body["error"]["details"][0]["field"] == "permissions.0"
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    body = await make_token(api, manager, expect=400, expires_at=past)
    assert body["error"]["details"][0]["field"] == "expires_at"
    body = await make_token(api, manager, expect=400, expires_at="2999-01-01T00:00:00")
    assert body["error"]["details"][0]["field"] == "expires_at"
    assert (await api.call("GET", "/api/tokens", manager, expect=200))["items"] == []
    secret = (await make_token(api, manager, permissions=["leads.read"]))["token"]
    body = await make_token(api, bearer(secret), expect=403)
    assert "cannot create tokens" in body["error"]["message"]


async def test_the_token_shrinks_with_its_users_access(api, client, owner):
    role, member = await member_with(api, owner, ["leads.read", "leads.write"])
    secret = (
        await make_token(
            api, member, permissions=["leads.read", "leads.write"], table_access="manage"
        )
    )["token"]
    await api.call("POST", "/api/leads", bearer(secret), expect=201, json={"title": "a"})
    await api.call(
        "PATCH", f"/api/roles/{role['id']}", owner, expect=200, json={"permissions": ["leads.read"]}
    )
    await api.call("POST", "/api/leads", bearer(secret), expect=403, json={"title": "b"})
    await api.call("GET", "/api/leads", bearer(secret), expect=200)
    # shares count too, capped by the scope and by the share itself
    await api.call(
        "POST",
        "/api/meta/tables",
        owner,
        expect=201,
        json={"key": "shared", "columns": [{"key": "n", "type": "integer"}]},
    )
    share = await api.call(
        "POST",
        "/api/shares",
        owner,
        expect=201,
        json={"table": "shared", "user_id": member.user_id, "access": "read"},
    )
    await api.call("GET", "/api/data/shared", bearer(secret), expect=200)
    await api.call("POST", "/api/data/shared", bearer(secret), expect=403, json={"n": 1})
    await api.call("DELETE", f"/api/shares/{share['id']}", owner, expect=204)
    await api.call("GET", "/api/data/shared", bearer(secret), expect=404)


async def test_revoked_or_expired_tokens_stop_at_once(api, owner):
    created = await make_token(api, owner, permissions=["leads.read"])
    await api.call("GET", "/api/leads", bearer(created["token"]), expect=200)
    await api.call("DELETE", f"/api/tokens/{created['id']}", owner, expect=204)
    body = await api.call("GET", "/api/leads", bearer(created["token"]), expect=401)
    assert body["error"]["code"] == "unauthorized"
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    expiring = await make_token(api, owner, permissions=["leads.read"], expires_at=soon)
    await api.call("GET", "/api/leads", bearer(expiring["token"]), expect=200)
    await ApiToken.get_motor_collection().update_one(
        {"_id": ObjectId(expiring["id"])},
        {"$set": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}},
    )
    # the TTL index removes it (mongomock at once, a real server within a minute, during
    # which the expiry check answers)
    body = await api.call("GET", "/api/leads", bearer(expiring["token"]), expect=401)
    assert body["error"]["code"] == "unauthorized"
    await api.call("GET", "/api/leads", bearer("crm_pat_made-up"), expect=401)


async def test_tokens_die_with_their_users_sessions(api, client, owner):
    _role, member = await member_with(api, owner, ["leads.read"])
    secret = (await make_token(api, member, permissions=["leads.read"]))["token"]
    # logging out of a browser session leaves integrations alone
    await api.call(
        "POST", "/api/auth/logout", member, expect=204, json={"refresh_token": member.refresh_token}
    )
    await api.call("GET", "/api/leads", bearer(secret), expect=200)
    await api.call(
        "PATCH", f"/api/users/{member.user_id}", owner, expect=200, json={"is_active": False}
    )
    body = await api.call("GET", "/api/leads", bearer(secret), expect=401)
    assert body["error"]["code"] == "unauthorized"
    await api.call(
        "PATCH", f"/api/users/{member.user_id}", owner, expect=200, json={"is_active": True}
    )
    await api.call("GET", "/api/leads", bearer(secret), expect=401)  # stays dead
    member = await api.login(member.email, USER_PASSWORD)
    second = (await make_token(api, member, permissions=["leads.read"]))["token"]
    await api.call("GET", "/api/leads", bearer(second), expect=200)
    await api.call(
        "POST",
        "/api/auth/password",
        member,
        expect=200,
        json={"current_password": USER_PASSWORD, "new_password": "another-password"},
    )
    await api.call("GET", "/api/leads", bearer(second), expect=401)


async def test_last_used_is_kept_cheaply(api, owner):
    created = await make_token(api, owner, permissions=["leads.read"])
    assert created["last_used_at"] is None
    await api.call("GET", "/api/leads", bearer(created["token"]), expect=200)
    first = (await api.call("GET", f"/api/tokens/{created['id']}", owner, expect=200))[
        "last_used_at"
    ]
    assert first is not None
    await api.call("GET", "/api/leads", bearer(created["token"]), expect=200)
    again = (await api.call("GET", f"/api/tokens/{created['id']}", owner, expect=200))[
        "last_used_at"
    ]
    assert again == first  # within a minute: not written again
    old = datetime.now(UTC) - timedelta(minutes=2)
    await ApiToken.get_motor_collection().update_one(
        {"_id": ObjectId(created["id"])}, {"$set": {"last_used_at": old}}
    )
    await api.call("GET", "/api/leads", bearer(created["token"]), expect=200)
    later = await ApiToken.get(ObjectId(created["id"]))
    assert later is not None and later.last_used_at is not None
    assert later.last_used_at.replace(tzinfo=UTC) > old + timedelta(minutes=1)


async def test_tokens_are_private_to_their_user(api, client, owner):
    admin = await add_user(api, client, owner, "admin")
    created = await make_token(api, owner, permissions=["leads.read"])
    await api.call("GET", f"/api/tokens/{created['id']}", admin, expect=404)
    await api.call("DELETE", f"/api/tokens/{created['id']}", admin, expect=404)
    assert (await api.call("GET", "/api/tokens", admin, expect=200))["items"] == []
    await api.call("GET", "/api/leads", bearer(created["token"]), expect=200)


async def test_a_user_has_a_bounded_number_of_tokens(api, owner, monkeypatch):
    monkeypatch.setattr("crm_core.accounts.tokens.MAX_TOKENS_PER_USER", 2)
    results = await asyncio.gather(*(make_token(api, owner, expect=None) for _ in range(4)))
    assert len((await api.call("GET", "/api/tokens", owner, expect=200))["items"]) <= 2
    refused = [r for r in results if "error" in r]
    assert len(refused) >= 2 and all(r["error"]["code"] == "conflict" for r in refused)
