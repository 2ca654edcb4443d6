"""`/api/aliases`: tenant-wide display names for tables and columns (docs/api.md "Roles, users,
shares, aliases")."""

from __future__ import annotations

from crm_core.tables.access import Level
from handlers.routing import Authenticated, Call, RouteTable, TableAccess
from models.access import AliasIn, AliasList, AliasOut

routes = RouteTable("aliases")
ALIAS = "/api/aliases/{table}"


@routes.get(
    "/api/aliases",
    access=Authenticated(),
    summary="Display names of the tables the caller sees",
    response=AliasList,
)
async def list_aliases(call: Call) -> AliasList:
    tables = await call.services.meta.list_tables(call.ctx)  # by key
    return AliasList(
        items=[AliasOut.from_record(n.table.key, n.names) for n in tables if n.names is not None]
    )


@routes.put(
    ALIAS,
    access=TableAccess(level=Level.READ, permission="aliases.manage"),
    summary="Set the display names of a table and its columns",
    body=AliasIn,
    response=AliasOut,
)
async def put_alias(call: Call, body: AliasIn) -> AliasOut:
    """Replaces the table's aliases; unknown column keys are a 400. Keys and data never change;
    meta responses show the names as `display_name`."""
    alias = await call.services.aliases.put(call.ctx, call.tbl, body)
    return AliasOut.from_record(call.tbl.key, alias)


@routes.delete(
    ALIAS,
    access=TableAccess(level=Level.READ, permission="aliases.manage"),
    summary="Reset a table's display names",
    status=204,
)
async def delete_alias(call: Call) -> None:
    await call.services.aliases.delete(call.ctx, call.tbl.key)
