"""Concurrency guarantees that already hold, kept held (issue #29 §7): unique values under a
burst of creates, upserts racing on one key, the manual order under concurrent moves, and a
revoked share or role against the reads and writes that follow."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

from tests.support.api import add_user, rows_of


async def _table(api, owner, columns, key="t") -> None:
    await api.call(
        "POST", "/api/meta/tables", owner, expect=201, json={"key": key, "columns": columns}
    )


async def test_thirty_concurrent_creates_of_one_unique_value_store_one(api, client, owner):
    await _table(api, owner, [{"key": "code", "type": "string", "unique": True}])
    answers = await asyncio.gather(
        *(
            client.post("/api/data/t", json={"code": "same"}, headers=owner.headers)
            for _ in range(30)
        )
    )
    statuses = sorted(a.status for a in answers)
    assert statuses == [201] + [409] * 29
    assert await (await rows_of(client, owner, "t")).count_documents({"code": "same"}) == 1


async def test_concurrent_upserts_on_one_key_leave_one_row(api, client, owner):
    await _table(
        api,
        owner,
        [{"key": "code", "type": "string", "unique": True}, {"key": "n", "type": "integer"}],
    )

    async def upsert(n: int):
        return await client.post(
            "/api/data/t/bulk",
            json={"items": [{"code": "k", "n": n}], "upsert_on": "code"},
            headers=owner.headers,
        )

    answers = await asyncio.gather(*(upsert(n) for n in range(10)))
    assert {a.status for a in answers} <= {200, 201, 409}
    assert any(a.status in (200, 201) for a in answers)
    stored = await (await rows_of(client, owner, "t")).find({"code": "k"}).to_list(None)
    assert len(stored) == 1 and stored[0]["n"] in range(10)


async def test_concurrent_moves_keep_one_consistent_manual_order(api, client, owner):
    await _table(api, owner, [{"key": "n", "type": "integer"}])
    created = await api.call(
        "POST", "/api/data/t/bulk", owner, expect=201, json={"items": [{"n": i} for i in range(20)]}
    )
    ids = [r["id"] for r in created["items"]]

    async def move(moving: int, before: int | None):
        return await client.post(
            f"/api/data/t/{ids[moving]}/move",
            json={"before_id": None if before is None else ids[before]},
            headers=owner.headers,
        )

    moves = [(i, (i * 7 + 3) % 20 if i % 3 else None) for i in range(20) if (i * 7 + 3) % 20 != i]
    answers = await asyncio.gather(*(move(m, b) for m, b in moves))
    assert {a.status for a in answers} <= {200, 409}
    page = await api.call("GET", "/api/data/t?sort_by=manual&limit=100", owner, expect=200)
    order = [r["n"] for r in page["items"]]
    assert sorted(order) == list(range(20))  # every row once, none lost or repeated
    paged = []
    for offset in range(0, 20, 6):
        part = await api.call(
            "GET", f"/api/data/t?sort_by=manual&limit=6&offset={offset}", owner, expect=200
        )
        paged += [r["n"] for r in part["items"]]
    assert paged == order


async def test_a_revoked_share_ends_reads_and_writes_in_flight(api, client, owner):
    await _table(api, owner, [{"key": "n", "type": "integer"}], key="deals")
    viewer = await add_user(api, client, owner, "viewer")
    share = await api.call(
        "POST",
        "/api/shares",
        owner,
        expect=201,
        json={"table": "deals", "user_id": viewer.user_id, "access": "write"},
    )

    async def burst():
        return await asyncio.gather(
            *(client.get("/api/data/deals", headers=viewer.headers) for _ in range(5)),
            *(
                client.post("/api/data/deals", json={"n": 1}, headers=viewer.headers)
                for _ in range(5)
            ),
        )

    during = asyncio.gather(
        burst(), api.call("DELETE", f"/api/shares/{share['id']}", owner, expect=204)
    )
    (answers, _) = await during
    assert {a.status for a in answers} <= {200, 201, 404}
    after = await burst()
    assert {a.status for a in after} == {404}
    flt = quote(json.dumps([{"field": "n", "op": "eq", "value": 1}]))
    page = await api.call("GET", f"/api/data/deals?filters={flt}", owner, expect=200)
    assert page["total"] == sum(1 for a in answers if a.status == 201)


async def test_a_removed_role_ends_access_at_the_next_request(api, client, owner):
    await _table(api, owner, [{"key": "n", "type": "integer"}], key="deals")
    roles = await api.call("GET", "/api/roles", owner, expect=200)
    manager_role = next(r["id"] for r in roles["items"] if r["key"] == "manager")
    viewer_role = next(r["id"] for r in roles["items"] if r["key"] == "viewer")
    manager = await add_user(api, client, owner, "manager")
    assert (await client.post("/api/data/deals", json={"n": 1}, headers=manager.headers)).status
    writes = asyncio.gather(
        *(client.post("/api/data/deals", json={"n": 2}, headers=manager.headers) for _ in range(5))
    )
    demote = api.call(
        "PATCH",
        f"/api/users/{manager.user_id}",
        owner,
        expect=200,
        json={"role_ids": [viewer_role]},
    )
    answers, _ = await asyncio.gather(writes, demote)
    assert {a.status for a in answers} <= {201, 403, 404}
    after = await client.post("/api/data/deals", json={"n": 3}, headers=manager.headers)
    assert after.status in (403, 404)
    assert manager_role != viewer_role
