"""The table constructor through HTTP (docs/api.md "Tables")."""

from __future__ import annotations

import pytest

from tests.support.api import CONTRACTS, rows_of, tenant_db


async def test_create_table_assigns_option_ids(api, owner, client, create_table):
    table = await create_table(owner, **CONTRACTS)
    assert table["key"] == "contracts" and table["version"] == 1
    status = next(c for c in table["columns"] if c["key"] == "status")
    assert status["options"] == [
        {"id": 12, "label": "Active", "color": None},
        {"id": 11, "label": "Signed", "color": None},
    ]
    assert status["display_name"] == "status"
    db = tenant_db(client, owner)
    stored = await db["_tables"].find_one({"key": "contracts"})
    # the rows' collection is named by the table's id (docs/storage.md)
    assert stored["collection"] == f"rows.{stored['_id']}"
    assert stored["collection"] in await db.list_collection_names()
    listed = await api.call("GET", "/api/meta/tables", owner, expect=200)
    assert [t["key"] for t in listed["items"] if not t["builtin"]] == ["contracts"]
    got = await api.call("GET", "/api/meta/tables/contracts", owner, expect=200)
    assert got == table


async def test_existing_key_is_409(api, owner, create_table):
    await create_table(owner, **CONTRACTS)
    body = await api.call("POST", "/api/meta/tables", owner, json=CONTRACTS, expect=409)
    assert body["error"]["code"] == "conflict"


@pytest.mark.parametrize(
    ("table", "field"),
    [
        ({"key": "_hidden", "columns": []}, "key"),
        ({"key": "a$b", "columns": []}, "key"),
        ({"key": "a.b", "columns": []}, "key"),
        ({"key": "Contracts", "columns": []}, "key"),
        ({"key": "1st", "columns": []}, "key"),
        ({"key": "x" * 64, "columns": []}, "key"),
        ({"key": "t", "columns": [{"key": "_c", "type": "string"}]}, "columns.0.string.key"),
        ({"key": "t", "columns": [{"key": "a$", "type": "string"}]}, "columns.0.string.key"),
        ({"key": "t", "columns": [{"key": "a.b", "type": "string"}]}, "columns.0.string.key"),
        ({"key": "t", "columns": [{"key": "id", "type": "string"}]}, "columns.0.key"),
        ({"key": "t", "columns": [{"key": "a", "type": "money"}]}, "columns.0"),
        (
            {
                "key": "t",
                "columns": [{"key": "a", "type": "string"}, {"key": "a", "type": "integer"}],
            },
            "columns.1.key",
        ),
        (
            {"key": "t", "columns": [{"key": "a", "type": "integer", "default": "x"}]},
            "columns.0.integer.default",
        ),
        (
            {"key": "t", "columns": [{"key": "a", "type": "email", "default": "nope"}]},
            "columns.0.default",
        ),
        (
            {"key": "t", "columns": [{"key": "a", "type": "integer", "options": []}]},
            "columns.0.integer.options",
        ),
        (
            {
                "key": "t",
                "columns": [
                    {
                        "key": "a",
                        "type": "select",
                        "options": [{"id": 1, "label": "x"}, {"id": 1, "label": "y"}],
                    }
                ],
            },
            "columns.0.options.1.id",
        ),
        (
            {
                "key": "t",
                "columns": [
                    {
                        "key": "a",
                        "type": "select",
                        "default": 5,
                        "options": [{"id": 1, "label": "x"}],
                    }
                ],
            },
            "columns.0.default",
        ),
        (
            {"key": "t", "columns": [{"key": "a", "type": "string", "max_length": 20_000}]},
            "columns.0.max_length",
        ),
        (
            {"key": "t", "columns": [{"key": f"c{i}", "type": "string"} for i in range(501)]},
            "columns",
        ),
        ({"key": "t", "columns": [], "extra": 1}, "extra"),
    ],
)
async def test_bad_definitions(api, owner, client, table, field):
    body = await api.call("POST", "/api/meta/tables", owner, json=table, expect=400)
    assert body["error"]["code"] == "validation_error"
    assert field in [d["field"] for d in body["error"]["details"]], body
    assert await tenant_db(client, owner)["_tables"].count_documents({"builtin": False}) == 0


