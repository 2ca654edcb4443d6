"""Schema changes that never corrupt data (issue #29 §1-§4). Where timing would decide, a hook
holds one side at the moment that matters: a writer is held after its values were validated
(`RowService.check_rules`), the type change at its first conversion write (`update_each`),
until the other side has done what the case is about."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote

import pytest

from crm_core.tables import meta as meta_module
from tests.support.api import rows_of, tenant_db
from tests.support.concurrency import HeldWriter
from tests.support.waits import until


async def _table(api, owner, columns: list[dict[str, Any]], key: str = "t") -> None:
    await api.call(
        "POST", "/api/meta/tables", owner, expect=201, json={"key": key, "columns": columns}
    )


async def _rows(api, owner, items: list[dict[str, Any]], key: str = "t") -> list[str]:
    created = await api.call(
        "POST", f"/api/data/{key}/bulk", owner, expect=201, json={"items": items}
    )
    return [r["id"] for r in created["items"]]


async def _count_gte(api, owner, value: int) -> int:
    flt = quote(json.dumps([{"field": "v", "op": "gte", "value": value}]))
    page = await api.call("GET", f"/api/data/t?filters={flt}&limit=1", owner, expect=200)
    return int(page["total"])


async def _until(condition) -> None:
    """Wait for a condition another task makes true (bounded: a hang fails the test)."""
    await until(condition, "the condition", interval=0.005)


def hold_conversion(monkeypatch, during) -> None:
    """Run `during()` at the type change's first conversion write, then go on."""
    original = meta_module.update_each
    done = []

    async def hooked(collection, updates, ordered=True):
        if not done:
            done.append(True)
            await during()
        await original(collection, updates, ordered=ordered)

    monkeypatch.setattr(meta_module, "update_each", hooked)


async def _types(client, owner, key: str = "t", column: str = "v") -> set[str]:
    rows = await (await rows_of(client, owner, key)).find({column: {"$exists": True}}).to_list(None)
    return {type(r[column]).__name__ for r in rows}


# ---- §1 writes fenced by the definition they were validated against -----------------------


async def test_a_row_created_during_a_type_change_is_converted(api, client, owner, monkeypatch):
    await _table(api, owner, [{"key": "v", "type": "integer"}])
    await _rows(api, owner, [{"v": i} for i in range(20)])
    writer = HeldWriter(monkeypatch)
    create = asyncio.create_task(
        api.call("POST", "/api/data/t", owner, json={"v": 777})  # validated as an integer
    )
    await writer.reached.wait()
    rows = await rows_of(client, owner, "t")

    async def during() -> None:
        writer.release.set()  # the create lands after the conversion read the rows
        await _until(lambda: rows.count_documents({"v": 777}))

    hold_conversion(monkeypatch, during)
    await api.call(
        "PATCH", "/api/meta/tables/t/columns/v", owner, expect=200, json={"type": "string"}
    )
    created = await create
    assert created["v"] == "777"
    assert await _types(client, owner) == {"str"}
    assert await rows.count_documents({}) == 21


async def test_a_row_updated_during_a_type_change_keeps_its_value_converted(
    api, client, owner, monkeypatch
):
    await _table(api, owner, [{"key": "v", "type": "integer"}])
    ids = await _rows(api, owner, [{"v": i} for i in range(20)])
    writer = HeldWriter(monkeypatch)
    update = asyncio.create_task(api.call("PATCH", f"/api/data/t/{ids[0]}", owner, json={"v": 777}))
    await writer.reached.wait()
    rows = await rows_of(client, owner, "t")

    async def during() -> None:
        writer.release.set()
        await _until(lambda: rows.count_documents({"v": 777}))

    hold_conversion(monkeypatch, during)
    await api.call(
        "PATCH", "/api/meta/tables/t/columns/v", owner, expect=200, json={"type": "string"}
    )
    assert (await update)["v"] == "777"
    # the update answered 200 is kept (not overwritten by the conversion), as a string
    got = await api.call("GET", f"/api/data/t/{ids[0]}", owner, expect=200)
    assert got["v"] == "777"
    assert await _types(client, owner) == {"str"}


async def test_a_write_validated_before_a_whole_type_change_converts_itself(
    api, client, owner, monkeypatch
):
    await _table(api, owner, [{"key": "v", "type": "string"}])
    await _rows(api, owner, [{"v": str(i)} for i in range(5)])
    writer = HeldWriter(monkeypatch)
    create = asyncio.create_task(api.call("POST", "/api/data/t", owner, json={"v": "42"}))
    await writer.reached.wait()
    await api.call(
        "PATCH", "/api/meta/tables/t/columns/v", owner, expect=200, json={"type": "integer"}
    )
    writer.release.set()  # lands after the change and its last pass
    created = await create
    assert created["v"] == 42
    assert await _types(client, owner) == {"int"}
    assert await _count_gte(api, owner, 0) == 6


