"""Round 3's races (issue #21 trash and history, #23 column types): many clients at once on the
same trash item, column or row, then everything read back: rows, `_history`, `_trash`, the
table's indexes."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from bson import ObjectId

from crm_core.tables.meta import unique_index_name
from crm_core.tables.trash import TRASH, TrashService
from tests.support.api import Account, Api, rows_of, tenant_db

N = 20
COLUMNS = [
    {"key": "name", "type": "string"},
    {"key": "code", "type": "string", "unique": True},
]


async def _status(api: Api, method: str, path: str, account: Account, **kw: Any) -> int:
    resp = await api.client.request(method, path, headers=account.headers, **kw)
    await resp.read()
    return resp.status


async def _unique_holds(api: Api, owner: Account, table: str, column: str) -> None:
    """The column's unique index is there and a repeated value is a 409 naming it."""
    collection = await rows_of(api.client, owner, table)
    assert unique_index_name(column) in await collection.index_information()
    await api.call("POST", f"/api/data/{table}", owner, expect=201, json={column: "dup"})
    taken = await api.call("POST", f"/api/data/{table}", owner, expect=409, json={column: "dup"})
    assert column in taken["error"]["message"]


async def test_concurrent_restores_of_a_unique_column_keep_its_index(api, owner, create_table):
    await create_table(owner, "deals", COLUMNS)
    for i in range(5):
        await api.call("POST", "/api/data/deals", owner, expect=201, json={"code": f"c{i}"})
    await api.call("DELETE", "/api/meta/tables/deals/columns/code", owner, expect=200)
    page = await api.call("GET", "/api/trash?kind=column", owner, expect=200)
    (item,) = page["items"]
    statuses = await asyncio.gather(
        *(_status(api, "POST", f"/api/trash/{item['id']}/restore", owner) for _ in range(N))
    )
    assert statuses.count(200) == 1, statuses
    assert set(statuses) <= {200, 404, 409}, statuses
    meta = await api.call("GET", "/api/meta/tables/deals", owner, expect=200)
    assert [c["key"] for c in meta["columns"]].count("code") == 1
    rows = (await api.call("GET", "/api/data/deals", owner, expect=200))["items"]
    assert sorted(r["code"] for r in rows) == [f"c{i}" for i in range(5)]
    await _unique_holds(api, owner, "deals", "code")
    db = tenant_db(api.client, owner)
    assert await db[TRASH].count_documents({}) == 0


async def test_concurrent_adds_of_the_same_unique_column_keep_its_index(api, owner, create_table):
    await create_table(owner, "deals", [{"key": "name", "type": "string"}])
    body = {"key": "code", "type": "string", "unique": True}
    statuses = await asyncio.gather(
        *(
            _status(api, "POST", "/api/meta/tables/deals/columns", owner, json=body)
            for _ in range(N)
        )
    )
    assert statuses.count(201) == 1, statuses
    assert set(statuses) <= {201, 409}, statuses
    await _unique_holds(api, owner, "deals", "code")


async def test_concurrent_adds_of_the_same_autonumber_column_keep_its_numbers(
    api, owner, create_table
):
    await create_table(owner, "deals", [{"key": "name", "type": "string"}])
    for i in range(5):
        await api.call("POST", "/api/data/deals", owner, expect=201, json={"name": f"r{i}"})
    body = {"key": "no", "type": "autonumber"}
    statuses = await asyncio.gather(
        *(
            _status(api, "POST", "/api/meta/tables/deals/columns", owner, json=body)
            for _ in range(N)
        )
    )
    assert statuses.count(201) == 1, statuses
    rows = (await api.call("GET", "/api/data/deals?limit=100", owner, expect=200))["items"]
    numbers = [r.get("no") for r in rows]
    # every row keeps a number of its own (the losers once cleared the winner's)
    assert all(isinstance(n, int) for n in numbers) and len(set(numbers)) == 5, numbers
    await _unique_numbers_continue(api, owner, numbers)


async def _unique_numbers_continue(api: Api, owner: Account, numbers: list[int]) -> None:
    created = await api.call("POST", "/api/data/deals", owner, expect=201, json={"name": "new"})
    assert created["no"] > max(numbers)


