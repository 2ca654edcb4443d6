"""`/api/aliases`: tenant-wide display names for tables and columns (SPEC §8)."""

from __future__ import annotations

from typing import Any

from crm_core import aliases
from crm_core.tables.access import Level
from handlers.routing import Authenticated, Call, RouteTable, TableAccess
from models.access import AliasIn, AliasList, AliasOut

routes = RouteTable("aliases")
ALIAS = "/api/aliases/{table}"


def alias_out(key: str, doc: dict[str, Any] | None) -> AliasOut:
    doc = doc or {}
    return AliasOut(table_key=key, table=doc.get("name"), columns=doc.get("columns") or {})


@routes.get(
    "/api/aliases",
    access=Authenticated(),
    summary="Display names of the tables the caller sees",
    response=AliasList,
)
async def list_aliases(call: Call) -> AliasList:
    tables = await call.services.meta.list_tables(call.ctx)
    found = await aliases.aliases_for(call.ctx, [t.key for t in tables])
    return AliasList(items=[alias_out(k, d) for k, d in sorted(found.items())])


@routes.put(
    ALIAS,
    access=TableAccess(level=Level.READ, permission="aliases.manage"),
    summary="Set the display names of a table and its columns",
    body=AliasIn,
    response=AliasOut,
)
async def put_alias(call: Call) -> AliasOut:
    """Replaces the table's aliases; unknown column keys are a 400. Keys and data never change;
    meta responses show the names as `display_name`."""
    body: AliasIn = call.body
    doc = await aliases.put_alias(call.ctx, call.tbl, body.table, body.columns)
    return alias_out(call.tbl.key, doc)


@routes.delete(
    ALIAS,
    access=TableAccess(level=Level.READ, permission="aliases.manage"),
    summary="Reset a table's display names",
    status=204,
)
async def delete_alias(call: Call) -> None:
    await aliases.delete_alias(call.ctx, call.tbl.key)
