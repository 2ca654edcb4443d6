"""`/api/data/{table}`: rows of a table (SPEC §6)."""

from __future__ import annotations

from typing import Any

from crm_core.tables.access import Level
from handlers.routing import Call, JsonObject, RouteTable, TableAccess
from models.tables import (
    ROW_INPUT_SCHEMA,
    ROW_PAGE_SCHEMA,
    ROW_SCHEMA,
    ROWS_SCHEMA,
    BulkCreateIn,
    BulkDeleteIn,
    BulkUpdateIn,
    DeletedOut,
    RowListQuery,
)

routes = RouteTable("data")

ROWS = "/api/data/{table}"
ROW = "/api/data/{table}/{row_id:[0-9a-fA-F]{24}}"  # other ids: 404 from the router
READ, WRITE = TableAccess(level=Level.READ), TableAccess(level=Level.WRITE)


@routes.get(
    ROWS, access=READ, summary="List rows", query=RowListQuery, response_schema=ROW_PAGE_SCHEMA
)
async def list_rows(call: Call) -> dict[str, Any]:
    """Sorted by `sort_by` (a column key, `id` or a system field) in `sort_order`; ties are
    broken by id, so pages never repeat or skip rows. `limit` 1..1000 (50), `offset`."""
    query: RowListQuery = call.query
    rows = call.services.rows
    sort = rows.sort_spec(call.tbl, query.sort_by, query.sort_order)
    items, total = await rows.page(call.ctx, call.tbl, {}, sort, query.limit, query.offset)
    return {"items": items, "total": total, "limit": query.limit, "offset": query.offset}


@routes.post(
    ROWS,
    access=WRITE,
    summary="Create a row",
    body=JsonObject,
    body_schema=ROW_INPUT_SCHEMA,
    response_schema=ROW_SCHEMA,
    status=201,
    errors=(409,),
)
async def create_row(call: Call) -> dict[str, Any]:
    """400 names each bad field; 409 when a unique column's value is taken."""
    return await call.services.rows.create(call.ctx, call.tbl, call.body)


@routes.post(
    f"{ROWS}/bulk",
    access=WRITE,
    summary="Create many rows, all or nothing",
    body=BulkCreateIn,
    response_schema=ROWS_SCHEMA,
    status=201,
    errors=(409,),
)
async def bulk_create_rows(call: Call) -> dict[str, Any]:
    """Every item is validated first; errors name `items.<index>.<column>` and nothing is
    stored. Up to 1000 items."""
    return {"items": await call.services.rows.bulk_create(call.ctx, call.tbl, call.body.items)}


@routes.patch(
    f"{ROWS}/bulk",
    access=WRITE,
    summary="Update many rows, all or nothing",
    body=BulkUpdateIn,
    response_schema=ROWS_SCHEMA,
    errors=(409,),
)
async def bulk_update_rows(call: Call) -> dict[str, Any]:
    """Each item is `{"id": ..., <column>: <value>, ...}`; 404 names the items whose row does
    not exist, and nothing is changed."""
    return {"items": await call.services.rows.bulk_update(call.ctx, call.tbl, call.body.items)}


@routes.post(
    f"{ROWS}/bulk-delete",
    access=WRITE,
    summary="Delete many rows by id",
    body=BulkDeleteIn,
    response=DeletedOut,
)
async def bulk_delete_rows(call: Call) -> DeletedOut:
    return DeletedOut(
        deleted=await call.services.rows.bulk_delete(call.ctx, call.tbl, call.body.ids)
    )


@routes.get(ROW, access=READ, summary="A row", response_schema=ROW_SCHEMA)
async def get_row(call: Call) -> dict[str, Any]:
    return await call.services.rows.get(call.ctx, call.tbl, call.param("row_id"))


@routes.patch(
    ROW,
    access=WRITE,
    summary="Change some values of a row",
    body=JsonObject,
    body_schema=ROW_INPUT_SCHEMA,
    response_schema=ROW_SCHEMA,
    errors=(409,),
)
async def update_row(call: Call) -> dict[str, Any]:
    """Only the given columns change; `null` clears a column that is not required."""
    return await call.services.rows.update(call.ctx, call.tbl, call.param("row_id"), call.body)


@routes.delete(ROW, access=WRITE, summary="Delete a row", status=204)
async def delete_row(call: Call) -> None:
    await call.services.rows.delete(call.ctx, call.tbl, call.param("row_id"))
