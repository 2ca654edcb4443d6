"""Formula columns through the API (issue #24, docs/computed.md): defined and checked against
the table's columns, listed, filtered and sorted inside the database, read-only in writes, and
guarded against changes of the columns they read."""

from __future__ import annotations

import json
from urllib.parse import quote

from tests.support.api import Factories, rows_of
from tests.support.files import confirm, finished, upload

DEALS = {
    "key": "deals",
    "columns": [
        {"key": "title", "type": "string"},
        {"key": "amount", "type": "float"},
        {"key": "qty", "type": "integer"},
        {"key": "closed", "type": "date"},
        {"key": "total", "type": "formula", "formula": "{amount} * {qty}"},
        {"key": "big", "type": "formula", "formula": "{total} > 100"},
        {"key": "label", "type": "formula", "formula": 'CONCAT(UPPER({title}), "!")'},
    ],
}
ROWS = [
    {"title": "a", "amount": 10, "qty": 3, "closed": "2025-03-01"},
    {"title": "b", "amount": 50.5, "qty": 4},
    {"title": "c", "amount": 7},
    {"title": "d", "amount": 1, "qty": 1000},
]


def listing(**params: object) -> str:
    query = "&".join(
        f"{k}={quote(json.dumps(v) if k == 'filters' else str(v))}" for k, v in params.items()
    )
    return f"/api/data/deals?{query}"


async def deals(api, owner):
    table = await Factories(api).table(owner, **DEALS)
    rows = await Factories(api).rows(owner, "deals", ROWS)
    return table, rows


async def test_definition_answers_the_formula_and_its_kind(api, owner):
    table, rows = await deals(api, owner)
    by_key = {c["key"]: c for c in table["columns"]}
    assert by_key["total"]["formula"] == "{amount} * {qty}"
    assert by_key["total"]["result"] == "number"
    assert by_key["big"]["result"] == "boolean"
    assert by_key["label"]["result"] == "text"
    # the created row answers its computed values; nothing computed is stored
    assert rows[0]["total"] == 30 and rows[0]["big"] is False and rows[0]["label"] == "A!"
    stored = await rows_of(api.client, owner, "deals")
    doc = await stored.find_one({"title": "a"})
    assert not {"total", "big", "label"} & set(doc)


async def test_list_filter_and_sort_by_a_formula(api, owner):
    await deals(api, owner)
    page = await api.call("GET", listing(sort="-total"), owner, expect=200)
    assert [r["title"] for r in page["items"]] == ["d", "b", "a", "c"]
    assert [r.get("total") for r in page["items"]] == [1000, 202.0, 30, None]
    assert page["total"] == 4
    page = await api.call(
        "GET",
        listing(filters=[{"field": "total", "op": "gt", "value": 100}], sort="total"),
        owner,
        expect=200,
    )
    assert [r["title"] for r in page["items"]] == ["b", "d"] and page["total"] == 2
    page = await api.call(
        "GET", listing(filters=[{"field": "big", "value": True}], limit=1), owner, expect=200
    )
    assert page["total"] == 2 and len(page["items"]) == 1
    page = await api.call(
        "GET",
        listing(filters=[{"field": "label", "op": "starts_with", "value": "c"}]),
        owner,
        expect=200,
    )
    assert [r["title"] for r in page["items"]] == ["c"]
    page = await api.call(
        "GET", listing(filters=[{"field": "total", "op": "blank"}]), owner, expect=200
    )
    assert [r["title"] for r in page["items"]] == ["c"]
    # stored and computed conditions together, with an offset
    page = await api.call(
        "GET",
        listing(
            filters=[{"field": "amount", "op": "lt", "value": 60}, {"field": "big", "value": True}],
            sort="-total",
            offset=1,
        ),
        owner,
        expect=200,
    )
    assert [r["title"] for r in page["items"]] == ["b"] and page["total"] == 2


