"""`GET /api/openapi/tenant.json`: an OpenAPI document of the caller's own tables as they stand
(docs/api.md "Generating a client"). For each table the caller can read: `Row_<key>`,
`RowIn_<key>` and `RowPatch_<key>` with each column's JSON type, format, select option ids,
required columns and the read-only system fields, and the row routes of `/api/data/<key>` the
caller may use. Display names (the company's aliases) are the columns' titles and the tables'
`x-display-name` (a schema's `title` would name the class openapi-python-client generates). A
table the caller cannot read is absent; write routes are there only where the caller can write.

The document is built per request from the table definitions (one query for the tables, one
for their display names, one access check per table): it follows every column change at once."""

from __future__ import annotations

import copy
from typing import Any

from crm_core.tables.access import Level, access_level
from crm_core.tables.bodies import ROW_SYSTEM_FIELDS
from crm_core.tables.columns import Column
from crm_core.tables.definitions import Table
from handlers.routing import Call
from models.access import AliasRecord

REF = "#/components/schemas/{}"
# what the static document's components give a per-company document: errors and filters
SHARED = (
    "ErrorResponse",
    "ErrorBody",
    "ErrorDetail",
    "Filter",
    "FilterNode",
    "FilterCondition",
    "FilterValue",
    "FilterAnd",
    "FilterOr",
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(name)}


def column_schema(call: Call, column: Column, title: str) -> dict[str, Any]:
    """A column's value as JSON Schema: its type's schema, select option ids as an enum."""
    schema = call.services.column_types.get(column.type).column_schema(column)
    schema["title"] = title
    schema["x-column-type"] = column.type
    if column.table:
        schema["x-link-table"] = column.table
    return schema


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """A value that may be null: the type list gets "null" (an enum gets `null` too)."""
    schema = copy.deepcopy(schema)
    kind = schema.get("type")
    if isinstance(kind, str):
        schema["type"] = [kind, "null"]
    elif isinstance(kind, list) and "null" not in kind:
        schema["type"] = [*kind, "null"]
    if "enum" in schema:
        schema["enum"] = [*schema["enum"], None]
    return schema


def table_schemas(call: Call, table: Table, alias: AliasRecord | None) -> dict[str, dict[str, Any]]:
    names = alias.columns if alias else {}
    title = (alias.name if alias else None) or table.doc.get("name") or table.key
    values = {
        c.key: column_schema(call, c, names.get(c.key) or c.name or c.key) for c in table.columns
    }
    required_in = [c.key for c in table.columns if c.required and c.default is None]
    # values the server gives (autonumber) are in answers only
    written = {c.key for c in table.columns if not table.column_type(c).numbered}
    row = {
        "type": "object",
        "description": f"A row of `{table.key}` ({title})",
        "x-display-name": title,
        "properties": {
            **copy.deepcopy(ROW_SYSTEM_FIELDS),
            **{key: _nullable(value) for key, value in values.items()},
        },
        "required": ["id"],
    }
    row_in = {
        "type": "object",
        "description": f"A new row of `{table.key}` ({title}): columns left out take their default",
        "x-display-name": title,
        "properties": {
            key: value if key in required_in else _nullable(value)
            for key, value in values.items()
            if key in written
        },
        "additionalProperties": False,
    }
    if required_in:
        row_in["required"] = required_in
    patch = {
        "type": "object",
        "description": f"Values to change in a row of `{table.key}` ({title}); `null` clears "
        "a column that is not required",
        "x-display-name": title,
        "properties": {
            key: value if column.required else _nullable(value)
            for (key, value), column in zip(values.items(), table.columns, strict=True)
            if key in written
        },
        "additionalProperties": False,
    }
    page = {
        "type": "object",
        "description": f"A page of rows of `{table.key}` ({title})",
        "properties": {
            "items": {"type": "array", "items": _ref(f"Row_{table.key}")},
            "total": {"type": "integer"},
            "limit": {"type": "integer"},
            "offset": {"type": "integer"},
            "next_cursor": {
                "type": ["string", "null"],
                "description": "Give it as `cursor` for the next page; null on the last page",
            },
        },
        "required": ["items", "total", "limit", "offset", "next_cursor"],
    }
    return {
        f"Row_{table.key}": row,
        f"RowIn_{table.key}": row_in,
        f"RowPatch_{table.key}": patch,
        f"RowPage_{table.key}": page,
    }


def _operation(
    static: dict[str, Any], method: str, path: str, key: str, title: str
) -> dict[str, Any]:
    """The static document's operation on `/api/data/{table}`, for one table: the `table`
    parameter gone, the rows typed with that table's schemas."""
    operation = copy.deepcopy(static["paths"][path][method])
    operation["operationId"] = f"{key}_{operation['operationId'].removeprefix('data_')}"
    operation["tags"] = [key]
    operation["summary"] = f"{operation['summary']} ({title})"
    operation["parameters"] = [p for p in operation.get("parameters", []) if p["name"] != "table"]
    if not operation["parameters"]:
        del operation["parameters"]
    swaps = {
        REF.format("Row"): REF.format(f"Row_{key}"),
        REF.format("RowIn"): REF.format(f"RowIn_{key}"),
        REF.format("RowPatch"): REF.format(f"RowPatch_{key}"),
        REF.format("RowPage"): REF.format(f"RowPage_{key}"),
    }
    return _swap_refs(operation, swaps)  # type: ignore[no-any-return]


def _swap_refs(node: Any, swaps: dict[str, str]) -> Any:
    if isinstance(node, list):
        return [_swap_refs(item, swaps) for item in node]
    if isinstance(node, dict):
        return {
            k: swaps.get(v, v) if k == "$ref" else _swap_refs(v, swaps) for k, v in node.items()
        }
    return node


ROWS, ROW = "/api/data/{table}", "/api/data/{table}/{row_id}"
READ_ROUTES = ((ROWS, "get"), (ROW, "get"))
WRITE_ROUTES = ((ROWS, "post"), (ROW, "patch"), (ROW, "delete"))


async def tenant_document(call: Call, static: dict[str, Any]) -> dict[str, Any]:
    """The caller's tables as an OpenAPI document (`static`: the app's own document)."""
    named = await call.services.meta.list_tables(call.ctx)  # with their display names
    schemas: dict[str, Any] = {name: static["components"]["schemas"][name] for name in SHARED}
    paths: dict[str, dict[str, Any]] = {}
    tags = []
    for item in named:
        table, alias = item.table, item.names
        level = await access_level(call.ctx, table)
        if level < Level.READ:
            continue
        title = (alias.name if alias else None) or table.doc.get("name") or table.key
        schemas.update(table_schemas(call, table, alias))
        tags.append({"name": table.key, "description": title})
        routes = READ_ROUTES + (WRITE_ROUTES if level >= Level.WRITE else ())
        for path, method in routes:
            own = path.replace("{table}", table.key)
            paths.setdefault(own, {})[method] = _operation(static, method, path, table.key, title)
    return {
        "openapi": static["openapi"],
        "info": {
            "title": f"CRM API: the tables of {call.ctx.tenant.name}",
            "version": static["info"]["version"],
            "description": "The row routes of the tables you can read, typed by their columns "
            "as they stand now (generated for you: another user may see other tables). "
            "The whole API: `/api/openapi.json`.",
        },
        "servers": static["servers"],
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": static["components"]["securitySchemes"],
        },
    }
