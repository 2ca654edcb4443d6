"""A purge racing a restore of the same trash item (docs/history.md "Trash"): both claim the
item first, so exactly one wins and the other answers 409 without changing anything. Each test
holds one side at its critical await (an event, never a sleep) while the other runs whole."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from bson import ObjectId

from crm_core.accounts.auth import context_for_user
from crm_core.platform.clock import utcnow
from crm_core.tables import fence, trash
from crm_core.tables.meta import MetaService
from crm_core.tables.trash import TRASH
from handlers.routing import SERVICES
from tests.support.api import tenant_db

COLUMNS = [{"key": "name", "type": "string"}]


class Held:
    """Holds the patched call until released; `reached` is set when a call arrives."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    async def wait(self) -> None:
        self.reached.set()
        await self.release.wait()


async def _deleted_table(api, owner, create_table) -> tuple[dict[str, Any], str]:
    await create_table(owner, "deals", COLUMNS)
    for name in ("a", "b"):
        await api.call("POST", "/api/data/deals", owner, expect=201, json={"name": name})
    db = tenant_db(api.client, owner)
    collection = (await db["_tables"].find_one({"key": "deals"}))["collection"]
    await api.call("DELETE", "/api/meta/tables/deals", owner, expect=204)
    item = await db[TRASH].find_one({"kind": "table"})
    return item, collection


async def test_a_restore_during_a_table_purge_is_a_409_and_the_purge_finishes(
    api, owner, create_table, monkeypatch
):
    item, collection = await _deleted_table(api, owner, create_table)
    db = tenant_db(api.client, owner)
    held = Held()
    original = type(db).drop_collection

    async def drop_held(self, *args, **kwargs):  # the purge decided to drop: hold it there
        await held.wait()
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(type(db), "drop_collection", drop_held)
    purge = asyncio.create_task(api.call("DELETE", f"/api/trash/{item['_id']}", owner, expect=204))
    await held.reached.wait()
    error = await api.call("POST", f"/api/trash/{item['_id']}/restore", owner, expect=409)
    assert "being restored or purged" in error["error"]["message"]
    await api.call("GET", "/api/meta/tables/deals", owner, expect=404)  # nothing came back
    held.release.set()
    await purge
    assert collection not in await db.list_collection_names()
    assert await db[TRASH].count_documents({}) == 0
    await api.call("GET", "/api/meta/tables/deals", owner, expect=404)
    await api.call("POST", f"/api/trash/{item['_id']}/restore", owner, expect=404)


async def test_a_purge_during_a_table_restore_is_a_409_and_the_rows_come_back(
    api, owner, create_table, monkeypatch
):
    item, collection = await _deleted_table(api, owner, create_table)
    db = tenant_db(api.client, owner)
    held = Held()
    original = MetaService.restore_table

    async def restore_held(self, ctx, trashed):  # claimed, the definition not back yet
        await held.wait()
        return await original(self, ctx, trashed)

    monkeypatch.setattr(MetaService, "restore_table", restore_held)
    restore = asyncio.create_task(
        api.call("POST", f"/api/trash/{item['_id']}/restore", owner, expect=200)
    )
    await held.reached.wait()
    error = await api.call("DELETE", f"/api/trash/{item['_id']}", owner, expect=409)
    assert "being restored or purged" in error["error"]["message"]
    assert collection in await db.list_collection_names()  # the purge dropped nothing
    held.release.set()
    await restore
    page = await api.call("GET", "/api/data/deals?sort_by=name", owner, expect=200)
    assert [r["name"] for r in page["items"]] == ["a", "b"]
    await api.call("DELETE", f"/api/trash/{item['_id']}", owner, expect=404)
    outbox = api.client.app[SERVICES].storage.system_db["task_outbox"]
    assert await outbox.count_documents({}) == 0  # the expiry's purge work went with it


async def test_a_failed_restore_gives_its_claim_back(api, owner, create_table, monkeypatch):
    item, collection = await _deleted_table(api, owner, create_table)
    await create_table(owner, "deals", COLUMNS)  # the key is taken: the restore is a 409
    error = await api.call("POST", f"/api/trash/{item['_id']}/restore", owner, expect=409)
    assert error["error"]["details"] == [{"field": "key", "message": "'deals' is taken"}]
    db = tenant_db(api.client, owner)
    assert "claim" not in await db[TRASH].find_one({"_id": item["_id"]})
    await api.call("DELETE", f"/api/trash/{item['_id']}", owner, expect=204)  # not held
    assert collection not in await db.list_collection_names()


async def test_the_expiry_work_waits_while_a_restore_holds_the_item(
    api, owner, create_table, monkeypatch
):
    item, collection = await _deleted_table(api, owner, create_table)
    db = tenant_db(api.client, owner)
    services = api.client.app[SERVICES]
    now = utcnow()
    soon = now + timedelta(seconds=10)  # the item expires while the restore runs
    await db[TRASH].update_one({"_id": item["_id"]}, {"$set": {"expires_at": soon}})
    held = Held()
    original = MetaService.restore_table

    async def restore_held(self, ctx, trashed):
        await held.wait()
        return await original(self, ctx, trashed)

    monkeypatch.setattr(MetaService, "restore_table", restore_held)
    restore = asyncio.create_task(
        api.call("POST", f"/api/trash/{item['_id']}/restore", owner, expect=200)
    )
    await held.reached.wait()
    # a minute later, its purge work comes due: it leaves the held item and its rows alone
    monkeypatch.setattr(trash, "utcnow", lambda: now + timedelta(seconds=60))
    args = (str(item["_id"]), collection, str(item["table_id"]))
    assert not await services.trash.purge_expired(db, *args)  # still due: tried again later
    assert collection in await db.list_collection_names()
    held.release.set()
    await restore
    assert await services.trash.purge_expired(db, *args)  # the table is back: left alone
    assert (await api.call("GET", "/api/data/deals", owner, expect=200))["total"] == 2


