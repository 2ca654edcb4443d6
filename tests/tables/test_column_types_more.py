"""Issue #23 part 2: the column types multi_select, long_text, decimal, currency, percent, rating
and autonumber through the API: what is stored and answered, refused values naming the field,
filters, sorting, aggregates, import and export, and the API documents."""

from __future__ import annotations

import asyncio
import json

from bson.decimal128 import Decimal128

from tests.support.api import rows_of, tenant_db
from tests.support.files import confirm, finished, upload
from tests.support.webhook_receiver import make_hook, settled

OPTIONS = [{"id": 1, "label": "VIP"}, {"id": 2, "label": "Партнёр"}, {"id": 3, "label": "Lead"}]
COLUMNS = [
    {"key": "name", "type": "string"},
    {"key": "tags", "type": "multi_select", "options": OPTIONS},
    {"key": "notes", "type": "long_text"},
    {"key": "price", "type": "decimal", "scale": 2},
    {"key": "total", "type": "currency", "currency": "RUB"},
    {"key": "share", "type": "percent"},
    {"key": "stars", "type": "rating", "max": 3},
    {"key": "no", "type": "autonumber"},
]


def filters(*conditions: dict) -> dict:
    return {"filters": json.dumps(list(conditions)), "sort_by": "name", "limit": 1000}


async def names(api, owner, params, table="deals") -> list[str]:
    page = await api.call("GET", f"/api/data/{table}", owner, expect=200, params=params)
    return [row["name"] for row in page["items"]]


async def test_the_new_types_are_stored_and_answered_in_their_json_forms(
    api, client, owner, create_table
):
    table = await create_table(owner, "deals", COLUMNS)
    by_key = {c["key"]: c for c in table["columns"]}
    assert by_key["price"]["scale"] == 2
    assert (by_key["total"]["currency"], by_key["total"]["scale"]) == ("RUB", 2)
    assert by_key["stars"]["max"] == 3
    row = await api.call(
        "POST",
        "/api/data/deals",
        owner,
        expect=201,
        json={
            "name": "a",
            "tags": [2, 1, 2],
            "notes": "n" * 50_000,
            "price": 12.5,
            "total": "1234567890123456789012345678.90",
            "share": 15.5,
            "stars": 3,
        },
    )
    assert row["tags"] == [2, 1]  # a repeated option id collapses into its first place
    assert (row["price"], row["total"], row["share"], row["stars"], row["no"]) == (
        "12.50",
        "1234567890123456789012345678.90",
        15.5,
        3,
        1,
    )
    assert len(row["notes"]) == 50_000  # over STRING_MAX_LENGTH (10,000): long_text's own cap
    stored = await (await rows_of(client, owner, "deals")).find_one({})
    assert stored["price"] == Decimal128("12.50") and isinstance(stored["total"], Decimal128)
    assert stored["tags"] == [2, 1] and stored["no"] == 1
    again = await api.call("GET", f"/api/data/deals/{row['id']}", owner, expect=200)
    assert again["price"] == "12.50" and again["total"] == "1234567890123456789012345678.90"


async def test_bad_values_are_400s_naming_the_column(api, owner, create_table):
    await create_table(owner, "deals", COLUMNS)
    cases = [
        ({"tags": [9]}, "tags", "9 is not an option of this column"),
        ({"tags": 1}, "tags", "expected a list of option ids, got a number"),
        (
            {"price": "12.345"},
            "price",
            "has more than 2 digits after the point (the column's scale)",
        ),
        ({"price": "12,5"}, "price", "is not a decimal number (e.g. 1234.56)"),
        ({"price": True}, "price", "expected a number or a decimal string, got a boolean"),
        ({"stars": 4}, "stars", "must be from 1 to 3 (the column's max)"),
        ({"stars": 0}, "stars", "must be from 1 to 3 (the column's max)"),
        ({"notes": "x" * 100_001}, "notes", "is longer than 100000 characters"),
        ({"no": 7}, "no", "is read-only: the server numbers new rows"),
        ({"share": "15%"}, "share", "expected a number, got a string"),
    ]
    for body, field, message in cases:
        error = await api.call("POST", "/api/data/deals", owner, expect=400, json=body)
        assert error["error"]["details"] == [{"field": field, "message": message}], body
    row = await api.call("POST", "/api/data/deals", owner, expect=201, json={"name": "a"})
    for body in ({"no": None}, {"no": 5}):
        error = await api.call(
            "PATCH", f"/api/data/deals/{row['id']}", owner, expect=400, json=body
        )
        assert error["error"]["details"] == [
            {"field": "no", "message": "is read-only: the server numbers new rows"}
        ]