async def test_rename_and_stale_version(api, owner, create_table):
    await create_table(owner, **CONTRACTS)
    renamed = await api.call(
        "PATCH",
        "/api/meta/tables/contracts?version=1",
        owner,
        json={"name": "Договоры"},
        expect=200,
    )
    assert renamed["name"] == "Договоры" and renamed["version"] == 2
    assert renamed["key"] == "contracts"
    stale = await api.call(
        "PATCH", "/api/meta/tables/contracts?version=1", owner, json={"name": "Other"}, expect=409
    )
    assert "version" in stale["error"]["message"]
    stale = await api.call(
        "POST",
        "/api/meta/tables/contracts/columns?version=1",
        owner,
        json={"key": "x", "type": "string"},
        expect=409,
    )
    got = await api.call("GET", "/api/meta/tables/contracts", owner, expect=200)
    assert got["name"] == "Договоры" and got["version"] == 2
    assert "x" not in [c["key"] for c in got["columns"]]


async def test_delete_table_drops_rows(api, owner, client, create_table):
    await create_table(owner, **CONTRACTS)
    await api.call("POST", "/api/data/contracts", owner, json={"company_name": "A"}, expect=201)
    await api.call("DELETE", "/api/meta/tables/contracts", owner, expect=204)
    db = tenant_db(client, owner)
    assert "contracts" not in await db.list_collection_names()
    await api.call("GET", "/api/meta/tables/contracts", owner, expect=404)
    await api.call("GET", "/api/data/contracts", owner, expect=404)
    # the key is free again, and the new table starts empty
    await create_table(owner, **CONTRACTS)
    page = await api.call("GET", "/api/data/contracts", owner, expect=200)
    assert page["total"] == 0


async def test_add_and_delete_column(api, owner, client, create_table):
    await create_table(owner, **CONTRACTS)
    row = await api.call(
        "POST", "/api/data/contracts", owner, json={"company_name": "A", "total_sum": 5}, expect=201
    )
    table = await api.call(
        "POST",
        "/api/meta/tables/contracts/columns",
        owner,
        json={"key": "region", "type": "string"},
        expect=201,
    )
    assert table["columns"][-1]["key"] == "region" and table["version"] == 2
    dup = await api.call(
        "POST",
        "/api/meta/tables/contracts/columns",
        owner,
        json={"key": "region", "type": "string"},
        expect=409,
    )
    assert dup["error"]["details"][0]["field"] == "key"
    # required without default on a table with rows: 409
    await api.call(
        "POST",
        "/api/meta/tables/contracts/columns",
        owner,
        json={"key": "inn", "type": "string", "required": True},
        expect=409,
    )
    # required with a default fills existing rows
    await api.call(
        "POST",
        "/api/meta/tables/contracts/columns",
        owner,
        json={"key": "country", "type": "string", "required": True, "default": "RU"},
        expect=201,
    )
    got = await api.call("GET", f"/api/data/contracts/{row['id']}", owner, expect=200)
    assert got["country"] == "RU"
    await api.call("DELETE", "/api/meta/tables/contracts/columns/total_sum", owner, expect=200)
    stored = await (await rows_of(client, owner, "contracts")).find_one({})
    assert "total_sum" not in stored
    await api.call("DELETE", "/api/meta/tables/contracts/columns/total_sum", owner, expect=404)


