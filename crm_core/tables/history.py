"""Row history and the one path every row change takes (docs/history.md).

`ChangeLog.record` is called by every write of rows (create, update, bulk, upsert, import,
delete, restore, revert): it records one revision per changed row in the company's `_history`
and tells the listeners (webhooks: `row.created|updated|deleted|restored`). An update records
only the columns whose value changed; a no-op records nothing and tells nobody.

A revision: `{_id, table, row, seq, at, actor: {type, id, name}, action, changes: {column:
{before, after}}, request_id}`. Values are in the API's shapes (what `GET` answers), so a
revert sends them back through the same validation as a PATCH. `seq` is the row's own counter
(`_rev`, incremented by every write, crm_core/tables/updates.py `set_unset`): revisions of one
row are ordered by it even when two writes share a millisecond. A delete records every value
going to null and a restore every value coming back, so folding a row's changes in `seq` order
gives the row as stored.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from bson import ObjectId

from crm_core.accounts.context import TenantContext
from crm_core.platform.clock import utcnow
from crm_core.platform.errors import NotFound
from crm_core.platform.logs import REQUEST_ID
from crm_core.platform.storage import DESCENDING, Database
from crm_core.tables.columns import render_datetime
from crm_core.tables.definitions import SYSTEM_FIELDS, Table
from crm_core.tables.updates import REVISION_FIELD
from models.accounts import Tenant

log = logging.getLogger(__name__)

HISTORY = "_history"

Action = Literal["created", "updated", "deleted", "restored", "reverted"]
ActorType = Literal["user", "token", "import", "system"]
EVENTS: dict[str, str] = {
    "created": "row.created",
    "updated": "row.updated",
    "reverted": "row.updated",
    "deleted": "row.deleted",
    "restored": "row.restored",
}

# who writes when it is not the caller's own request: a file import, a system task
ACTOR_TYPE: ContextVar[ActorType | None] = ContextVar("crm_history_actor", default=None)


class RowEvents(Protocol):
    """Who hears about written rows (webhooks: crm_core.webhooks.service.WebhookService)."""

    async def subscribed(
        self, db: Database, event: str, table_key: str | None, tenant: Tenant | None = None
    ) -> list[ObjectId]:
        """Ids of the listeners of `event` on the table; empty: nobody listens. Given the
        request's tenant, answered from the process cache."""
        ...

    async def publish(
        self,
        db: Database,
        tenant_id: str,
        actor_id: str | None,
        event: str,
        table_key: str | None,
        items: list[dict[str, Any]],
        hooks: list[ObjectId] | None = None,
    ) -> int: ...


class AuditSink(Protocol):
    """The company's audit trail (crm_core/audit/service.py `AuditTrail`): the
    tables domain tells it of changes to tables, columns, shares and the trash."""

    async def record(
        self,
        ctx: TenantContext,
        action: str,
        target: dict[str, Any],
        changes: dict[str, Any] | None = None,
    ) -> None: ...


@dataclass(frozen=True)
class Change:
    """One row's change: the stored document before (None: it did not exist) and after
    (None: it went to the trash)."""

    before: dict[str, Any] | None
    after: dict[str, Any] | None


def actor_of(ctx: TenantContext) -> dict[str, Any]:
    """The revision's actor: the user, the API token, or the import/system task acting for
    the user (ACTOR_TYPE)."""
    kind: ActorType = ACTOR_TYPE.get() or ("token" if ctx.api_token_id else "user")
    if kind == "token":
        return {"type": kind, "id": ctx.api_token_id, "name": ctx.user.email}
    return {"type": kind, "id": ctx.user_id, "name": ctx.user.full_name or ctx.user.email}


def render_value(table: Table, key: str, value: object) -> object:
    """A stored value as the API writes it (None stays None)."""
    column = table.column(key)
    if value is None or column is None:
        return None
    return table.column_type(column).render(column, value)


def render_row(table: Table, doc: dict[str, Any]) -> dict[str, Any]:
    """A stored row as the API answers it."""
    row: dict[str, Any] = {"id": str(doc["_id"])}
    for column in table.columns:
        key = column.key
        if key in doc:
            row[key] = table.column_type(column).render(column, doc[key])
    for field in SYSTEM_FIELDS:
        value = doc.get(field)
        row[field] = render_datetime(value) if isinstance(value, datetime) else value
    return row


