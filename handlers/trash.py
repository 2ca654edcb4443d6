"""`/api/trash`: deleted rows kept for `TRASH_RETENTION_DAYS`, restored or purged
(docs/history.md "Trash")."""

from __future__ import annotations

from bson import ObjectId

from crm_core.tables.bodies import ROW_SCHEMA
from crm_core.tables.trash import check_ids
from handlers.routing import Authenticated, Call, RouteTable
from models.history import (
    RestoredDefinitionOut,
    RestoredOut,
    TrashItemOut,
    TrashPage,
    TrashQuery,
    TrashRestoreIn,
)

routes = RouteTable("trash")
RESTORED_SCHEMA = {
    "anyOf": [ROW_SCHEMA, RestoredDefinitionOut.model_json_schema(mode="serialization")]
}
ITEM = "/api/trash/{item_id}"
SIGNED_IN = Authenticated()


@routes.get(
    "/api/trash", access=SIGNED_IN, summary="The trash", query=TrashQuery, response=TrashPage
)
async def list_trash(call: Call, query: TrashQuery) -> TrashPage:
    """What the caller may restore, newest first: rows of the tables they may write, columns
    of the tables they manage, the tables they own (every table with `tables.all`); page by
    `cursor` (each page's `next_cursor`) or `offset` (at most 10000)."""
    items, total, following = await call.services.trash.list_page(
        call.ctx, query.kind, query.table, query.limit, query.offset, query.cursor
    )
    return TrashPage(
        items=[TrashItemOut.from_document(d) for d in items], total=total, next_cursor=following
    )


@routes.post(
    f"{ITEM}/restore",
    access=SIGNED_IN,
    summary="Restore an item of the trash",
    response_schema=RESTORED_SCHEMA,
    errors=(404, 409),
)
async def restore_item(call: Call, item_id: ObjectId) -> dict[str, object]:
    """A row goes back in its table (values of columns deleted since are left out; links
    that pointed at it and are still empty point at it again) and is answered. A column goes
    back with its values and indexes, a table with its rows, shares, display names, views and
    orders; they answer `{id, kind, table, column}`. 409 names the column whose unique value
    another row took meanwhile (`<column>`), the column key (`column`) or table key (`key`)
    taken since, or says the table's key was reused, or that a purge or another restore of the
    item runs; 404 once the item is restored or purged (restore twice: 404)."""
    return await call.services.trash.restore(call.ctx, item_id)


@routes.post(
    "/api/trash/restore",
    access=SIGNED_IN,
    summary="Restore many items of the trash",
    body=TrashRestoreIn,
    response=RestoredOut,
    errors=(404, 409),
)
async def restore_items(call: Call, body: TrashRestoreIn) -> RestoredOut:
    """A bulk delete's rows at once: every id is looked up first (404 names `ids.N`); a
    unique value taken names `ids.N.<column>` in a 409 after the others are restored, an item
    purged (or being restored) meanwhile `ids.N`; an id repeated, in any case, counts once."""
    rows = await call.services.trash.restore_many(call.ctx, check_ids(body.ids))
    return RestoredOut(items=rows)


@routes.delete(
    ITEM, access=SIGNED_IN, summary="Purge an item of the trash", status=204, errors=(404, 409)
)
async def purge_item(call: Call, item_id: ObjectId) -> None:
    """Gone for good: a table's rows (and its rows in the trash), a column's values. 409 while
    a restore of the item runs (a restore meeting a purge is a 409 too)."""
    await call.services.trash.purge(call.ctx, item_id)
