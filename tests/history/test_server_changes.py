"""Changes the server makes to stored rows by itself (issue 28 §4, docs/history.md "Changes the
server makes"): a column change converting or clearing values, a link cleared because the row
it named went to the trash (and put back when it returns). Each is a write: the row's
`_version` goes up in the same update as its values (a client holding the old ETag gets 412),
and it leaves one system revision, so a row's revisions stay contiguous."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bson import ObjectId

from crm_core.tables import meta as meta_module
from crm_core.tables.history import UNRECORDED_FIELD
from handlers.app import create_app
from handlers.routing import SERVICES
from tests.support.api import Api, make_settings, rows_of, tenant_db
from tests.support.files import confirm, finished, make_table, stored, upload
from tests.support.history import replay
from tests.support.webhook_receiver import make_hook, wait_for

OPTIONS = [{"id": 1, "label": "A"}, {"id": 2, "label": "B"}, {"id": 3, "label": "C"}]


async def _request(client, method: str, path: str, account, if_match=None, **kwargs):
    headers = dict(account.headers)
    if if_match is not None:
        headers["If-Match"] = if_match
    resp = await client.request(method, path, headers=headers, **kwargs)
    body = await resp.json() if resp.content_type == "application/json" else None
    return resp.status, resp.headers, body


async def _table(api, owner, key: str, columns: list[dict[str, Any]]) -> None:
    await api.call(
        "POST", "/api/meta/tables", owner, expect=201, json={"key": key, "columns": columns}
    )


def _system(reason: str) -> dict[str, Any]:
    return {"type": "system", "id": None, "name": reason}


async def _seqs(client, owner, table: str, row_id: str) -> list[int]:
    """The row's revisions' `seq`, in order (as stored)."""
    history = tenant_db(client, owner)["_history"]
    found = history.find({"table": table, "row": ObjectId(row_id)}, {"seq": 1}).sort("seq", 1)
    return [d["seq"] async for d in found]


async def _no_marks(client, owner, table: str) -> None:
    """No server-made change left its mark (`_system_<id>`); the crash marks a batch left
    are for the recovery, which finds every revision stored and stores none again."""
    rows = await rows_of(client, owner, table)
    assert not [k async for row in rows.find({}) for k in row if k.startswith("_system_")]
    services = client.app[SERVICES]
    db = tenant_db(client, owner)
    assert await services.rows.changes.recover(db, services.column_types, timedelta(0)) == 0
    assert await rows.count_documents({UNRECORDED_FIELD: {"$exists": True}}) == 0


def _refused(status: int, body: dict[str, Any], current: int) -> None:
    assert status == 412, body
    assert body["error"]["code"] == "precondition_failed"
    assert body["error"]["details"][0] == {
        "field": "If-Match",
        "message": f"current version is {current}",
        "current": current,
    }


async def test_a_type_change_gives_each_converted_row_a_new_version_and_a_system_revision(
    api, client, owner
):
    await _table(api, owner, "t", [{"key": "v", "type": "integer"}, {"key": "w", "type": "string"}])
    row = await api.call("POST", "/api/data/t", owner, expect=201, json={"v": 5, "w": "x"})
    blank = await api.call("POST", "/api/data/t", owner, expect=201, json={"w": "y"})
    path = f"/api/data/t/{row['id']}"
    _, headers, _ = await _request(client, "GET", path, owner)
    assert headers["ETag"] == '"1"'
    await api.call(
        "PATCH", "/api/meta/tables/t/columns/v", owner, expect=200, json={"type": "string"}
    )
    status, headers, got = await _request(client, "GET", path, owner)
    assert status == 200 and got["v"] == "5"
    assert got["_version"] == 2 and headers["ETag"] == '"2"'
    # a PATCH based on the version read before the conversion: 412 naming the current one
    status, headers, body = await _request(client, "PATCH", path, owner, '"1"', json={"w": "z"})
    _refused(status, body, 2)
    assert headers["ETag"] == '"2"'
    assert (await api.call("GET", path, owner, expect=200))["w"] == "x"
    # the history has the system's revision, contiguous with the others
    history = await api.call("GET", f"{path}/history", owner, expect=200)
    newest = history["items"][0]
    assert newest["actor"] == _system("column_type_changed")
    assert newest["action"] == "updated"
    assert newest["changes"] == {"v": {"before": 5, "after": "5"}}
    assert await _seqs(client, owner, "t", row["id"]) == [1, 2]
    assert replay(history["items"]) == {"v": "5", "w": "x"}
    # a row with no value of the column is not written: same version, no revision
    same = await api.call("GET", f"/api/data/t/{blank['id']}", owner, expect=200)
    assert same["_version"] == 1
    assert await _seqs(client, owner, "t", blank["id"]) == [1]
    # with the new version the write lands
    status, headers, got = await _request(client, "PATCH", path, owner, '"2"', json={"w": "z"})
    assert status == 200 and got["_version"] == 3 and headers["ETag"] == '"3"'
    assert await _seqs(client, owner, "t", row["id"]) == [1, 2, 3]
    await _no_marks(client, owner, "t")


async def test_bulk_items_based_on_the_version_before_a_conversion_are_refused(api, client, owner):
    await _table(api, owner, "t", [{"key": "v", "type": "integer"}])
    row = await api.call("POST", "/api/data/t", owner, expect=201, json={"v": 1})
    await api.call(
        "PATCH", "/api/meta/tables/t/columns/v", owner, expect=200, json={"type": "string"}
    )
    body = await api.call(
        "PATCH",
        "/api/data/t/bulk",
        owner,
        expect=412,
        json={"items": [{"id": row["id"], "v": "9", "_version": 1}]},
    )
    assert body["error"]["details"][0]["field"] == "items.0._version"
    assert body["error"]["details"][0]["current"] == 2


async def test_removed_options_clear_values_as_a_system_revision(api, client, owner):
    await _table(api, owner, "t", [{"key": "s", "type": "select", "options": OPTIONS}])
    kept = await api.call("POST", "/api/data/t", owner, expect=201, json={"s": 1})
    cleared = await api.call("POST", "/api/data/t", owner, expect=201, json={"s": 2})
    await api.call(
        "PATCH",
        "/api/meta/tables/t/columns/s",
        owner,
        expect=200,
        json={"options": [{"id": 1, "label": "A"}, {"id": 3, "label": "C"}]},
    )
    got = await api.call("GET", f"/api/data/t/{cleared['id']}", owner, expect=200)
    assert "s" not in got and got["_version"] == 2
    history = await api.call("GET", f"/api/data/t/{cleared['id']}/history", owner, expect=200)
    assert history["items"][0]["actor"] == _system("column_changed")
    assert history["items"][0]["changes"] == {"s": {"before": 2, "after": None}}
    assert (await api.call("GET", f"/api/data/t/{kept['id']}", owner, expect=200))["_version"] == 1


async def test_a_system_revision_is_revertable_like_any_other(api, client, owner):
    await _table(api, owner, "t", [{"key": "v", "type": "integer"}])
    row = await api.call("POST", "/api/data/t", owner, expect=201, json={"v": 5})
    path = f"/api/data/t/{row['id']}"
    await api.call(
        "PATCH", "/api/meta/tables/t/columns/v", owner, expect=200, json={"type": "string"}
    )
    await api.call("PATCH", path, owner, expect=200, json={"v": "7"})
    history = await api.call("GET", f"{path}/history", owner, expect=200)
    system = next(i for i in history["items"] if i["actor"]["type"] == "system")
    reverted = await api.call("POST", f"{path}/history/{system['id']}/revert", owner, expect=200)
    assert reverted["v"] == "5" and reverted["_version"] == 4
    assert await _seqs(client, owner, "t", row["id"]) == [1, 2, 3, 4]


async def test_a_conversion_in_batches_costs_a_few_calls_per_batch_not_per_row(
    api, client, owner, monkeypatch
):
    """The rows are written by bulk writes of `CONVERSION_BATCH`, each followed by a fixed
    number of calls (insert the revisions, clear the marks; the marks are read only when a
    bulk write matched fewer rows than it held): the figure docs/history.md quotes."""
    monkeypatch.setattr(meta_module, "CONVERSION_BATCH", 10)
    made: list[Any] = []
    original = meta_module.SystemChange

    def spy(*args: Any, **kwargs: Any) -> Any:
        change = original(*args, **kwargs)
        made.append(change)
        return change

    monkeypatch.setattr(meta_module, "SystemChange", spy)
    await _table(api, owner, "t", [{"key": "v", "type": "integer"}])
    await api.call(
        "POST", "/api/data/t/bulk", owner, expect=201, json={"items": [{"v": i} for i in range(35)]}
    )
    await api.call(
        "PATCH", "/api/meta/tables/t/columns/v", owner, expect=200, json={"type": "string"}
    )
    conversion = made[0]
    assert len(conversion.applied) == 35
    assert conversion.round_trips == 4 * 3  # 4 batches (10, 10, 10, 5) of 3 calls each
    rows = await (await rows_of(client, owner, "t")).find({}).to_list(None)
    assert {r["_rev"] for r in rows} == {2} and {type(r["v"]) for r in rows} == {str}
    await _no_marks(client, owner, "t")


async def test_a_link_cleared_by_its_rows_delete_is_a_new_version_and_a_system_revision(
    api, client, owner, receiver
):
    await _table(api, owner, "firms", [{"key": "name", "type": "string"}])
    await _table(
        api,
        owner,
        "deals",
        [{"key": "title", "type": "string"}, {"key": "firm", "type": "link", "table": "firms"}],
    )
    await make_hook(api, owner, f"{receiver.url}/hook", events=["row.updated"])
    firm = await api.call("POST", "/api/data/firms", owner, expect=201, json={"name": "F"})
    deal = await api.call(
        "POST", "/api/data/deals", owner, expect=201, json={"title": "D", "firm": firm["id"]}
    )
    other = await api.call("POST", "/api/data/deals", owner, expect=201, json={"title": "E"})
    path = f"/api/data/deals/{deal['id']}"
    _, headers, _ = await _request(client, "GET", path, owner)
    assert headers["ETag"] == '"1"'
    await api.call("DELETE", f"/api/data/firms/{firm['id']}", owner, expect=204)
    status, headers, got = await _request(client, "GET", path, owner)
    assert "firm" not in got and got["_version"] == 2 and headers["ETag"] == '"2"'
    status, _, body = await _request(client, "PATCH", path, owner, '"1"', json={"title": "X"})
    _refused(status, body, 2)
    history = await api.call("GET", f"{path}/history", owner, expect=200)
    assert history["items"][0]["actor"] == _system("link_target_deleted")
    assert history["items"][0]["changes"] == {"firm": {"before": firm["id"], "after": None}}
    assert await _seqs(client, owner, "deals", deal["id"]) == [1, 2]
    # a deal that did not link to it is not touched
    assert (await api.call("GET", f"/api/data/deals/{other['id']}", owner))["_version"] == 1
    # the linking row's subscribers hear `row.updated`, as for a PATCH

    async def told() -> bool:
        return len(receiver.received) >= 1

    await wait_for(told, "row.updated of the cleared link")
    (event,) = receiver.events()
    assert event["event"] == "row.updated"
    (item,) = event["items"]
    assert item["id"] == deal["id"] and item["changed"] == ["firm"]
    assert item["previous"] == {"firm": firm["id"]} and "firm" not in item["row"]
    # the firm comes back from the trash: the link is put back, another system revision
    (trashed,) = (await api.call("GET", "/api/trash", owner, expect=200))["items"]
    await api.call("POST", f"/api/trash/{trashed['id']}/restore", owner, expect=200)
    got = await api.call("GET", path, owner, expect=200)
    assert got["firm"] == firm["id"] and got["_version"] == 3
    history = await api.call("GET", f"{path}/history", owner, expect=200)
    assert history["items"][0]["actor"] == _system("link_target_restored")
    assert history["items"][0]["changes"] == {"firm": {"before": None, "after": firm["id"]}}
    assert await _seqs(client, owner, "deals", deal["id"]) == [1, 2, 3]
    assert replay(history["items"]) == {"title": "D", "firm": firm["id"]}
    await _no_marks(client, owner, "deals")


async def test_a_failed_imports_updates_put_back_are_a_new_version_not_the_old_one(
    aiohttp_client, monkeypatch
):
    """A failed import undoes its written batches; an update it made was recorded (a
    revision, `row.updated`), so the values from before it come back as a system revision
    and a new version: the history stays contiguous, an ETag is never given twice."""
    from crm_core.files import imports
    from crm_core.platform.errors import Conflict

    client = await aiohttp_client(create_app(make_settings(import_batch_size=2)))
    api = Api(client)
    owner = await api.register()
    await make_table(api, owner)
    ann = await api.call(
        "POST",
        "/api/data/people",
        owner,
        expect=201,
        json={"name": "Ann", "email": "ann@example.com", "amount": 1},
    )
    real_apply = imports.apply_plan
    calls: list[Any] = []

    async def failing_second_batch(ctx, table, plan, rows=None):
        calls.append(plan)
        if len(calls) == 2:
            raise Conflict("The value of unique column 'email' is already used by another row")
        await real_apply(ctx, table, plan, rows)

    monkeypatch.setattr(imports, "apply_plan", failing_second_batch)
    csv = (
        b"name,email,amount\nAnn,ann@example.com,5\nBob,bob@example.com,2\nCid,cid@example.com,3\n"
    )
    _, job = await upload(client, owner, csv)
    await confirm(api, owner, job, upsert_on="email")
    done = await finished(api, owner, job)
    assert done["state"] == "failed"
    path = f"/api/data/people/{ann['id']}"
    got = await api.call("GET", path, owner, expect=200)
    assert got["amount"] == 1 and got["_version"] == 3
    assert [r["name"] for r in await stored(api, owner)] == ["Ann"]
    history = await api.call("GET", f"{path}/history", owner, expect=200)
    assert [i["actor"]["type"] for i in history["items"]] == ["system", "import", "user"]
    assert history["items"][0]["actor"] == _system("import_rolled_back")
    assert history["items"][0]["changes"] == {"amount": {"before": 5.0, "after": 1.0}}
    assert await _seqs(client, owner, "people", ann["id"]) == [1, 2, 3]
    assert replay(history["items"])["amount"] == 1.0


async def test_a_conversion_undone_half_way_leaves_two_system_revisions(
    api, client, owner, monkeypatch
):
    """The rows a failed conversion had converted get their values back as a write too: one
    version more and a `column_change_undone` revision, never a version given twice."""
    monkeypatch.setattr(meta_module, "CONVERSION_BATCH", 2)
    await _table(api, owner, "t", [{"key": "v", "type": "integer"}])
    created = await api.call(
        "POST", "/api/data/t/bulk", owner, expect=201, json={"items": [{"v": i} for i in range(6)]}
    )
    ids = [r["id"] for r in created["items"]]
    original = meta_module.update_each
    calls: list[int] = []

    async def failing(collection, updates, ordered=True):
        calls.append(len(updates))
        if len(calls) == 2:  # the conversion's second batch: a unique value taken meanwhile
            raise meta_module.DuplicateKeyError("E11000 duplicate key error")
        return await original(collection, updates, ordered=ordered)

    monkeypatch.setattr(meta_module, "update_each", failing)
    await api.call(
        "PATCH", "/api/meta/tables/t/columns/v", owner, expect=409, json={"type": "string"}
    )
    stored = {str(r["_id"]): r async for r in (await rows_of(client, owner, "t")).find({})}
    assert {type(r["v"]) for r in stored.values()} == {int}
    for row_id in ids[:2]:  # converted by the first batch, then put back
        assert stored[row_id]["_rev"] == 3
        assert await _seqs(client, owner, "t", row_id) == [1, 2, 3]
        page = await api.call("GET", f"/api/data/t/{row_id}/history", owner, expect=200)
        assert [i["actor"]["name"] for i in page["items"][:2]] == [
            "column_change_undone",
            "column_type_changed",
        ]
        assert replay(page["items"]) == {"v": stored[row_id]["v"]}
    for row_id in ids[2:]:  # never reached
        assert stored[row_id]["_rev"] == 1
    await _no_marks(client, owner, "t")
