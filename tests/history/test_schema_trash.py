"""Deleted columns and tables in the trash (docs/history.md "Trash"): a column comes back
with its values and indexes, a table with its rows, shares, display names, views and orders; a
key taken since is a 409 naming it; purge and expiry drop what was kept; links to a restored
row are put back."""

from __future__ import annotations

from crm_core.tables.trash import TRASH, TRASH_PURGE
from handlers.routing import SERVICES
from tests.support.api import tenant_db

COLUMNS = [
    {"key": "name", "type": "string"},
    {"key": "code", "type": "string", "unique": True},
    {"key": "n", "type": "integer"},
]


async def _trash(api, account, **params) -> list[dict]:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return (await api.call("GET", f"/api/trash?{query}", account, expect=200))["items"]


async def test_a_deleted_column_comes_back_with_its_values(api, owner, create_table):
    await create_table(owner, "deals", COLUMNS)
    a = await api.call(
        "POST", "/api/data/deals", owner, expect=201, json={"name": "a", "code": "X"}
    )
    b = await api.call("POST", "/api/data/deals", owner, expect=201, json={"name": "b", "n": 2})
    await api.call(
        "PUT", "/api/aliases/deals", owner, expect=200, json={"columns": {"code": "Код"}}
    )
    await api.call("DELETE", "/api/meta/tables/deals/columns/code", owner, expect=200)
    got = await api.call("GET", f"/api/data/deals/{a['id']}", owner, expect=200)
    assert "code" not in got
    (item,) = await _trash(api, owner, kind="column")
    assert item["table"] == "deals" and item["column"] == "code" and item["name"] == "Код"
    assert item["deleted_by"]["id"] == owner.user_id
    # rows written meanwhile keep their values; a new row has none of the old column
    c = await api.call("POST", "/api/data/deals", owner, expect=201, json={"name": "c"})

    restored = await api.call("POST", f"/api/trash/{item['id']}/restore", owner, expect=200)
    assert restored == {"id": item["id"], "kind": "column", "table": "deals", "column": "code"}
    meta = await api.call("GET", "/api/meta/tables/deals", owner, expect=200)
    code = next(col for col in meta["columns"] if col["key"] == "code")
    assert code["unique"] is True and code["display_name"] == "Код"
    rows = {
        r["id"]: r for r in (await api.call("GET", "/api/data/deals", owner, expect=200))["items"]
    }
    assert rows[a["id"]]["code"] == "X" and "code" not in rows[b["id"]]
    assert rows[b["id"]]["n"] == 2 and "code" not in rows[c["id"]]
    # the unique index is back
    taken = await api.call(
        "PATCH", f"/api/data/deals/{c['id']}", owner, expect=409, json={"code": "X"}
    )
    assert "code" in taken["error"]["message"]
    assert await _trash(api, owner, kind="column") == []
    db = tenant_db(api.client, owner)
    assert await db[TRASH].count_documents({"kind": "column_value"}) == 0
    # the audit trail says what came back
    trail = await api.call("GET", "/api/audit?action=trash.restored", owner, expect=200)
    assert trail["items"][0]["target"] == {"type": "column", "table": "deals", "column": "code"}


async def test_a_column_key_taken_since_is_a_409_naming_it(api, owner, create_table):
    await create_table(owner, "deals", COLUMNS)
    await api.call("POST", "/api/data/deals", owner, expect=201, json={"n": 1})
    await api.call("DELETE", "/api/meta/tables/deals/columns/n", owner, expect=200)
    await api.call(
        "POST",
        "/api/meta/tables/deals/columns",
        owner,
        expect=201,
        json={"key": "n", "type": "string"},
    )
    (item,) = await _trash(api, owner, kind="column")
    error = await api.call("POST", f"/api/trash/{item['id']}/restore", owner, expect=409)
    assert error["error"]["details"] == [{"field": "column", "message": "'n' exists again"}]
    assert len(await _trash(api, owner, kind="column")) == 1  # still there
    await api.call("DELETE", f"/api/trash/{item['id']}", owner, expect=204)
    assert await _trash(api, owner, kind="column") == []
    db = tenant_db(api.client, owner)
    assert await db[TRASH].count_documents({"parent": {"$exists": True}}) == 0
    await api.call("POST", f"/api/trash/{item['id']}/restore", owner, expect=404)