async def test_bad_definitions_are_400s_naming_the_setting(api, owner):
    cases = [
        ({"key": "p", "type": "decimal", "scale": 9}, "columns.0.decimal.scale"),
        ({"key": "p", "type": "decimal", "scale": -1}, "columns.0.decimal.scale"),
        ({"key": "p", "type": "currency", "currency": "XYZ"}, "columns.0.currency"),
        ({"key": "p", "type": "currency", "currency": "rub"}, "columns.0.currency.currency"),
        ({"key": "p", "type": "currency"}, "columns.0.currency.currency"),
        ({"key": "p", "type": "rating", "max": 11}, "columns.0.rating.max"),
        ({"key": "p", "type": "autonumber", "required": True}, "columns.0.required"),
        ({"key": "p", "type": "decimal", "unique": True}, "columns.0.unique"),
        ({"key": "p", "type": "multi_select", "unique": True}, "columns.0.unique"),
        ({"key": "p", "type": "decimal", "default": "1.234"}, "columns.0.default"),
        ({"key": "p", "type": "multi_select", "default": [5]}, "columns.0.default"),
    ]
    for column, field in cases:
        error = await api.call(
            "POST", "/api/meta/tables", owner, expect=400, json={"key": "t", "columns": [column]}
        )
        assert error["error"]["code"] == "validation_error"
        assert error["error"]["details"][0]["field"] == field, (column, error)
    made = await api.call(
        "POST",
        "/api/meta/tables",
        owner,
        expect=201,
        json={"key": "t", "columns": [{"key": "p", "type": "currency", "currency": "JPY"}]},
    )
    assert made["columns"][0]["scale"] == 0  # the currency's minor units
    error = await api.call("POST", "/api/data/t", owner, expect=400, json={"p": "10.5"})
    assert error["error"]["details"][0]["field"] == "p"


async def test_filters_and_sorting_on_the_new_types(api, owner, create_table):
    await create_table(owner, "deals", COLUMNS)
    items = [
        {"name": "a", "tags": [1, 2], "price": "0.10", "notes": "Позвонить в понедельник"},
        {"name": "b", "tags": [2], "price": "2", "notes": "send the offer"},
        {"name": "c", "tags": [], "price": "-1.5"},
        {"name": "d", "price": 10},
        {"name": "e", "tags": [3, 1], "price": "0.1"},
    ]
    await api.call("POST", "/api/data/deals/bulk", owner, expect=201, json={"items": items})
    cases = [
        ({"field": "tags", "op": "has_any_of", "value": [2, 3]}, ["a", "b", "e"]),
        ({"field": "tags", "op": "has_all_of", "value": [1, 2]}, ["a"]),
        ({"field": "tags", "op": "has_none_of", "value": [1]}, ["b", "c", "d"]),
        ({"field": "tags", "op": "blank"}, ["c", "d"]),
        ({"field": "tags", "op": "not_blank"}, ["a", "b", "e"]),
        ({"field": "price", "op": "eq", "value": 0.1}, ["a", "e"]),
        ({"field": "price", "op": "eq", "value": "0.100"}, ["a", "e"]),
        ({"field": "price", "op": "gt", "value": "0.105"}, ["b", "d"]),
        ({"field": "price", "op": "between", "value": [-2, 2]}, ["a", "b", "c", "e"]),
        ({"field": "price", "op": "in", "value": [10, "2.00"]}, ["b", "d"]),
        ({"field": "notes", "op": "contains", "value": "понедельник"}, ["a"]),
        ({"field": "no", "op": "gte", "value": 4}, ["d", "e"]),
    ]
    for condition, expected in cases:
        assert await names(api, owner, filters(condition)) == expected, condition
    by_price = await names(api, owner, {"sort": "-price,name"})
    assert by_price == ["d", "b", "a", "e", "c"]
    refused = await api.call(
        "GET",
        "/api/data/deals",
        owner,
        expect=400,
        params=filters({"field": "tags", "op": "has_any_of", "value": [7]}),
    )
    assert refused["error"]["code"] == "invalid_filter"
    assert refused["error"]["details"][0]["field"] == "filters.0"
    wrong = await api.call(
        "GET",
        "/api/data/deals",
        owner,
        expect=400,
        params=filters({"field": "tags", "op": "eq", "value": 1}),
    )
    assert "does not apply to multi_select" in wrong["error"]["details"][0]["message"]
    unsorted = await api.call(
        "GET", "/api/data/deals", owner, expect=400, params={"sort_by": "tags"}
    )
    assert unsorted["error"]["details"] == [
        {"field": "sort_by", "message": "rows cannot be sorted by 'tags'"}
    ]


