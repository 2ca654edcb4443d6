"""Column types registered by the app that embeds the API (`create_app(extra_column_types=...)`):
tables accept them, rows store, read and filter them, a type's own settings are stored, checked
and edited, the OpenAPI document lists them; an app without them answers 400. The types live
in this test only."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from pydantic import Field

from crm_core.tables.columns import (
    ORDER_CAPS,
    Column,
    ColumnType,
    ColumnValueError,
    NoSettings,
    ValueContext,
)
from handlers.app import create_app
from tests.support.api import Api, make_settings, rows_of, tenant_db


class PercentType(ColumnType):
    """A whole percentage, 0 to 100."""

    name = "progress"
    capabilities = ORDER_CAPS
    value_annotation = int
    value_schema = {"type": "integer", "minimum": 0, "maximum": 100}

    def coerce(self, column: Column, value: Any, vctx: ValueContext, lenient: bool = False) -> Any:
        if lenient and isinstance(value, str) and value.strip().rstrip("%").strip().isdigit():
            value = int(value.strip().rstrip("%"))
        if isinstance(value, bool) or not isinstance(value, int):
            raise ColumnValueError("expected a whole percentage")
        if not 0 <= value <= 100:
            raise ColumnValueError("must be from 0 to 100")
        return value

    def random_value(self, column: Column, rng: random.Random) -> Any:
        return rng.randint(0, 100)


class RatingSettings(NoSettings):
    max_stars: int = Field(default=5, ge=1, le=10, description="The highest rating")


class RatingType(ColumnType):
    """1 to the column's own `max_stars`: a type with a setting of its own."""

    name = "stars"
    capabilities = ORDER_CAPS
    value_annotation = int
    settings_model = RatingSettings
    value_schema = {"type": "integer", "minimum": 1}

    def coerce(self, column: Column, value: Any, vctx: ValueContext, lenient: bool = False) -> Any:
        top = column.extra["max_stars"]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
            raise ColumnValueError(f"must be from 1 to {top}")
        return value

    def needs_conversion(self, old: Column, new: Column) -> bool:
        return old.type != new.type or old.extra != new.extra

    def random_value(self, column: Column, rng: random.Random) -> Any:
        return rng.randint(1, column.extra["max_stars"])


@pytest.fixture
async def client(aiohttp_client, settings):
    # this module's app knows `progress` and `stars`; the shared fixtures (api, owner...) use it
    types = [PercentType(), RatingType()]
    return await aiohttp_client(create_app(settings, extra_column_types=types))


COLUMNS = [{"key": "name", "type": "string"}, {"key": "done", "type": "progress", "indexed": True}]


async def test_a_table_with_a_registered_type_stores_reads_and_filters_it(
    api, owner, client, create_table
):
    table = await create_table(owner, "tasks", COLUMNS)
    assert [(c["key"], c["type"], c["indexed"]) for c in table["columns"]] == [
        ("name", "string", False),
        ("done", "progress", True),
    ]
    for name, done in (("a", 10), ("b", 55), ("c", 100)):
        await api.call(
            "POST", "/api/data/tasks", owner, expect=201, json={"name": name, "done": done}
        )
    stored = (
        await (await rows_of(client, owner, "tasks")).find({}, {"_id": 0, "done": 1}).to_list(None)
    )
    assert sorted(d["done"] for d in stored) == [10, 55, 100]
    indexes = await (await rows_of(client, owner, "tasks")).index_information()
    assert "i_done" in indexes

    page = await api.call(
        "GET",
        "/api/data/tasks",
        owner,
        expect=200,
        params={"filters": '[{"field":"done","op":"gte","value":50}]', "sort_by": "done"},
    )
    assert [(r["name"], r["done"]) for r in page["items"]] == [("b", 55), ("c", 100)]

    error = await api.call(
        "POST", "/api/data/tasks", owner, expect=400, json={"name": "d", "done": 101}
    )
    assert error["error"]["code"] == "validation_error"
    assert error["error"]["details"] == [{"field": "done", "message": "must be from 0 to 100"}]
    assert await (await rows_of(client, owner, "tasks")).count_documents({}) == 3

    refused = await api.call(
        "GET",
        "/api/data/tasks",
        owner,
        expect=400,
        params={"filters": '[{"field":"done","op":"contains","value":"5"}]'},
    )
    assert refused["error"]["code"] == "invalid_filter"
    assert refused["error"]["details"] == [
        {
            "field": "filters.0",
            "message": "operator 'contains' does not apply to progress field 'done'",
        }
    ]


async def test_a_registered_type_in_column_edits(api, owner, create_table):
    await create_table(owner, "tasks", [{"key": "n", "type": "integer"}])
    await api.call("POST", "/api/data/tasks", owner, expect=201, json={"n": 40})
    added = await api.call(
        "POST",
        "/api/meta/tables/tasks/columns",
        owner,
        expect=201,
        json={"key": "p", "type": "progress", "default": 5, "required": True},
    )
    assert added["columns"][-1]["type"] == "progress" and added["columns"][-1]["default"] == 5
    changed = await api.call(
        "PATCH", "/api/meta/tables/tasks/columns/n", owner, expect=200, json={"type": "progress"}
    )
    assert changed["columns"][0]["type"] == "progress"
    rows = await api.call("GET", "/api/data/tasks", owner, expect=200)
    assert [(r["n"], r["p"]) for r in rows["items"]] == [(40, 5)]
    bad_default = await api.call(
        "POST",
        "/api/meta/tables/tasks/columns",
        owner,
        expect=400,
        json={"key": "q", "type": "progress", "default": 150},
    )
    assert bad_default["error"]["details"] == [
        {"field": "default", "message": "must be from 0 to 100"}
    ]


