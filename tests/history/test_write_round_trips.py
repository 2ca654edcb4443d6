"""Round trips of the bulk writes whose revisions are numbered by the write itself
(docs/history.md "Put-backs and read-backs that race other writes"): a bulk update of items
costs one call per item (the update answering the row before it), an update by filter a
fixed number per chunk of rows, plus one per row a write outran; neither reads the rows back
after writing."""

from __future__ import annotations

from typing import Any

from crm_core.platform.storage import recording
from crm_core.tables import rows as rows_module
from tests.support.api import rows_of

ROWS = 30


async def _setup(api, owner) -> list[str]:
    await api.call(
        "POST",
        "/api/meta/tables",
        owner,
        expect=201,
        json={"key": "t", "columns": [{"key": "v", "type": "integer"}]},
    )
    created = await api.call(
        "POST", "/api/data/t/bulk", owner, expect=201, json={"items": [{"v": 0}] * ROWS}
    )
    return [r["id"] for r in created["items"]]


def _calls(log: Any, collection: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in log.records:
        if record.collection == collection:
            counts[record.kind] = counts.get(record.kind, 0) + 1
    return counts


async def test_a_bulk_update_of_items_costs_one_write_per_item_and_no_read_back(api, client, owner):
    ids = await _setup(api, owner)
    rows = await rows_of(client, owner, "t")
    body = {"items": [{"id": i, "v": 1} for i in ids]}
    with recording() as log:
        await api.call("PATCH", "/api/data/t/bulk", owner, expect=200, json=body)
    calls = _calls(log, rows.name)
    print("bulk update of", ROWS, "items, calls on the rows:", calls)
    # the originals read once, one update per item answering the row before it, nothing else
    assert calls == {"find": 1, "find_and_modify": ROWS}


async def test_an_update_by_filter_costs_calls_per_chunk_plus_one_per_outrun_row(
    api, client, owner, monkeypatch
):
    ids = await _setup(api, owner)
    rows = await rows_of(client, owner, "t")
    body = {"filters": [{"field": "v", "value": 0}], "values": {"v": 2}}
    with recording() as log:
        await api.call("PATCH", "/api/data/t/bulk", owner, expect=200, json=body)
    quiet = _calls(log, rows.name)
    print("update by filter of", ROWS, "rows, calls on the rows:", quiet)
    assert quiet.get("find_and_modify", 0) == 0  # no row outrun: no call per row
    assert quiet["find"] == 2  # the ids, the chunk as read; no read-back after the write

    # a write landing between the read of the chunk and its bulk write: that row alone
    # costs the read of the marks and its own update
    outrun: list[int] = []
    real_update_each = rows_module.update_each

    async def patch_first(collection: Any, updates: Any, ordered: bool = True) -> int:
        if not outrun:
            outrun.append(1)
            await api.call("PATCH", f"/api/data/t/{ids[0]}", owner, expect=200, json={"v": 2})
        return int(await real_update_each(collection, updates, ordered=ordered))

    monkeypatch.setattr(rows_module, "update_each", patch_first)
    body = {"filters": [{"field": "v", "value": 2}], "values": {"v": 3}}
    with recording() as log:
        answer = await api.call("PATCH", "/api/data/t/bulk", owner, expect=200, json=body)
    raced = _calls(log, rows.name)
    print("the same with one row outrun:", raced)
    assert answer == {"updated": ROWS}
    # the PATCH's own call, and the outrun row's update answering the row before it
    assert raced["find_and_modify"] == 2
    assert raced["find"] == quiet["find"] + 1  # the marks read
    assert {d["v"] async for d in rows.find({})} == {3}