async def test_decimal_sums_are_exact(api, owner, create_table):
    await create_table(owner, "deals", COLUMNS)
    items = [{"name": "a" if i % 2 else "b", "price": "0.10", "share": 0.1} for i in range(30)]
    items.append({"name": "c", "price": "99999999999999999999999999.99"})
    await api.call("POST", "/api/data/deals/bulk", owner, expect=201, json={"items": items})
    answer = await api.call(
        "GET",
        "/api/data/deals/aggregate",
        owner,
        expect=200,
        params={"group_by": "name", "metrics": "sum:price,avg:price,min:price,max:price,sum:share"},
    )
    assert answer["totals"]["sum:price"] == "100000000000000000000000002.99"
    assert sum(0.1 for _ in range(30)) != 3.0  # what a double would have answered
    by_name = {g["key"]["name"]: g for g in answer["groups"]}
    assert by_name["a"]["sum:price"] == "1.50" and by_name["a"]["avg:price"] == "0.100000"
    assert (by_name["c"]["min:price"], by_name["c"]["max:price"]) == (
        "99999999999999999999999999.99",
        "99999999999999999999999999.99",
    )
    assert [g["key"]["name"] for g in answer["groups"]] == ["a", "b", "c"]
    ranked = await api.call(
        "GET",
        "/api/data/deals/aggregate",
        owner,
        expect=200,
        params={"group_by": "name", "metrics": "sum:price", "sort": "-sum:price"},
    )
    assert [g["key"]["name"] for g in ranked["groups"]] == ["c", "a", "b"]
    for metric in ("sum:tags", "avg:notes"):
        error = await api.call(
            "GET", "/api/data/deals/aggregate", owner, expect=400, params={"metrics": metric}
        )
        assert error["error"]["details"][0]["field"] == "metrics"
    by_price = await api.call(
        "GET",
        "/api/data/deals/aggregate",
        owner,
        expect=200,
        params={"group_by": "price", "metrics": "count"},
    )
    assert [(g["key"]["price"], g["count"]) for g in by_price["groups"]] == [
        ("0.10", 30),
        ("99999999999999999999999999.99", 1),
    ]
    grouped = await api.call(
        "GET", "/api/data/deals/aggregate", owner, expect=400, params={"group_by": "tags"}
    )
    assert grouped["error"]["details"] == [
        {"field": "group_by", "message": "rows cannot be grouped by 'tags' (a list of values)"}
    ]
    for metric in ("sum:stars", "avg:no", "sum:total"):
        await api.call(
            "GET", "/api/data/deals/aggregate", owner, expect=200, params={"metrics": metric}
        )


async def test_autonumber_numbers_every_created_row_once(api, client, owner, create_table):
    await create_table(owner, "deals", COLUMNS)
    first = await api.call("POST", "/api/data/deals", owner, expect=201, json={"name": "a"})
    bulk = await api.call(
        "POST",
        "/api/data/deals/bulk?return=rows",
        owner,
        expect=201,
        json={"items": [{"name": "b"}, {"name": "c"}]},
    )
    assert [first["no"], *(r["no"] for r in bulk["items"])] == [1, 2, 3]
    await api.call("DELETE", f"/api/data/deals/{bulk['items'][1]['id']}", owner, expect=204)
    after = await api.call("POST", "/api/data/deals", owner, expect=201, json={"name": "d"})
    assert after["no"] == 4  # never reused
    refused = await api.call(
        "POST", "/api/data/deals/bulk", owner, expect=400, json={"items": [{"name": "x", "no": 9}]}
    )
    assert refused["error"]["details"] == [
        {"field": "items.0.no", "message": "is read-only: the server numbers new rows"}
    ]
    counter = await tenant_db(client, owner)["_counters"].find_one({})
    assert counter["n"] == 4


