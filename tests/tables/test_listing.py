"""Filters, sorting, views and manual order through HTTP (docs/filters.md)."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

from bson import ObjectId

from tests.support.api import CONTRACTS, Factories, add_user, rows_of, tenant_db

SEED_URL = (
    '/api/data/contracts?sort_by=doc_date&sort_order=desc&filters=[{"field":'
    '"is_archived","value":false},{"field":"total_sum","op":"gt","value":100000}]'
)


async def seed(api, owner):
    await Factories(api).table(owner, **CONTRACTS)
    items = [
        {
            "company_name": "A",
            "total_sum": 150000.5,
            "doc_date": "2025-08-15T10:00:00",
            "is_archived": False,
            "status": 11,
        },
        {"company_name": "B", "total_sum": 200000, "doc_date": "2025-09-01", "is_archived": False},
        {"company_name": "C", "total_sum": 300000, "doc_date": "2025-07-01", "is_archived": True},
        {"company_name": "D", "total_sum": 50000, "doc_date": "2025-10-01"},
        {"company_name": "E", "total_sum": 120000},
    ]
    created = await api.call(
        "POST", "/api/data/contracts/bulk", owner, json={"items": items}, expect=201
    )
    return {i["company_name"]: r["id"] for i, r in zip(items, created["items"], strict=True)}


async def test_seed_readme_url_as_written(api, owner, client):
    await seed(api, owner)
    # the seed's URL, sent as a browser would (aiohttp encodes what needs encoding)
    page = await api.call("GET", SEED_URL, owner, expect=200)
    assert [r["company_name"] for r in page["items"]] == ["B", "A", "E"]
    assert page["total"] == 3
    encoded = "/api/data/contracts?sort_by=doc_date&sort_order=desc&filters=" + quote(
        json.dumps(
            [
                {"field": "is_archived", "value": False},
                {"field": "total_sum", "op": "gt", "value": 100000},
            ]
        )
    )
    assert await api.call("GET", encoded, owner, expect=200) == page


async def test_filter_errors_over_http(api, owner):
    await seed(api, owner)
    for filters, path in [
        ('[{"field":"nope","value":1}]', "filters.0"),
        ('[{"field":"total_sum","op":"contains","value":"1"}]', "filters.0"),
        ('[{"field":"company_name","value":{"$ne":null}}]', "filters.0"),
        ("[{", "filters"),
        ('{"or":[{"field":"total_sum","op":"gt","value":"x"}]}', "filters.0.or.0"),
    ]:
        body = await api.call(
            "GET", f"/api/data/contracts?filters={quote(filters)}", owner, expect=400
        )
        assert body["error"]["code"] == "invalid_filter"
        assert body["error"]["details"][0]["field"] == path


async def test_blank_and_negations(api, owner):
    await seed(api, owner)

    async def names(filters):
        page = await api.call(
            "GET",
            f"/api/data/contracts?sort_by=company_name&filters={quote(json.dumps(filters))}",
            owner,
            expect=200,
        )
        return [r["company_name"] for r in page["items"]]

    assert await names([{"field": "doc_date", "op": "blank"}]) == ["E"]
    # is_archived false is a value, not a blank; D and E have none (default false applies)
    assert await names([{"field": "is_archived", "op": "blank"}]) == []
    assert await names([{"field": "status", "op": "neq", "value": 11}]) == ["B", "C", "D", "E"]
    assert await names([{"field": "company_name", "op": "not_in", "value": ["A", "B"]}]) == [
        "C",
        "D",
        "E",
    ]
    assert await names([{"field": "doc_date", "value": "2025-08-15"}]) == ["A"]
    assert await names(
        [
            {
                "or": [
                    {"field": "total_sum", "op": "lt", "value": 60000},
                    {"field": "is_archived", "value": True},
                ]
            }
        ]
    ) == ["C", "D"]
    assert await names([{"field": "company_name", "op": "contains", "value": "a"}]) == ["A"]


async def test_multi_key_sort_and_errors(api, owner, create_table):
    await create_table(
        owner, "t", [{"key": "g", "type": "integer"}, {"key": "n", "type": "string"}]
    )
    items = [{"g": 1, "n": "b"}, {"g": 2, "n": "a"}, {"g": 1, "n": "a"}, {"g": 2, "n": "c"}]
    await api.call("POST", "/api/data/t/bulk", owner, json={"items": items}, expect=201)
    page = await api.call("GET", "/api/data/t?sort=-g,n", owner, expect=200)
    assert [(r["g"], r["n"]) for r in page["items"]] == [(2, "a"), (2, "c"), (1, "a"), (1, "b")]
    for bad in ("sort=-g,nope", "sort=g,,n", "sort=g&sort_by=n", "sort=a,b,c,d,e,f"):
        body = await api.call("GET", f"/api/data/t?{bad}", owner, expect=400)
        assert body["error"]["details"][0]["field"] in ("sort", "sort_by")


async def test_bulk_update_and_delete_by_filter(api, owner, client):
    await seed(api, owner)
    flt = [{"field": "total_sum", "op": "gte", "value": 150000}]
    done = await api.call(
        "PATCH",
        "/api/data/contracts/bulk",
        owner,
        expect=200,
        json={"filters": flt, "values": {"status": 12}},
    )
    assert done == {"updated": 3}
    db = await rows_of(client, owner, "contracts")
    assert await db.count_documents({"status": 12}) == 3
    await api.call(
        "PATCH",
        "/api/data/contracts/bulk",
        owner,
        expect=400,
        json={"filters": [], "values": {"status": 12}},
    )
    await api.call("PATCH", "/api/data/contracts/bulk", owner, expect=400, json={"filters": flt})
    bad = await api.call(
        "PATCH",
        "/api/data/contracts/bulk",
        owner,
        expect=400,
        json={"filters": flt, "values": {"status": 99}},
    )
    assert bad["error"]["details"][0]["field"] == "values.status"
    deleted = await api.call(
        "POST",
        "/api/data/contracts/bulk-delete",
        owner,
        expect=200,
        json={"filters": [{"field": "is_archived", "value": True}]},
    )
    assert deleted == {"deleted": 1}
    await api.call(
        "POST", "/api/data/contracts/bulk-delete", owner, expect=400, json={"filters": []}
    )
    await api.call(
        "POST",
        "/api/data/contracts/bulk-delete",
        owner,
        expect=400,
        json={"filters": [{"field": "x", "value": 1}]},
    )
    assert await db.count_documents({}) == 4


async def test_column_view_per_user(api, owner, client, create_table):
    await create_table(owner, **CONTRACTS)
    view = await api.call("GET", "/api/meta/tables/contracts/view", owner, expect=200)
    assert view == {
        "column_order": ["company_name", "total_sum", "doc_date", "is_archived", "status"],
        "hidden": [],
    }
    saved = await api.call(
        "PUT",
        "/api/meta/tables/contracts/view",
        owner,
        expect=200,
        json={"column_order": ["status", "company_name"], "hidden": ["total_sum"]},
    )
    assert saved["column_order"][:2] == ["status", "company_name"]
    assert saved["hidden"] == ["total_sum"]
    bad = await api.call(
        "PUT",
        "/api/meta/tables/contracts/view",
        owner,
        expect=400,
        json={"column_order": ["status", "nope", "status"], "hidden": []},
    )
    assert [d["field"] for d in bad["error"]["details"]] == ["column_order.1", "column_order.2"]
    await api.call(
        "POST",
        "/api/meta/tables/contracts/columns",
        owner,
        expect=201,
        json={"key": "region", "type": "string"},
    )
    await api.call("DELETE", "/api/meta/tables/contracts/columns/total_sum", owner, expect=200)
    view = await api.call("GET", "/api/meta/tables/contracts/view", owner, expect=200)
    assert view["column_order"] == ["status", "company_name", "doc_date", "is_archived", "region"]
    assert view["hidden"] == []
    stored = await tenant_db(client, owner)["_views"].find_one({})
    assert "total_sum" not in stored["column_order"] + stored["hidden"]


async def _manual(api, account, extra=""):
    page = await api.call(
        "GET", f"/api/data/t?sort_by=manual&limit=100{extra}", account, expect=200
    )
    return [r["n"] for r in page["items"]]


async def test_manual_order_two_users_filters_and_pages(api, owner, client, create_table):
    await create_table(owner, "t")
    created = await api.call(
        "POST", "/api/data/t/bulk", owner, expect=201, json={"items": [{"n": i} for i in range(6)]}
    )
    ids = [r["id"] for r in created["items"]]
    assert await _manual(api, owner) == [0, 1, 2, 3, 4, 5]  # never moved: oldest first
    move = await api.call(
        "POST", f"/api/data/t/{ids[4]}/move", owner, expect=200, json={"before_id": ids[1]}
    )
    assert move["writes"] == 1
    await api.call(
        "POST", f"/api/data/t/{ids[0]}/move", owner, expect=200, json={"before_id": None}
    )
    await api.call(
        "POST", f"/api/data/t/{ids[5]}/move", owner, expect=200, json={"before_id": ids[4]}
    )
    assert await _manual(api, owner) == [5, 4, 1, 2, 3, 0]
    # moving before the same neighbour again keeps landing in the gap
    for _ in range(30):
        await api.call(
            "POST", f"/api/data/t/{ids[2]}/move", owner, expect=200, json={"before_id": ids[1]}
        )
        await api.call(
            "POST", f"/api/data/t/{ids[1]}/move", owner, expect=200, json={"before_id": ids[2]}
        )
    assert await _manual(api, owner) == [5, 4, 1, 2, 3, 0]
    # filters and pages keep the order
    flt = quote(json.dumps([{"field": "n", "op": "gte", "value": 1}]))
    assert await _manual(api, owner, f"&filters={flt}") == [5, 4, 1, 2, 3]
    first = await api.call("GET", "/api/data/t?sort_by=manual&limit=4", owner, expect=200)
    second = await api.call("GET", "/api/data/t?sort_by=manual&limit=4&offset=4", owner, expect=200)
    assert [r["n"] for r in first["items"] + second["items"]] == [5, 4, 1, 2, 3, 0]
    # a new row goes last
    await api.call("POST", "/api/data/t", owner, json={"n": 6}, expect=201)
    assert (await _manual(api, owner))[-1] == 6
    # another user of the tenant (an admin reaches the table through tables.all) has the
    # creation order and moves of their own that leave the owner's order alone
    admin = await add_user(api, client, owner, "admin")
    assert await _manual(api, admin) == [0, 1, 2, 3, 4, 5, 6]
    await api.call(
        "POST", f"/api/data/t/{ids[3]}/move", admin, expect=200, json={"before_id": ids[0]}
    )
    assert await _manual(api, admin) == [3, 0, 1, 2, 4, 5, 6]
    assert await _manual(api, owner) == [5, 4, 1, 2, 3, 0, 6]
    # deleting a moved row leaves no trace
    await api.call("DELETE", f"/api/data/t/{ids[4]}", owner, expect=204)
    assert await _manual(api, owner) == [5, 1, 2, 3, 0, 6]
    entries = await tenant_db(client, owner)["_orders"].find({"table": "t"}).to_list(None)
    assert ObjectId(ids[4]) not in {e["row"] for e in entries}
    assert {e["user"] for e in entries} == {owner.user_id, admin.user_id}
    assert await _manual(api, admin) == [3, 0, 1, 2, 5, 6]


async def test_move_errors(api, owner, create_table):
    await create_table(owner, "t")
    row = await api.call("POST", "/api/data/t", owner, json={"n": 1}, expect=201)
    await api.call(
        "POST", f"/api/data/t/{row['id']}/move", owner, expect=400, json={"before_id": row["id"]}
    )
    await api.call(
        "POST", f"/api/data/t/{row['id']}/move", owner, expect=400, json={"before_id": "nope"}
    )
    await api.call(
        "POST", f"/api/data/t/{row['id']}/move", owner, expect=404, json={"before_id": "0" * 24}
    )
    await api.call(
        "POST", f"/api/data/t/{'0' * 24}/move", owner, expect=404, json={"before_id": None}
    )
    await api.call("POST", f"/api/data/t/{row['id']}/move", owner, expect=400, json={})


async def test_manual_order_follows_a_model_through_random_moves(api, owner, client):
    """Moves in random places (never-moved rows in between, the end, deep pages) give the
    order a plain list model gives, in full, in pages and under a filter; each move is one
    write and reads a handful of documents whatever the table's size."""
    import random

    await api.call(
        "POST",
        "/api/meta/tables",
        owner,
        expect=201,
        json={"key": "t", "columns": [{"key": "n", "type": "integer"}]},
    )
    created = await api.call(
        "POST", "/api/data/t/bulk", owner, expect=201, json={"items": [{"n": i} for i in range(40)]}
    )
    ids = [r["id"] for r in created["items"]]
    model = list(range(40))
    rng = random.Random(7)
    for _ in range(60):
        moving = rng.randrange(40)
        before = rng.choice([None, *[i for i in range(40) if i != moving]])
        cost = await api.call(
            "POST",
            f"/api/data/t/{ids[moving]}/move",
            owner,
            expect=200,
            json={"before_id": None if before is None else ids[before]},
        )
        assert cost["writes"] == 1 and cost["reads"] <= 8, cost
        model.remove(moving)
        model.insert(len(model) if before is None else model.index(before), moving)
    assert await _manual(api, owner) == model
    paged = []
    for offset in range(0, 40, 7):
        page = await api.call(
            "GET", f"/api/data/t?sort_by=manual&limit=7&offset={offset}", owner, expect=200
        )
        assert page["total"] == 40
        paged += [r["n"] for r in page["items"]]
    assert paged == model
    flt = quote(json.dumps([{"field": "n", "op": "lt", "value": 20}]))
    assert await _manual(api, owner, f"&filters={flt}") == [n for n in model if n < 20]
    entries = await tenant_db(client, owner)["_orders"].find({"table": "t"}).to_list(None)
    assert len({e["rank"] for e in entries}) == len(entries)  # no two rows share a rank


async def test_concurrent_moves_into_one_gap_both_land(api, owner):
    await api.call(
        "POST",
        "/api/meta/tables",
        owner,
        expect=201,
        json={"key": "t", "columns": [{"key": "n", "type": "integer"}]},
    )
    created = await api.call(
        "POST", "/api/data/t/bulk", owner, expect=201, json={"items": [{"n": i} for i in range(5)]}
    )
    ids = [r["id"] for r in created["items"]]
    await asyncio.gather(
        *(
            api.call(
                "POST", f"/api/data/t/{ids[i]}/move", owner, expect=200, json={"before_id": ids[1]}
            )
            for i in (3, 4)
        )
    )
    order = await _manual(api, owner)
    assert order[0] == 0 and order[3:] == [1, 2] and sorted(order[1:3]) == [3, 4]