async def test_concurrent_patches_making_a_column_unique_keep_its_index(api, owner, create_table):
    await create_table(owner, "deals", [{"key": "code", "type": "string"}])
    path = "/api/meta/tables/deals/columns/code"
    statuses = await asyncio.gather(
        *(_status(api, "PATCH", path, owner, json={"unique": True}) for _ in range(N))
    )
    assert set(statuses) <= {200, 409} and 200 in statuses, statuses
    meta = await api.call("GET", "/api/meta/tables/deals", owner, expect=200)
    assert meta["columns"][0]["unique"] is True
    await _unique_holds(api, owner, "deals", "code")


# ---- rows: restores and reverts at once, restores racing a column's delete -----------------


async def _history_is_one_chain(api: Api, owner: Account, table: str, row_id: str) -> list[dict]:
    """The row's revisions: one per `seq`, 1..n, the last matching the stored `_rev`."""
    db = tenant_db(api.client, owner)
    seqs = sorted([d["seq"] async for d in db["_history"].find({"row": ObjectId(row_id)})])
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    stored = await (await rows_of(api.client, owner, table)).find_one({"_id": ObjectId(row_id)})
    assert stored is not None and stored["_rev"] == seqs[-1]
    page = await api.call("GET", f"/api/data/{table}/{row_id}/history?limit=100", owner, expect=200)
    return page["items"]