async def test_a_value_the_new_type_cannot_hold_is_not_kept_and_the_writer_is_told(
    api, client, owner, monkeypatch
):
    await _table(api, owner, [{"key": "v", "type": "string"}, {"key": "w", "type": "string"}])
    await _rows(api, owner, [{"v": "1"}])
    writer = HeldWriter(monkeypatch)
    create = asyncio.create_task(
        api.call("POST", "/api/data/t", owner, json={"v": "not a number", "w": "kept"})
    )
    await writer.reached.wait()
    await api.call(
        "PATCH", "/api/meta/tables/t/columns/v", owner, expect=200, json={"type": "integer"}
    )
    writer.release.set()
    answer = await create
    assert answer["error"]["code"] == "schema_changing"
    assert answer["error"]["details"][0]["field"] == "v"
    stored = await (await rows_of(client, owner, "t")).find_one({"w": "kept"})
    assert "v" not in stored
    assert await _types(client, owner) == {"int"}


async def test_a_write_during_a_running_change_waits_then_answers_409_with_retry_after(
    api, client, owner, monkeypatch
):
    monkeypatch.setattr("crm_core.tables.fence.WAIT_SECONDS", 0.05)
    await _table(api, owner, [{"key": "v", "type": "integer"}, {"key": "w", "type": "string"}])
    ids = await _rows(api, owner, [{"v": i} for i in range(5)])
    answers: list[Any] = []

    async def during() -> None:
        resp = await client.patch(f"/api/data/t/{ids[0]}", json={"v": 9}, headers=owner.headers)
        answers.append((resp.status, resp.headers.get("Retry-After"), await resp.json()))
        # a column the change does not touch is written at once
        other = await client.patch(f"/api/data/t/{ids[1]}", json={"w": "x"}, headers=owner.headers)
        answers.append((other.status, None, await other.json()))

    hold_conversion(monkeypatch, during)
    await api.call(
        "PATCH", "/api/meta/tables/t/columns/v", owner, expect=200, json={"type": "string"}
    )
    (status, retry, body), (other_status, _, _) = answers
    assert status == 409 and retry == "1"
    assert body["error"]["code"] == "schema_changing"
    assert body["error"]["details"] == [
        {"field": "v", "message": "a schema change of this column is running"}
    ]
    assert other_status == 200
    got = await api.call("GET", f"/api/data/t/{ids[0]}", owner, expect=200)
    assert got["v"] == "0"
    # once the change is done the same write goes through, validated against the new type
    again = await api.call("PATCH", f"/api/data/t/{ids[0]}", owner, expect=200, json={"v": "9"})
    assert again["v"] == "9"


@pytest.mark.parametrize(
    ("start", "target", "kind"), [("integer", "string", "str"), ("string", "integer", "int")]
)
async def test_ten_writers_during_a_type_change_leave_no_value_of_the_old_type(
    api, client, owner, start, target, kind
):
    await _table(api, owner, [{"key": "v", "type": start}])
    value = (lambda i: i) if start == "integer" else str
    ids = await _rows(api, owner, [{"v": value(i)} for i in range(400)])

    async def writer(n: int) -> None:
        for i in range(n, 400, 10):
            resp = await client.patch(
                f"/api/data/t/{ids[i]}", json={"v": value(i)}, headers=owner.headers
            )
            # 400: the value sent no longer fits the column's new type
            assert resp.status in (200, 400, 409), await resp.text()

    change = api.call(
        "PATCH", "/api/meta/tables/t/columns/v", owner, expect=200, json={"type": target}
    )
    await asyncio.gather(change, *(writer(n) for n in range(10)))
    assert await _types(client, owner) == {kind}
    if target == "integer":
        assert await _count_gte(api, owner, 0) == 400


# ---- §2 type changes are all or nothing -----------------------------------------------------


async def test_a_type_change_that_collides_in_a_unique_column_changes_nothing(api, client, owner):
    await _table(api, owner, [{"key": "code", "type": "string", "unique": True}])
    ids = await _rows(api, owner, [{"code": c} for c in ("1", "01", "2", "3")])
    refused = await api.call(
        "PATCH", "/api/meta/tables/t/columns/code", owner, expect=409, json={"type": "integer"}
    )
    detail = refused["error"]["details"][0]
    assert detail["field"] == "code" and detail["repeated_values"] == 1
    assert detail["value"] == 1 and sorted(detail["row_ids"]) == sorted(ids[:2])
    stored = await (await rows_of(client, owner, "t")).find().sort("_id", 1).to_list(None)
    assert [r["code"] for r in stored] == ["1", "01", "2", "3"]
    table = await api.call("GET", "/api/meta/tables/t", owner, expect=200)
    assert table["columns"][0]["type"] == "string"
    assert "changing" not in await tenant_db(client, owner)["_tables"].find_one({"key": "t"})


