"""Optimistic concurrency (issue 28 §4, docs/api.md "Versions, ETag and If-Match"): rows answer
`_version` and `ETag`; PATCH and DELETE with `If-Match` land only on that version (412
`precondition_failed` naming the current one, checked in the write's own filter), bulk items
carry `_version`, table definitions the same with their `version`; without `If-Match`
nothing changes."""

from __future__ import annotations

import asyncio
from typing import Any

from crm_core.tables.rows import RowService
from crm_core.tables.trash import RowTrash
from handlers.app import create_app
from handlers.routing import SERVICES
from tests.support.api import Api, Factories, add_user, make_settings, rows_of

COLUMNS = [{"key": "title", "type": "string"}, {"key": "amount", "type": "integer"}]


async def _deal(api, owner, **values: Any) -> dict[str, Any]:
    await Factories(api).table(owner, key="deals", columns=COLUMNS)
    body = {"title": "Deal", "amount": 1, **values}
    return await api.call("POST", "/api/data/deals", owner, json=body, expect=201)  # type: ignore[no-any-return]


async def _request(client, method: str, path: str, account, if_match=None, **kwargs):
    headers = dict(account.headers)
    if if_match is not None:
        headers["If-Match"] = if_match
    resp = await client.request(method, path, headers=headers, **kwargs)
    body = await resp.json() if resp.content_type == "application/json" else None
    return resp.status, resp.headers, body


def _precondition(body: dict[str, Any], current: int, field: str = "If-Match") -> None:
    assert body["error"]["code"] == "precondition_failed"
    assert body["error"]["details"][0]["field"] == field
    assert body["error"]["details"][0]["current"] == current
    assert f"version {current}" in body["error"]["message"]


async def test_rows_answer_their_version_and_patch_checks_if_match(api, owner, client):
    created = await _deal(api, owner)
    path = f"/api/data/deals/{created['id']}"
    assert created["_version"] == 1
    status, headers, row = await _request(client, "GET", path, owner)
    assert status == 200 and headers["ETag"] == '"1"' and row["_version"] == 1
    # without If-Match: as before, the write lands whatever the version
    status, headers, row = await _request(client, "PATCH", path, owner, json={"amount": 2})
    assert status == 200 and row["_version"] == 2 and headers["ETag"] == '"2"'
    # a PATCH based on version 1 is refused: someone changed the row first
    status, headers, body = await _request(client, "PATCH", path, owner, '"1"', json={"amount": 99})
    assert status == 412 and headers["ETag"] == '"2"'
    _precondition(body, 2)
    stored = await (await rows_of(client, owner, "deals")).find_one({})
    assert stored["amount"] == 2 and stored["_rev"] == 2  # one counter: `_rev` is `_version`
    status, headers, row = await _request(client, "PATCH", path, owner, '"2"', json={"amount": 3})
    assert status == 200 and row["amount"] == 3 and row["_version"] == 3
    assert headers["ETag"] == '"3"'
    # `*` asks only that the row exists
    status, _, row = await _request(client, "PATCH", path, owner, "*", json={"amount": 4})
    assert status == 200 and row["_version"] == 4
    # the version is read-only in a body; the history counts the same versions
    body = await api.call("PATCH", path, owner, json={"_version": 9}, expect=400)
    assert body["error"]["details"][0]["field"] == "_version"
    history = await api.call("GET", f"{path}/history", owner, expect=200)
    assert len(history["items"]) == 4
    # a row that is not there is still 404, with or without If-Match
    missing = f"/api/data/deals/{'a' * 24}"
    status, _, _ = await _request(client, "PATCH", missing, owner, '"1"', json={"amount": 1})
    assert status == 404


