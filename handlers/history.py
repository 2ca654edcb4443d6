"""`/api/data/{table}/{id}/history`: a row's revisions and the revert to one
(docs/history.md); the built-in entity routes (`/api/leads/{id}/history`...) are the same
routes bound to their tables (handlers/entities.py)."""

from __future__ import annotations

from typing import Any

from crm_core.tables.access import Level
from crm_core.tables.bodies import ROW_SCHEMA
from handlers.data import ROW
from handlers.routing import Call, RouteTable, TableAccess
from models.history import HistoryPage, HistoryQuery

routes = RouteTable("history")

READ, WRITE = TableAccess(level=Level.READ), TableAccess(level=Level.WRITE)
REVISION = f"{ROW}/history/{{revision_id:[0-9a-fA-F]{{24}}}}"


@routes.get(
    f"{ROW}/history",
    access=READ,
    summary="A row's history",
    query=HistoryQuery,
    response=HistoryPage,
)
async def row_history(call: Call, query: HistoryQuery, row_id: str) -> HistoryPage:
    """The row's revisions, newest first: who (`actor`), when, what (`action`) and the values
    of the columns that changed (`changes: {column: {before, after}}`, in the API's shapes).
    `column` keeps the revisions that changed that column. A row in the trash keeps its
    history; a row that never existed is 404."""
    page = await call.services.rows.history(call.ctx, call.tbl, row_id, query)
    return HistoryPage.from_page(page)


@routes.post(
    f"{REVISION}/revert",
    access=WRITE,
    summary="Put a row back as it was after a revision",
    response_schema=ROW_SCHEMA,
    errors=(409,),
)
async def revert_row(call: Call, row_id: str, revision_id: str) -> dict[str, Any]:
    """Sets the columns whose values differ from those the row had right after the revision
    (validated like a PATCH; a unique value taken since is 409) and records a `reverted`
    revision; answers the row. 404: an unknown revision; 409: the row is in the trash, or the
    revision put it there."""
    return await call.services.rows.revert(call.ctx, call.tbl, row_id, revision_id)
