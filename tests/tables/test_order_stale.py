"""A move never stalls on the order entry of a row deleted by filter (the entry is left behind
by a delete that does not collect ids; the move removes it when it holds the rank it needs)."""

from __future__ import annotations


async def test_a_move_takes_the_rank_of_a_row_deleted_by_filter(api, owner):
    await api.call(
        "POST",
        "/api/meta/tables",
        owner,
        expect=201,
        json={"key": "t", "columns": [{"key": "n", "type": "integer"}]},
    )
    a, b, c = [
        (await api.call("POST", "/api/data/t", owner, expect=201, json={"n": n}))["id"]
        for n in (1, 2, 3)
    ]
    await api.call("POST", f"/api/data/t/{c}/move", owner, expect=200, json={"before_id": a})
    await api.call(
        "POST",
        "/api/data/t/bulk-delete",
        owner,
        expect=200,
        json={"filters": [{"field": "n", "op": "eq", "value": 3}]},
    )
    # b now needs the very rank c's left-behind entry holds (just before a)
    await api.call("POST", f"/api/data/t/{b}/move", owner, expect=200, json={"before_id": a})
    page = await api.call("GET", "/api/data/t?sort_by=manual", owner, expect=200)
    assert [row["id"] for row in page["items"]] == [b, a]
