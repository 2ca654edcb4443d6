"""No unrecorded change (docs/history.md "Crash between a write and its revision"): a process
killed between a row write and its revision leaves a mark on the row; after a restart the
sweeper stores the missing revision, exactly once. The real thing (SIGKILL of `crm serve` on
mongoeco, paused at the test barrier between the two; the mark then aged past the grace, not
waited for), and the recovery's rules in process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector
from bson import ObjectId

from crm_core.platform.storage import Storage
from crm_core.tables.history import HISTORY, UNRECORDED_FIELD, UNRECORDED_ITEM
from crm_core.tables.trash import TRASH
from handlers.routing import SERVICES
from tests.support.api import make_settings, tenant_db
from tests.support.remote import crm_env, remote_api
from tests.support.servers import CrmServe, MongoecoServer, wait_until
from tests.support.waits import DEADLINE, until

PAUSED = "paused before recording the revisions of crashme"
# a restarted process recovers every 0.2 s what is marked longer than the grace ago; the grace
# is far beyond any live write, however loaded the machine (a live write slower than the grace
# would get a recovery revision too: docs/history.md "Crash between a write and its
# revision"), and the test ages the killed write's mark past it instead of waiting
RECOVERY = {"history_recovery_seconds": 0.2, "history_recovery_grace_seconds": 3600}
# the paused process never recovers: only the restart may store the missing revision
PAUSED_ENV = {"history_recovery_seconds": 86_400, "history_pause_before_revision": "crashme"}
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


@pytest.fixture
def mongoeco(tmp_path: Path) -> Iterator[MongoecoServer]:
    server = MongoecoServer(tmp_path / "mongoeco.log")
    server.start()
    yield server
    server.terminate()


async def _killed_at_the_barrier(serve: CrmServe, request: asyncio.Task) -> None:
    """Wait until the write is paused between its row and its revision, then SIGKILL."""
    await asyncio.to_thread(wait_until, lambda: PAUSED in serve.started_log(), "the barrier")
    serve.kill()
    with contextlib.suppress(ClientError, AssertionError, asyncio.TimeoutError):
        await request


def _age_the_mark(uri: str, tenant_id: str) -> None:
    """The killed write's mark, made older than the grace (as if the restart came an hour
    later): exactly one row carries one."""
    from pymongo import MongoClient

    name = Storage(make_settings(mongodb_url=uri)).tenant_db_name(tenant_id)
    with MongoClient(uri, tz_aware=True) as client:
        db = client[name]
        table = db["_tables"].find_one({"key": "crashme"})
        assert table is not None
        rows = db[table.get("collection") or "crashme"]
        aged = rows.update_many(
            {UNRECORDED_FIELD: {"$exists": True}}, {"$set": {UNRECORDED_FIELD: LONG_AGO}}
        )
        assert aged.matched_count == 1, "the killed write left no mark on its row"


async def _history(api, owner, row_id: str, total: int) -> list[dict]:
    """The row's history once it has `total` revisions (the sweeper runs every 0.2 s)."""

    async def reached() -> list[dict] | None:
        path = f"/api/data/crashme/{row_id}/history"
        page = await api.call("GET", path, owner, expect=200)
        # the items, not `total`: the page's count is a second query, and a revision stored
        # between the two is counted but not listed
        return page["items"] if len(page["items"]) >= total else None

    return await until(reached, f"the history to reach {total} revisions")


