"""The trash (docs/history.md "Trash"): a deleted row vanishes from every read, comes back with
restore, and is gone for good with a purge."""

from __future__ import annotations

from tests.support.api import rows_of, tenant_db

COLUMNS = [
    {"key": "name", "type": "string"},
    {"key": "code", "type": "string", "unique": True},
    {"key": "extra", "type": "integer"},
]


async def _trash(api, account, **params):
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return await api.call("GET", f"/api/trash?{query}", account, expect=200)


async def test_a_deleted_row_vanishes_and_comes_back(api, owner, client, create_table):
    await create_table(owner, "deals", COLUMNS)
    row = await api.call(
        "POST", "/api/data/deals", owner, expect=201, json={"name": "Keep me", "code": "k"}
    )
    path = f"/api/data/deals/{row['id']}"
    await api.call("DELETE", path, owner, expect=204)
    await api.call("GET", path, owner, expect=404)
    assert (await api.call("GET", "/api/data/deals", owner, expect=200))["total"] == 0
    filtered = await api.call(
        "GET",
        '/api/data/deals?filters=[{"field":"code","op":"eq","value":"k"}]',
        owner,
        expect=200,
    )
    assert filtered["items"] == []
    assert await (await rows_of(client, owner, "deals")).count_documents({}) == 0
    trash = await _trash(api, owner)
    assert trash["total"] == 1
    (item,) = trash["items"]
    assert item["kind"] == "row" and item["table"] == "deals" and item["row_id"] == row["id"]
    assert item["name"] == "Keep me" and item["deleted_by"]["id"] == owner.user_id
    assert item["expires_at"] > item["deleted_at"]
    restored = await api.call("POST", f"/api/trash/{item['id']}/restore", owner, expect=200)
    # the deletion and the restore are the row's next two writes (its _version, docs/api.md)
    assert restored == {**row, "_updated_at": restored["_updated_at"], "_version": 3}
    assert await api.call("GET", path, owner, expect=200) == restored
    # restore twice: the item is gone, 404
    again = await api.call("POST", f"/api/trash/{item['id']}/restore", owner, expect=404)
    assert again["error"]["code"] == "not_found"
    history = await api.call("GET", f"{path}/history", owner, expect=200)
    assert [i["action"] for i in history["items"]] == ["restored", "deleted", "created"]
    assert history["items"][1]["changes"]["name"] == {"before": "Keep me", "after": None}


async def test_restore_conflicts_name_the_column(api, owner, create_table):
    await create_table(owner, "deals", COLUMNS)
    row = await api.call("POST", "/api/data/deals", owner, expect=201, json={"code": "x"})
    await api.call("DELETE", f"/api/data/deals/{row['id']}", owner, expect=204)
    await api.call("POST", "/api/data/deals", owner, expect=201, json={"code": "x"})
    (item,) = (await _trash(api, owner))["items"]
    taken = await api.call("POST", f"/api/trash/{item['id']}/restore", owner, expect=409)
    assert taken["error"]["details"] == [
        {"field": "code", "message": "already used by another row"}
    ]
    assert (await _trash(api, owner))["total"] == 1  # still there to restore later


async def test_a_row_comes_back_without_a_column_deleted_since(api, owner, create_table):
    await create_table(owner, "deals", COLUMNS)
    row = await api.call(
        "POST", "/api/data/deals", owner, expect=201, json={"name": "n", "extra": 5}
    )
    await api.call("DELETE", f"/api/data/deals/{row['id']}", owner, expect=204)
    await api.call("DELETE", "/api/meta/tables/deals/columns/extra", owner, expect=200)
    (item,) = (await _trash(api, owner, kind="row"))["items"]
    restored = await api.call("POST", f"/api/trash/{item['id']}/restore", owner, expect=200)
    assert restored["name"] == "n" and "extra" not in restored


