"""Row history (docs/history.md): every change recorded once, read newest first, reverted."""

from __future__ import annotations

import asyncio
import itertools

from tests.support.api import rows_of, tenant_db
from tests.support.history import replay

COLUMNS = [
    {"key": "name", "type": "string"},
    {"key": "n", "type": "integer"},
    {"key": "code", "type": "string", "unique": True},
    {
        "key": "stage",
        "type": "select",
        "options": [{"id": 1, "label": "a"}, {"id": 2, "label": "b"}],
    },
]


async def _history(api, account, row_id, table="deals", **params):
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return await api.call("GET", f"/api/data/{table}/{row_id}/history?{query}", account, expect=200)


async def test_create_and_update_record_only_what_changed(api, owner, create_table):
    await create_table(owner, "deals", COLUMNS)
    row = await api.call(
        "POST",
        "/api/data/deals",
        owner,
        expect=201,
        json={"name": "A", "n": 1, "stage": 1},
        headers={"X-Request-ID": "req-create"},
    )
    await api.call(
        "PATCH",
        f"/api/data/deals/{row['id']}",
        owner,
        expect=200,
        json={"name": "A", "n": 2, "stage": 2},
        headers={"X-Request-ID": "req-update"},
    )
    page = await _history(api, owner, row["id"])
    assert page["total"] == 2
    updated, created = page["items"]
    assert updated["action"] == "updated"
    assert updated["changes"] == {
        "n": {"before": 1, "after": 2},
        "stage": {"before": 1, "after": 2},  # select ids, as the API writes them
    }
    assert updated["request_id"] == "req-update"
    assert updated["actor"] == {
        "type": "user",
        "id": owner.user_id,
        "name": updated["actor"]["name"],
    }
    assert created["action"] == "created" and created["request_id"] == "req-create"
    assert created["changes"] == {
        "name": {"before": None, "after": "A"},
        "n": {"before": None, "after": 1},
        "stage": {"before": None, "after": 1},
    }


async def test_a_no_op_update_records_nothing(api, owner, create_table):
    await create_table(owner, "deals", COLUMNS)
    row = await api.call("POST", "/api/data/deals", owner, expect=201, json={"n": 1})
    await api.call("PATCH", f"/api/data/deals/{row['id']}", owner, expect=200, json={"n": 1})
    assert (await _history(api, owner, row["id"]))["total"] == 1


async def test_column_filter_and_paging(api, owner, create_table):
    await create_table(owner, "deals", COLUMNS)
    row = await api.call("POST", "/api/data/deals", owner, expect=201, json={"n": 0})
    for value in range(1, 6):
        body = {"n": value} if value % 2 else {"name": f"x{value}"}
        await api.call("PATCH", f"/api/data/deals/{row['id']}", owner, expect=200, json=body)
    only_n = await _history(api, owner, row["id"], column="n")
    assert only_n["total"] == 4  # created + 1, 3, 5
    assert [i["changes"]["n"]["after"] for i in only_n["items"]] == [5, 3, 1, 0]
    second = await _history(api, owner, row["id"], limit=2, offset=2)
    assert second["total"] == 6 and len(second["items"]) == 2
    bad = await api.call(
        "GET", f"/api/data/deals/{row['id']}/history?column=nope", owner, expect=400
    )
    assert bad["error"]["details"][0]["field"] == "column"


async def test_bulk_upsert_and_filter_updates_are_recorded(api, owner, create_table):
    await create_table(owner, "deals", COLUMNS)
    created = await api.call(
        "POST",
        "/api/data/deals/bulk?return=rows",
        owner,
        expect=201,
        json={"items": [{"code": "a", "n": 1}, {"code": "b", "n": 1}]},
    )
    ids = [r["id"] for r in created["items"]]
    await api.call(
        "POST",
        "/api/data/deals/bulk",
        owner,
        expect=201,
        json={"items": [{"code": "a", "n": 5}], "upsert_on": "code"},
    )
    await api.call(
        "PATCH",
        "/api/data/deals/bulk",
        owner,
        expect=200,
        json={"filters": [{"field": "code", "op": "eq", "value": "b"}], "values": {"n": 7}},
    )
    await api.call(
        "PATCH", "/api/data/deals/bulk", owner, expect=200, json={"items": [{"id": ids[0], "n": 6}]}
    )
    first = await _history(api, owner, ids[0])
    assert [i["changes"].get("n", {}).get("after") for i in first["items"]] == [6, 5, 1]
    second = await _history(api, owner, ids[1])
    assert [i["action"] for i in second["items"]] == ["updated", "created"]
    assert second["items"][0]["changes"] == {"n": {"before": 1, "after": 7}}