async def test_operators_follow_the_result_kind(api, owner):
    await deals(api, owner)
    got = await api.call(
        "GET",
        listing(filters=[{"field": "total", "op": "contains", "value": "1"}]),
        owner,
        expect=400,
    )
    assert got["error"]["code"] == "invalid_filter"
    assert "does not apply" in got["error"]["details"][0]["message"]


async def test_get_one_row_has_the_computed_values(api, owner):
    _, rows = await deals(api, owner)
    row = await api.call("GET", f"/api/data/deals/{rows[1]['id']}", owner, expect=200)
    assert row["total"] == 202.0 and row["big"] is True


async def test_a_computed_column_in_a_write_is_refused(api, owner):
    _, rows = await deals(api, owner)
    got = await api.call(
        "POST", "/api/data/deals", owner, expect=400, json={"title": "x", "total": 5}
    )
    assert got["error"]["details"] == [
        {"field": "total", "message": "is a computed column and read-only"}
    ]
    got = await api.call(
        "PATCH", f"/api/data/deals/{rows[0]['id']}", owner, expect=400, json={"big": True}
    )
    assert got["error"]["details"][0]["field"] == "big"
    got = await api.call(
        "PATCH",
        "/api/data/deals/bulk",
        owner,
        expect=400,
        json={"filters": [{"field": "big", "value": True}], "values": {"title": "z"}},
    )
    assert got["error"]["details"][0]["field"] == "filters"
    assert "computed column 'big'" in got["error"]["details"][0]["message"]


async def test_updating_a_row_recomputes(api, owner):
    _, rows = await deals(api, owner)
    row = await api.call(
        "PATCH", f"/api/data/deals/{rows[2]['id']}", owner, expect=200, json={"qty": 100}
    )
    assert row["total"] == 700 and row["big"] is True


async def formula_error(api, owner, formula: str, columns=None):
    body = {
        "key": "bad",
        "columns": [
            {"key": "n", "type": "integer"},
            {"key": "s", "type": "string"},
            *(columns or []),
            {"key": "f", "type": "formula", "formula": formula},
        ],
    }
    got = await api.call("POST", "/api/meta/tables", owner, expect=400, json=body)
    assert got["error"]["code"] == "validation_error"
    return got["error"]["details"][0]


async def test_bad_formulas_name_the_position_and_the_reason(api, owner):
    detail = await formula_error(api, owner, "{n} + ")
    field = "columns.2.formula"
    assert detail == {
        "field": field,
        "message": "expected a value, found the end of the formula",
        "position": 6,
    }
    detail = await formula_error(api, owner, "{n} + {s}")
    assert detail == {
        "field": field,
        "message": "'+' needs numbers, this is text",
        "position": 6,
    }
    detail = await formula_error(api, owner, "{n} * {nope}")
    assert detail == {"field": field, "message": "unknown column 'nope'", "position": 6}
    detail = await formula_error(api, owner, "FOO({n})")
    assert detail["message"] == "unknown function FOO" and detail["position"] == 0
    detail = await formula_error(api, owner, '"abc')
    assert detail["message"].startswith("unterminated text") and detail["position"] == 0
    detail = await formula_error(api, owner, "(" * 40 + "1" + ")" * 40)
    assert "nests at most" in detail["message"]


async def test_a_cycle_is_refused_naming_it(api, owner):
    body = {
        "key": "cyc",
        "columns": [
            {"key": "a", "type": "formula", "formula": "{b} + 1"},
            {"key": "b", "type": "formula", "formula": "{c} * 2"},
            {"key": "c", "type": "formula", "formula": "{a} - 1"},
        ],
    }
    got = await api.call("POST", "/api/meta/tables", owner, expect=400, json=body)
    detail = got["error"]["details"][0]
    assert detail["field"] == "columns.0.formula"
    assert detail["message"] == "computed columns refer to each other in a cycle: a → b → c → a"
    # a column referring to itself, added later
    await Factories(api).table(owner, key="t", columns=[{"key": "n", "type": "integer"}])
    got = await api.call(
        "POST",
        "/api/meta/tables/t/columns",
        owner,
        expect=400,
        json={"key": "x", "type": "formula", "formula": "{x} + {n}"},
    )
    assert got["error"]["details"][0]["message"].endswith("cycle: x → x")


