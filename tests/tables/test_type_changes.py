"""Issue #23 part 3: type changes between compatible types keep the values (the matrix of
docs/api.md "Type changes that keep values (issue #23)"); a change that would lose values
answers 409 with how many rows and the first ids, and with `force: true` clears exactly those
values."""

from __future__ import annotations

import pytest
from bson.decimal128 import Decimal128

from tests.support.api import rows_of

OPTIONS = [{"id": 1, "label": "A"}, {"id": 2, "label": "B"}, {"id": 3, "label": "C"}]

KEEPING = [
    ({"type": "string"}, ["x", "длинный текст"], {"type": "long_text"}, ["x", "длинный текст"]),
    ({"type": "long_text"}, ["x"], {"type": "string"}, ["x"]),
    ({"type": "integer"}, [5, -3], {"type": "decimal", "scale": 2}, ["5.00", "-3.00"]),
    ({"type": "float"}, [0.1, 2.5], {"type": "decimal", "scale": 2}, ["0.10", "2.50"]),
    ({"type": "decimal", "scale": 2}, ["1.50"], {"type": "float"}, [1.5]),
    ({"type": "decimal", "scale": 2}, ["7.00"], {"type": "integer"}, [7]),
    ({"type": "decimal", "scale": 2}, ["7.25"], {"type": "decimal", "scale": 4}, ["7.2500"]),
    (
        {"type": "decimal", "scale": 2},
        ["7.25"],
        {"type": "currency", "currency": "EUR"},
        ["7.25"],
    ),
    ({"type": "decimal", "scale": 2}, ["7.25"], {"type": "string"}, ["7.25"]),
    ({"type": "string"}, ["12.5"], {"type": "decimal", "scale": 1}, ["12.5"]),
    ({"type": "select", "options": OPTIONS}, [1, 3], {"type": "multi_select"}, [[1], [3]]),
    ({"type": "multi_select", "options": OPTIONS}, [[2]], {"type": "select"}, [2]),
    ({"type": "multi_select", "options": OPTIONS}, [[1, 2]], {"type": "string"}, ["A, B"]),
    ({"type": "string"}, ["A; C"], {"type": "multi_select", "options": OPTIONS}, [[1, 3]]),
    ({"type": "integer"}, [3], {"type": "rating", "max": 5}, [3]),
    ({"type": "rating", "max": 5}, [4], {"type": "integer"}, [4]),
    ({"type": "float"}, [12.5], {"type": "percent"}, [12.5]),
    ({"type": "percent"}, [12.5], {"type": "decimal", "scale": 1}, ["12.5"]),
    ({"type": "string"}, ["15%"], {"type": "percent"}, [15.0]),
]


async def _table(api, owner, column, values):
    await api.call(
        "POST",
        "/api/meta/tables",
        owner,
        expect=201,
        json={"key": "t", "columns": [{"key": "n", "type": "integer"}, {"key": "v", **column}]},
    )
    items = [{"n": i, "v": v} for i, v in enumerate(values)]
    created = await api.call("POST", "/api/data/t/bulk", owner, expect=201, json={"items": items})
    return [r["id"] for r in created["items"]]


async def _values(api, owner):
    page = await api.call("GET", "/api/data/t", owner, expect=200, params={"sort_by": "n"})
    return [r.get("v") for r in page["items"]]


@pytest.mark.parametrize(
    ("before", "values", "change", "after"), KEEPING, ids=lambda c: str(c)[:40]
)
async def test_a_compatible_type_change_keeps_the_values(api, owner, before, values, change, after):
    await _table(api, owner, before, values)
    await api.call("PATCH", "/api/meta/tables/t/columns/v", owner, expect=200, json=change)
    assert await _values(api, owner) == after


LOSING = [
    ({"type": "string"}, ["1.5", "abc", "x"], {"type": "decimal"}, 2, "is not a decimal number"),
    ({"type": "float"}, [0.5, 0.125], {"type": "decimal", "scale": 2}, 1, "has more than 2"),
    ({"type": "decimal", "scale": 2}, ["1.25", "2.00"], {"type": "decimal", "scale": 0}, 1, None),
    ({"type": "multi_select", "options": OPTIONS}, [[1, 2], [3]], {"type": "select"}, 1, None),
    ({"type": "rating", "max": 5}, [5, 2], {"type": "rating", "max": 3}, 1, "must be from 1"),
    ({"type": "integer"}, [11, 2], {"type": "rating", "max": 10}, 1, "must be from 1"),
]


@pytest.mark.parametrize(
    ("before", "values", "change", "lost", "reason"), LOSING, ids=lambda c: str(c)[:40]
)
async def test_a_change_that_would_lose_values_is_refused_unless_forced(
    api, client, owner, before, values, change, lost, reason
):
    ids = await _table(api, owner, before, values)
    kept = await _values(api, owner)
    refused = await api.call(
        "PATCH", "/api/meta/tables/t/columns/v", owner, expect=409, json=change
    )
    detail = refused["error"]["details"][0]
    assert detail["field"] == "v" and detail["failed_rows"] == lost
    assert set(detail["row_ids"]) <= set(ids) and len(detail["row_ids"]) == lost
    if reason:
        assert detail["message"].startswith(reason), detail
    assert await _values(api, owner) == kept  # nothing changed
    table = await api.call("GET", "/api/meta/tables/t", owner, expect=200)
    assert table["columns"][1]["type"] == before["type"]
    forced = await api.call(
        "PATCH", "/api/meta/tables/t/columns/v", owner, expect=200, json={**change, "force": True}
    )
    assert forced["columns"][1]["type"] == change["type"]
    after = await _values(api, owner)
    assert sum(v is None for v in after) == lost
    stored = await (await rows_of(client, owner, "t")).find({"v": {"$exists": True}}).to_list(None)
    assert len(stored) == len(values) - lost


async def test_removing_an_option_takes_it_out_of_every_multi_select_value(api, client, owner):
    await _table(api, owner, {"type": "multi_select", "options": OPTIONS}, [[1, 2], [2], [3]])
    await api.call(
        "PATCH",
        "/api/meta/tables/t/columns/v",
        owner,
        expect=200,
        json={"options": [{"id": 1, "label": "A"}, {"id": 3, "label": "C"}]},
    )
    assert await _values(api, owner) == [[1], [], [3]]


async def test_a_column_changed_into_a_decimal_shows_its_scale(api, owner):
    await _table(api, owner, {"type": "integer"}, [3])
    changed = await api.call(
        "PATCH", "/api/meta/tables/t/columns/v", owner, expect=200, json={"type": "decimal"}
    )
    assert changed["columns"][1]["scale"] == 2
    assert await _values(api, owner) == ["3.00"]


async def test_a_scale_change_rewrites_the_stored_decimals(api, client, owner):
    await _table(api, owner, {"type": "decimal", "scale": 2}, ["1.50"])
    await api.call("PATCH", "/api/meta/tables/t/columns/v", owner, expect=200, json={"scale": 3})
    stored = await (await rows_of(client, owner, "t")).find_one({})
    assert stored["v"] == Decimal128("1.500")
    assert await _values(api, owner) == ["1.500"]