async def test_a_deleted_table_comes_back_with_rows_shares_names_and_views(
    api, owner, create_table, create_user
):
    await create_table(owner, "deals", COLUMNS)
    rows = await api.call(
        "POST",
        "/api/data/deals/bulk",
        owner,
        expect=201,
        json={"items": [{"name": str(i), "code": f"C{i}"} for i in range(3)]},
    )
    ids = [r["id"] for r in rows["items"]]
    await api.call("DELETE", f"/api/data/deals/{ids[2]}", owner, expect=204)  # a row first
    viewer = await create_user(owner, "viewer")
    await api.call(
        "POST",
        "/api/shares",
        owner,
        expect=201,
        json={"table": "deals", "user_id": viewer.user_id, "access": "read"},
    )
    await api.call("PUT", "/api/aliases/deals", owner, expect=200, json={"table": "Сделки"})
    asked = {"column_order": ["n", "name"], "hidden": ["code"]}
    view = await api.call("PUT", "/api/meta/tables/deals/view", owner, expect=200, json=asked)
    await api.call("DELETE", "/api/meta/tables/deals", owner, expect=204)
    await api.call("GET", "/api/meta/tables/deals", owner, expect=404)
    await api.call("GET", "/api/data/deals", viewer, expect=404)
    assert await _trash(api, owner, kind="row") == []  # its rows wait with it
    (item,) = await _trash(api, owner, kind="table")
    assert item["table"] == "deals" and item["name"] == "Сделки" and item["row_id"] is None
    assert await _trash(api, viewer) == []  # not the viewer's to restore

    restored = await api.call("POST", f"/api/trash/{item['id']}/restore", owner, expect=200)
    assert restored == {"id": item["id"], "kind": "table", "table": "deals"}
    page = await api.call("GET", "/api/data/deals?sort_by=name", viewer, expect=200)
    assert [r["name"] for r in page["items"]] == ["0", "1"]  # the share is back
    meta = await api.call("GET", "/api/meta/tables/deals", owner, expect=200)
    assert meta["display_name"] == "Сделки"
    assert await api.call("GET", "/api/meta/tables/deals/view", owner, expect=200) == view
    await api.call(
        "POST", "/api/data/deals", owner, expect=409, json={"code": "C0"}
    )  # its unique index never left
    (row_item,) = await _trash(api, owner, kind="row")  # the row deleted before the table
    await api.call("POST", f"/api/trash/{row_item['id']}/restore", owner, expect=200)
    assert (await api.call("GET", "/api/data/deals", owner, expect=200))["total"] == 3
    storage = api.client.app[SERVICES].storage
    assert await storage.system_db["task_outbox"].count_documents({"kind": TRASH_PURGE}) == 0


async def test_a_table_key_taken_since_is_a_409_and_purge_drops_the_rows(api, owner, create_table):
    await create_table(owner, "deals", COLUMNS)
    row = await api.call("POST", "/api/data/deals", owner, expect=201, json={"name": "old"})
    old = await tenant_db(api.client, owner)["_tables"].find_one({"key": "deals"})
    await api.call("DELETE", f"/api/data/deals/{row['id']}", owner, expect=204)
    await api.call("DELETE", "/api/meta/tables/deals", owner, expect=204)
    await create_table(owner, "deals", COLUMNS)
    (item,) = await _trash(api, owner, kind="table")
    error = await api.call("POST", f"/api/trash/{item['id']}/restore", owner, expect=409)
    assert error["error"]["details"] == [{"field": "key", "message": "'deals' is taken"}]
    db = tenant_db(api.client, owner)
    collection = old["collection"]
    assert collection in await db.list_collection_names()
    await api.call("DELETE", f"/api/trash/{item['id']}", owner, expect=204)
    assert collection not in await db.list_collection_names()
    assert await db[TRASH].count_documents({}) == 0  # the old table's row went with it
    await api.call("POST", f"/api/trash/{item['id']}/restore", owner, expect=404)
    trail = await api.call("GET", "/api/audit?action=trash.purged", owner, expect=200)
    assert trail["items"][0]["target"] == {"type": "table", "table": "deals"}


async def test_an_expired_table_is_dropped_by_the_outbox_work(api, owner, create_table):
    await create_table(owner, "deals", COLUMNS)
    await api.call("POST", "/api/data/deals", owner, expect=201, json={"name": "x"})
    old = await tenant_db(api.client, owner)["_tables"].find_one({"key": "deals"})
    await api.call("DELETE", "/api/meta/tables/deals", owner, expect=204)
    services = api.client.app[SERVICES]
    db = tenant_db(api.client, owner)
    outbox = services.storage.system_db["task_outbox"]
    (work,) = await outbox.find({"kind": TRASH_PURGE}).to_list(None)
    item = await db[TRASH].find_one({"kind": "table"})
    # due when the item expires (TRASH_RETENTION_DAYS), not before
    assert abs((work["due_at"] - item["expires_at"]).total_seconds()) < 600
    collection = old["collection"]
    assert work["args"] == [str(item["_id"]), collection, str(item["table_id"])]
    assert not await services.trash.purge_expired(db, *work["args"])  # not expired yet
    assert collection in await db.list_collection_names()
    # the TTL index removed the item (expired): the work still drops the rows
    await db[TRASH].delete_one({"_id": item["_id"]})
    assert await services.trash.purge_expired(db, *work["args"])
    assert collection not in await db.list_collection_names()