async def test_bulk_delete_goes_to_the_trash_and_comes_back_as_a_batch(api, owner, create_table):
    await create_table(owner, "deals", COLUMNS)
    rows = await api.call(
        "POST",
        "/api/data/deals/bulk",
        owner,
        expect=201,
        json={"items": [{"name": str(i)} for i in range(5)]},
    )
    ids = [r["id"] for r in rows["items"]]
    gone = await api.call(
        "POST", "/api/data/deals/bulk-delete", owner, expect=200, json={"ids": ids[:3]}
    )
    assert gone == {"deleted": 3}
    by_filter = await api.call(
        "POST",
        "/api/data/deals/bulk-delete",
        owner,
        expect=200,
        json={"filters": [{"field": "name", "op": "eq", "value": "4"}]},
    )
    assert by_filter == {"deleted": 1}
    trash = await _trash(api, owner, kind="row", table="deals")
    assert trash["total"] == 4
    item_ids = [i["id"] for i in trash["items"]]
    restored = await api.call(
        "POST", "/api/trash/restore", owner, expect=200, json={"ids": item_ids}
    )
    assert sorted(r["id"] for r in restored["items"]) == sorted([*ids[:3], ids[4]])
    assert (await api.call("GET", "/api/data/deals", owner, expect=200))["total"] == 5
    missing = await api.call(
        "POST", "/api/trash/restore", owner, expect=404, json={"ids": item_ids[:1]}
    )
    assert missing["error"]["details"] == [{"field": "ids.0", "message": "not in the trash"}]
    bad = await api.call("POST", "/api/trash/restore", owner, expect=400, json={"ids": ["x"]})
    assert bad["error"]["details"][0]["field"] == "ids.0"


async def test_purge_is_final(api, owner, client, create_table):
    await create_table(owner, "deals", COLUMNS)
    row = await api.call("POST", "/api/data/deals", owner, expect=201, json={"name": "a"})
    await api.call("DELETE", f"/api/data/deals/{row['id']}", owner, expect=204)
    (item,) = (await _trash(api, owner))["items"]
    await api.call("DELETE", f"/api/trash/{item['id']}", owner, expect=204)
    await api.call("DELETE", f"/api/trash/{item['id']}", owner, expect=404)
    assert await tenant_db(client, owner)["_trash"].count_documents({}) == 0


async def test_the_trash_follows_the_table_access(api, owner, create_table, create_user):
    await create_table(owner, "deals", COLUMNS)
    row = await api.call("POST", "/api/data/deals", owner, expect=201, json={"name": "a"})
    await api.call("DELETE", f"/api/data/deals/{row['id']}", owner, expect=204)
    (item,) = (await _trash(api, owner))["items"]
    viewer = await create_user(owner, "viewer")
    assert (await _trash(api, viewer)) == {"items": [], "total": 0, "next_cursor": None}
    await api.call("POST", f"/api/trash/{item['id']}/restore", viewer, expect=404)
    await api.call("DELETE", f"/api/trash/{item['id']}", viewer, expect=404)
    stranger = await api.register()
    await api.call("POST", f"/api/trash/{item['id']}/restore", stranger, expect=404)
    # a read share is not enough to restore: the trash lists what the caller may write
    await api.call(
        "POST",
        "/api/shares",
        owner,
        expect=201,
        json={"table": "deals", "user_id": viewer.user_id, "access": "read"},
    )
    assert (await _trash(api, viewer))["total"] == 0


async def test_links_to_a_trashed_row_are_cleared_and_lookups_miss_it(api, owner, create_table):
    await create_table(owner, "firms", [{"key": "name", "type": "string"}])
    await create_table(owner, "deals", [{"key": "firm", "type": "link", "table": "firms"}])
    firm = await api.call("POST", "/api/data/firms", owner, expect=201, json={"name": "F"})
    deal = await api.call("POST", "/api/data/deals", owner, expect=201, json={"firm": firm["id"]})
    await api.call("DELETE", f"/api/data/firms/{firm['id']}", owner, expect=204)
    stored = await api.call("GET", f"/api/data/deals/{deal['id']}?expand=firm", owner, expect=200)
    assert "firm" not in stored