async def test_a_conversion_that_fails_half_way_is_undone(api, client, owner, monkeypatch):
    monkeypatch.setattr(meta_module, "CONVERSION_BATCH", 2)
    await _table(api, owner, [{"key": "v", "type": "integer"}])
    await _rows(api, owner, [{"v": i} for i in range(6)])
    original = meta_module.update_each
    calls = []

    async def failing(collection, updates, ordered=True):
        calls.append(len(updates))
        if len(calls) == 2:  # the second batch of the conversion fails
            raise meta_module.DuplicateKeyError("E11000 duplicate key error")
        await original(collection, updates, ordered=ordered)

    monkeypatch.setattr(meta_module, "update_each", failing)
    refused = await api.call(
        "PATCH", "/api/meta/tables/t/columns/v", owner, expect=409, json={"type": "string"}
    )
    assert "undone" in refused["error"]["message"]
    assert await _types(client, owner) == {"int"}
    table = await api.call("GET", "/api/meta/tables/t", owner, expect=200)
    assert table["columns"][0]["type"] == "integer"
    # the table takes writes again: the change's marker is gone
    await api.call("POST", "/api/data/t", owner, expect=201, json={"v": 7})


# ---- §3 index changes never open a gap -----------------------------------------------------


async def test_indexing_a_unique_column_never_drops_its_unique_index(
    api, client, owner, monkeypatch
):
    await _table(api, owner, [{"key": "code", "type": "string", "unique": True}])
    await _rows(api, owner, [{"code": "a"}])
    during: list[int] = []
    original = meta_module.MetaService._create_indexes

    async def hooked(service, ctx, table, column):
        resp = await client.post("/api/data/t", json={"code": "a"}, headers=owner.headers)
        during.append(resp.status)
        await original(service, ctx, table, column)

    monkeypatch.setattr(meta_module.MetaService, "_create_indexes", hooked)
    await api.call(
        "PATCH", "/api/meta/tables/t/columns/code", owner, expect=200, json={"indexed": True}
    )
    assert 201 not in during
    indexes = await (await rows_of(client, owner, "t")).index_information()
    assert indexes["u_code"]["unique"] is True
    await api.call("POST", "/api/data/t", owner, expect=409, json={"code": "a"})
    await api.call(
        "PATCH", "/api/meta/tables/t/columns/code", owner, expect=200, json={"indexed": False}
    )
    await api.call("POST", "/api/data/t", owner, expect=409, json={"code": "a"})


async def test_a_uniqueness_the_data_breaks_is_reported_and_never_claimed(api, client, owner):
    await _table(api, owner, [{"key": "code", "type": "string", "indexed": True}])
    ids = await _rows(api, owner, [{"code": c} for c in ("a", "a", "b")])
    refused = await api.call(
        "PATCH", "/api/meta/tables/t/columns/code", owner, expect=409, json={"unique": True}
    )
    detail = refused["error"]["details"][0]
    assert detail["field"] == "unique" and detail["repeated_values"] == 1
    assert detail["value"] == "a" and sorted(detail["row_ids"]) == sorted(ids[:2])
    table = await api.call("GET", "/api/meta/tables/t", owner, expect=200)
    assert table["columns"][0]["unique"] is False
    indexes = await (await rows_of(client, owner, "t")).index_information()
    assert "u_code" not in indexes and "i_code" in indexes  # the old index stays


# ---- §4 tables are created whole -----------------------------------------------------------


async def test_rows_written_the_moment_a_table_appears_are_kept(api, client, owner, monkeypatch):
    from crm_core.platform.storage import EmbeddedDatabase

    statuses: list[int] = []
    original = EmbeddedDatabase.drop_collection

    async def write_first(self, *args, **kwargs):
        # the definition is visible: a client writes before the collection is (re)made
        resp = await client.post("/api/data/t", json={"code": "x"}, headers=owner.headers)
        statuses.append(resp.status)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(EmbeddedDatabase, "drop_collection", write_first)
    await _table(api, owner, [{"key": "code", "type": "string", "unique": True}])
    monkeypatch.setattr(EmbeddedDatabase, "drop_collection", original)
    page = await api.call("GET", "/api/data/t", owner, expect=200)
    assert page["total"] == statuses.count(201)
    indexes = await (await rows_of(client, owner, "t")).index_information()
    assert indexes["u_code"]["unique"] is True


