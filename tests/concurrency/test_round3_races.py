"""Round 3's races (issue #21 trash and history, #23 column types): many clients at once on the
same trash item, column or row, then everything read back: rows, `_history`, `_trash`, the
table's indexes."""

from __future__ import annotations

import asyncio
from typing import Any

from crm_core.tables.meta import unique_index_name
from crm_core.tables.trash import TRASH
from tests.support.api import Account, Api, rows_of, tenant_db

N = 20
COLUMNS = [
    {"key": "name", "type": "string"},
    {"key": "code", "type": "string", "unique": True},
]


async def _status(api: Api, method: str, path: str, account: Account, **kw: Any) -> int:
    resp = await api.client.request(method, path, headers=account.headers, **kw)
    await resp.read()
    return resp.status


async def _unique_holds(api: Api, owner: Account, table: str, column: str) -> None:
    """The column's unique index is there and a repeated value is a 409 naming it."""
    collection = await rows_of(api.client, owner, table)
    assert unique_index_name(column) in await collection.index_information()
    await api.call("POST", f"/api/data/{table}", owner, expect=201, json={column: "dup"})
    taken = await api.call("POST", f"/api/data/{table}", owner, expect=409, json={column: "dup"})
    assert column in taken["error"]["message"]


async def test_concurrent_restores_of_a_unique_column_keep_its_index(api, owner, create_table):
    await create_table(owner, "deals", COLUMNS)
    for i in range(5):
        await api.call("POST", "/api/data/deals", owner, expect=201, json={"code": f"c{i}"})
    await api.call("DELETE", "/api/meta/tables/deals/columns/code", owner, expect=200)
    page = await api.call("GET", "/api/trash?kind=column", owner, expect=200)
    (item,) = page["items"]
    statuses = await asyncio.gather(
        *(_status(api, "POST", f"/api/trash/{item['id']}/restore", owner) for _ in range(N))
    )
    assert statuses.count(200) == 1, statuses
    assert set(statuses) <= {200, 404, 409}, statuses
    meta = await api.call("GET", "/api/meta/tables/deals", owner, expect=200)
    assert [c["key"] for c in meta["columns"]].count("code") == 1
    rows = (await api.call("GET", "/api/data/deals", owner, expect=200))["items"]
    assert sorted(r["code"] for r in rows) == [f"c{i}" for i in range(5)]
    await _unique_holds(api, owner, "deals", "code")
    db = tenant_db(api.client, owner)
    assert await db[TRASH].count_documents({}) == 0


async def test_concurrent_adds_of_the_same_unique_column_keep_its_index(api, owner, create_table):
    await create_table(owner, "deals", [{"key": "name", "type": "string"}])
    body = {"key": "code", "type": "string", "unique": True}
    statuses = await asyncio.gather(
        *(
            _status(api, "POST", "/api/meta/tables/deals/columns", owner, json=body)
            for _ in range(N)
        )
    )
    assert statuses.count(201) == 1, statuses
    assert set(statuses) <= {201, 409}, statuses
    await _unique_holds(api, owner, "deals", "code")


async def test_concurrent_adds_of_the_same_autonumber_column_keep_its_numbers(
    api, owner, create_table
):
    await create_table(owner, "deals", [{"key": "name", "type": "string"}])
    for i in range(5):
        await api.call("POST", "/api/data/deals", owner, expect=201, json={"name": f"r{i}"})
    body = {"key": "no", "type": "autonumber"}
    statuses = await asyncio.gather(
        *(
            _status(api, "POST", "/api/meta/tables/deals/columns", owner, json=body)
            for _ in range(N)
        )
    )
    assert statuses.count(201) == 1, statuses
    rows = (await api.call("GET", "/api/data/deals?limit=100", owner, expect=200))["items"]
    numbers = [r.get("no") for r in rows]
    # every row keeps a number of its own (the losers once cleared the winner's)
    assert all(isinstance(n, int) for n in numbers) and len(set(numbers)) == 5, numbers
    await _unique_numbers_continue(api, owner, numbers)


async def _unique_numbers_continue(api: Api, owner: Account, numbers: list[int]) -> None:
    created = await api.call("POST", "/api/data/deals", owner, expect=201, json={"name": "new"})
    assert created["no"] > max(numbers)


async def test_concurrent_patches_making_a_column_unique_keep_its_index(api, owner, create_table):
    await create_table(owner, "deals", [{"key": "code", "type": "string"}])
    path = "/api/meta/tables/deals/columns/code"
    statuses = await asyncio.gather(
        *(_status(api, "PATCH", path, owner, json={"unique": True}) for _ in range(N))
    )
    assert set(statuses) <= {200, 409} and 200 in statuses, statuses
    meta = await api.call("GET", "/api/meta/tables/deals", owner, expect=200)
    assert meta["columns"][0]["unique"] is True
    await _unique_holds(api, owner, "deals", "code")
