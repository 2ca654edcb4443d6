"""`GET /api/openapi/tenant.json`: the caller's own tables, typed by their columns (issue #27
§2). The generators run on it in test_clients.py."""

from __future__ import annotations

from openapi_spec_validator import validate

from tests.support.api import add_user

DOC = "/api/openapi/tenant.json"


async def test_it_types_every_column_of_the_callers_tables(api, owner, every_type):
    await api.call(
        "PUT",
        f"/api/aliases/{every_type}",
        owner,
        expect=200,
        json={"table": "Сделки", "columns": {"title": "Название", "stage": "Этап"}},
    )
    doc = await api.call("GET", DOC, owner, expect=200)
    validate(doc)
    schemas = doc["components"]["schemas"]
    row, row_in, patch = (schemas[f"{n}_deals"] for n in ("Row", "RowIn", "RowPatch"))
    # aliases as titles
    assert row["x-display-name"] == "Сделки" and "(Сделки)" in row["description"]
    assert row["properties"]["title"]["title"] == "Название"
    assert row_in["properties"]["stage"]["title"] == "Этап"
    assert row_in["properties"]["email"]["title"] == "email"
    # each column's JSON type and format
    props = row_in["properties"]
    assert props["title"] == {
        "type": "string",
        "maxLength": 200,
        "title": "Название",
        "x-column-type": "string",
    }
    assert props["email"]["type"] == ["string", "null"] and props["email"]["format"] == "email"
    assert props["site"]["format"] == "uri"
    assert props["amount"]["type"] == ["integer", "null"]
    assert props["ratio"]["type"] == ["number", "null"]
    assert props["active"]["type"] == ["boolean", "null"]
    assert props["at"]["pattern"].startswith("^")
    assert props["stage"]["enum"] == [1, 2, None]  # select option ids
    assert props["company"]["x-link-table"] == "firms"
    assert props["owner"]["pattern"] == "^[0-9a-fA-F]{24}$"
    # required columns (without a default) are required on input, nowhere else
    assert row_in["required"] == ["title"]
    assert "required" not in patch and patch["properties"]["title"]["type"] == "string"
    assert row_in["additionalProperties"] is False and patch["additionalProperties"] is False
    # the system fields are read-only in answers
    assert row["required"] == ["id"]
    for field in ("id", "_created_at", "_updated_at", "_created_by", "_updated_by"):
        assert row["properties"][field]["readOnly"] is True
        assert field not in row_in["properties"]
    # the table's routes, typed with its schemas, and no `{table}` left to fill in
    create = doc["paths"]["/api/data/deals"]["post"]
    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/RowIn_deals"}
    answer = create["responses"]["201"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": "#/components/schemas/Row_deals"}
    listing = doc["paths"]["/api/data/deals"]["get"]
    page = listing["responses"]["200"]["content"]["application/json"]["schema"]
    assert page == {"$ref": "#/components/schemas/RowPage_deals"}
    assert {p["name"] for p in listing["parameters"]} >= {"filters", "limit", "offset"}
    assert set(doc["paths"]["/api/data/deals/{row_id}"]) == {"get", "patch", "delete"}
    assert "table" not in str([p["name"] for p in listing["parameters"]])


async def test_it_follows_the_columns_as_they_stand(api, owner, every_type):
    await api.call(
        "POST",
        f"/api/meta/tables/{every_type}/columns",
        owner,
        expect=201,
        json={"key": "extra", "type": "integer", "required": True},
    )
    doc = await api.call("GET", DOC, owner, expect=200)
    row_in = doc["components"]["schemas"]["RowIn_deals"]
    assert row_in["properties"]["extra"]["type"] == "integer"
    assert row_in["required"] == ["title", "extra"]


async def test_it_follows_the_callers_access(api, client, owner, every_type):
    """A table the caller cannot read is absent; one they only read has no write routes."""
    viewer = await add_user(api, client, owner, "viewer")
    visible = {t["key"] for t in (await api.call("GET", "/api/meta/tables", viewer))["items"]}
    doc = await api.call("GET", DOC, viewer, expect=200)
    documented = {k.removeprefix("Row_") for k in doc["components"]["schemas"] if k[:4] == "Row_"}
    assert "deals" not in visible and "deals" not in documented
    assert documented == visible  # the built-in tables the role reads
    for key in visible:  # viewer reads the built-in tables and writes none of them
        assert set(doc["paths"][f"/api/data/{key}"]) == {"get"}
        assert set(doc["paths"][f"/api/data/{key}/{{row_id}}"]) == {"get"}
    owners = await api.call("GET", DOC, owner, expect=200)
    assert "Row_deals" in owners["components"]["schemas"]
    assert "post" in owners["paths"]["/api/data/deals"]


async def test_it_needs_a_signed_in_caller(api):
    body = await api.call("GET", DOC, expect=401)
    assert body["error"]["code"] == "unauthorized"


async def test_the_docs_page_switches_to_it(client):
    page = await (await client.get("/docs?tenant=1")).text()
    assert 'data-spec="/api/openapi/tenant.json"' in page and 'href="/docs"' in page
    page = await (await client.get("/docs")).text()
    assert 'data-spec="/api/openapi.json"' in page and 'href="/docs?tenant=1"' in page
    script = await (await client.get("/docs/assets/docs.js")).text()
    assert "requestInterceptor" in script and '"authorized"' in script