async def test_a_row_purge_during_its_restore_is_a_409(api, owner, create_table, monkeypatch):
    await create_table(owner, "deals", COLUMNS)
    row = await api.call("POST", "/api/data/deals", owner, expect=201, json={"name": "a"})
    await api.call("DELETE", f"/api/data/deals/{row['id']}", owner, expect=204)
    db = tenant_db(api.client, owner)
    item = await db[TRASH].find_one({"kind": "row"})
    held = Held()
    original = fence.settle

    async def settle_held(*args, **kwargs):  # the row is back in its table, the item not gone
        await held.wait()
        return await original(*args, **kwargs)

    monkeypatch.setattr(fence, "settle", settle_held)
    restore = asyncio.create_task(
        api.call("POST", f"/api/trash/{item['_id']}/restore", owner, expect=200)
    )
    await held.reached.wait()
    await api.call("DELETE", f"/api/trash/{item['_id']}", owner, expect=409)
    held.release.set()
    await restore
    await api.call("GET", f"/api/data/deals/{row['id']}", owner, expect=200)
    assert await db[TRASH].count_documents({}) == 0


async def test_an_id_repeated_in_another_case_is_restored_once(api, owner, create_table):
    await create_table(owner, "deals", COLUMNS)
    row = await api.call("POST", "/api/data/deals", owner, expect=201, json={"name": "a"})
    await api.call("DELETE", f"/api/data/deals/{row['id']}", owner, expect=204)
    item = await tenant_db(api.client, owner)[TRASH].find_one({"kind": "row"})
    ids = [str(item["_id"]), str(item["_id"]).upper()]
    done = await api.call("POST", "/api/trash/restore", owner, expect=200, json={"ids": ids})
    assert [r["id"] for r in done["items"]] == [row["id"]]
    history = await api.call("GET", f"/api/data/deals/{row['id']}/history", owner, expect=200)
    assert [r["action"] for r in history["items"]].count("restored") == 1


async def test_a_bulk_restore_meeting_a_purge_names_the_purged_item(
    api, owner, create_table, monkeypatch
):
    await create_table(owner, "deals", COLUMNS)
    rows = [
        await api.call("POST", "/api/data/deals", owner, expect=201, json={"name": n})
        for n in ("a", "b")
    ]
    ids = [r["id"] for r in rows]
    await api.call("POST", "/api/data/deals/bulk-delete", owner, expect=200, json={"ids": ids})
    db = tenant_db(api.client, owner)
    items = {i["row_id"]: str(i["_id"]) async for i in db[TRASH].find({"kind": "row"})}
    item_ids = [items[ObjectId(i)] for i in ids]
    held = Held()
    original = fence.settle

    async def settle_held(*args, **kwargs):  # the first row is back; the second waits
        await held.wait()
        return await original(*args, **kwargs)

    monkeypatch.setattr(fence, "settle", settle_held)
    bulk = asyncio.create_task(
        api.call("POST", "/api/trash/restore", owner, expect=409, json={"ids": item_ids})
    )
    await held.reached.wait()
    monkeypatch.setattr(fence, "settle", original)
    await api.call("DELETE", f"/api/trash/{item_ids[1]}", owner, expect=204)
    held.release.set()
    error = await bulk
    assert error["error"]["details"] == [{"field": "ids.1", "message": "Trash item not found"}]
    await api.call("GET", f"/api/data/deals/{ids[0]}", owner, expect=200)
    await api.call("GET", f"/api/data/deals/{ids[1]}", owner, expect=404)


class Killed(BaseException):
    """The process dies here (nothing after it runs, no clean-up)."""


async def test_a_purge_killed_after_the_drop_is_finished_by_the_next_never_restored(
    api, owner, create_table, monkeypatch
):
    item, collection = await _deleted_table(api, owner, create_table)
    db = tenant_db(api.client, owner)
    services = api.client.app[SERVICES]
    ctx = await context_for_user(services.storage, owner.tenant_id, owner.user_id)
    original = type(db).drop_collection

    async def drop_then_die(self, *args, **kwargs):
        await original(self, *args, **kwargs)
        raise Killed

    monkeypatch.setattr(type(db), "drop_collection", drop_then_die)
    with pytest.raises(Killed):
        await services.trash.purge(ctx, item["_id"])
    monkeypatch.setattr(type(db), "drop_collection", original)
    assert collection not in await db.list_collection_names()
    left = await db[TRASH].find_one({"_id": item["_id"]})
    assert left is not None and left["claim"]["op"] == "purge"
    # the rows are gone: the item never comes back as an empty table, now or once the
    # claim's lease has passed
    await api.call("POST", f"/api/trash/{item['_id']}/restore", owner, expect=409)
    later = utcnow() + timedelta(seconds=trash.CLAIM_LEASE_SECONDS + 1)
    monkeypatch.setattr(trash, "utcnow", lambda: later)
    await api.call("POST", f"/api/trash/{item['_id']}/restore", owner, expect=409)
    await api.call("GET", "/api/meta/tables/deals", owner, expect=404)
    # the next purge (the user's, or the expiry's work) finishes it, once
    await api.call("DELETE", f"/api/trash/{item['_id']}", owner, expect=204)
    assert await db[TRASH].count_documents({}) == 0
    outbox = services.storage.system_db["task_outbox"]
    assert await outbox.count_documents({}) == 0
