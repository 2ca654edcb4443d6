"""Cursor pages (issue 28 §3, docs/api.md "Pages and cursors"): every list takes `cursor` and
answers `next_cursor`; pages follow the sort keys of the last item (blanks included, both
directions, manual order too), never repeat or miss rows written meanwhile, cost the same
at any depth, and a cursor is refused (400 `invalid_cursor` naming `cursor`) when forged,
expired, or made for another list, sort, filter or caller. `offset` stops at 10000."""

from __future__ import annotations

import json
import random
from typing import Any
from urllib.parse import quote

import pytest
from mongomock.collection import Cursor as MongomockCursor

from crm_core.platform.storage import recording
from handlers.routing import SERVICES
from models.accounts import SYSTEM_DOCUMENTS
from models.admin import ADMIN_DOCUMENTS
from tests.support.api import Factories, add_user, rows_of
from tests.support.query_audit import audit, declared_indexes

DECLARED = declared_indexes([*SYSTEM_DOCUMENTS, *ADMIN_DOCUMENTS])
COLUMNS = [
    {"key": "n", "type": "integer"},
    {"key": "s", "type": "string"},
    {"key": "d", "type": "date"},
    {"key": "f", "type": "boolean"},
]


async def _table_with_blanks(api, owner, count: int = 41) -> list[str]:
    """A table whose sort columns repeat values and leave some rows blank (null)."""
    await Factories(api).table(owner, key="deals", columns=COLUMNS)
    rng = random.Random(28)
    items = []
    for _ in range(count):
        item: dict[str, Any] = {}
        if rng.random() < 0.75:
            item["n"] = rng.choice([1, 2, 3, 5])
        if rng.random() < 0.6:
            item["s"] = rng.choice(["a", "b", "c"])
        if rng.random() < 0.5:
            item["d"] = rng.choice(["2025-01-01", "2025-06-01"])
        if rng.random() < 0.5:
            item["f"] = rng.random() < 0.5
        items.append(item)
    created = await api.call(
        "POST", "/api/data/deals/bulk", owner, json={"items": items}, expect=201
    )
    return [r["id"] for r in created["items"]]


async def walk(api, account, path: str, limit: int, sep: str = "?") -> list[dict[str, Any]]:
    """Every item of a list, page by page through `next_cursor`."""
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        url = f"{path}{sep}limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        page = await api.call("GET", url, account, expect=200)
        assert len(page["items"]) <= limit
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
        assert len(page["items"]) == limit  # only a full page points further
    raise AssertionError("the pages never ended")


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [i["id"] for i in items]


@pytest.mark.parametrize(
    "sort",
    [
        "sort=n",
        "sort=-n",
        "sort=s,-n",
        "sort=-s,n",
        "sort=-d,f,n",
        "sort=f,-d",
        "sort_by=_created_at",
        "sort=-id",
        "sort_by=manual",
    ],
)
async def test_cursor_pages_give_the_whole_list_in_order(api, owner, sort):
    await _table_with_blanks(api, owner)
    whole = await api.call("GET", f"/api/data/deals?{sort}&limit=1000", owner, expect=200)
    assert whole["next_cursor"] is None and whole["total"] == 41
    for limit in (1, 4, 40):
        assert ids(await walk(api, owner, f"/api/data/deals?{sort}", limit, "&")) == ids(
            whole["items"]
        ), limit


async def test_manual_order_pages_follow_moves(api, owner):
    row_ids = await _table_with_blanks(api, owner, 30)
    rng = random.Random(7)
    for _ in range(15):  # some rows moved (ranks in `_orders`), the rest in creation order
        row, before = rng.sample(row_ids, 2)
        body = {"before_id": None if rng.random() < 0.2 else before}
        await api.call("POST", f"/api/data/deals/{row}/move", owner, json=body, expect=200)
    whole = await api.call("GET", "/api/data/deals?sort_by=manual&limit=1000", owner)
    assert ids(whole["items"]) != row_ids  # the moves changed the order
    for limit in (1, 3, 7):
        walked = await walk(api, owner, "/api/data/deals?sort_by=manual", limit, "&")
        assert ids(walked) == ids(whole["items"])


