"""The fixed cost of an authenticated request (issue #12 §3): two database round trips on a
warm process (the user, the tenant); roles and table definitions come from the process cache,
invalidated by the tenant's version counters (crm_core/accounts/cache.py)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from bson import ObjectId
from mongomock.collection import Collection

from crm_core.accounts import auth
from crm_core.accounts.cache import ValidatedDocuments, roles_changed, tables_changed
from handlers.routing import SERVICES
from models.accounts import Tenant, User
from tests.support.api import add_user, rows_of

OPERATIONS = ("find", "find_one", "count_documents", "aggregate", "distinct", "update_one")


SWEEPERS = ("webhook_due", "task_outbox")


@pytest.fixture
def operations(monkeypatch):
    """Every operation the embedded database receives, as (collection, method)."""
    seen: list[tuple[str, str]] = []
    depth = [0]  # mongomock's find_one calls its own find: count the outer call only
    for name in OPERATIONS:
        original = getattr(Collection, name)

        def wrapper(self, *args, _name=name, _original=original, **kwargs):
            if not depth[0]:
                seen.append((self.name, _name))
            depth[0] += 1
            try:
                return _original(self, *args, **kwargs)
            finally:
                depth[0] -= 1

        monkeypatch.setattr(Collection, name, wrapper)
    return seen


async def test_a_warm_request_reads_the_user_and_the_tenant_only(api, owner, operations):
    await api.call(
        "POST",
        "/api/meta/tables",
        owner,
        expect=201,
        json={"key": "t", "columns": [{"key": "n", "type": "integer"}]},
    )
    await api.call("GET", "/api/data/t?limit=5", owner, expect=200)  # warms the cache
    rows = (await rows_of(api.client, owner, "t")).name
    operations.clear()
    page = await api.call("GET", "/api/data/t?limit=5", owner, expect=200)
    assert page["total"] == 0
    # `webhook_due` and `task_outbox` are the in-process sweepers, background tasks that may
    # run during the request, not the request
    before_handler = [op for op in operations if op[0] not in (rows, *SWEEPERS)]
    assert before_handler == [("users", "find_one"), ("tenants", "find_one")], operations
    operations.clear()
    await api.call("GET", "/api/auth/me", owner, expect=200)
    requested = [op for op in operations if op[0] not in SWEEPERS]
    assert requested[:2] == [("users", "find_one"), ("tenants", "find_one")]
    assert not [op for op in operations if op[0] in ("_roles", "_tables")]


async def test_role_changes_reach_the_next_request(api, client, owner):
    manager = await add_user(api, client, owner, "manager")
    await api.call("GET", "/api/users", manager, expect=200)  # cached: manager has users.read
    roles = await api.call("GET", "/api/roles", owner, expect=200)
    role = next(r for r in roles["items"] if r["key"] == "manager")
    kept = [p for p in role["permissions"] if p != "users.read"]
    await api.call(
        "PATCH", f"/api/roles/{role['id']}", owner, expect=200, json={"permissions": kept}
    )
    await api.call("GET", "/api/users", manager, expect=403)


async def test_another_process_writing_is_seen_through_the_version_counter(api, client, owner):
    """A write by another process (here: straight to the database, then the one
    invalidation function its writer calls) is seen at the next request."""
    manager = await add_user(api, client, owner, "manager")
    await api.call("GET", "/api/users", manager, expect=200)
    db = client.app[SERVICES].storage.tenant_db(owner.tenant_id)
    await db["_roles"].update_one({"key": "manager"}, {"$pull": {"permissions": "users.read"}})
    await api.call("GET", "/api/users", manager, expect=200)  # still this process's copy
    await roles_changed(owner.tenant_id)
    await api.call("GET", "/api/users", manager, expect=403)

    await api.call(
        "POST",
        "/api/meta/tables",
        owner,
        expect=201,
        json={"key": "t", "columns": [{"key": "n", "type": "integer"}]},
    )
    await api.call("POST", "/api/data/t", owner, expect=201, json={"n": 1})
    await db["_tables"].update_one(
        {"key": "t"}, {"$push": {"columns": {"key": "m", "type": "integer", "name": "m"}}}
    )
    await tables_changed(owner.tenant_id)
    created = await api.call("POST", "/api/data/t", owner, expect=201, json={"n": 2, "m": 3})
    assert created["m"] == 3


async def test_table_changes_in_one_request_are_seen_by_the_same_request(api, owner):
    """A column added answers with the new definition (the request's own copy of the counter
    moves with its write)."""
    await api.call(
        "POST",
        "/api/meta/tables",
        owner,
        expect=201,
        json={"key": "t", "columns": [{"key": "n", "type": "integer"}]},
    )
    await api.call("GET", "/api/data/t", owner, expect=200)
    await api.call(
        "POST", "/api/meta/tables/t/columns", owner, expect=201, json={"key": "m", "type": "string"}
    )
    row = await api.call("POST", "/api/data/t", owner, expect=201, json={"m": "x"})
    assert row["m"] == "x"


async def test_logout_ends_the_access_token_without_a_lookup_per_request(api, client, owner):
    second = await api.login(owner.email, owner.password)
    resp = await client.post("/api/auth/logout", headers=owner.headers)
    assert resp.status == 204
    assert (await client.get("/api/auth/me", headers=owner.headers)).status == 401
    # the other device's access token ends too; its refresh token still works (once)
    assert (await client.get("/api/auth/me", headers=second.headers)).status == 401
    resp = await client.post("/api/auth/refresh", json={"refresh_token": second.refresh_token})
    assert resp.status == 200


# ---- what the request path keeps between requests, and what it still reads every time ------


async def test_a_token_checked_once_still_expires(api, owner, monkeypatch):
    """The signature is checked once per process; the expiry at every request."""
    await api.call("GET", "/api/auth/me", owner, expect=200)

    class AnHourLater(datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[override]
            return datetime.now(tz) + timedelta(hours=1)

    monkeypatch.setattr(auth, "datetime", AnHourLater)
    body = await api.call("GET", "/api/auth/me", owner, expect=401)
    assert body["error"]["message"] == "The access token has expired"


async def test_what_the_stored_user_and_tenant_say_decides_each_request(api, client, owner):
    """Changes written straight to the database (another process, an operator's script) count
    at the next request, however often the token was used before."""
    manager = await add_user(api, client, owner, "manager")
    for _ in range(2):
        await api.call("GET", "/api/users", manager, expect=200)
    users = User.get_motor_collection()
    manager_id = ObjectId(manager.user_id)
    await users.update_one({"_id": manager_id}, {"$set": {"role_ids": []}})
    await api.call("GET", "/api/users", manager, expect=403)  # no role: no users.read
    await users.update_one({"_id": manager_id}, {"$set": {"is_active": False}})
    body = await api.call("GET", "/api/users", manager, expect=401)
    assert body["error"]["message"] == "This user is deactivated"

    await api.call("GET", "/api/auth/me", owner, expect=200)
    await users.update_one({"_id": ObjectId(owner.user_id)}, {"$inc": {"token_epoch": 1}})
    body = await api.call("GET", "/api/auth/me", owner, expect=401)
    assert body["error"]["message"] == "This session has ended; sign in again"

    again = await api.login(owner.email, owner.password)
    await api.call("GET", "/api/auth/me", again, expect=200)
    await Tenant.get_motor_collection().update_one(
        {"_id": ObjectId(owner.tenant_id)}, {"$set": {"is_active": False}}
    )
    body = await api.call("GET", "/api/auth/me", again, expect=401)
    assert body["error"]["message"] == "The company is not active"


def test_validated_documents_are_per_stored_version_and_never_shared():
    documents = ValidatedDocuments(Tenant)
    doc = {"_id": ObjectId(), "name": "Acme", "versions": {"roles": 1}}
    first, second = documents.validate(dict(doc)), documents.validate(dict(doc))
    assert first is not second and first.versions is not second.versions
    first.versions["roles"] = 99  # one request changing its copy
    first.name = "Changed"
    assert documents.validate(dict(doc)).versions == {"roles": 1}
    assert documents.validate(dict(doc)).name == "Acme"
    renamed = documents.validate({**doc, "name": "Acme Ltd", "versions": {"roles": 2}})
    assert (renamed.name, renamed.versions) == ("Acme Ltd", {"roles": 2})