async def test_columns_a_formula_reads_cannot_go_or_change_type(api, owner):
    await deals(api, owner)
    got = await api.call("DELETE", "/api/meta/tables/deals/columns/qty", owner, expect=400)
    assert got["error"]["details"] == [
        {
            "field": "qty",
            "message": "computed columns read 'qty': total; it cannot be deleted while they do",
            "dependents": ["total"],
        }
    ]
    got = await api.call(
        "PATCH", "/api/meta/tables/deals/columns/amount", owner, expect=400, json={"type": "string"}
    )
    assert got["error"]["details"][0]["dependents"] == ["total"]
    # a rename is fine; a formula no one reads can go
    await api.call(
        "PATCH", "/api/meta/tables/deals/columns/amount", owner, expect=200, json={"name": "Sum"}
    )
    await api.call("DELETE", "/api/meta/tables/deals/columns/label", owner, expect=200)
    # a stored column cannot become a formula or back
    got = await api.call(
        "PATCH",
        "/api/meta/tables/deals/columns/title",
        owner,
        expect=400,
        json={"type": "formula", "formula": "1"},
    )
    assert got["error"]["details"][0]["field"] == "type"


async def test_changing_a_formula_rechecks_it(api, owner):
    await deals(api, owner)
    got = await api.call(
        "PATCH",
        "/api/meta/tables/deals/columns/total",
        owner,
        expect=400,
        json={"formula": 'IF({qty} > 3, "many", "few")'},
    )
    # `big` compares total with a number: it would no longer type-check
    assert got["error"]["details"] == [
        {
            "field": "formula",
            "message": "computed column 'big' would break: cannot compare text with number",
            "dependents": ["big"],
        }
    ]
    await api.call("DELETE", "/api/meta/tables/deals/columns/big", owner, expect=200)
    table = await api.call(
        "PATCH",
        "/api/meta/tables/deals/columns/total",
        owner,
        expect=200,
        json={"formula": 'IF({qty} > 3, "many", "few")'},
    )
    assert {c["key"]: c for c in table["columns"]}["total"]["result"] == "text"
    page = await api.call("GET", listing(sort="title"), owner, expect=200)
    assert page["items"][0]["total"] == "few"


async def test_export_then_import_leaves_the_computed_columns_out(api, client, owner):
    await deals(api, owner)
    resp = await client.get("/api/data/deals/export?format=csv&sort=title", headers=owner.headers)
    body = await resp.read()
    assert resp.status == 200
    lines = body.decode("utf-8-sig").splitlines()
    assert lines[0].split(",")[-3:] == ["total", "big", "label"]
    assert lines[1].split(",")[-3:] == ["30.0", "false", "A!"]
    status, job = await upload(client, owner, body, table="deals")
    assert status == 201, job
    assert {h: c for h, c in job["mapping"].items() if h in ("total", "big", "label")} == {
        "total": None,
        "big": None,
        "label": None,
    }
    # mapping a file column to a computed column is refused, naming it
    got = await confirm(
        api, owner, job, table="deals", expect=400, mapping={"total": "total", "title": "title"}
    )
    assert got["error"]["details"] == [
        {"field": "mapping.total", "message": "'total' is a computed column: it is not imported"}
    ]
    await confirm(api, owner, job, table="deals")
    done = await finished(api, owner, job, table="deals")
    assert done["state"] == "completed" and not done["errors"], done
    page = await api.call("GET", listing(sort="title"), owner, expect=200)
    assert [r["title"] for r in page["items"]] == ["a", "a", "b", "b", "c", "c", "d", "d"]
    assert [r.get("total") for r in page["items"]][:2] == [30, 30]