@pytest.mark.parametrize("sort", ["sort=n", "sort=-s,n", "sort_by=manual", "sort=-id"])
async def test_writes_between_pages_neither_repeat_nor_lose_rows(api, owner, sort):
    """Rows present from the first page to the last are each seen exactly once, whatever is
    inserted and deleted between the pages; no row is seen twice."""
    row_ids = await _table_with_blanks(api, owner, 40)
    rng = random.Random(11)
    deleted: set[str] = set()
    seen: list[str] = []
    cursor = None
    while True:
        url = f"/api/data/deals?{sort}&limit=6" + (f"&cursor={cursor}" if cursor else "")
        page = await api.call("GET", url, owner, expect=200)
        seen += ids(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
        # between pages: two new rows, two deletions (seen or not yet)
        new = [{"n": rng.choice([1, 2, 3, 5]), "s": rng.choice(["a", "c"])} for _ in range(2)]
        created = await api.call(
            "POST", "/api/data/deals/bulk", owner, json={"items": new}, expect=201
        )
        row_ids += [r["id"] for r in created["items"]]
        for victim in rng.sample([r for r in row_ids if r not in deleted], 2):
            await api.call("DELETE", f"/api/data/deals/{victim}", owner, expect=204)
            deleted.add(victim)
    assert len(seen) == len(set(seen)), "a row was answered twice"
    throughout = set(row_ids[:40]) - deleted
    assert throughout - set(seen) == set(), "a row present throughout was missed"
    assert set(seen) <= set(row_ids)


async def test_every_list_pages_by_cursor(api, owner, client):
    factories = Factories(api)
    row_ids = await _table_with_blanks(api, owner, 9)
    row = row_ids[0]
    for value in range(6):  # history: 7 revisions of one row
        await api.call("PATCH", f"/api/data/deals/{row}", owner, json={"n": value}, expect=200)
    history = await api.call("GET", f"/api/data/deals/{row}/history?limit=100", owner)
    assert len(history["items"]) == 7
    walked = await walk(api, owner, f"/api/data/deals/{row}/history", 2)
    assert ids(walked) == ids(history["items"])
    walked = await walk(api, owner, f"/api/data/deals/{row}/history?column=n", 3, "&")
    assert len(walked) == 7
    for victim in row_ids[1:6]:  # trash: 5 rows
        await api.call("DELETE", f"/api/data/deals/{victim}", owner, expect=204)
    trash = await api.call("GET", "/api/trash?limit=100", owner)
    assert len(trash["items"]) == 5
    assert ids(await walk(api, owner, "/api/trash", 2)) == ids(trash["items"])
    for key in ("x1", "x2", "x3"):  # the audit trail: table and column changes
        column = {"key": key, "type": "string"}
        await api.call("POST", "/api/meta/tables/deals/columns", owner, json=column, expect=201)
    trail = await api.call("GET", "/api/audit?limit=1000", owner, expect=200)
    assert len(trail["items"]) >= 4
    assert ids(await walk(api, owner, "/api/audit", 1)) == ids(trail["items"])
    for _ in range(3):  # users: the owner and three more
        await add_user(api, client, owner, "viewer")
    users = await api.call("GET", "/api/users", owner, expect=200)
    assert len(users["items"]) == 4 and users["next_cursor"] is None
    assert ids(await walk(api, owner, "/api/users", 3)) == ids(users["items"])
    for _ in range(3):
        await factories.campaign(owner)
    campaigns = await api.call("GET", "/api/sms/campaigns", owner, expect=200)
    assert len(campaigns["items"]) == 3
    assert ids(await walk(api, owner, "/api/sms/campaigns", 2)) == ids(campaigns["items"])
    recipients = [{"phone": f"+7916123450{i}"} for i in range(5)]
    campaign = await factories.campaign(owner, recipients=recipients)
    path = f"/api/sms/campaigns/{campaign['id']}/messages"
    messages = await api.call("GET", path, owner, expect=200)
    assert len(messages["items"]) == 5
    assert ids(await walk(api, owner, path, 2)) == ids(messages["items"])
    assert ids(await walk(api, owner, f"{path}?status=sent", 2, "&")) == ids(messages["items"])


def _refused(body: dict[str, Any], field: str = "cursor") -> str:
    assert body["error"]["code"] == ("invalid_cursor" if field == "cursor" else "validation_error")
    assert [d["field"] for d in body["error"]["details"]] == [field]
    return str(body["error"]["details"][0]["message"])


async def test_a_cursor_is_refused_for_anything_but_its_own_list(api, owner, client):
    await _table_with_blanks(api, owner, 12)
    await Factories(api).table(owner, key="other", columns=COLUMNS)
    filters = quote(json.dumps([{"field": "n", "op": "gt", "value": 1}]))
    first = await api.call("GET", f"/api/data/deals?sort=n&limit=2&filters={filters}", owner)
    cursor = first["next_cursor"]
    assert cursor
    ok = f"/api/data/deals?sort=n&limit=2&filters={filters}&cursor={cursor}"
    await api.call("GET", ok, owner, expect=200)
    other_filter = quote(json.dumps([{"field": "n", "op": "gt", "value": 2}]))
    viewer = await add_user(api, client, owner, "viewer")
    await api.call(
        "POST",
        "/api/shares",
        owner,
        json={"table": "deals", "user_id": viewer.user_id, "access": "read"},
        expect=201,
    )
    cases = {
        "another sort": (f"/api/data/deals?sort=-n&filters={filters}&cursor={cursor}", owner),
        "no filter": (f"/api/data/deals?sort=n&cursor={cursor}", owner),
        "another filter": (
            f"/api/data/deals?sort=n&filters={other_filter}&cursor={cursor}",
            owner,
        ),
        "another table": (f"/api/data/other?sort=n&filters={filters}&cursor={cursor}", owner),
        "another list": (f"/api/trash?cursor={cursor}", owner),
        "another user": (ok, viewer),
    }
    for case, (url, who) in cases.items():
        body = await api.call("GET", url, who, expect=400)
        assert "another list, sort or filter" in _refused(body), case
    # forged: a character changed, a made-up token, the signature cut off
    flipped = cursor[:10] + ("A" if cursor[10] != "A" else "B") + cursor[11:]
    for forged in (flipped, "abc", cursor[:-4], "%00%ff", "x" * 4096):
        body = await api.call("GET", f"/api/data/deals?sort=n&cursor={forged}", owner, expect=400)
        assert _refused(body) == "is not a cursor this server made", forged
    body = await api.call("GET", f"/api/data/deals?sort=n&cursor={'x' * 4097}", owner)
    assert body["error"]["details"][0]["field"] == "cursor"
    # expired: a cursor made with no time to live
    cursors = client.app[SERVICES].rows.cursors
    cursors.ttl_seconds = -1
    stale = (await api.call("GET", "/api/data/deals?sort=n&limit=2", owner))["next_cursor"]
    cursors.ttl_seconds = 3600
    body = await api.call("GET", f"/api/data/deals?sort=n&cursor={stale}", owner, expect=400)
    assert "expired" in _refused(body)
    # cursor and offset together; offset past the maximum points to cursor
    body = await api.call(
        "GET", f"/api/data/deals?sort=n&offset=2&cursor={cursor}", owner, expect=400
    )
    assert "either offset or cursor" in _refused(body, "offset")
    for path in ("/api/data/deals", "/api/trash", "/api/audit", "/api/data/deals/" + "a" * 24):
        url = path + ("/history" if path.endswith("a") else "") + "?offset=10001"
        body = await api.call("GET", url, owner, expect=400)
        assert "page further with cursor" in _refused(body, "offset"), path
    await api.call("GET", "/api/data/deals?offset=10000", owner, expect=200)


async def test_deep_cursor_pages_cost_what_the_first_page_costs(api, owner, client, monkeypatch):
    """The page after a cursor is the first page's query with a range merged in: the same
    index serves it (the query audit), nothing is skipped, and it issues the same queries at
    any depth; an `offset` page skips instead."""
    skips: list[int] = []
    original = MongomockCursor.skip

    def counting_skip(self, count):  # type: ignore[no-untyped-def]
        if count:
            skips.append(count)
        return original(self, count)

    monkeypatch.setattr(MongomockCursor, "skip", counting_skip)
    row_ids = await _table_with_blanks(api, owner, 30)
    for value in range(30):
        await api.call("PATCH", f"/api/data/deals/{row_ids[0]}", owner, json={"n": value})
    lists = {
        f"/api/data/deals/{row_ids[0]}/history": "_history",
        "/api/audit": "_audit",
        "/api/data/deals": (await rows_of(client, owner, "deals")).name,
    }
    for path, collection in lists.items():
        cursor, shapes = None, []
        for _ in range(6):
            url = f"{path}?limit=3" + (f"&cursor={cursor}" if cursor else "")
            with recording() as log:
                page = await api.call("GET", url, owner, expect=200)
            assert audit(log.records, DECLARED) == [], path
            # the list's own queries (a background sweep may query meanwhile)
            own = [r for r in log.records if r.collection == collection]
            assert [r.kind for r in own] == ["find", "count"], path
            shapes.append([(r.kind, r.sort, r.limited) for r in own])
            cursor = page["next_cursor"]
        assert all(shape == shapes[1] for shape in shapes[1:]), (path, shapes)
        assert skips == [], path
    await api.call("GET", f"{next(iter(lists))}?limit=3&offset=12", owner, expect=200)
    assert skips == [12]