async def test_fifty_parallel_inserts_get_fifty_consecutive_numbers(api, owner, create_table):
    await create_table(owner, "deals", COLUMNS)
    rows = await asyncio.gather(
        *(
            api.call("POST", "/api/data/deals", owner, expect=201, json={"name": f"r{i}"})
            for i in range(50)
        )
    )
    assert sorted(r["no"] for r in rows) == list(range(1, 51))


async def test_an_autonumber_added_later_numbers_the_rows_in_creation_order(
    api, owner, create_table
):
    await create_table(owner, "t", [{"key": "name", "type": "string"}])
    for name in ("x", "y", "z"):
        await api.call("POST", "/api/data/t", owner, expect=201, json={"name": name})
    await api.call(
        "POST",
        "/api/meta/tables/t/columns",
        owner,
        expect=201,
        json={"key": "no", "type": "autonumber"},
    )
    page = await api.call("GET", "/api/data/t", owner, expect=200, params={"sort_by": "no"})
    assert [(r["name"], r["no"]) for r in page["items"]] == [("x", 1), ("y", 2), ("z", 3)]
    made = await api.call("POST", "/api/data/t", owner, expect=201, json={"name": "w"})
    assert made["no"] == 4
    into = await api.call(
        "PATCH", "/api/meta/tables/t/columns/name", owner, expect=400, json={"type": "autonumber"}
    )
    assert into["error"]["details"][0]["field"] == "type"
    out = await api.call(
        "PATCH", "/api/meta/tables/t/columns/no", owner, expect=200, json={"type": "integer"}
    )
    assert out["columns"][1]["type"] == "integer"
    page = await api.call("GET", "/api/data/t", owner, expect=200, params={"sort_by": "no"})
    assert [r["no"] for r in page["items"]] == [1, 2, 3, 4]


async def test_import_and_export_in_russian_excel_forms(api, client, owner, create_table):
    await create_table(owner, "deals", COLUMNS)
    data = (
        "name;tags;price;total;share;stars;notes\n"
        'a;"VIP, Партнёр";1 234,56;"12 345,67 ₽";15%;2;"Заметка; длинная"\n'
        "b;Lead;0,1;;7,5;;\n"
    ).encode()
    status, job = await upload(client, owner, data, table="deals")
    assert status == 201, job
    await confirm(api, owner, job, table="deals")
    done = await finished(api, owner, job, table="deals")
    assert done["state"] == "completed" and not done.get("errors"), done
    page = await api.call("GET", "/api/data/deals", owner, expect=200, params={"sort_by": "name"})
    got = [
        (r["name"], r["tags"], r["price"], r.get("total"), r["share"], r.get("stars"), r["no"])
        for r in page["items"]
    ]
    assert got == [
        ("a", [1, 2], "1234.56", "12345.67", 15.0, 2, 1),
        ("b", [3], "0.10", None, 7.5, None, 2),
    ]
    resp = await client.get("/api/data/deals/export?format=csv&locale=ru", headers=owner.headers)
    text = (await resp.read()).decode("utf-8-sig")
    assert resp.status == 200, text
    lines = text.splitlines()
    assert lines[1] == 'a;VIP, Партнёр;"Заметка; длинная";1234,56;12345,67;15,0;2;1'
    plain = await client.get("/api/data/deals/export?format=csv", headers=owner.headers)
    assert "1234.56" in (await plain.read()).decode("utf-8-sig")
    # both formats carry every value back into a table of the same columns; the file's
    # autonumbers are not given (the rows get the copy's own numbers)
    await create_table(owner, "copy", COLUMNS)
    for query in ("format=xlsx", "format=csv&locale=ru", "format=csv"):
        exported = await client.get(f"/api/data/deals/export?{query}", headers=owner.headers)
        assert exported.status == 200
        status, back = await upload(
            client,
            owner,
            await exported.read(),
            table="copy",
            content_type="application/octet-stream",
        )
        assert status == 201, back
        await confirm(api, owner, back, table="copy")
        done = await finished(api, owner, back, table="copy")
        assert done["state"] == "completed" and not done.get("errors"), (query, done)
    copied = await api.call("GET", "/api/data/copy", owner, expect=200, params={"sort_by": "no"})
    assert [
        (r["name"], r["tags"], r["price"], r.get("total"), r["share"], r.get("stars"))
        for r in copied["items"]
    ] == [(row[0], *row[1:6]) for row in got] * 3
    assert [r["no"] for r in copied["items"]] == [1, 2, 3, 4, 5, 6]