async def test_a_write_killed_before_its_revision_gets_it_after_a_restart(tmp_path, mongoeco):
    env = crm_env(mongodb_url=mongoeco.uri, **RECOVERY)
    paused = crm_env(mongodb_url=mongoeco.uri, **PAUSED_ENV)
    # a connection per request: each server of the test is a new process
    connector = TCPConnector(force_close=True)
    async with ClientSession(connector=connector, timeout=ClientTimeout(total=DEADLINE)) as http:
        first = CrmServe(tmp_path / "serve-1.log", env)
        first.start()
        api = remote_api(http, first)
        owner = await api.register()
        body = {"key": "crashme", "columns": [{"key": "n", "type": "integer"}]}
        await api.call("POST", "/api/meta/tables", owner, expect=201, json=body)
        first.terminate()

        # a create, killed between the row and its revision
        second = CrmServe(tmp_path / "serve-2.log", paused)
        second.start()
        api = remote_api(http, second)  # the same SECRET_KEY: the owner's token holds
        create = asyncio.create_task(api.call("POST", "/api/data/crashme", owner, json={"n": 1}))
        await _killed_at_the_barrier(second, create)
        await asyncio.to_thread(_age_the_mark, mongoeco.uri, owner.tenant_id)

        third = CrmServe(tmp_path / "serve-3.log", env)
        third.start()
        api = remote_api(http, third)
        (row,) = (await api.call("GET", "/api/data/crashme", owner, expect=200))["items"]
        assert row["n"] == 1  # the write is there ...
        (created,) = await _history(api, owner, row["id"], 1)  # ... and so is its revision
        assert created["action"] == "created"
        assert created["actor"] == {"type": "system", "id": None, "name": "recovery"}
        assert created["changes"] == {"n": {"before": None, "after": 1}}
        third.terminate()

        # an update, killed the same way
        fourth = CrmServe(tmp_path / "serve-4.log", paused)
        fourth.start()
        api = remote_api(http, fourth)
        update = asyncio.create_task(
            api.call("PATCH", f"/api/data/crashme/{row['id']}", owner, json={"n": 2})
        )
        await _killed_at_the_barrier(fourth, update)
        await asyncio.to_thread(_age_the_mark, mongoeco.uri, owner.tenant_id)

        fifth = CrmServe(tmp_path / "serve-5.log", env)
        fifth.start()
        api = remote_api(http, fifth)
        try:
            items = await _history(api, owner, row["id"], 2)
            assert [i["action"] for i in items] == ["updated", "created"]
            assert items[0]["changes"] == {"n": {"before": 1, "after": 2}}
            # later writes are recorded live, once each, after the recovered ones
            await api.call(
                "PATCH", f"/api/data/crashme/{row['id']}", owner, expect=200, json={"n": 3}
            )
            items = await _history(api, owner, row["id"], 3)
            assert [i["changes"]["n"]["after"] for i in items] == [3, 2, 1]
            assert items[0]["actor"]["type"] == "user"
        except BaseException:
            print(f"crm serve's log:\n{fifth.log_tail(60)}")
            raise
        finally:
            fifth.terminate()


# ---- the recovery's rules, in process ---------------------------------------------------------


async def _crash(db, table_collection: str, row_id, seq: int) -> None:
    """What a process killed after the write leaves: the mark, no revision of that write."""
    await db[HISTORY].delete_many({"row": row_id, "seq": seq})
    await db[table_collection].update_one(
        {"_id": row_id}, {"$set": {UNRECORDED_FIELD: "2000-01-01"}}
    )


async def test_recovery_stores_each_missing_revision_once(api, owner, create_table):
    await create_table(owner, "crashme", [{"key": "n", "type": "integer"}])
    services = api.client.app[SERVICES]
    db = tenant_db(api.client, owner)
    table = await db["_tables"].find_one({"key": "crashme"})
    rows = table["collection"]
    row = await api.call("POST", "/api/data/crashme", owner, expect=201, json={"n": 1})
    stored = await db[rows].find_one({})
    assert UNRECORDED_FIELD not in stored  # the live path cleared its mark
    await api.call("PATCH", f"/api/data/crashme/{row['id']}", owner, expect=200, json={"n": 2})
    stored = await db[rows].find_one({})
    await _crash(db, rows, stored["_id"], 2)
    # a mark younger than the grace is a live write: left alone
    await db[rows].update_one({}, {"$set": {UNRECORDED_FIELD: stored["_updated_at"]}})
    recover = services.rows.changes.recover
    assert await recover(db, services.column_types, timedelta(hours=1)) == 0
    assert await recover(db, services.column_types, timedelta(0)) == 1
    assert await recover(db, services.column_types, timedelta(0)) == 0  # exactly once
    page = await api.call("GET", f"/api/data/crashme/{row['id']}/history", owner, expect=200)
    assert [i["changes"] for i in page["items"]] == [
        {"n": {"before": 1, "after": 2}},
        {"n": {"before": None, "after": 1}},
    ]
    assert UNRECORDED_FIELD not in await db[rows].find_one({})
    # a revision that was stored after all: only the mark goes
    await db[rows].update_one({}, {"$set": {UNRECORDED_FIELD: stored["_updated_at"]}})
    assert await recover(db, services.column_types, timedelta(0)) == 0
    assert UNRECORDED_FIELD not in await db[rows].find_one({})


