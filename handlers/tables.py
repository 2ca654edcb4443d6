"""`/api/meta`: the table constructor (docs/api.md "Tables")."""

from __future__ import annotations

from aiohttp import web

from crm_core.platform.errors import ValidationFailed
from crm_core.platform.versions import IF_MATCH
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
from handlers.data import ETAG_HEADER, IF_MATCH_HEADER, if_match, tagged
from handlers.routing import Authenticated, Call, Permission, RouteTable, TableAccess

routes = RouteTable("meta")

TABLE = "/api/meta/tables/{table}"
COLUMN = "/api/meta/tables/{table}/columns/{column}"


def table_out(named: NamedTable) -> TableOut:
    """A table as the caller sees it, with the tenant's display names."""
    return TableOut.from_table(named.table, named.names)


def tagged_table(named: NamedTable, status: int = 200) -> web.Response:
    """The definition with its `version` as `ETag`."""
    return tagged(table_out(named).model_dump(mode="json"), named.table.version, status)


def expected_version(call: Call, query: VersionQuery) -> int | None:
    """The version an edit is based on: `If-Match` (412 when stale) or `?version=N` (409)."""
    expected = if_match(call)
    if expected is not None and query.version is not None:
        raise ValidationFailed.field(IF_MATCH, "give either If-Match or version, not both")
    return expected if expected is not None else query.version


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
    TABLE,
    access=TableAccess(level=Level.READ),
    summary="A table's definition",
    response=TableOut,
    response_headers=ETAG_HEADER,
)
async def get_table(call: Call) -> web.Response:
    """`ETag` is the definition's `version`, for `If-Match` on its edits."""
    return tagged_table(await call.services.meta.named(call.ctx, call.tbl))


@routes.patch(
    TABLE,
    access=TableAccess(level=Level.MANAGE),
    summary="Rename a table",
    query=VersionQuery,
    body=TablePatch,
    response=TableOut,
    errors=(409, 412),
    request_headers=IF_MATCH_HEADER,
    response_headers=ETAG_HEADER,
)
async def patch_table(call: Call, body: TablePatch, query: VersionQuery) -> web.Response:
    """Changes the display name; the key never changes. 409 on a stale `version`, 412 on a
    stale `If-Match`."""
    version = expected_version(call, query)
    return tagged_table(
        await call.services.meta.rename_table(call.ctx, call.tbl, body.name, version)
    )


@routes.delete(
    TABLE,
    access=TableAccess(level=Level.MANAGE),
    summary="Delete a table and its rows",
    query=VersionQuery,
    status=204,
    errors=(409, 412),
    request_headers=IF_MATCH_HEADER,
)
async def delete_table(call: Call, query: VersionQuery) -> None:
    version = expected_version(call, query)
    await call.services.meta.delete_table(call.ctx, call.tbl, version)


@routes.post(
    f"{TABLE}/columns",
    access=TableAccess(level=Level.MANAGE),
    summary="Add a column",
    query=VersionQuery,
    body=ColumnAddIn,
    body_factory=lambda services: services.meta.models.column_add_in,
    response=TableOut,
    status=201,
    errors=(409, 412),
    request_headers=IF_MATCH_HEADER,
    response_headers=ETAG_HEADER,
)
async def add_column(call: Call, body: ColumnAddIn, query: VersionQuery) -> web.Response:
    """A required column on a table with rows needs a `default`, which fills those rows."""
    version = expected_version(call, query)
    table = await call.services.meta.add_column(call.ctx, call.tbl, body.root, version)
    return tagged_table(table, 201)


@routes.patch(
    COLUMN,
    access=TableAccess(level=Level.MANAGE),
    summary="Change a column",
    query=VersionQuery,
    body=ColumnPatch,
    body_factory=lambda services: services.meta.models.column_patch,
    response=TableOut,
    errors=(409, 412),
    request_headers=IF_MATCH_HEADER,
    response_headers=ETAG_HEADER,
)
async def change_column(
    call: Call, body: ColumnPatch, query: VersionQuery, column: str
) -> web.Response:
    """Changing `type` converts every row, or answers 409 with the number of rows that would
    fail (or the values that would repeat in a unique column) and changes nothing. Options
    given replace the list: kept ids keep their rows, removed options are cleared from rows,
    new ones get fresh ids (never reused). While values are rewritten, writes of the column
    wait, then answer 409 `schema_changing` with `Retry-After`; another change of the table
    meanwhile is 409 `schema_changing` too."""
    version = expected_version(call, query)
    table = await call.services.meta.change_column(call.ctx, call.tbl, column, body, version)
    return tagged_table(table)


@routes.delete(
    COLUMN,
    access=TableAccess(level=Level.MANAGE),
    summary="Delete a column and its values",
    query=VersionQuery,
    response=TableOut,
    errors=(409, 412),
    request_headers=IF_MATCH_HEADER,
    response_headers=ETAG_HEADER,
)
async def delete_column(call: Call, query: VersionQuery, column: str) -> web.Response:
    version = expected_version(call, query)
    table = await call.services.meta.delete_column(call.ctx, call.tbl, column, version)
    return tagged_table(table)


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