async def test_change_type_converts_or_refuses(api, owner, client, create_table):
    await create_table(owner, "t", [{"key": "code", "type": "string"}])
    for code in ("10", "20", "30"):
        await api.call("POST", "/api/data/t", owner, json={"code": code}, expect=201)
    table = await api.call(
        "PATCH", "/api/meta/tables/t/columns/code", owner, json={"type": "integer"}, expect=200
    )
    assert table["columns"][0]["type"] == "integer"
    rows = await rows_of(client, owner, "t")
    assert sorted(d["code"] for d in await rows.find().to_list(None)) == [10, 20, 30]

    await api.call(
        "PATCH", "/api/meta/tables/t/columns/code", owner, json={"type": "string"}, expect=200
    )
    await api.call("POST", "/api/data/t", owner, json={"code": "abc"}, expect=201)
    await api.call("POST", "/api/data/t", owner, json={"code": "def"}, expect=201)
    refused = await api.call(
        "PATCH", "/api/meta/tables/t/columns/code", owner, json={"type": "integer"}, expect=409
    )
    detail = refused["error"]["details"][0]
    assert detail["failed_rows"] == 2 and len(detail["row_ids"]) == 2
    assert "2 rows" in refused["error"]["message"]
    # nothing changed: the definition and every stored value are as they were
    got = await api.call("GET", "/api/meta/tables/t", owner, expect=200)
    assert got["columns"][0]["type"] == "string"
    assert sorted(d["code"] for d in await rows.find().to_list(None)) == [
        "10",
        "20",
        "30",
        "abc",
        "def",
    ]


async def test_select_options_edit_and_ids_never_reused(api, owner, client, create_table):
    await create_table(owner, **CONTRACTS)
    row = await api.call(
        "POST", "/api/data/contracts", owner, json={"company_name": "A", "status": 12}, expect=201
    )
    # drop "Active" (12), relabel 11, add one: the new option gets 13, not 12
    table = await api.call(
        "PATCH",
        "/api/meta/tables/contracts/columns/status",
        owner,
        json={"options": [{"id": 11, "label": "Подписан"}, {"label": "Closed"}]},
        expect=200,
    )
    status = next(c for c in table["columns"] if c["key"] == "status")
    assert [(o["id"], o["label"]) for o in status["options"]] == [(11, "Подписан"), (13, "Closed")]
    got = await api.call("GET", f"/api/data/contracts/{row['id']}", owner, expect=200)
    assert "status" not in got
    reuse = await api.call(
        "PATCH",
        "/api/meta/tables/contracts/columns/status",
        owner,
        json={"options": [{"id": 12, "label": "Again"}]},
        expect=400,
    )
    assert reuse["error"]["details"][0]["field"] == "options.0.id"


async def test_unique_column_on_duplicates_is_409(api, owner, create_table):
    await create_table(owner, "t", [{"key": "code", "type": "string"}])
    for _ in range(2):
        await api.call("POST", "/api/data/t", owner, json={"code": "same"}, expect=201)
    await api.call(
        "PATCH", "/api/meta/tables/t/columns/code", owner, json={"unique": True}, expect=409
    )
    got = await api.call("GET", "/api/meta/tables/t", owner, expect=200)
    assert got["columns"][0]["unique"] is False


async def test_required_change_with_empty_rows_is_409(api, owner, create_table):
    await create_table(owner, "t", [{"key": "a", "type": "string"}, {"key": "b", "type": "string"}])
    await api.call("POST", "/api/data/t", owner, json={"b": "x"}, expect=201)
    await api.call(
        "PATCH", "/api/meta/tables/t/columns/a", owner, json={"required": True}, expect=409
    )


async def test_tables_of_other_users_and_tenants_are_404(api, owner, create_table):
    await create_table(owner, **CONTRACTS)
    other = await api.register()
    await api.call("GET", "/api/meta/tables/contracts", other, expect=404)
    await api.call("DELETE", "/api/meta/tables/contracts", other, expect=404)
    await api.call("GET", "/api/data/contracts", other, expect=404)
    listed = await api.call("GET", "/api/meta/tables", other, expect=200)
    assert [t["key"] for t in listed["items"] if not t["builtin"]] == []
    # the same key in another tenant is another table
    await create_table(other, **CONTRACTS)
    await api.call("GET", "/api/meta/tables/contracts", owner, expect=200)
