"""Rows kept by table id (issue #29 §4): `crm migrate` moves collections named by key to
`rows.<table id>`, and the start-up check reports definitions the indexes do not enforce."""

from __future__ import annotations

from crm_core.accounts.cache import tables_changed
from crm_core.tables.builtin import index_drift, migrate_all
from handlers.routing import SERVICES
from tests.support.api import tenant_db


async def _old_layout(db, owner, key: str) -> dict:
    """Put a table back the way it was stored before the rows were kept by id."""
    stored = await db["_tables"].find_one({"key": key})
    await db[stored["collection"]].rename(key)
    await db["_tables"].update_one({"_id": stored["_id"]}, {"$unset": {"collection": ""}})
    await tables_changed(owner.tenant_id)
    return stored


async def test_migrate_moves_rows_named_by_key_to_the_tables_id(api, client, owner):
    await api.call(
        "POST",
        "/api/meta/tables",
        owner,
        expect=201,
        json={"key": "t", "columns": [{"key": "code", "type": "string", "unique": True}]},
    )
    await api.call("POST", "/api/data/t", owner, expect=201, json={"code": "a"})
    db = tenant_db(client, owner)
    stored = await _old_layout(db, owner, "t")
    leads = await _old_layout(db, owner, "leads")
    await api.call("POST", "/api/leads", owner, expect=201, json={"title": "old layout"})
    # the old layout is still served until the migration
    assert (await api.call("GET", "/api/data/t", owner, expect=200))["total"] == 1

    assert await migrate_all(client.app[SERVICES].storage) == 1
    names = await db.list_collection_names()
    assert "t" not in names and "leads" not in names
    assert f"rows.{stored['_id']}" in names and f"rows.{leads['_id']}" in names
    assert (await api.call("GET", "/api/data/t", owner, expect=200))["total"] == 1
    assert (await api.call("GET", "/api/leads", owner, expect=200))["total"] == 1
    # the unique index came along
    await api.call("POST", "/api/data/t", owner, expect=409, json={"code": "a"})
    assert await migrate_all(client.app[SERVICES].storage) == 0  # nothing left to do


async def test_index_drift_is_reported(api, client, owner):
    await api.call(
        "POST",
        "/api/meta/tables",
        owner,
        expect=201,
        json={
            "key": "t",
            "columns": [
                {"key": "code", "type": "string", "unique": True},
                {"key": "n", "type": "integer", "indexed": True},
            ],
        },
    )
    db = tenant_db(client, owner)
    assert await index_drift(db) == []
    stored = await db["_tables"].find_one({"key": "t"})
    rows = db[stored["collection"]]
    await rows.drop_index("u_code")
    await rows.drop_index("i_n")
    await rows.create_index([("n", 1)], name="u_n", unique=True)
    await db["_tables"].update_one(
        {"_id": stored["_id"]}, {"$set": {"changing": {"id": "x", "columns": ["n"]}}}
    )
    await db["rows.000000000000000000000000"].insert_one({"left": "behind"})
    assert await index_drift(db) == [
        "t.code: unique in the definition, no unique index",
        "t.n: a unique index the definition does not claim",
        "t.n: indexed in the definition, no index",
        "t: a schema change of n started and never finished",
        "rows.000000000000000000000000: rows in a collection no table names",
    ]
    drift: list[str] = []
    await migrate_all(client.app[SERVICES].storage, drift)
    assert len(drift) == 5 and drift[0].startswith(f"tenant {owner.tenant_id}: t.code")


async def test_migrate_binds_import_jobs_made_before_table_ids_or_cancels_them(api, client, owner):
    """Jobs without `table_id` (made before issue #29): one made after its table is bound to
    it; one whose table was deleted and made again since is cancelled and never listed under
    the new table (it would have written into it)."""
    from datetime import UTC, datetime, timedelta

    from bson import ObjectId

    from crm_core.services import TENANT_MIGRATIONS

    await api.call(
        "POST", "/api/meta/tables", owner, expect=201, json={"key": "old", "columns": []}
    )
    earlier = ObjectId.from_datetime(datetime.now(UTC) - timedelta(days=1))  # before `again`
    await api.call(
        "POST", "/api/meta/tables", owner, expect=201, json={"key": "again", "columns": []}
    )
    db = tenant_db(client, owner)
    base = {"kind": "import", "errors": [], "columns": [], "mapping": [], "sample": []}
    kept = {**base, "_id": ObjectId(), "table": "old", "state": "preview"}
    orphan = {**base, "_id": earlier, "table": "again", "state": "queued"}
    await db["_jobs"].insert_many([kept, orphan])

    steps = TENANT_MIGRATIONS
    assert await migrate_all(client.app[SERVICES].storage, steps=steps) == 1
    old = await db["_tables"].find_one({"key": "old"})
    bound = await db["_jobs"].find_one({"_id": kept["_id"]})
    assert bound["table_id"] == old["_id"] and bound["state"] == "preview"
    stopped = await db["_jobs"].find_one({"_id": earlier})
    assert stopped["state"] == "cancelled" and "deleted" in stopped["message"]
    again = await db["_tables"].find_one({"key": "again"})
    assert stopped["table_id"] != again["_id"]
    assert await migrate_all(client.app[SERVICES].storage, steps=steps) == 0  # nothing left