async def test_twenty_restores_of_one_row_put_it_back_once(api, owner, create_table):
    await create_table(owner, "deals", COLUMNS)
    row = await api.call("POST", "/api/data/deals", owner, expect=201, json={"name": "a"})
    await api.call("DELETE", f"/api/data/deals/{row['id']}", owner, expect=204)
    (item,) = (await api.call("GET", "/api/trash", owner, expect=200))["items"]
    path = f"/api/trash/{item['id']}/restore"
    bulk = "/api/trash/restore"
    statuses = await asyncio.gather(
        *(_status(api, "POST", path, owner) for _ in range(N // 2)),
        *(_status(api, "POST", bulk, owner, json={"ids": [item["id"]] * 3}) for _ in range(N // 2)),
    )
    assert statuses.count(200) == 1 and set(statuses) <= {200, 404, 409}, statuses
    rows = (await api.call("GET", "/api/data/deals", owner, expect=200))["items"]
    assert [r["id"] for r in rows] == [row["id"]]
    items = await _history_is_one_chain(api, owner, "deals", row["id"])
    assert [i["action"] for i in items] == ["restored", "deleted", "created"]
    assert await tenant_db(api.client, owner)[TRASH].count_documents({}) == 0


async def test_twenty_reverts_at_once_leave_one_chain_of_revisions(api, owner, create_table):
    await create_table(owner, "deals", COLUMNS)
    row = await api.call("POST", "/api/data/deals", owner, expect=201, json={"name": "v0"})
    path = f"/api/data/deals/{row['id']}"
    for i in range(1, 4):
        await api.call("PATCH", path, owner, expect=200, json={"name": f"v{i}"})
    items = await _history_is_one_chain(api, owner, "deals", row["id"])
    by_value = {i["changes"]["name"]["after"]: i["id"] for i in items}
    reverts = [
        _status(api, "POST", f"{path}/history/{by_value[f'v{i % 4}']}/revert", owner)
        for i in range(N)
    ]
    statuses = await asyncio.gather(*reverts)
    assert set(statuses) == {200}, statuses
    items = await _history_is_one_chain(api, owner, "deals", row["id"])
    ordered = list(reversed(items))
    for earlier, later in itertools.pairwise(ordered):
        assert later["changes"]["name"]["before"] == earlier["changes"]["name"]["after"]
    stored = await api.call("GET", path, owner, expect=200)
    assert stored["name"] == ordered[-1]["changes"]["name"]["after"]


async def test_row_restores_racing_a_column_delete_leave_no_value_of_it(
    api, client, owner, create_table
):
    await create_table(owner, "deals", COLUMNS)
    ids = []
    for i in range(N):
        row = await api.call(
            "POST", "/api/data/deals", owner, expect=201, json={"name": f"r{i}", "code": f"c{i}"}
        )
        ids.append(row["id"])
    await api.call("POST", "/api/data/deals/bulk-delete", owner, expect=200, json={"ids": ids})
    items = (await api.call("GET", "/api/trash?limit=100", owner, expect=200))["items"]
    assert len(items) == N
    restores = [
        asyncio.create_task(_status(api, "POST", f"/api/trash/{i['id']}/restore", owner))
        for i in items
    ]
    await asyncio.sleep(0)
    await api.call("DELETE", "/api/meta/tables/deals/columns/code", owner, expect=200)
    statuses = await asyncio.gather(*restores)
    assert set(statuses) <= {200, 409}, statuses
    rows = await rows_of(client, owner, "deals")
    assert await rows.count_documents({"code": {"$exists": True}}) == 0
    listed = (await api.call("GET", "/api/data/deals?limit=100", owner, expect=200))["items"]
    assert len({r["id"] for r in listed}) == len(listed) == statuses.count(200)


async def test_a_row_restore_validated_before_a_column_delete_keeps_no_value_of_it(
    api, client, owner, create_table, monkeypatch
):
    """The restore loaded the table (with the column) before the delete's pass unset the
    values, and inserts after it: the row must not bring the deleted column's value back."""
    await create_table(owner, "deals", COLUMNS)
    row = await api.call(
        "POST", "/api/data/deals", owner, expect=201, json={"name": "a", "code": "X"}
    )
    await api.call("DELETE", f"/api/data/deals/{row['id']}", owner, expect=204)
    (item,) = (await api.call("GET", "/api/trash", owner, expect=200))["items"]
    loaded, release = asyncio.Event(), asyncio.Event()
    original = TrashService._restore_row

    async def held(self, ctx, table, trash_item):
        loaded.set()
        await release.wait()
        return await original(self, ctx, table, trash_item)

    monkeypatch.setattr(TrashService, "_restore_row", held)
    restore = asyncio.create_task(_status(api, "POST", f"/api/trash/{item['id']}/restore", owner))
    await loaded.wait()
    await api.call("DELETE", "/api/meta/tables/deals/columns/code", owner, expect=200)
    release.set()
    assert await restore == 200
    stored = await (await rows_of(client, owner, "deals")).find_one({"_id": ObjectId(row["id"])})
    assert stored is not None and "code" not in stored, stored
    got = await api.call("GET", f"/api/data/deals/{row['id']}", owner, expect=200)
    assert "code" not in got


async def test_a_row_restored_after_its_column_changed_type_keeps_no_value_of_the_old_type(
    api, client, owner, create_table
):
    await create_table(
        owner,
        "deals",
        [
            {"key": "name", "type": "string"},
            {"key": "v", "type": "string"},
            {"key": "d", "type": "date"},
        ],
    )
    kept = await api.call(
        "POST",
        "/api/data/deals",
        owner,
        expect=201,
        json={"name": "k", "v": "12", "d": "2026-01-02"},
    )
    gone = await api.call(
        "POST",
        "/api/data/deals",
        owner,
        expect=201,
        json={"name": "g", "v": "abc", "d": "2026-01-03"},
    )
    for row in (kept, gone):
        await api.call("DELETE", f"/api/data/deals/{row['id']}", owner, expect=204)
    await api.call(
        "PATCH", "/api/meta/tables/deals/columns/v", owner, expect=200, json={"type": "integer"}
    )
    items = (await api.call("GET", "/api/trash", owner, expect=200))["items"]
    for item in items:
        await api.call("POST", f"/api/trash/{item['id']}/restore", owner, expect=200)
    rows = await rows_of(client, owner, "deals")
    async for stored in rows.find({}):
        assert not isinstance(stored.get("v"), str), stored
    listed = {
        r["name"]: r for r in (await api.call("GET", "/api/data/deals", owner, expect=200))["items"]
    }
    assert listed["k"]["d"] == kept["d"] and listed["g"]["d"] == gone["d"]  # other columns whole
    assert listed["k"].get("v") in (12, None) and "v" not in listed["g"]


async def test_twenty_writers_while_a_column_is_restored(api, client, owner, create_table):
    await create_table(owner, "deals", COLUMNS)
    ids = []
    for i in range(5):
        row = await api.call(
            "POST", "/api/data/deals", owner, expect=201, json={"name": f"r{i}", "code": f"c{i}"}
        )
        ids.append(row["id"])
    await api.call("DELETE", "/api/meta/tables/deals/columns/code", owner, expect=200)
    (item,) = (await api.call("GET", "/api/trash?kind=column", owner, expect=200))["items"]

    async def write(n: int) -> int:
        if n % 2:
            return await _status(api, "POST", "/api/data/deals", owner, json={"name": f"new{n}"})
        path = f"/api/data/deals/{ids[n % 5]}"
        return await _status(api, "PATCH", path, owner, json={"name": f"w{n}"})

    writers = [asyncio.create_task(write(n)) for n in range(N)]
    await asyncio.sleep(0)
    await api.call("POST", f"/api/trash/{item['id']}/restore", owner, expect=200)
    statuses = await asyncio.gather(*writers)
    assert set(statuses) <= {200, 201}, statuses
    listed = (await api.call("GET", "/api/data/deals?limit=100", owner, expect=200))["items"]
    assert len(listed) == 5 + N // 2 == len({r["id"] for r in listed})
    codes = {r["id"]: r.get("code") for r in listed}
    assert [codes[i] for i in ids] == [f"c{i}" for i in range(5)]  # every value came back
    for row_id in ids:
        await _history_is_one_chain(api, owner, "deals", row_id)
    await _unique_holds(api, owner, "deals", "code")


# ---- schema items: twenty deletes of one column, twenty restores of one table ---------------


async def test_twenty_deletes_of_one_column_put_one_item_in_the_trash(api, owner, create_table):
    await create_table(owner, "deals", COLUMNS)
    for i in range(5):
        await api.call("POST", "/api/data/deals", owner, expect=201, json={"code": f"c{i}"})
    path = "/api/meta/tables/deals/columns/code"
    statuses = await asyncio.gather(*(_status(api, "DELETE", path, owner) for _ in range(N)))
    assert statuses.count(200) == 1 and set(statuses) <= {200, 404, 409}, statuses
    db = tenant_db(api.client, owner)
    assert await db[TRASH].count_documents({"kind": "column"}) == 1
    assert await db[TRASH].count_documents({"kind": "column_value"}) == 5
    (item,) = (await api.call("GET", "/api/trash?kind=column", owner, expect=200))["items"]
    await api.call("POST", f"/api/trash/{item['id']}/restore", owner, expect=200)
    rows = (await api.call("GET", "/api/data/deals", owner, expect=200))["items"]
    assert sorted(r["code"] for r in rows) == [f"c{i}" for i in range(5)]
    await _unique_holds(api, owner, "deals", "code")


async def test_twenty_restores_of_one_table_bring_it_back_once(api, owner, create_table):
    await create_table(owner, "deals", COLUMNS)
    for i in range(5):
        await api.call("POST", "/api/data/deals", owner, expect=201, json={"code": f"c{i}"})
    await api.call("DELETE", "/api/meta/tables/deals", owner, expect=204)
    (item,) = (await api.call("GET", "/api/trash?kind=table", owner, expect=200))["items"]
    path = f"/api/trash/{item['id']}/restore"
    statuses = await asyncio.gather(*(_status(api, "POST", path, owner) for _ in range(N)))
    assert statuses.count(200) == 1 and set(statuses) <= {200, 404, 409}, statuses
    tables = await api.call("GET", "/api/meta/tables", owner, expect=200)
    assert [t["key"] for t in tables["items"]].count("deals") == 1
    rows = (await api.call("GET", "/api/data/deals", owner, expect=200))["items"]
    assert sorted(r["code"] for r in rows) == [f"c{i}" for i in range(5)]
    await _unique_holds(api, owner, "deals", "code")
    assert await tenant_db(api.client, owner)[TRASH].count_documents({}) == 0
