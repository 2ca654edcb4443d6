"""`/api/data/{table}`: rows of a table (docs/api.md "Rows") and the caller's row order
(docs/filters.md "Per-user row order")."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from crm_core.platform.errors import ValidationFailed
from crm_core.platform.versions import IF_MATCH, IfMatch, etag, parse_if_match
from crm_core.tables.access import Level
from crm_core.tables.bodies import (
    ROW_INPUT_SCHEMA,
    ROW_PAGE_SCHEMA,
    ROW_SCHEMA,
    ROWS_SCHEMA,
    UPSERT_SCHEMA,
    BulkCreateIn,
    BulkCreateQuery,
    BulkDeleteIn,
    BulkUpdateIn,
    DeletedOut,
    MoveIn,
    MoveOut,
    RowGetQuery,
    RowListQuery,
    UpdatedOut,
)
from handlers.routing import Call, JsonObject, RouteTable, TableAccess, json_response

routes = RouteTable("data")

ROWS = "/api/data/{table}"
ROW = "/api/data/{table}/{row_id:[0-9a-fA-F]{24}}"  # other ids: 404 from the router
READ, WRITE = TableAccess(level=Level.READ), TableAccess(level=Level.WRITE)
BULK_UPDATE_SCHEMA = {"oneOf": [ROWS_SCHEMA, UpdatedOut.model_json_schema()]}
# optimistic concurrency (docs/api.md "Versions, ETag and If-Match")
IF_MATCH_HEADER = (
    (
        IF_MATCH,
        'The version the change is based on, as ETag gave it ("7"): 412 '
        "`precondition_failed` when the object is at another one; absent: no check",
    ),
)
ETAG_HEADER = (("ETag", 'The version of what was answered, a strong tag ("7")'),)


def if_match(call: Call) -> IfMatch | None:
    """The version of the request's `If-Match` (None: no check); 400 naming the header."""
    values = call.request.headers.getall(IF_MATCH, [])
    if len(values) > 1:
        raise ValidationFailed.field(IF_MATCH, "give it once")
    return parse_if_match(values[0] if values else None)


def tagged(body: Any, version: int, status: int = 200) -> web.Response:
    """A JSON answer with the `ETag` of the version it shows."""
    return json_response(body, status, {"ETag": etag(version)})


@routes.get(
    ROWS, access=READ, summary="List rows", query=RowListQuery, response_schema=ROW_PAGE_SCHEMA
)
async def list_rows(call: Call, query: RowListQuery) -> dict[str, Any]:
    """`filters` selects rows (docs/filters.md; 400 `invalid_filter` names the bad condition).
    Sorted by `sort_by` (a column key, `id` or a system field) in `sort_order`, or by several
    keys with `sort=-doc_date,company_name`; `sort_by=manual` is the caller's own order. Ties
    are broken by id, so pages never repeat or skip rows. `limit` 1..1000 (50); the next page
    by `cursor` (the answer's `next_cursor`, bound to this table, sort and filter: 400
    `invalid_cursor` otherwise), or `offset` up to 10000."""
    return await call.services.rows.list_page(call.ctx, call.tbl, query)


@routes.post(
    ROWS,
    access=WRITE,
    summary="Create a row",
    body=JsonObject,
    body_schema=ROW_INPUT_SCHEMA,
    response_schema=ROW_SCHEMA,
    status=201,
    errors=(409,),
    response_headers=ETAG_HEADER,
)
async def create_row(call: Call, body: dict[str, Any]) -> web.Response:
    """400 names each bad field; 409 when a unique column's value is taken."""
    row = await call.services.rows.create(call.ctx, call.tbl, body)
    return tagged(row, row["_version"], 201)


