"""Each problem issue #27 found in /api/openapi.json, kept from returning (the generators
themselves run in test_clients.py)."""

from __future__ import annotations

import re
from typing import Any

from handlers.app import all_routes

REF = "#/components/schemas/"


def _walk(node: Any, path: str = "") -> Any:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{path}/{index}")


def _schema(op: dict[str, Any], status: str | None = None) -> Any:
    part = op["responses"][status] if status else op["requestBody"]
    return part["content"]["application/json"]["schema"]


async def _doc(client) -> dict[str, Any]:
    return await (await client.get("/api/openapi.json")).json()  # type: ignore[no-any-return]


async def test_enums_make_distinct_identifiers(client):
    """openapi-python-client: `Duplicate key GMT0` (GMT+0, GMT-0, GMT0 in the zone enum)."""
    doc = await _doc(client)
    for path, node in _walk(doc["components"]):
        values = [v for v in node.get("enum", []) if isinstance(v, str)]
        keys = [re.sub(r"[^A-Z0-9]+", "_", v.upper()).strip("_") for v in values]
        assert len(keys) == len(set(keys)), path
    timezone = doc["components"]["schemas"]["TenantPatch"]["properties"]["timezone"]
    assert timezone["type"] == "string" and "enum" not in timezone
    assert "IANA" in timezone["description"]


async def test_rows_have_named_schemas(client):
    doc = await _doc(client)
    schemas = doc["components"]["schemas"]
    for prefix in ("/api/data/{table}", "/api/leads", "/api/legal-entities", "/api/individuals"):
        rows, row = doc["paths"][prefix], doc["paths"][f"{prefix}/{{row_id}}"]
        assert _schema(rows["post"]) == {"$ref": REF + "RowIn"}
        assert _schema(row["patch"]) == {"$ref": REF + "RowPatch"}
        assert _schema(rows["post"], "201") == {"$ref": REF + "Row"}
        assert _schema(row["get"], "200") == {"$ref": REF + "Row"}
        assert _schema(rows["get"], "200") == {"$ref": REF + "RowPage"}
    assert set(schemas["Row"]["properties"]) == {
        "id", "_created_at", "_updated_at", "_created_by", "_updated_by", "_version",
    }  # fmt: skip
    assert schemas["Row"]["additionalProperties"] == {"$ref": REF + "ColumnValue"}
    assert schemas["RowIn"]["additionalProperties"] == {"$ref": REF + "ColumnValueIn"}
    # no bare object is left as a request or answer body
    for path, node in _walk(doc["paths"]):
        if path.endswith("/application/json/schema"):
            assert node != {"type": "object"}, path
            assert "$ref" in node or "oneOf" in node or "anyOf" in node or "type" in node, path


async def test_optional_inputs_carry_no_default(client):
    """openapi-typescript turns a property with a `default` into a required one."""
    doc = await _doc(client)
    schemas = doc["components"]["schemas"]
    used_as_input = set()
    for path, node in _walk(doc["paths"]):
        if "/requestBody/" in path or "/parameters/" in path:
            if "$ref" in node:
                used_as_input.add(node["$ref"].removeprefix(REF))
            for prop in (node.get("properties") or {}).values():
                assert "default" not in prop, path
    seen: set[str] = set()
    while used_as_input - seen:
        name = (used_as_input - seen).pop()
        seen.add(name)
        for path, node in _walk(schemas[name]):
            for prop_name, prop in (node.get("properties") or {}).items():
                assert "default" not in prop, (name, path, prop_name)
            if "$ref" in node:
                used_as_input.add(node["$ref"].removeprefix(REF))
    assert "TableIn" in seen and "SelectOptionIn" in seen
    assert "required" not in schemas["SelectOptionIn"] or (
        "color" not in schemas["SelectOptionIn"]["required"]
    )


async def test_every_operation_declares_what_it_answers(client):
    doc = await _doc(client)
    for route in all_routes():
        if not route.in_schema:
            continue
        answers = doc["paths"][route.openapi_path][route.method.lower()]["responses"]
        if route.access.needs_auth:
            assert {"401", "503"} <= set(answers), route.path
            if not route.allow_pending_password:  # password_change_required
                assert "403" in answers, route.path
        if route.body is not None:
            assert {"400", "413", "415", "503"} <= set(answers), route.path
        if route.path_params:
            assert "404" in answers, route.path
    login = doc["paths"]["/api/auth/login"]["post"]["responses"]
    assert "429" in login and "503" in login
    detail = doc["components"]["schemas"]["ErrorDetail"]
    assert {"field", "message"} <= set(detail["properties"]) and detail["required"] == ["message"]


async def test_the_filter_language_has_a_schema(client):
    doc = await _doc(client)
    rows = doc["paths"]["/api/data/{table}"]["get"]
    (param,) = [p for p in rows["parameters"] if p["name"] == "filters"]
    assert param["schema"]["type"] == "string"
    assert param["schema"]["contentSchema"] == {"$ref": REF + "Filter"}
    schemas = doc["components"]["schemas"]
    assert schemas["BulkDeleteWhere"]["properties"]["filters"]["$ref"] == REF + "Filter"
    assert schemas["FilterOr"]["properties"]["or"]["items"] == {"$ref": REF + "FilterNode"}
    assert "is_within" in schemas["FilterCondition"]["properties"]["op"]["enum"]


async def test_files_are_declared_as_generators_read_them(client):
    doc = await _doc(client)
    upload = doc["paths"]["/api/data/{table}/imports"]["post"]["requestBody"]["content"]
    assert set(upload) == {"multipart/form-data", "application/octet-stream"}
    export = doc["paths"]["/api/data/{table}/export"]["get"]["responses"]["200"]["content"]
    assert export["text/csv"]["schema"] == {
        "type": "string",
        "description": export["text/csv"]["schema"]["description"],
    }
    # relative: Swagger UI's "Try it out" calls the server that served the page
    assert doc["servers"] == [{"url": "/", "description": "The origin that serves this document"}]


async def test_text_names_only_real_routes(client):
    """`StringColumnIn.validators` named `GET /api/meta/validators`, which answers 404."""
    doc = await _doc(client)
    routes = {(r.method, r.openapi_path) for r in all_routes()}
    text = str(doc)
    for method, path in re.findall(r"\b(GET|POST|PUT|PATCH|DELETE) (/api/[\w/{}.-]*[\w}])", text):
        path = re.sub(r"\{[^}]+\}", "{x}", path)
        assert any(m == method and re.sub(r"\{[^}]+\}", "{x}", p) == path for m, p in routes), (
            method,
            path,
        )
