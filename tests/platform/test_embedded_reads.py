"""The embedded database answers reads by `_id` without scanning
(crm_core/platform/storage/embedded.py): named ids are looked up, reads sorted by `_id` walk
the ids in order from their bounds, and a cursor copies only what it returns. The answers are
those of the filter applied to every document."""

from __future__ import annotations

import random
from typing import Any

import pytest
from bson import ObjectId

from crm_core.platform.storage import embedded
from tests.support.api import rows_of, tenant_db


def _matches(doc: dict[str, Any], spec: dict[str, Any]) -> bool:
    """The few operators used below, evaluated by hand."""
    for key, cond in spec.items():
        if key == "$and":
            if not all(_matches(doc, part) for part in cond):
                return False
            continue
        value = doc.get(key)
        if not isinstance(cond, dict):
            cond = {"$eq": cond}
        for op, operand in cond.items():
            ok = {
                "$eq": lambda v, o: v == o,
                "$ne": lambda v, o: v != o,
                "$in": lambda v, o: v in o,
                "$lt": lambda v, o: v is not None and v < o,
                "$lte": lambda v, o: v is not None and v <= o,
                "$gt": lambda v, o: v is not None and v > o,
                "$gte": lambda v, o: v is not None and v >= o,
            }[op](value, operand)
            if not ok:
                return False
    return True


@pytest.fixture
async def stored(api, owner, client):
    db = tenant_db(client, owner)
    ids = [ObjectId() for _ in range(300)]
    shuffled = ids[:]
    random.Random(7).shuffle(shuffled)  # stored out of `_id` order
    docs = [{"_id": i, "n": n % 7, "tag": f"t{n % 3}"} for n, i in enumerate(shuffled)]
    await db["things"].insert_many(docs)
    return db["things"], sorted(ids), docs


def _cases(ids: list[ObjectId]) -> list[dict[str, Any]]:
    missing = ObjectId()
    return [
        {"_id": ids[5]},
        {"_id": missing},
        {"_id": {"$in": [ids[9], ids[2], ids[9], missing]}},
        {"_id": {"$in": [ids[9], ids[2]]}, "n": 3},
        # the looked-up ids are not tested again, the other conditions are
        {"_id": {"$in": ids[:40]}, "n": {"$in": [1, 2]}, "tag": "t0"},
        {"_id": {"$eq": ids[4], "$in": [ids[5]]}},
        {"$and": [{"_id": {"$ne": ids[3]}}, {"_id": {"$in": ids[:6]}}]},
        {"$and": [{"_id": {"$in": ids[:50]}}, {"_id": {"$in": ids[40:60]}}]},
        {"_id": {"$gt": ids[100], "$lte": ids[200]}},
        {"$and": [{"_id": {"$ne": ids[150]}}, {"_id": {"$lt": ids[160]}}]},
        {"_id": {"$gte": ids[299]}},
        {"_id": {"$lt": ids[0]}},
        {"n": 2},
        {},
    ]


async def test_reads_by_id_answer_what_the_filter_selects(stored):
    collection, ids, docs = stored
    for spec in _cases(ids):
        expected = sorted((d for d in docs if _matches(d, spec)), key=lambda d: d["_id"])
        found = await collection.find(spec).to_list(None)
        assert sorted(found, key=lambda d: d["_id"]) == expected, spec
        for direction in (1, -1):
            ordered = expected[::direction]
            page = await collection.find(spec).sort("_id", direction).skip(3).limit(4).to_list(None)
            assert page == ordered[3:7], (spec, direction)
            first = await collection.find_one(spec, sort=[("_id", direction)])
            assert first == (ordered[0] if ordered else None), (spec, direction)
        assert await collection.count_documents(spec) == len(expected), spec
        projected = await collection.find(spec, {"n": 1}).sort("_id", 1).limit(2).to_list(None)
        assert projected == [{"_id": d["_id"], "n": d["n"]} for d in expected[:2]], spec


async def test_writes_by_id_change_exactly_the_named_documents(stored):
    collection, ids, _docs = stored
    result = await collection.update_many({"_id": {"$in": ids[:10]}}, {"$set": {"hit": True}})
    assert result.modified_count == 10
    hit = await collection.find({"hit": True}).sort("_id", 1).to_list(None)
    assert [d["_id"] for d in hit] == ids[:10]
    await collection.delete_many({"$and": [{"_id": {"$in": ids[:10]}}, {"_id": {"$ne": ids[0]}}]})
    assert [d["_id"] for d in await collection.find({"hit": True}).to_list(None)] == [ids[0]]


async def test_manual_order_moves_read_rows_by_id(api, owner, client, monkeypatch):
    """A move reads the rows it needs through the `_id` index paths: on the embedded database
    too, the moved table is never read whole (counted on the store's full scans)."""
    await api.call(
        "POST",
        "/api/meta/tables",
        owner,
        expect=201,
        json={"key": "t", "columns": [{"key": "n", "type": "integer"}]},
    )
    ids = [ObjectId() for _ in range(200)]
    rows = await rows_of(client, owner, "t")
    await rows.insert_many([{"_id": i, "n": n} for n, i in enumerate(ids)])
    scans: list[str] = []

    real = embedded._ORIGINAL_ITER_DOCUMENTS

    def counting(self: Any, spec: Any) -> Any:
        scans.append(self.name)
        return real(self, spec)

    monkeypatch.setattr(embedded, "_ORIGINAL_ITER_DOCUMENTS", counting)
    for row, before in ((ids[50], ids[10]), (ids[70], None), (ids[10], ids[50])):
        body = {"before_id": None if before is None else str(before)}
        moved = await api.call("POST", f"/api/data/t/{row}/move", owner, expect=200, json=body)
        assert moved["writes"] == 1
    monkeypatch.undo()
    assert rows.name not in scans, scans
    page = await api.call("GET", "/api/data/t?sort_by=manual&limit=200", owner, expect=200)
    order = [r["id"] for r in page["items"]]
    assert (order.index(str(ids[10])), order.index(str(ids[50]))) == (10, 11)
    assert order[-1] == str(ids[70])
