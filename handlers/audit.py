"""`/api/audit`: the company's audit trail (docs/history.md "Audit trail")."""

from __future__ import annotations

from handlers.routing import Call, Permission, RouteTable
from models.history import AuditEntryOut, AuditPage, AuditQuery

routes = RouteTable("audit")


@routes.get(
    "/api/audit",
    access=Permission(code="audit.read"),
    summary="The company's audit trail",
    query=AuditQuery,
    response=AuditPage,
)
async def list_audit(call: Call, query: AuditQuery) -> AuditPage:
    """Newest first; `action` (e.g. `table.deleted`), `actor` (a user id), `since`/`until`
    (ISO times) narrow it. Append-only: no route changes an entry."""
    items, total, following = await call.services.audit_trail.page(
        call.ctx,
        query.action,
        query.actor,
        query.since,
        query.until,
        query.limit,
        query.offset,
        query.cursor,
    )
    return AuditPage(
        items=[AuditEntryOut.from_document(d) for d in items], total=total, next_cursor=following
    )
