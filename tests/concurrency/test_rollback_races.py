"""Put-backs and read-backs racing other writes (issue 28 §4, docs/history.md "Changes the
server makes"): a failed bulk update or upsert batch puts its rows back by a forward write
(conditional on the version it gave them, a new version, a system revision), so a write that
landed in between stays; a bulk write's revisions are numbered by the write itself, never by
a read-back another write could outrun; a failed import's created rows leave a `deleted`
revision. The race is held open at the critical await by hooks, not sleeps."""

from __future__ import annotations

import asyncio
from typing import Any

from bson import ObjectId

from crm_core.tables import fence
from crm_core.tables import rows as rows_module
from crm_core.tables import upsert as upsert_module
from handlers.app import create_app
from tests.support.api import Api, make_settings, rows_of, tenant_db
from tests.support.files import confirm, finished, make_table, upload
from tests.support.history import replay

WRITERS = 20
COLUMNS = [
    {"key": "code", "type": "string", "unique": True},
    {"key": "email", "type": "string", "unique": True},
    {"key": "v", "type": "integer"},
]


async def _setup(api, owner) -> tuple[dict[str, Any], dict[str, Any]]:
    await api.call(
        "POST", "/api/meta/tables", owner, expect=201, json={"key": "t", "columns": COLUMNS}
    )
    a = await api.call("POST", "/api/data/t", owner, expect=201, json={"code": "A", "v": 0})
    b = await api.call("POST", "/api/data/t", owner, expect=201, json={"code": "B", "v": 0})
    return a, b


async def _revisions(client, owner, row_id: str, table: str = "t") -> list[dict[str, Any]]:
    """The row's revisions as stored, newest first."""
    history = tenant_db(client, owner)["_history"]
    found = history.find({"table": table, "row": ObjectId(row_id)}).sort("seq", -1)
    return [d async for d in found]


async def _contiguous(client, owner, row_id: str) -> list[dict[str, Any]]:
    """Revisions 1.._rev, one each, folding into the stored values; answers them."""
    stored = await (await rows_of(client, owner, "t")).find_one({"_id": ObjectId(row_id)})
    revisions = await _revisions(client, owner, row_id)
    assert [r["seq"] for r in revisions] == list(range(stored["_rev"], 0, -1)), revisions
    state = replay(revisions)
    assert state == {k: stored[k] for k in ("code", "email", "v") if k in stored}
    return revisions


def _take_email_after_the_check(api, owner, monkeypatch, module, name: str) -> None:
    """After the unique check passed, another row takes `taken@example.com` (the bulk write
    then fails half-way on its duplicate key)."""
    original = getattr(module, name)

    async def check_then_take(*args: Any, **kwargs: Any) -> Any:
        result = await original(*args, **kwargs)
        body = {"code": "C", "email": "taken@example.com"}
        await api.call("POST", "/api/data/t", owner, expect=201, json=body)
        return result

    monkeypatch.setattr(module, name, check_then_take)


def _write_before_the_put_back(api, owner, monkeypatch, module, row_id: str) -> list[int]:
    """Between the failed write and its put-back, a client PATCHes `row_id` (v = 99)."""
    original = module.roll_back
    landed: list[int] = []

    async def write_first(*args: Any, **kwargs: Any) -> int:
        got = await api.call("PATCH", f"/api/data/t/{row_id}", owner, expect=200, json={"v": 99})
        landed.append(got["_version"])
        return await original(*args, **kwargs)

    monkeypatch.setattr(module, "roll_back", write_first, raising=False)
    return landed


async def test_a_failed_bulk_update_keeps_a_write_that_landed_before_its_put_back(
    api, client, owner, monkeypatch
):
    a, b = await _setup(api, owner)
    _take_email_after_the_check(api, owner, monkeypatch, rows_module.RowService, "_check_unique")
    landed = _write_before_the_put_back(api, owner, monkeypatch, rows_module, a["id"])
    items = [{"id": a["id"], "v": 1}, {"id": b["id"], "email": "taken@example.com"}]
    await api.call("PATCH", "/api/data/t/bulk", owner, expect=409, json={"items": items})
    assert landed == [3]  # the bulk gave a version 2, the PATCH 3
    got = await api.call("GET", f"/api/data/t/{a['id']}", owner, expect=200)
    assert got["v"] == 99 and got["_version"] == 3  # not put back over the PATCH
    revisions = await _contiguous(client, owner, a["id"])
    assert [r["actor"]["type"] for r in revisions] == ["user", "user", "user"]
    untouched = await api.call("GET", f"/api/data/t/{b['id']}", owner, expect=200)
    assert untouched["_version"] == 1 and "email" not in untouched


