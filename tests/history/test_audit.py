"""The company's audit trail (docs/history.md "Audit trail"): `GET /api/audit` with
`audit.read`, fed by the tables domain (tables, columns, shares, the trash)."""

from __future__ import annotations

from crm_core.accounts.cache import roles_changed
from crm_core.tables.builtin import migrate_all
from handlers.routing import SERVICES


async def test_changes_to_tables_columns_shares_and_the_trash_are_recorded(
    api, owner, create_table, create_user
):
    await create_table(owner, "deals", [{"key": "n", "type": "integer"}])
    await api.call(
        "POST",
        "/api/meta/tables/deals/columns",
        owner,
        expect=201,
        json={"key": "m", "type": "string"},
        headers={"X-Request-ID": "req-column"},
    )
    await api.call("DELETE", "/api/meta/tables/deals/columns/m", owner, expect=200)
    viewer = await create_user(owner, "viewer")
    share = await api.call(
        "POST",
        "/api/shares",
        owner,
        expect=201,
        json={"table": "deals", "user_id": viewer.user_id, "access": "write"},
    )
    await api.call("DELETE", f"/api/shares/{share['id']}", owner, expect=204)
    row = await api.call("POST", "/api/data/deals", owner, expect=201, json={"n": 1})
    await api.call("DELETE", f"/api/data/deals/{row['id']}", owner, expect=204)
    (item,) = (await api.call("GET", "/api/trash?kind=row", owner, expect=200))["items"]
    await api.call("POST", f"/api/trash/{item['id']}/restore", owner, expect=200)
    await api.call("DELETE", "/api/meta/tables/deals", owner, expect=204)

    # the viewer's creation and sign-in are the accounts domain's (tests/audit/)
    accounts = ("user.created", "auth.signed_in")
    everything = await api.call("GET", "/api/audit?limit=100", owner, expect=200)
    tables = [e for e in everything["items"] if e["action"] not in accounts]
    trail = {"items": tables, "total": len(tables)}
    actions = [e["action"] for e in trail["items"]]
    assert actions == [
        "table.deleted",
        "trash.restored",
        "share.revoked",
        "share.granted",
        "column.deleted",
        "column.added",
        "table.created",
    ]
    assert trail["total"] == 7
    added = trail["items"][-2]
    assert added["target"] == {"type": "column", "table": "deals", "column": "m"}
    assert added["changes"] == {"type": "string"}
    assert added["request_id"] == "req-column"
    assert added["actor"]["id"] == owner.user_id and added["actor"]["type"] == "user"
    granted = trail["items"][3]
    assert granted["target"]["user_id"] == viewer.user_id
    assert granted["changes"] == {"access": "write"}

    only = await api.call("GET", "/api/audit?action=share.granted", owner, expect=200)
    assert [e["action"] for e in only["items"]] == ["share.granted"]
    mine = await api.call("GET", f"/api/audit?actor={owner.user_id}&limit=2", owner, expect=200)
    assert mine["total"] == 8 and len(mine["items"]) == 2  # with user.created
    since = trail["items"][1]["at"]
    recent = await api.call("GET", f"/api/audit?since={since}", owner, expect=200)
    assert [e["action"] for e in recent["items"]] == ["table.deleted", "trash.restored"]
    bad = await api.call("GET", f"/api/audit?since={since}&until={since}", owner, expect=400)
    assert bad["error"]["details"][0]["field"] == "until"


async def test_the_trail_needs_audit_read_and_stays_in_its_company(api, owner, create_user):
    await api.call("POST", "/api/meta/tables", owner, expect=201, json={"key": "t", "columns": []})
    viewer = await create_user(owner, "viewer")
    await api.call("GET", "/api/audit", viewer, expect=403)
    admin = await create_user(owner, "admin")
    page = await api.call("GET", "/api/audit?action=table.created", admin, expect=200)
    assert page["total"] == 1
    other = await api.register()
    assert (await api.call("GET", "/api/audit", other, expect=200))["total"] == 0


async def test_migration_gives_audit_read_to_older_companies(api, client, owner):
    storage = client.app[SERVICES].storage
    roles = storage.tenant_db(owner.tenant_id)["_roles"]
    await roles.update_many({}, {"$pull": {"permissions": "audit.read"}})
    await roles_changed(owner.tenant_id)  # as a company from before the permission existed
    await api.call("GET", "/api/audit", owner, expect=403)
    assert await migrate_all(storage) >= 1
    granted = {r["key"] async for r in roles.find({"permissions": "audit.read"})}
    assert granted == {"owner", "admin"}
    await api.call("GET", "/api/audit", owner, expect=200)


async def test_the_trail_takes_iso_date_times_only(api, owner):
    # pydantic alone reads `0.5` as a Unix time; the document declares an ISO date-time
    for bad in ("0.5", "1700000000", "yesterday"):
        error = await api.call("GET", f"/api/audit?until={bad}", owner, expect=400)
        assert error["error"]["details"][0]["field"] == "until"
    kept = await api.call("GET", "/api/audit?since=2026-01-01T00:00:00Z", owner, expect=200)
    assert "items" in kept