@routes.post(
    f"{ROWS}/bulk",
    access=WRITE,
    summary="Create (or upsert) many rows, all or nothing",
    body=BulkCreateIn,
    query=BulkCreateQuery,
    response_schema=UPSERT_SCHEMA,
    status=201,
    errors=(409,),
)
async def bulk_create_rows(
    call: Call, body: BulkCreateIn, query: BulkCreateQuery
) -> dict[str, Any]:
    """Every item is validated first; errors name `items.<index>.<column>` and nothing is
    stored. Up to 1000 items. Answers `{"items": [{"id": ...}, ...]}` in input order;
    `?return=rows` answers the stored rows instead. With `upsert_on` (a unique column, given in
    every item), an item whose value matches a row updates it like a PATCH and the others are
    created; the answer lists the indexes of the `created` and `updated` items."""
    full_rows = query.returning == "rows"
    return await call.services.rows.bulk_write(call.ctx, call.tbl, body, full_rows)


@routes.patch(
    f"{ROWS}/bulk",
    access=WRITE,
    summary="Update many rows, all or nothing",
    body=BulkUpdateIn,
    response_schema=BULK_UPDATE_SCHEMA,
    errors=(409,),
)
async def bulk_update_rows(call: Call, body: BulkUpdateIn) -> dict[str, Any]:
    """Either `items`, each `{"id": ..., <column>: <value>, ...}` (404 names the items whose
    row does not exist, and nothing is changed), or `filters` with `values`, the same values for
    every selected row (answers `{"updated": N}`). An item with `_version` changes its row only
    while the row is at that version: otherwise 412 names `items.N._version` and the current
    version, and nothing is changed."""
    return await call.services.rows.bulk_change(call.ctx, call.tbl, body.root)


@routes.post(
    f"{ROWS}/bulk-delete",
    access=WRITE,
    summary="Delete many rows by id or filter",
    body=BulkDeleteIn,
    response=DeletedOut,
)
async def bulk_delete_rows(call: Call, body: BulkDeleteIn) -> DeletedOut:
    """Either `ids` or a non-empty `filters`; answers how many rows were deleted."""
    return DeletedOut(deleted=await call.services.rows.bulk_remove(call.ctx, call.tbl, body.root))


@routes.get(
    ROW,
    access=READ,
    summary="A row",
    query=RowGetQuery,
    response_schema=ROW_SCHEMA,
    response_headers=ETAG_HEADER,
)
async def get_row(call: Call, query: RowGetQuery, row_id: str) -> web.Response:
    """`expand=legal_entity` answers the link column with the referenced row. `ETag` is the
    row's `_version`, for `If-Match` on PATCH and DELETE."""
    row = await call.services.rows.get(call.ctx, call.tbl, row_id, query.expand)
    return tagged(row, row["_version"])


@routes.patch(
    ROW,
    access=WRITE,
    summary="Change some values of a row",
    body=JsonObject,
    body_schema=ROW_INPUT_SCHEMA,
    response_schema=ROW_SCHEMA,
    errors=(409, 412),
    request_headers=IF_MATCH_HEADER,
    response_headers=ETAG_HEADER,
)
async def update_row(call: Call, body: dict[str, Any], row_id: str) -> web.Response:
    """Only the given columns change; `null` clears a column that is not required. With
    `If-Match: "<_version>"` only while the row is at that version (412 otherwise, naming the
    current one); the answer's `ETag` is the new version."""
    row = await call.services.rows.update(call.ctx, call.tbl, row_id, body, expected=if_match(call))
    return tagged(row, row["_version"])


@routes.delete(
    ROW,
    access=WRITE,
    summary="Delete a row",
    status=204,
    errors=(412,),
    request_headers=IF_MATCH_HEADER,
)
async def delete_row(call: Call, row_id: str) -> None:
    """To the trash. With `If-Match: "<_version>"` only while the row is at that version."""
    await call.services.rows.delete(call.ctx, call.tbl, row_id, expected=if_match(call))


@routes.post(
    f"{ROW}/move",
    access=READ,
    summary="Move a row in the caller's own order",
    body=MoveIn,
    response=MoveOut,
    errors=(409,),  # concurrent moves kept taking the rank between the neighbours
)
async def move_row(call: Call, body: MoveIn, row_id: str) -> MoveOut:
    """Places the row just before `before_id` (null: last) in the caller's manual order
    (`sort_by=manual`); other users' orders do not change. One write whatever the table's
    size; the answer counts the reads and writes it took."""
    return MoveOut(**await call.services.rows.move(call.ctx, call.tbl, row_id, body.before_id))