async def test_concurrent_creates_of_one_key_make_one_whole_table(api, client, owner):
    body = {"key": "t", "columns": [{"key": "code", "type": "string", "unique": True}]}
    answers = await asyncio.gather(
        *(client.post("/api/meta/tables", json=body, headers=owner.headers) for _ in range(5))
    )
    assert sorted(a.status for a in answers) == [201, 409, 409, 409, 409]
    db = tenant_db(client, owner)
    stored = await db["_tables"].find({"key": "t"}).to_list(None)
    assert len(stored) == 1
    names = [n for n in await db.list_collection_names() if n.startswith("rows.")]
    builtin = await db["_tables"].count_documents({"builtin": True})
    assert len(names) == builtin + 1  # the losers left no collection behind
    indexes = await db[stored[0]["collection"]].index_information()
    assert indexes["u_code"]["unique"] is True


async def test_a_table_recreated_with_the_same_key_starts_empty(api, client, owner):
    await _table(api, owner, [{"key": "code", "type": "string"}])
    await _rows(api, owner, [{"code": "old"}])
    first = await tenant_db(client, owner)["_tables"].find_one({"key": "t"})
    await api.call("DELETE", "/api/meta/tables/t", owner, expect=204)
    await _table(api, owner, [{"key": "code", "type": "string"}])
    second = await tenant_db(client, owner)["_tables"].find_one({"key": "t"})
    assert first["collection"] != second["collection"]
    assert (await api.call("GET", "/api/data/t", owner, expect=200))["total"] == 0


async def test_a_write_that_lands_after_its_table_was_deleted_is_removed(
    api, client, owner, monkeypatch
):
    await _table(api, owner, [{"key": "code", "type": "string"}])
    first = await tenant_db(client, owner)["_tables"].find_one({"key": "t"})
    writer = HeldWriter(monkeypatch)
    create = asyncio.create_task(api.call("POST", "/api/data/t", owner, json={"code": "late"}))
    await writer.reached.wait()
    await api.call("DELETE", "/api/meta/tables/t", owner, expect=204)
    await _table(api, owner, [{"key": "code", "type": "string"}])
    writer.release.set()
    answer = await create
    assert answer["error"]["code"] == "not_found"
    db = tenant_db(client, owner)
    assert await db[first["collection"]].count_documents({}) == 0
    assert (await api.call("GET", "/api/data/t", owner, expect=200))["total"] == 0


async def test_a_write_validated_before_its_column_was_deleted_does_not_keep_its_value(
    api, client, owner, monkeypatch
):
    await _table(api, owner, [{"key": "v", "type": "string"}, {"key": "n", "type": "integer"}])
    await _rows(api, owner, [{"v": "a", "n": 1}])
    writer = HeldWriter(monkeypatch)
    create = asyncio.create_task(api.call("POST", "/api/data/t", owner, json={"v": "b", "n": 2}))
    await writer.reached.wait()
    await api.call("DELETE", "/api/meta/tables/t/columns/v", owner, expect=200)
    writer.release.set()  # lands after the delete removed the column's values
    await create
    stored = (
        await (await rows_of(client, owner, "t")).find({}, {"_id": 0, "v": 1, "n": 1}).to_list(None)
    )
    assert sorted(stored, key=lambda r: r["n"]) == [{"n": 1}, {"n": 2}]


async def test_a_create_validated_before_a_column_with_a_default_was_added_gets_the_default(
    api, client, owner, monkeypatch
):
    await _table(api, owner, [{"key": "n", "type": "integer"}])
    await _rows(api, owner, [{"n": 1}])
    writer = HeldWriter(monkeypatch)
    create = asyncio.create_task(api.call("POST", "/api/data/t", owner, json={"n": 2}))
    await writer.reached.wait()
    column = {"key": "stage", "type": "string", "required": True, "default": "new"}
    await api.call("POST", "/api/meta/tables/t/columns", owner, expect=201, json=column)
    writer.release.set()  # lands after the add filled the rows it found
    await create
    rows = await api.call("GET", "/api/data/t?sort=n", owner, expect=200)
    assert [(r["n"], r["stage"]) for r in rows["items"]] == [(1, "new"), (2, "new")]


async def test_twenty_writers_while_a_column_is_deleted_leave_no_value_of_it(api, client, owner):
    await _table(api, owner, [{"key": "v", "type": "string"}, {"key": "n", "type": "integer"}])

    async def write(n: int):
        return await client.post("/api/data/t", json={"v": f"x{n}", "n": n}, headers=owner.headers)

    writers = [asyncio.create_task(write(n)) for n in range(20)]
    await asyncio.sleep(0)
    await api.call("DELETE", "/api/meta/tables/t/columns/v", owner, expect=200)
    answers = await asyncio.gather(*writers)
    assert {a.status for a in answers} <= {201, 400, 409}
    rows = rows_of(client, owner, "t")
    assert await (await rows).count_documents({"v": {"$exists": True}}) == 0