async def test_the_purge_work_leaves_a_restored_table_alone(api, owner, create_table):
    await create_table(owner, "deals", COLUMNS)
    await api.call("POST", "/api/data/deals", owner, expect=201, json={"name": "x"})
    await api.call("DELETE", "/api/meta/tables/deals", owner, expect=204)
    services = api.client.app[SERVICES]
    db = tenant_db(api.client, owner)
    item = await db[TRASH].find_one({"kind": "table"})
    await api.call("POST", f"/api/trash/{item['_id']}/restore", owner, expect=200)
    # a work that was already handed when the restore forgot it
    args = (str(item["_id"]), item["collection"], str(item["table_id"]))
    assert await services.trash.purge_expired(db, *args)
    assert (await api.call("GET", "/api/data/deals", owner, expect=200))["total"] == 1


async def test_links_to_a_restored_row_are_put_back(api, owner, create_table):
    await create_table(owner, "companies", [{"key": "name", "type": "string"}])
    await create_table(
        owner,
        "deals",
        [
            {"key": "title", "type": "string"},
            {"key": "client", "type": "link", "table": "companies"},
        ],
    )
    acme = await api.call("POST", "/api/data/companies", owner, expect=201, json={"name": "A"})
    other = await api.call("POST", "/api/data/companies", owner, expect=201, json={"name": "B"})
    deals = [
        await api.call(
            "POST", "/api/data/deals", owner, expect=201, json={"title": t, "client": acme["id"]}
        )
        for t in ("d1", "d2", "d3")
    ]
    await api.call("DELETE", f"/api/data/companies/{acme['id']}", owner, expect=204)
    for deal in deals:
        got = await api.call("GET", f"/api/data/deals/{deal['id']}", owner, expect=200)
        assert "client" not in got  # cleared by the delete, as before
    # meanwhile: d2 points elsewhere, d3 is deleted
    await api.call(
        "PATCH",
        f"/api/data/deals/{deals[1]['id']}",
        owner,
        expect=200,
        json={"client": other["id"]},
    )
    await api.call("DELETE", f"/api/data/deals/{deals[2]['id']}", owner, expect=204)
    (item,) = await _trash(api, owner, table="companies")
    await api.call("POST", f"/api/trash/{item['id']}/restore", owner, expect=200)
    d1 = await api.call("GET", f"/api/data/deals/{deals[0]['id']}", owner, expect=200)
    d2 = await api.call("GET", f"/api/data/deals/{deals[1]['id']}", owner, expect=200)
    assert d1["client"] == acme["id"] and d2["client"] == other["id"]
    await api.call("GET", f"/api/data/deals/{deals[2]['id']}", owner, expect=404)


async def test_schema_items_follow_table_access(api, owner, create_table, create_user):
    await create_table(owner, "deals", COLUMNS)
    writer = await create_user(owner, "manager")
    await api.call(
        "POST",
        "/api/shares",
        owner,
        expect=201,
        json={"table": "deals", "user_id": writer.user_id, "access": "write"},
    )
    await api.call("DELETE", "/api/meta/tables/deals/columns/n", owner, expect=200)
    (item,) = await _trash(api, owner, kind="column")
    assert await _trash(api, writer, kind="column") == []  # write is not manage
    await api.call("POST", f"/api/trash/{item['id']}/restore", writer, expect=404)
    await api.call("DELETE", f"/api/trash/{item['id']}", writer, expect=404)
    other = await api.register()
    await api.call("POST", f"/api/trash/{item['id']}/restore", other, expect=404)
    # a bulk restore is of rows only
    error = await api.call(
        "POST", "/api/trash/restore", owner, expect=404, json={"ids": [item["id"]]}
    )
    assert error["error"]["details"][0]["field"] == "ids.0"


async def test_a_token_below_manage_lists_no_deleted_tables(api, owner, create_table):
    await create_table(owner, "deals", COLUMNS)
    await api.call("DELETE", "/api/meta/tables/deals", owner, expect=204)
    token = await api.call(
        "POST", "/api/tokens", owner, expect=201, json={"name": "t", "table_access": "write"}
    )
    bearer = {"Authorization": f"Bearer {token['token']}"}
    page = await api.call("GET", "/api/trash?kind=table", headers=bearer, expect=200)
    assert page == {"items": [], "total": 0, "next_cursor": None}
    (item,) = await _trash(api, owner, kind="table")
    await api.call("POST", f"/api/trash/{item['id']}/restore", headers=bearer, expect=403)