def changed_columns(table: Table, before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    return [c.key for c in table.columns if before.get(c.key) != after.get(c.key)]


def _changes(table: Table, change: Change) -> dict[str, dict[str, object]]:
    before, after = change.before or {}, change.after or {}
    return {
        key: {
            "before": render_value(table, key, before.get(key)),
            "after": render_value(table, key, after.get(key)),
        }
        for key in changed_columns(table, before, after)
    }


def _action(change: Change, action: Action | None) -> Action:
    if action is not None:
        return action
    if change.before is None:
        return "created"
    return "deleted" if change.after is None else "updated"


class ChangeLog:
    """The one path of row changes: the revision first, then the event."""

    def __init__(self, events: RowEvents | None = None) -> None:
        self.events = events

    async def listeners(self, ctx: TenantContext, table: Table, event: str) -> list[ObjectId]:
        if self.events is None:
            return []
        return await self.events.subscribed(ctx.db, event, table.key, ctx.tenant)

    async def record(
        self,
        ctx: TenantContext,
        table: Table,
        changes: Sequence[Change],
        action: Action | None = None,
        rendered: list[dict[str, Any]] | None = None,
        hooks: list[ObjectId] | None = None,
    ) -> int:
        """Record a revision of every change that changed a column value and tell the
        listeners; answers how many revisions were recorded. `action`: the same for every
        change (restored, reverted), else read from the change. `rendered`: the rows as
        already rendered for the answer, in `changes` order."""
        now = utcnow()
        actor = actor_of(ctx)
        request_id = REQUEST_ID.get()
        revisions: list[dict[str, Any]] = []
        items: dict[str, list[dict[str, Any]]] = {}
        for index, change in enumerate(changes):
            kind = _action(change, action)
            diff = _changes(table, change)
            if not diff and kind in ("updated", "reverted"):
                continue  # a no-op: no revision, no event
            doc = change.after if change.after is not None else change.before
            assert doc is not None
            revisions.append(
                {
                    "_id": ObjectId(),
                    "table": table.key,
                    "row": doc["_id"],
                    "seq": int(doc.get(REVISION_FIELD) or 0),
                    "at": now,
                    "actor": actor,
                    "action": kind,
                    "changes": diff,
                    "request_id": None if request_id == "-" else request_id,
                }
            )
            row = rendered[index] if rendered is not None else render_row(table, doc)
            items.setdefault(EVENTS[kind], []).append(_event_item(kind, row, diff))
        if revisions:
            await ctx.db[HISTORY].insert_many(revisions, ordered=False)
        for event, event_items in items.items():
            await self._publish(ctx, table, event, event_items, hooks)
        return len(revisions)

    async def _publish(
        self,
        ctx: TenantContext,
        table: Table,
        event: str,
        items: list[dict[str, Any]],
        hooks: list[ObjectId] | None,
    ) -> None:
        """The write and its revision are done, so a failure to tell is logged, not raised."""
        if self.events is None or not items:
            return
        try:
            if hooks is None:  # from the process cache: no query on a warm process
                hooks = await self.listeners(ctx, table, event)
            await self.events.publish(
                ctx.db, ctx.tenant_id, ctx.user_id, event, table.key, items, hooks
            )
        except Exception:
            log.exception("row event %s on %s could not be recorded", event, table.key)

    # ---- reading ------------------------------------------------------------------------

    async def page(
        self,
        ctx: TenantContext,
        table: Table,
        row_id: ObjectId,
        limit: int,
        offset: int,
        column: str | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """A row's revisions, newest first (one query served by `table_row_seq`)."""
        query: dict[str, Any] = {"table": table.key, "row": row_id}
        if column is not None:
            query[f"changes.{column}"] = {"$exists": True}
        history = ctx.db[HISTORY]
        cursor = history.find(query).sort([("seq", DESCENDING), ("_id", DESCENDING)])
        docs = await cursor.skip(offset).limit(limit).to_list(length=limit)
        total = await history.count_documents(query)
        return docs, total

    async def revision(
        self, ctx: TenantContext, table: Table, row_id: ObjectId, revision_id: ObjectId
    ) -> dict[str, Any]:
        found = await ctx.db[HISTORY].find_one(
            {"table": table.key, "row": row_id, "_id": revision_id}
        )
        if found is None:
            raise NotFound("Revision not found")
        return found

    async def state_after(
        self, ctx: TenantContext, table: Table, revision: dict[str, Any]
    ) -> dict[str, object]:
        """The row's column values right after `revision` (its changes folded in order)."""
        query = {"table": table.key, "row": revision["row"], "seq": {"$lte": revision["seq"]}}
        cursor = ctx.db[HISTORY].find(query).sort([("seq", 1), ("_id", 1)])
        state: dict[str, object] = {}
        async for doc in cursor:
            fold(state, doc["changes"])
            if doc["_id"] == revision["_id"]:
                break
        return state


def fold(state: dict[str, object], changes: dict[str, dict[str, object]]) -> None:
    """Apply one revision's changes to a row's values (None: the column is empty)."""
    for key, change in changes.items():
        if change["after"] is None:
            state.pop(key, None)
        else:
            state[key] = change["after"]


def _event_item(kind: str, row: dict[str, Any], diff: dict[str, Any]) -> dict[str, Any]:
    if kind in ("updated", "reverted"):
        previous = {key: change["before"] for key, change in diff.items()}
        return {"id": row["id"], "changed": list(diff), "previous": previous, "row": row}
    if kind == "created":
        return row
    return {"id": row["id"], "row": row}