async def test_a_failed_bulk_update_is_put_back_as_a_new_version(api, client, owner, monkeypatch):
    a, b = await _setup(api, owner)
    _take_email_after_the_check(api, owner, monkeypatch, rows_module.RowService, "_check_unique")
    items = [{"id": a["id"], "v": 1}, {"id": b["id"], "email": "taken@example.com"}]
    await api.call("PATCH", "/api/data/t/bulk", owner, expect=409, json={"items": items})
    got = await api.call("GET", f"/api/data/t/{a['id']}", owner, expect=200)
    # the write gave version 2 (an ETag a reader may hold): the put-back is version 3
    assert got["v"] == 0 and got["_version"] == 3
    revisions = await _contiguous(client, owner, a["id"])
    assert revisions[0]["actor"] == {
        "type": "system",
        "id": None,
        "name": "bulk_update_rolled_back",
    }
    assert revisions[0]["changes"] == {"v": {"before": 1, "after": 0}}
    rows = await rows_of(client, owner, "t")
    assert not [k async for row in rows.find({}) for k in row if k.startswith("_system_")]


async def test_a_failed_upsert_batch_keeps_a_write_that_landed_before_its_put_back(
    api, client, owner, monkeypatch
):
    a, _ = await _setup(api, owner)
    _take_email_after_the_check(api, owner, monkeypatch, upsert_module, "_check_unique")
    landed = _write_before_the_put_back(api, owner, monkeypatch, upsert_module, a["id"])
    items = [{"code": "A", "v": 1}, {"code": "B", "email": "taken@example.com"}]
    body = {"items": items, "upsert_on": "code"}
    await api.call("POST", "/api/data/t/bulk", owner, expect=409, json=body)
    assert landed == [3]
    got = await api.call("GET", f"/api/data/t/{a['id']}", owner, expect=200)
    assert got["v"] == 99 and got["_version"] == 3
    await _contiguous(client, owner, a["id"])


async def test_a_failed_upsert_batch_is_put_back_as_a_new_version(api, client, owner, monkeypatch):
    a, _ = await _setup(api, owner)
    _take_email_after_the_check(api, owner, monkeypatch, upsert_module, "_check_unique")
    items = [{"code": "A", "v": 1}, {"code": "B", "email": "taken@example.com"}]
    body = {"items": items, "upsert_on": "code"}
    await api.call("POST", "/api/data/t/bulk", owner, expect=409, json=body)
    got = await api.call("GET", f"/api/data/t/{a['id']}", owner, expect=200)
    assert got["v"] == 0 and got["_version"] == 3
    revisions = await _contiguous(client, owner, a["id"])
    assert revisions[0]["actor"]["name"] == "upsert_rolled_back"


def _write_after_the_bulk(api, owner, monkeypatch, row_id: str) -> list[int]:
    """After the bulk write, before its revisions are numbered (the old read-back), a client
    PATCHes `row_id` (v = 99)."""
    original = fence.settle
    landed: list[int] = []

    async def write_first(*args: Any, **kwargs: Any) -> Any:
        if not landed:
            landed.append(0)
            got = await api.call(
                "PATCH", f"/api/data/t/{row_id}", owner, expect=200, json={"v": 99}
            )
            landed.append(got["_version"])
        return await original(*args, **kwargs)

    monkeypatch.setattr(fence, "settle", write_first)
    return landed


async def test_an_update_by_filter_numbers_its_revision_by_its_own_write(
    api, client, owner, monkeypatch
):
    a, _ = await _setup(api, owner)
    landed = _write_after_the_bulk(api, owner, monkeypatch, a["id"])
    body = {"filters": [{"field": "code", "value": "A"}], "values": {"v": 5}}
    answer = await api.call("PATCH", "/api/data/t/bulk", owner, expect=200, json=body)
    assert answer == {"updated": 1} and landed == [0, 3]
    got = await api.call("GET", f"/api/data/t/{a['id']}", owner, expect=200)
    assert got["v"] == 99 and got["_version"] == 3
    revisions = await _contiguous(client, owner, a["id"])
    assert [r["changes"] for r in revisions[:2]] == [
        {"v": {"before": 5, "after": 99}},
        {"v": {"before": 0, "after": 5}},
    ]


