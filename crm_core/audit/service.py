"""The company's audit trail: who did what to the company's users, roles, shares, tokens,
webhooks, tables and columns, imports, exports, SMS campaigns and settings, who signed in (or
failed to), and when (`_audit` in the company's database, docs/history.md).

Append-only: the services that change those things call `record` (or `record_in` outside a
signed-in request) through one protocol, crm_core/accounts/audit.py `AuditSink`, which
the domains above accounts share (crm_core/services.py passes this trail in); no route edits an
entry. Entries expire after `AUDIT_RETENTION_DAYS` (a TTL
index on `expires_at`). `address` is the request's client address (`CLIENT_ADDRESS`, set by
the access middleware from the address the login throttle counts); None outside a request."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId

from crm_core.accounts.context import TenantContext
from crm_core.platform.clock import utcnow
from crm_core.platform.cursors import PageCursors, PageScope, read_page
from crm_core.platform.errors import ValidationFailed
from crm_core.platform.logs import CLIENT_ADDRESS, REQUEST_ID
from crm_core.platform.storage import DESCENDING, Database

log = logging.getLogger(__name__)

AUDIT = "_audit"


def actor_of(ctx: TenantContext) -> dict[str, Any]:
    if ctx.api_token_id:
        return {"type": "token", "id": ctx.api_token_id, "name": ctx.user.email}
    return {"type": "user", "id": ctx.user_id, "name": ctx.user.full_name or ctx.user.email}


class AuditTrail:
    """Records and lists the company's audit entries."""

    def __init__(self, retention_days: int = 365, cursors: PageCursors | None = None) -> None:
        self.retention_days = retention_days
        self.cursors = cursors or PageCursors.ephemeral()

    async def record(
        self,
        ctx: TenantContext,
        action: str,
        target: dict[str, Any],
        changes: dict[str, Any] | None = None,
    ) -> None:
        """One entry for an action the caller took (the change is done: a failure to record
        it is logged, not raised)."""
        await self.record_in(ctx.db, actor_of(ctx), action, target, changes)

    async def record_in(
        self,
        db: Database,
        actor: dict[str, Any],
        action: str,
        target: dict[str, Any],
        changes: dict[str, Any] | None = None,
        address: str | None = None,
    ) -> None:
        """An entry outside a signed-in request (a sign-in, a failed one) or by the system (a
        webhook disabled after failed deliveries). `address`: else the request's, if any."""
        now = utcnow()
        request_id = REQUEST_ID.get()
        entry = {
            "_id": ObjectId(),
            "at": now,
            "action": action,
            "actor": actor,
            "address": address if address is not None else CLIENT_ADDRESS.get(),
            "request_id": None if request_id == "-" else request_id,
            "target": target,
            "changes": changes,
            "expires_at": now + timedelta(days=self.retention_days),
        }
        try:
            await db[AUDIT].insert_one(entry)
        except Exception:
            log.exception("audit entry %s could not be recorded", action)

    async def page(
        self,
        ctx: TenantContext,
        action: str | None,
        actor: str | None,
        since: datetime | None,
        until: datetime | None,
        limit: int,
        offset: int,
        cursor: str | None = None,
    ) -> tuple[list[dict[str, Any]], int, str | None]:
        """Newest first; each filter served by an index of `_audit` (crm_core/platform/
        indexes.py)."""
        query: dict[str, Any] = {}
        if action is not None:
            query["action"] = action
        if actor is not None:
            query["actor.id"] = actor
        at: dict[str, Any] = {}
        if since is not None:
            at["$gte"] = since
        if until is not None:
            at["$lt"] = until
        if since is not None and until is not None and since >= until:
            raise ValidationFailed.field("until", "must be after since")
        if at:
            query["at"] = at
        entries = ctx.db[AUDIT]
        scope = PageScope(
            "audit",
            (("at", DESCENDING), ("_id", DESCENDING)),
            {"action": action, "actor": actor, "since": since, "until": until},
        )
        items, following = await read_page(
            self.cursors, ctx, scope, entries, query, limit, offset, cursor
        )
        total = await entries.count_documents(query)
        return items, total, following