async def test_the_api_documents_describe_the_new_types(api, owner, create_table):
    document = await api.call("GET", "/api/openapi.json", expect=200)
    schemas = document["components"]["schemas"]
    for name in (
        "MultiSelectColumnIn",
        "LongTextColumnIn",
        "DecimalColumnIn",
        "CurrencyColumnIn",
        "PercentColumnIn",
        "RatingColumnIn",
        "AutonumberColumnIn",
    ):
        assert name in schemas, name
    assert schemas["DecimalColumnIn"]["properties"]["scale"]["maximum"] == 8
    assert "currency" in schemas["CurrencyColumnIn"]["required"]
    assert "force" in schemas["ColumnPatch"]["properties"]
    await create_table(owner, "deals", COLUMNS)
    tenant = await api.call("GET", "/api/openapi/tenant.json", owner, expect=200)
    row = tenant["components"]["schemas"]["Row_deals"]["properties"]
    assert row["tags"]["items"]["enum"] == [1, 2, 3]
    assert row["price"]["type"] == ["string", "number", "null"]
    assert row["price"]["pattern"] == r"^-?\d+(\.\d{1,2})?$"
    assert row["stars"]["maximum"] == 3
    row_in = tenant["components"]["schemas"]["RowIn_deals"]["properties"]
    assert "no" not in row_in and "no" in row


async def test_webhooks_carry_the_new_types_in_their_json_forms(api, owner, create_table, receiver):
    await create_table(owner, "deals", COLUMNS)
    hook = await make_hook(api, owner, f"{receiver.url}/hook", tables=["deals"])
    row = await api.call(
        "POST",
        "/api/data/deals",
        owner,
        expect=201,
        json={"name": "a", "tags": [3, 1], "price": 1.1, "total": "5", "stars": 2},
    )
    await api.call(
        "PATCH", f"/api/data/deals/{row['id']}", owner, expect=200, json={"price": "2.25"}
    )
    await settled(api, owner, hook["id"], 2)
    events = {e["event"]: e["items"][0] for e in receiver.events()}
    created = events["row.created"].get("row", events["row.created"])
    assert (created["tags"], created["price"], created["total"], created["stars"]) == (
        [3, 1],
        "1.10",
        "5.00",
        2,
    )
    assert created["no"] == 1
    updated = events["row.updated"]
    assert updated["row"]["price"] == "2.25" and updated["previous"] == {"price": "1.10"}


async def test_a_revert_and_a_restore_keep_the_servers_numbers(api, owner, create_table):
    await create_table(owner, "t", [{"key": "name", "type": "string"}])
    row = await api.call("POST", "/api/data/t", owner, expect=201, json={"name": "a"})
    await api.call("PATCH", f"/api/data/t/{row['id']}", owner, expect=200, json={"name": "b"})
    await api.call(
        "POST",
        "/api/meta/tables/t/columns",
        owner,
        expect=201,
        json={"key": "no", "type": "autonumber"},
    )
    history = await api.call("GET", f"/api/data/t/{row['id']}/history", owner, expect=200)
    created = history["items"][-1]  # before the column existed
    reverted = await api.call(
        "POST", f"/api/data/t/{row['id']}/history/{created['id']}/revert", owner, expect=200
    )
    assert (reverted["name"], reverted["no"]) == ("a", 1)
    await api.call("DELETE", f"/api/data/t/{row['id']}", owner, expect=204)
    (item,) = (await api.call("GET", "/api/trash", owner, expect=200))["items"]
    restored = await api.call("POST", f"/api/trash/{item['id']}/restore", owner, expect=200)
    assert restored.get("no", restored.get("row", {}).get("no")) == 1