async def test_revert_puts_back_the_values_after_the_revision(api, owner, create_table):
    await create_table(owner, "deals", COLUMNS)
    row = await api.call("POST", "/api/data/deals", owner, expect=201, json={"n": 1, "name": "A"})
    path = f"/api/data/deals/{row['id']}"
    await api.call("PATCH", path, owner, expect=200, json={"n": 2})
    await api.call("PATCH", path, owner, expect=200, json={"n": 3, "name": None})
    created = (await _history(api, owner, row["id"]))["items"][-1]
    reverted = await api.call("POST", f"{path}/history/{created['id']}/revert", owner, expect=200)
    assert reverted["n"] == 1 and reverted["name"] == "A"
    assert await api.call("GET", path, owner, expect=200) == reverted
    newest = (await _history(api, owner, row["id"]))["items"][0]
    assert newest["action"] == "reverted"
    assert newest["changes"] == {
        "n": {"before": 3, "after": 1},
        "name": {"before": None, "after": "A"},
    }


async def test_revert_errors(api, owner, create_table):
    await create_table(owner, "deals", COLUMNS)
    row = await api.call("POST", "/api/data/deals", owner, expect=201, json={"code": "x"})
    other = await api.call("POST", "/api/data/deals", owner, expect=201, json={"n": 1})
    path = f"/api/data/deals/{row['id']}"
    await api.call("PATCH", path, owner, expect=200, json={"code": "y"})
    first = (await _history(api, owner, row["id"]))["items"][-1]
    # an unknown revision, or one of another row: 404
    missing = await api.call("POST", f"{path}/history/{'0' * 24}/revert", owner, expect=404)
    assert missing["error"]["code"] == "not_found"
    other_first = (await _history(api, owner, other["id"]))["items"][0]
    await api.call("POST", f"{path}/history/{other_first['id']}/revert", owner, expect=404)
    # the unique value it would put back is taken since: 409 naming the column
    await api.call("POST", "/api/data/deals", owner, expect=201, json={"code": "x"})
    taken = await api.call("POST", f"{path}/history/{first['id']}/revert", owner, expect=409)
    assert taken["error"]["details"][0]["field"] == "code"
    # a row in the trash: 409
    await api.call("DELETE", path, owner, expect=204)
    trashed = await api.call("POST", f"{path}/history/{first['id']}/revert", owner, expect=409)
    assert "trash" in trashed["error"]["message"]
    # a row that never was: 404
    await api.call("GET", f"/api/data/deals/{'0' * 24}/history", owner, expect=404)


async def test_history_follows_the_table_access(api, owner, create_table, create_user):
    await create_table(owner, "deals", COLUMNS)
    row = await api.call("POST", "/api/data/deals", owner, expect=201, json={"n": 1})
    viewer = await create_user(owner, "viewer")
    await api.call("GET", f"/api/data/deals/{row['id']}/history", viewer, expect=404)
    first = (await _history(api, owner, row["id"]))["items"][0]
    await api.call(
        "POST", f"/api/data/deals/{row['id']}/history/{first['id']}/revert", viewer, expect=404
    )
    other = await api.register()
    await api.call("GET", f"/api/data/deals/{row['id']}/history", other, expect=404)


async def test_entity_routes_have_history(api, owner):
    lead = await api.call("POST", "/api/leads", owner, expect=201, json={"title": "Ann"})
    await api.call("PATCH", f"/api/leads/{lead['id']}", owner, expect=200, json={"title": "Bo"})
    page = await api.call("GET", f"/api/leads/{lead['id']}/history", owner, expect=200)
    assert page["items"][0]["changes"] == {"title": {"before": "Ann", "after": "Bo"}}


async def test_concurrent_updates_each_leave_one_revision(api, owner, client, create_table):
    await create_table(owner, "deals", COLUMNS)
    row = await api.call("POST", "/api/data/deals", owner, expect=201, json={"n": 0})
    path = f"/api/data/deals/{row['id']}"
    await asyncio.gather(
        *(api.call("PATCH", path, owner, expect=200, json={"n": i}) for i in range(1, 21))
    )
    page = await _history(api, owner, row["id"], limit=100)
    assert page["total"] == 21  # created + 20 (every value differs from the one before it)
    stored = await api.call("GET", path, owner, expect=200)
    assert replay(page["items"]) == {"n": stored["n"]}
    # each revision's `before` is the `after` of the one before it: one consistent chain
    ordered = list(reversed(page["items"]))
    for earlier, later in itertools.pairwise(ordered):
        assert later["changes"]["n"]["before"] == earlier["changes"]["n"]["after"]
    seqs = [d["seq"] async for d in tenant_db(client, owner)["_history"].find({})]
    assert sorted(seqs) == list(range(1, 22))
    assert (await (await rows_of(client, owner, "deals")).find_one({}))["_rev"] == 21