async def test_a_malformed_if_match_is_400_naming_the_header(api, owner, client):
    created = await _deal(api, owner)
    path = f"/api/data/deals/{created['id']}"
    for header in ("1", 'W/"1"', '"abc"', '"1", "2"', '"', '"-1"', '"1' + "0" * 20 + '"', "é"):
        status, _, body = await _request(client, "PATCH", path, owner, header, json={})
        assert status == 400, header
        assert body["error"]["details"][0]["field"] == "If-Match", header
        status, _, body = await _request(client, "DELETE", path, owner, header)
        assert status == 400, header
    headers = [("If-Match", '"1"'), ("If-Match", '"1"'), *owner.headers.items()]
    resp = await client.patch(path, headers=headers, json={})
    assert resp.status == 400
    assert (await resp.json())["error"]["details"][0]["field"] == "If-Match"
    row = await api.call("GET", path, owner, expect=200)
    assert row["_version"] == 1  # nothing was written


async def test_twenty_racing_patches_with_one_version_let_exactly_one_through(
    aiohttp_client, monkeypatch
):
    """Every PATCH passes its checks before any writes (a barrier in the last step before the
    write), so a read-then-write check would let them all through; the version in the
    update's filter lets one. (No turns of the embedded mode: all twenty run at once.)"""
    client = await aiohttp_client(create_app(make_settings(embedded_max_active_requests=0)))
    api = Api(client)
    owner = await api.register()
    created = await _deal(api, owner)
    manager = await add_user(api, client, owner, "manager")
    await api.call(
        "POST",
        "/api/shares",
        owner,
        json={"table": "deals", "user_id": manager.user_id, "access": "write"},
        expect=201,
    )
    barrier = asyncio.Barrier(20)
    check_rules = RowService.check_rules

    async def all_at_the_write(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        await check_rules(self, *args, **kwargs)
        await asyncio.wait_for(barrier.wait(), 10)

    monkeypatch.setattr(RowService, "check_rules", all_at_the_write)
    path = f"/api/data/deals/{created['id']}"
    answers = await asyncio.gather(
        *(
            _request(client, "PATCH", path, (owner, manager)[i % 2], '"1"', json={"amount": i})
            for i in range(20)
        )
    )
    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [200] + [412] * 19
    winner = next(body for status, _, body in answers if status == 200)
    for status, _, body in answers:
        if status == 412:
            _precondition(body, 2)
    stored = await (await rows_of(client, owner, "deals")).find_one({})
    assert stored["amount"] == winner["amount"] and stored["_rev"] == 2
    history = await api.call("GET", f"{path}/history", owner, expect=200)
    assert len(history["items"]) == 2  # created, and the one update that landed


async def test_delete_with_if_match(api, owner, client, monkeypatch):
    created = await _deal(api, owner)
    path = f"/api/data/deals/{created['id']}"
    await api.call("PATCH", path, owner, json={"amount": 5}, expect=200)
    status, _, body = await _request(client, "DELETE", path, owner, '"1"')
    assert status == 412
    _precondition(body, 2)
    await api.call("GET", path, owner, expect=200)
    assert (await api.call("GET", "/api/trash", owner))["total"] == 0
    # a write landing between the copy to the trash and the removal wins: the delete is 412,
    # the row stays with that write, and its copy leaves the trash
    put_rows = RowTrash.put_rows
    rows = await rows_of(client, owner, "deals")

    async def write_meanwhile(self, ctx, table, docs, batch=None):  # type: ignore[no-untyped-def]
        await put_rows(self, ctx, table, docs, batch)
        await rows.update_one({}, {"$set": {"amount": 6}, "$inc": {"_rev": 1}})

    monkeypatch.setattr(RowTrash, "put_rows", write_meanwhile)
    status, _, body = await _request(client, "DELETE", path, owner, '"2"')
    assert status == 412
    _precondition(body, 3)
    monkeypatch.undo()
    assert (await api.call("GET", path, owner, expect=200))["amount"] == 6
    assert (await api.call("GET", "/api/trash", owner))["total"] == 0
    assert await tenant_trash_count(client, owner) == 0
    status, _, _ = await _request(client, "DELETE", path, owner, '"3"')
    assert status == 204
    assert (await api.call("GET", "/api/trash", owner))["total"] == 1
    status, _, _ = await _request(client, "DELETE", path, owner, '"3"')
    assert status == 404


async def tenant_trash_count(client, owner) -> int:
    db = client.app[SERVICES].storage.tenant_db(owner.tenant_id)
    return int(await db["_trash"].count_documents({}))


async def test_bulk_items_carry_their_version(api, owner, client, monkeypatch):
    await _deal(api, owner)
    more = [{"title": f"D{i}", "amount": i} for i in range(2)]
    await api.call("POST", "/api/data/deals/bulk", owner, json={"items": more}, expect=201)
    rows = (await api.call("GET", "/api/data/deals?sort=amount", owner))["items"]
    first, second, third = rows
    await api.call("PATCH", f"/api/data/deals/{second['id']}", owner, json={"amount": 7})
    items = [
        {"id": first["id"], "_version": 1, "title": "x"},
        {"id": second["id"], "_version": 1, "title": "y"},
        {"id": third["id"], "title": "z"},  # no version: no check
    ]
    body = await api.call("PATCH", "/api/data/deals/bulk", owner, json={"items": items})
    assert body["error"]["code"] == "precondition_failed"
    assert body["error"]["details"] == [
        {"field": "items.1._version", "message": "current version is 2", "current": 2}
    ]
    after = (await api.call("GET", "/api/data/deals?sort=amount", owner))["items"]
    assert {r["title"] for r in after} == {"D0", "Deal", "D1"}  # nothing was changed
    items[1]["_version"] = 2
    done = await api.call("PATCH", "/api/data/deals/bulk", owner, json={"items": items})
    assert [r["title"] for r in done["items"]] == ["x", "y", "z"]
    assert [r["_version"] for r in done["items"]] == [2, 3, 2]
    bad = [{"id": first["id"], "_version": "2", "title": "q"}]
    body = await api.call("PATCH", "/api/data/deals/bulk", owner, json={"items": bad})
    assert body["error"]["details"][0]["field"] == "items.0._version"
    # a write between the bulk's read and its writes: the items already written are put back
    check_rules = RowService.check_rules
    collection = await rows_of(client, owner, "deals")

    async def write_meanwhile(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        await check_rules(self, *args, **kwargs)
        await collection.update_one({"title": "z"}, {"$set": {"amount": 50}, "$inc": {"_rev": 1}})

    monkeypatch.setattr(RowService, "check_rules", write_meanwhile)
    items = [
        {"id": first["id"], "_version": 2, "title": "x2"},
        {"id": third["id"], "_version": 2, "title": "z2"},
    ]
    status, _, body = await _request(
        client, "PATCH", "/api/data/deals/bulk", owner, json={"items": items}
    )
    assert status == 412
    _precondition(body, 3, "items.1._version")
    monkeypatch.undo()
    stored = {d["title"]: d for d in await collection.find({}).to_list(None)}
    assert set(stored) == {"x", "y", "z"}  # x2 was put back
    # by a write of the server's: x2 had version 3 (an ETag), the put-back is 4, not 2 again
    assert stored["x"]["_rev"] == 4 and stored["z"]["amount"] == 50


async def test_table_definitions_take_if_match(api, owner, client):
    """Two admins edit the columns from the same definition: the second edit is 412."""
    await Factories(api).table(owner, key="deals", columns=COLUMNS)
    admin = await add_user(api, client, owner, "admin")
    path = "/api/meta/tables/deals"
    status, headers, table = await _request(client, "GET", path, owner)
    assert status == 200 and headers["ETag"] == '"1"' and table["version"] == 1
    column = {"key": "stage", "type": "string"}
    status, headers, table = await _request(
        client, "POST", f"{path}/columns", owner, '"1"', json=column
    )
    assert status == 201 and headers["ETag"] == '"2"' and table["version"] == 2
    status, headers, body = await _request(
        client, "POST", f"{path}/columns", admin, '"1"', json={"key": "other", "type": "string"}
    )
    assert status == 412 and headers["ETag"] == '"2"'
    _precondition(body, 2)
    status, _, body = await _request(
        client, "PATCH", f"{path}/columns/stage", admin, '"1"', json={"name": "Stage"}
    )
    assert status == 412
    for method, url in (("DELETE", f"{path}/columns/stage"), ("DELETE", path)):
        status, _, body = await _request(client, method, url, admin, '"1"')
        assert status == 412, url
    status, _, body = await _request(client, "PATCH", path, admin, '"1"', json={"name": "D"})
    assert status == 412
    table = await api.call("GET", path, owner, expect=200)
    assert [c["key"] for c in table["columns"]] == ["title", "amount", "stage"]
    assert table["version"] == 2 and table["name"] == "deals"
    # the right version goes through; ?version=N keeps its 409; both at once is 400
    status, headers, table = await _request(
        client, "PATCH", f"{path}/columns/stage", admin, '"2"', json={"name": "Stage"}
    )
    assert status == 200 and headers["ETag"] == '"3"'
    body = await api.call("PATCH", f"{path}?version=1", owner, json={"name": "D"}, expect=409)
    assert body["error"]["code"] == "conflict"
    status, _, body = await _request(
        client, "PATCH", f"{path}?version=3", owner, '"3"', json={"name": "D"}
    )
    assert status == 400 and body["error"]["details"][0]["field"] == "If-Match"
    status, _, body = await _request(client, "PATCH", path, owner, "3", json={"name": "D"})
    assert status == 400 and body["error"]["details"][0]["field"] == "If-Match"
    # ten admins add columns from version 3 at once: one lands
    answers = await asyncio.gather(
        *(
            _request(
                client,
                "POST",
                f"{path}/columns",
                (owner, admin)[i % 2],
                '"3"',
                json={"key": f"c{i}", "type": "string"},
            )
            for i in range(10)
        )
    )
    assert sorted(status for status, _, _ in answers) == [201] + [412] * 9
    table = await api.call("GET", path, owner, expect=200)
    assert table["version"] == 4 and len(table["columns"]) == 4


async def test_the_document_declares_if_match_etag_412_and_cursors(client):
    doc = await (await client.get("/api/openapi.json")).json()
    paths = doc["paths"]
    row, table = paths["/api/data/{table}/{row_id}"], paths["/api/meta/tables/{table}"]
    column = paths["/api/meta/tables/{table}/columns/{column}"]
    for operation in (row["patch"], row["delete"], table["patch"], table["delete"]):
        assert "412" in operation["responses"]
        headers = [p["name"] for p in operation["parameters"] if p["in"] == "header"]
        assert headers == ["If-Match"]
    for operation in (column["patch"], column["delete"], paths["/api/leads/{row_id}"]["patch"]):
        assert "412" in operation["responses"]
    for operation in (row["get"], row["patch"], table["get"], column["patch"]):
        assert "ETag" in operation["responses"]["200"]["headers"]
    lists = [
        "/api/data/{table}",
        "/api/leads",
        "/api/data/{table}/{row_id}/history",
        "/api/trash",
        "/api/audit",
        "/api/users",
        "/api/sms/campaigns",
        "/api/sms/campaigns/{campaign_id}/messages",
    ]
    for path in lists:
        params = {p["name"]: p for p in paths[path]["get"]["parameters"] if p["in"] == "query"}
        assert "cursor" in params, path
        if "offset" in params:
            assert params["offset"]["schema"]["maximum"] == 10_000, path
    schemas = doc["components"]["schemas"]
    for name in ("HistoryPage", "TrashPage", "AuditPage", "UserList", "CampaignList"):
        assert "next_cursor" in schemas[name]["required"], name
    assert "next_cursor" in schemas["RowPage"]["required"]