async def test_the_openapi_document_lists_the_registered_type(api):
    document = await api.call("GET", "/api/openapi.json", expect=200)
    schemas = document["components"]["schemas"]
    assert schemas["ProgressColumnIn"]["properties"]["type"]["const"] == "progress"
    assert schemas["ProgressColumnIn"]["properties"]["default"]["anyOf"][0] == {
        "type": "integer",
        "minimum": 0,
        "maximum": 100,
    }
    union = schemas["TableIn"]["properties"]["columns"]["items"]
    assert {"$ref": "#/components/schemas/ProgressColumnIn"} in union["oneOf"]
    assert "progress" in schemas["ColumnPatch"]["properties"]["type"]["anyOf"][0]["enum"]


async def test_an_app_without_the_type_refuses_it(aiohttp_client):
    plain = Api(await aiohttp_client(create_app(make_settings())))
    owner = await plain.register()
    created = await plain.call(
        "POST",
        "/api/meta/tables",
        owner,
        expect=400,
        json={"key": "tasks", "columns": [{"key": "done", "type": "progress"}]},
    )
    assert created["error"]["code"] == "validation_error"
    assert created["error"]["details"][0]["field"] == "columns.0"
    await plain.call(
        "POST",
        "/api/meta/tables",
        owner,
        expect=201,
        json={"key": "tasks", "columns": [{"key": "n", "type": "integer"}]},
    )
    await plain.call(
        "POST",
        "/api/meta/tables/tasks/columns",
        owner,
        expect=400,
        json={"key": "done", "type": "progress"},
    )
    await plain.call(
        "PATCH", "/api/meta/tables/tasks/columns/n", owner, expect=400, json={"type": "progress"}
    )
    unknown = await plain.call(
        "PATCH", "/api/meta/tables/tasks/columns/n", owner, expect=400, json={"max_stars": 4}
    )
    assert unknown["error"]["details"] == [{"field": "max_stars", "message": "unknown field"}]
    document = await plain.call("GET", "/api/openapi.json", expect=200)
    assert "ProgressColumnIn" not in document["components"]["schemas"]


async def test_a_registered_types_own_setting_is_stored_checked_and_edited(
    api, client, owner, create_table
):
    await create_table(
        owner,
        "films",
        [{"key": "stars", "type": "stars", "max_stars": 3}, {"key": "n", "type": "integer"}],
    )
    stored = await tenant_db(client, owner)["_tables"].find_one({"key": "films"})
    assert stored["columns"][0] == {
        "key": "stars",
        "name": "stars",
        "type": "stars",
        "required": False,
        "unique": False,
        "indexed": False,
        "default": None,
        "max_stars": 3,
    }
    refused = await api.call("POST", "/api/data/films", owner, expect=400, json={"stars": 4})
    assert refused["error"]["details"] == [{"field": "stars", "message": "must be from 1 to 3"}]
    await api.call("POST", "/api/data/films", owner, expect=201, json={"stars": 3, "n": 1})

    column = "/api/meta/tables/films/columns/stars"
    lower = await api.call("PATCH", column, owner, expect=409, json={"max_stars": 2})
    assert lower["error"]["details"][0]["failed_rows"] == 1
    stored = await tenant_db(client, owner)["_tables"].find_one({"key": "films"})
    assert stored["columns"][0]["max_stars"] == 3  # nothing changed
    too_high = await api.call("PATCH", column, owner, expect=400, json={"max_stars": 11})
    assert too_high["error"]["details"][0]["field"] == "max_stars"
    await api.call("PATCH", column, owner, expect=200, json={"max_stars": 5})
    await api.call("POST", "/api/data/films", owner, expect=201, json={"stars": 4})

    other = await api.call(
        "PATCH", "/api/meta/tables/films/columns/n", owner, expect=400, json={"max_stars": 4}
    )
    assert other["error"]["details"] == [
        {"field": "max_stars", "message": "only stars columns have max_stars"}
    ]
    await api.call("PATCH", column, owner, expect=200, json={"type": "integer"})
    stored = await tenant_db(client, owner)["_tables"].find_one({"key": "films"})
    assert "max_stars" not in stored["columns"][0] and stored["columns"][0]["type"] == "integer"
    rows = await api.call("GET", "/api/data/films", owner, expect=200, params={"sort_by": "stars"})
    assert [r["stars"] for r in rows["items"]] == [3, 4]


async def test_background_imports_know_the_registered_type(api, owner, client, create_table):
    # the import runs as a task: its runtime comes from the same services as the routes, so the
    # lenient typecast of the registered type applies ("75%" is 75) and its limits hold
    await create_table(owner, "tasks", COLUMNS)
    resp = await client.post(
        "/api/data/tasks/imports",
        data="name,done\nship,75%\nplan,5\n",
        headers={**owner.headers, "Content-Type": "text/csv"},
    )
    assert resp.status == 201, await resp.text()
    job = await resp.json()
    await api.call(
        "POST", f"/api/data/tasks/imports/{job['id']}/confirm", owner, expect=202, json={}
    )
    for _ in range(500):
        current = await api.call("GET", f"/api/data/tasks/imports/{job['id']}", owner, expect=200)
        if current["state"] in ("completed", "failed"):
            break
        await asyncio.sleep(0.01)
    assert current["state"] == "completed", current
    stored = await (await rows_of(client, owner, "tasks")).find({}, {"_id": 0}).to_list(None)
    assert sorted((d["name"], d["done"]) for d in stored) == [("plan", 5), ("ship", 75)]
