"""Writers sending `If-Match` while the server converts a column (issue 28 §4, docs/history.md
"Changes the server makes"): a write racing the conversion either lands and is converted, or
answers 412; never a lost value, never a version without its revision. Where timing would
decide, the conversion is held at its bulk write until the writers have done what the case is
about."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from bson import ObjectId

from crm_core.tables import meta as meta_module
from handlers.routing import SERVICES
from tests.support.api import rows_of, tenant_db
from tests.support.concurrency import HeldWriter
from tests.support.history import replay

WRITERS = 20


def hold_each_batch(monkeypatch, before) -> None:
    """Run `before(n)` ahead of the conversion's n-th bulk write (n from 0)."""
    original = meta_module.update_each
    calls = [0]

    async def hooked(collection, updates, ordered=True):
        calls[0] += 1
        await before(calls[0] - 1)
        await original(collection, updates, ordered=ordered)

    monkeypatch.setattr(meta_module, "update_each", hooked)


async def _patch(client, account, row_id: str, version: int, body: dict[str, Any]):
    headers = {**account.headers, "If-Match": f'"{version}"'}
    resp = await client.patch(f"/api/data/t/{row_id}", json=body, headers=headers)
    return resp.status, await resp.json()


async def _contiguous(client, owner, ids: list[str]) -> None:
    """Each row's revisions are 1.._rev, one each, and fold into the stored values."""
    rows = await rows_of(client, owner, "t")
    history = tenant_db(client, owner)["_history"]
    for row_id in ids:
        stored = await rows.find_one({"_id": ObjectId(row_id)})
        found = history.find({"table": "t", "row": ObjectId(row_id)}).sort("seq", -1)
        revisions = [d async for d in found]
        assert [r["seq"] for r in revisions] == list(range(stored["_rev"], 0, -1)), row_id
        state = replay(revisions)
        assert state == {k: stored[k] for k in ("v", "w") if k in stored}, row_id


async def test_a_write_that_lands_before_the_conversion_is_converted_after_it(
    api, client, owner, monkeypatch
):
    await api.call(
        "POST",
        "/api/meta/tables",
        owner,
        expect=201,
        json={
            "key": "t",
            "columns": [{"key": "v", "type": "integer"}, {"key": "w", "type": "integer"}],
        },
    )
    row = await api.call("POST", "/api/data/t", owner, expect=201, json={"v": 5, "w": 0})
    landed: list[int] = []

    async def before(n: int) -> None:
        if n == 0:  # the conversion read the row at version 1; a client writes it first
            status, _ = await _patch(client, owner, row["id"], 1, {"w": 1})
            landed.append(status)

    hold_each_batch(monkeypatch, before)
    await api.call(
        "PATCH", "/api/meta/tables/t/columns/v", owner, expect=200, json={"type": "string"}
    )
    assert landed == [200]
    got = await api.call("GET", f"/api/data/t/{row['id']}", owner, expect=200)
    # the write kept, the value converted after it: a version more, with its revision
    assert got["w"] == 1 and got["v"] == "5" and got["_version"] == 3
    history = await api.call("GET", f"/api/data/t/{row['id']}/history", owner, expect=200)
    assert [i["actor"]["type"] for i in history["items"]] == ["system", "user", "user"]
    status, body = await _patch(client, owner, row["id"], 2, {"w": 2})
    assert status == 412 and body["error"]["details"][0]["current"] == 3
    await _contiguous(client, owner, [row["id"]])