async def test_recovery_stores_a_deletion_left_unrecorded(api, owner, create_table):
    await create_table(owner, "crashme", [{"key": "n", "type": "integer"}])
    services = api.client.app[SERVICES]
    db = tenant_db(api.client, owner)
    row = await api.call("POST", "/api/data/crashme", owner, expect=201, json={"n": 7})
    await api.call("DELETE", f"/api/data/crashme/{row['id']}", owner, expect=204)
    item = await db[TRASH].find_one({"kind": "row"})
    assert UNRECORDED_ITEM not in item  # the live path cleared it
    await db[HISTORY].delete_many({"action": "deleted"})
    await db[TRASH].update_one({}, {"$set": {UNRECORDED_ITEM: item["deleted_at"]}})
    assert await services.rows.changes.recover(db, services.column_types, timedelta(0)) == 1
    page = await api.call("GET", f"/api/data/crashme/{row['id']}/history", owner, expect=200)
    assert page["items"][0]["action"] == "deleted"
    assert page["items"][0]["changes"] == {"n": {"before": 7, "after": None}}
    (listed,) = (await api.call("GET", "/api/trash", owner, expect=200))["items"]
    await api.call("POST", f"/api/trash/{listed['id']}/restore", owner, expect=200)
    page = await api.call("GET", f"/api/data/crashme/{row['id']}/history", owner, expect=200)
    assert [i["action"] for i in page["items"]] == ["restored", "deleted", "created"]


async def test_every_write_path_is_recorded_once(api, client, owner, create_table):
    """After every kind of write of rows, the recovery finds every revision stored: it stores
    none twice and leaves no mark (one-row writes clear theirs at once, batches leave theirs
    to it)."""
    columns = [{"key": "code", "type": "string", "unique": True}, {"key": "n", "type": "integer"}]
    await create_table(owner, "crashme", columns)
    row = await api.call("POST", "/api/data/crashme", owner, expect=201, json={"code": "a"})
    await api.call("PATCH", f"/api/data/crashme/{row['id']}", owner, expect=200, json={"n": 1})
    bulk = {"items": [{"code": "b"}, {"code": "c"}]}
    created = await api.call("POST", "/api/data/crashme/bulk", owner, expect=201, json=bulk)
    upsert = {"upsert_on": "code", "items": [{"code": "a", "n": 2}, {"code": "d"}]}
    await api.call("POST", "/api/data/crashme/bulk", owner, expect=201, json=upsert)
    first = created["items"][0]["id"]
    items = {"items": [{"id": first, "n": 3}]}
    await api.call("PATCH", "/api/data/crashme/bulk", owner, expect=200, json=items)
    by_filter = {"filters": [{"field": "code", "op": "eq", "value": "c"}], "values": {"n": 4}}
    await api.call("PATCH", "/api/data/crashme/bulk", owner, expect=200, json=by_filter)
    history = await api.call("GET", f"/api/data/crashme/{row['id']}/history", owner, expect=200)
    revision = history["items"][-1]["id"]
    await api.call(
        "POST", f"/api/data/crashme/{row['id']}/history/{revision}/revert", owner, expect=200
    )
    await api.call("DELETE", f"/api/data/crashme/{first}", owner, expect=204)
    (item,) = (await api.call("GET", "/api/trash?kind=row", owner, expect=200))["items"]
    await api.call("POST", f"/api/trash/{item['id']}/restore", owner, expect=200)
    resp = await client.post(
        "/api/data/crashme/imports",
        data=b"code,n\ne,5\n",
        headers={**owner.headers, "Content-Type": "text/csv"},
    )
    job = await resp.json()
    assert resp.status == 201, job
    await api.call(
        "POST", f"/api/data/crashme/imports/{job['id']}/confirm", owner, expect=202, json={}
    )
    for _ in range(600):
        done = await api.call("GET", f"/api/data/crashme/imports/{job['id']}", owner, expect=200)
        if done["state"] in ("completed", "failed"):
            break
        await asyncio.sleep(0.01)
    assert done["state"] == "completed", done

    db = tenant_db(api.client, owner)
    rows = (await db["_tables"].find_one({"key": "crashme"}))["collection"]
    assert await db[rows].count_documents({}) == 5
    single = await db[rows].find_one({"_id": ObjectId(row["id"])})
    assert UNRECORDED_FIELD not in single  # one-row writes: cleared at once
    revisions = await db[HISTORY].count_documents({})
    services = api.client.app[SERVICES]
    assert await services.rows.changes.recover(db, services.column_types, timedelta(0)) == 0
    assert await db[HISTORY].count_documents({}) == revisions
    assert await db[rows].count_documents({UNRECORDED_FIELD: {"$exists": True}}) == 0
    assert await db[TRASH].count_documents({UNRECORDED_ITEM: {"$exists": True}}) == 0