async def test_a_bulk_update_numbers_its_revisions_by_its_own_writes(
    api, client, owner, monkeypatch
):
    a, _ = await _setup(api, owner)
    landed = _write_after_the_bulk(api, owner, monkeypatch, a["id"])
    body = {"items": [{"id": a["id"], "v": 5}]}
    answer = await api.call("PATCH", "/api/data/t/bulk", owner, expect=200, json=body)
    assert landed == [0, 3]
    assert answer["items"][0]["_version"] == 2 and answer["items"][0]["v"] == 5
    await _contiguous(client, owner, a["id"])


async def test_a_failed_imports_created_rows_leave_a_deleted_revision(aiohttp_client, monkeypatch):
    from crm_core.files import imports
    from crm_core.platform.errors import Conflict

    client = await aiohttp_client(create_app(make_settings(import_batch_size=2)))
    api = Api(client)
    owner = await api.register()
    await make_table(api, owner)
    real_apply = imports.apply_plan
    calls: list[Any] = []
    bob: list[str] = []

    async def failing_second_batch(ctx, table, plan, rows=None):
        calls.append(plan)
        if len(calls) == 2:
            # a client edits a row the first batch created, before the rollback
            found = await api.call("GET", "/api/data/people", owner, expect=200)
            bob.extend(r["id"] for r in found["items"] if r["name"] == "Bob")
            path = f"/api/data/people/{bob[0]}"
            await api.call("PATCH", path, owner, expect=200, json={"amount": 7})
            raise Conflict("The value of unique column 'email' is already used by another row")
        await real_apply(ctx, table, plan, rows)

    monkeypatch.setattr(imports, "apply_plan", failing_second_batch)
    csv = b"name,email,amount\nAnn,ann@example.com,1\nBob,bob@example.com,2\nCid,c@example.com,3\n"
    _, job = await upload(client, owner, csv)
    await confirm(api, owner, job)
    assert (await finished(api, owner, job))["state"] == "failed"
    assert (await api.call("GET", "/api/data/people", owner, expect=200))["items"] == []
    revisions = await _revisions(client, owner, bob[0], "people")
    assert [r["seq"] for r in revisions] == [3, 2, 1]
    assert [r["action"] for r in revisions] == ["deleted", "updated", "created"]
    assert revisions[0]["actor"] == {"type": "system", "id": None, "name": "import_rolled_back"}
    assert revisions[0]["changes"]["amount"] == {"before": 7.0, "after": None}
    assert replay(revisions) == {}


async def test_twenty_writers_of_bulk_updates_lose_no_revision(api, client, owner):
    """Twenty writers at once, each by a bulk update of items, an update by filter or a
    PATCH of the same rows: every row's history is contiguous (no seq twice, none missing)
    and folds into the stored row, and each final value is some writer's."""
    await api.call(
        "POST", "/api/meta/tables", owner, expect=201, json={"key": "t", "columns": COLUMNS}
    )
    created = await api.call(
        "POST",
        "/api/data/t/bulk",
        owner,
        expect=201,
        json={"items": [{"code": f"r{i}", "v": 0} for i in range(10)]},
    )
    ids = [r["id"] for r in created["items"]]
    start = asyncio.Event()

    async def writer(n: int) -> None:
        await start.wait()
        value = 1000 + n
        if n % 3 == 0:
            body: dict[str, Any] = {"items": [{"id": i, "v": value} for i in ids]}
        elif n % 3 == 1:
            body = {"filters": [{"field": "v", "op": "gte", "value": 0}], "values": {"v": value}}
        else:
            for row_id in ids[:3]:
                await api.call(
                    "PATCH", f"/api/data/t/{row_id}", owner, expect=200, json={"v": value}
                )
            return
        await api.call("PATCH", "/api/data/t/bulk", owner, expect=200, json=body)

    tasks = [asyncio.create_task(writer(n)) for n in range(WRITERS)]
    start.set()
    await asyncio.gather(*tasks)
    values = {1000 + n for n in range(WRITERS)}
    for row_id in ids:
        revisions = await _contiguous(client, owner, row_id)
        assert len({r["seq"] for r in revisions}) == len(revisions)
        got = await api.call("GET", f"/api/data/t/{row_id}", owner, expect=200)
        assert got["v"] in values
