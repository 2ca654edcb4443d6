"""A plain column index is `(key, _id)` (crm_core/tables/meta.py `plain_index_keys`): a page
sorted by the column, with `_id` breaking ties, walks it instead of sorting every matching row
in memory; `crm migrate` rebuilds one of the old `(key)` shape (docs/operations.md "Schema
changes") and the drift check names one it finds."""

from __future__ import annotations

from urllib.parse import quote

from crm_core.platform.storage import recording
from crm_core.tables.builtin import ensure_plain_index, index_drift, migrate_all
from crm_core.tables.rows import CLIENT_QUERY
from handlers.routing import SERVICES
from models.accounts import SYSTEM_DOCUMENTS
from models.admin import ADMIN_DOCUMENTS
from tests.support.api import rows_of, tenant_db
from tests.support.query_audit import declared_indexes, describe, index_keys_for, unserved

DECLARED = declared_indexes([*SYSTEM_DOCUMENTS, *ADMIN_DOCUMENTS])
TABLE = {
    "key": "deals",
    "columns": [
        {"key": "n", "type": "integer", "indexed": True},
        {"key": "code", "type": "string", "unique": True},
    ],
}


async def _deals(api, owner) -> list[dict]:
    await api.call("POST", "/api/meta/tables", owner, expect=201, json=TABLE)
    items = [{"n": n, "code": f"c{i}"} for i, n in enumerate([3, 1, 2, 1, 3, 2, 1])]
    created = await api.call(
        "POST", "/api/data/deals/bulk", owner, expect=201, json={"items": items}
    )
    return [{**item, "id": row["id"]} for item, row in zip(items, created["items"], strict=True)]


async def _keys(rows, name: str) -> list[tuple[str, int]] | None:
    info = (await rows.index_information()).get(name)
    return None if info is None else [(str(f), int(d)) for f, d in info["key"]]


async def _old_shape(rows, key: str) -> None:
    """Put a column's plain index back the way it was made before `_id` was added to it."""
    await rows.drop_index(f"i_{key}")
    await rows.create_index([(key, 1)], name=f"i_{key}")


async def _pages(api, owner, params: str) -> list[str]:
    ids, cursor = [], None
    for _ in range(10):
        url = f"/api/data/deals?{params}&limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = await api.call("GET", url, owner, expect=200)
        ids += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids
    raise AssertionError("the pages never ended")


async def test_a_sorted_cursor_page_is_an_index_walk(api, client, owner):
    created = await _deals(api, owner)
    rows = await rows_of(client, owner, "deals")
    assert await _keys(rows, "i_n") == [("n", 1), ("_id", 1)]
    assert await _keys(rows, "u_code") == [("code", 1)]  # unique: no ties to break
    by_n = sorted(created, key=lambda r: (r["n"], r["id"]))
    with recording() as log:
        ascending = await _pages(api, owner, "sort_by=n")
        descending = await _pages(api, owner, "sort_by=n&sort_order=desc")
        equal = await _pages(api, owner, "sort_by=n&filters=" + quote('{"field": "n", "value": 1}'))
    assert ascending == [r["id"] for r in by_n]
    assert descending == [r["id"] for r in reversed(by_n)]
    assert equal == [r["id"] for r in by_n if r["n"] == 1]
    finds = [
        r
        for r in log.records
        if r.kind == "find" and r.purpose == CLIENT_QUERY and r.collection == rows.name
    ]
    assert len(finds) == 3 + 3 + 1  # every page of each listing, the cursor ones among them
    assert {r.sort for r in finds} == {
        (("n", 1), ("_id", 1)),
        (("n", -1), ("_id", -1)),
    }
    for record in finds:
        assert unserved(record, index_keys_for(record, DECLARED)) is None, describe(record)


async def test_an_old_shape_index_would_sort_in_memory(api, client, owner):
    """The same pages over the old `(key)` index: the query audit names every one."""
    await _deals(api, owner)
    rows = await rows_of(client, owner, "deals")
    await _old_shape(rows, "n")
    with recording() as log:
        await _pages(api, owner, "sort_by=n")
    finds = [r for r in log.records if r.kind == "find" and r.collection == rows.name]
    assert len(finds) == 3
    for record in finds:
        reason = unserved(record, index_keys_for(record, DECLARED))
        assert reason is not None and "in-memory sort" in reason, describe(record)


async def test_migrate_rebuilds_an_old_shape_index_and_drift_reports_none_after(api, client, owner):
    await _deals(api, owner)
    db = tenant_db(client, owner)
    rows = await rows_of(client, owner, "deals")
    leads = await rows_of(client, owner, "leads")
    await _old_shape(rows, "n")
    await _old_shape(leads, "assigned_to")  # a built-in table's column index
    assert await index_drift(db) == [
        "leads.assigned_to: an index on (assigned_to), not (assigned_to, _id)",
        "deals.n: an index on (n), not (n, _id)",
    ]
    assert await migrate_all(client.app[SERVICES].storage) == 1
    assert await _keys(rows, "i_n") == [("n", 1), ("_id", 1)]
    assert await _keys(leads, "i_assigned_to") == [("assigned_to", 1), ("_id", 1)]
    assert await _keys(rows, "r_n") is None  # the stand-in is gone
    assert await _keys(rows, "u_code") == [("code", 1)]  # a unique index is left as it is
    assert await index_drift(db) == []
    assert await migrate_all(client.app[SERVICES].storage) == 0  # nothing left to do
    # the rebuilt index is the one a page walks; the rows are all still there
    page = await api.call("GET", "/api/data/deals?sort_by=n&limit=2", owner, expect=200)
    assert [item["n"] for item in page["items"]] == [1, 1] and page["total"] == 7


class Watched:
    """A row collection whose column indexes are looked at after each index build or drop."""

    def __init__(self, rows, key: str) -> None:
        self.rows, self.key, self.steps = rows, key, []

    async def index_information(self):
        return await self.rows.index_information()

    async def _look(self) -> None:
        info = await self.rows.index_information()
        self.steps.append(sorted(n for n, i in info.items() if i["key"][0][0] == self.key))

    async def create_index(self, *args, **kwargs):
        name = await self.rows.create_index(*args, **kwargs)
        await self._look()
        return name

    async def drop_index(self, name) -> None:
        await self.rows.drop_index(name)
        await self._look()


async def test_the_column_stays_indexed_throughout_a_rebuild(api, client, owner):
    await _deals(api, owner)
    rows = await rows_of(client, owner, "deals")
    await _old_shape(rows, "n")
    watched = Watched(rows, "n")
    assert await ensure_plain_index(watched, "n") is True
    assert watched.steps == [["i_n", "r_n"], ["r_n"], ["i_n", "r_n"], ["i_n"]]
    assert await _keys(rows, "r_n") is None
    assert await ensure_plain_index(watched, "n") is False  # already the new shape
    assert len(watched.steps) == 4


async def test_a_rebuild_cut_short_is_finished_by_the_next_migration(api, client, owner):
    """A process that stopped between dropping the old index and building the new one left
    the column indexed by the stand-in only: the next `crm migrate` finishes the rebuild."""
    await _deals(api, owner)
    db = tenant_db(client, owner)
    rows = await rows_of(client, owner, "deals")
    await rows.create_index([("n", 1), ("_id", -1)], name="r_n")
    await rows.drop_index("i_n")
    assert await index_drift(db) == ["deals.n: indexed in the definition, no index"]
    assert await migrate_all(client.app[SERVICES].storage) == 1
    assert await _keys(rows, "i_n") == [("n", 1), ("_id", 1)]
    assert await _keys(rows, "r_n") is None
    assert await index_drift(db) == []