async def test_twenty_writers_with_if_match_during_a_type_change_lose_nothing(
    api, client, owner, monkeypatch
):
    """Twenty writers each add one to a counter of their own row and of one shared row,
    read-modify-write with `If-Match` (a 412 reads again), while the conversion of another
    column runs by small batches: every increment that answered 200 is in the stored counter,
    every value is converted, and every row's history is contiguous and folds into it."""
    monkeypatch.setattr(meta_module, "CONVERSION_BATCH", 25)
    await api.call(
        "POST",
        "/api/meta/tables",
        owner,
        expect=201,
        json={
            "key": "t",
            "columns": [{"key": "v", "type": "integer"}, {"key": "w", "type": "integer"}],
        },
    )
    created = await api.call(
        "POST",
        "/api/data/t/bulk",
        owner,
        expect=201,
        json={"items": [{"v": i, "w": 0} for i in range(WRITERS + 1 + 200)]},
    )
    ids = [r["id"] for r in created["items"]]
    shared = ids[WRITERS]
    increments = {row_id: 0 for row_id in ids}
    started = asyncio.Event()
    writing = [0]

    async def increment(row_id: str) -> None:
        while True:
            resp = await client.get(f"/api/data/t/{row_id}", headers=owner.headers)
            row = await resp.json()
            status, body = await _patch(client, owner, row_id, row["_version"], {"w": row["w"] + 1})
            if status == 200:
                increments[row_id] += 1
                return
            assert status == 412, body
            assert body["error"]["details"][0]["current"] > row["_version"]

    async def writer(n: int) -> None:
        for _ in range(3):
            await increment(ids[n])
            await increment(shared)
            writing[0] += 1
            if writing[0] >= WRITERS:
                started.set()

    async def before(n: int) -> None:
        if n == 0:  # every writer has written once: the rest of them race the batches
            await started.wait()
        await asyncio.sleep(0)  # let the writers run between the batches

    hold_each_batch(monkeypatch, before)
    change = api.call(
        "PATCH", "/api/meta/tables/t/columns/v", owner, expect=200, json={"type": "string"}
    )
    await asyncio.gather(change, *(writer(n) for n in range(WRITERS)))
    stored = {str(r["_id"]): r async for r in (await rows_of(client, owner, "t")).find({})}
    assert {type(r["v"]) for r in stored.values()} == {str}
    assert stored[shared]["w"] == increments[shared] == 3 * WRITERS
    for n in range(WRITERS):
        assert stored[ids[n]]["w"] == increments[ids[n]] == 3
    # each written row: 1 (created) + its writes + 1 (the conversion)
    assert stored[shared]["_rev"] == 1 + 3 * WRITERS + 1
    assert all(stored[i]["_rev"] == 2 for i in ids[WRITERS + 1 :])
    await _contiguous(client, owner, ids)
    assert not [k for r in stored.values() for k in r if k.startswith("_system_")]
    # the crash marks a batch leaves are the recovery's: every revision is there already
    services = client.app[SERVICES]
    db = tenant_db(client, owner)
    assert await services.rows.changes.recover(db, services.column_types, timedelta(0)) == 0
    await _contiguous(client, owner, ids)


async def test_a_write_of_the_old_type_converted_by_the_change_keeps_its_own_revision(
    api, client, owner, monkeypatch
):
    """A PATCH validated against the old type lands during the conversion; the conversion
    converts it (a version more, a system revision) before the PATCH records its revision:
    that revision keeps the PATCH's own version, so the history is 1, 2 (the PATCH), 3 (the
    conversion), never 3 twice."""
    await api.call(
        "POST",
        "/api/meta/tables",
        owner,
        expect=201,
        json={"key": "t", "columns": [{"key": "v", "type": "integer"}]},
    )
    row = await api.call("POST", "/api/data/t", owner, expect=201, json={"v": 1})
    writer = HeldWriter(monkeypatch)
    update = asyncio.create_task(
        api.call("PATCH", f"/api/data/t/{row['id']}", owner, json={"v": 777})
    )
    await writer.reached.wait()  # validated as an integer
    rows = await rows_of(client, owner, "t")

    async def before(n: int) -> None:
        if n == 0:  # the PATCH lands between the conversion's read and its bulk write
            writer.release.set()
            for _ in range(2000):
                if await rows.count_documents({"v": 777}):
                    return
                await asyncio.sleep(0.005)
            raise AssertionError("the PATCH never landed")

    hold_each_batch(monkeypatch, before)
    await api.call(
        "PATCH", "/api/meta/tables/t/columns/v", owner, expect=200, json={"type": "string"}
    )
    await update
    stored = await rows.find_one({})
    assert stored["v"] == "777" and stored["_rev"] == 3
    history = await api.call("GET", f"/api/data/t/{row['id']}/history", owner, expect=200)
    assert [(i["actor"]["type"], i["changes"]["v"]["after"]) for i in history["items"]] == [
        ("system", "777"),
        ("user", "777"),
        ("user", 1),
    ]
    await _contiguous(client, owner, [row["id"]])
