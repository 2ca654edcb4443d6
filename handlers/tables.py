"""`/api/meta`: the table constructor (docs/api.md "Tables")."""

from __future__ import annotations

from crm_core.tables.access import Level
from crm_core.tables.bodies import (
    ColumnAddIn,
    ColumnPatch,
    TableIn,
    TableList,
    TableOut,
    TablePatch,
    VersionQuery,
    ViewIn,
    ViewOut,
)
from crm_core.tables.meta import NamedTable
from handlers.routing import Authenticated, Call, Permission, RouteTable, TableAccess

routes = RouteTable("meta")

TABLE = "/api/meta/tables/{table}"
COLUMN = "/api/meta/tables/{table}/columns/{column}"


def table_out(named: NamedTable) -> TableOut:
    """A table as the caller sees it, with the tenant's display names."""
    return TableOut.from_table(named.table, named.names)


@routes.get(
    "/api/meta/tables",
    access=Authenticated(),
    summary="Tables the caller can see",
    response=TableList,
)
async def list_tables(call: Call) -> TableList:
    return TableList(items=[table_out(n) for n in await call.services.meta.list_tables(call.ctx)])


@routes.post(
    "/api/meta/tables",
    access=Permission(code="tables.create"),
    summary="Create a table with its columns",
    body=TableIn,
    body_factory=lambda services: services.meta.models.table_in,
    response=TableOut,
    status=201,
    errors=(409,),
)
async def create_table(call: Call, body: TableIn) -> TableOut:
    """Select options get integer ids (given or assigned). 409 when the key is taken."""
    return table_out(await call.services.meta.create_table(call.ctx, body))


@routes.get(
    TABLE, access=TableAccess(level=Level.READ), summary="A table's definition", response=TableOut
)
async def get_table(call: Call) -> TableOut:
    return table_out(await call.services.meta.named(call.ctx, call.tbl))


@routes.patch(
    TABLE,
    access=TableAccess(level=Level.MANAGE),
    summary="Rename a table",
    query=VersionQuery,
    body=TablePatch,
    response=TableOut,
    errors=(409,),
)
async def patch_table(call: Call, body: TablePatch, query: VersionQuery) -> TableOut:
    """Changes the display name; the key never changes. 409 on a stale `version`."""
    table = await call.services.meta.rename_table(call.ctx, call.tbl, body.name, query.version)
    return table_out(table)


@routes.delete(
    TABLE,
    access=TableAccess(level=Level.MANAGE),
    summary="Delete a table and its rows",
    query=VersionQuery,
    status=204,
    errors=(409,),
)
async def delete_table(call: Call, query: VersionQuery) -> None:
    await call.services.meta.delete_table(call.ctx, call.tbl, query.version)


@routes.post(
    f"{TABLE}/columns",
    access=TableAccess(level=Level.MANAGE),
    summary="Add a column",
    query=VersionQuery,
    body=ColumnAddIn,
    body_factory=lambda services: services.meta.models.column_add_in,
    response=TableOut,
    status=201,
    errors=(409,),
)
async def add_column(call: Call, body: ColumnAddIn, query: VersionQuery) -> TableOut:
    """A required column on a table with rows needs a `default`, which fills those rows."""
    table = await call.services.meta.add_column(call.ctx, call.tbl, body.root, query.version)
    return table_out(table)


@routes.patch(
    COLUMN,
    access=TableAccess(level=Level.MANAGE),
    summary="Change a column",
    query=VersionQuery,
    body=ColumnPatch,
    body_factory=lambda services: services.meta.models.column_patch,
    response=TableOut,
    errors=(409,),
)
async def change_column(
    call: Call, body: ColumnPatch, query: VersionQuery, column: str
) -> TableOut:
    """Changing `type` converts every row, or answers 409 with the number of rows that would
    fail (or the values that would repeat in a unique column) and changes nothing. Options
    given replace the list: kept ids keep their rows, removed options are cleared from rows,
    new ones get fresh ids (never reused). While values are rewritten, writes of the column
    wait, then answer 409 `schema_changing` with `Retry-After`; another change of the table
    meanwhile is 409 `schema_changing` too."""
    table = await call.services.meta.change_column(call.ctx, call.tbl, column, body, query.version)
    return table_out(table)


@routes.delete(
    COLUMN,
    access=TableAccess(level=Level.MANAGE),
    summary="Delete a column and its values",
    query=VersionQuery,
    response=TableOut,
    errors=(409,),
)
async def delete_column(call: Call, query: VersionQuery, column: str) -> TableOut:
    table = await call.services.meta.delete_column(call.ctx, call.tbl, column, query.version)
    return table_out(table)


@routes.get(
    f"{TABLE}/view",
    access=TableAccess(level=Level.READ),
    summary="The caller's column order and hidden columns",
    response=ViewOut,
)
async def get_view(call: Call) -> ViewOut:
    """Columns added since the view was saved follow in table order."""
    return ViewOut(**await call.services.meta.view(call.ctx, call.tbl))


@routes.put(
    f"{TABLE}/view",
    access=TableAccess(level=Level.READ),
    summary="Save the caller's column order and hidden columns",
    body=ViewIn,
    response=ViewOut,
)
async def put_view(call: Call, body: ViewIn) -> ViewOut:
    """Only the caller's own view changes; unknown or repeated keys are a 400."""
    view = await call.services.meta.save_view(call.ctx, call.tbl, body.column_order, body.hidden)
    return ViewOut(**view)
