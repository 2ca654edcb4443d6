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

No unrecorded change (docs/history.md "Crash between a write and its revision"): every row
write stamps `_unrecorded` (the write's time) in the same atomic write (`RowService.stamp`; a
trash item gets `unrecorded`), and `record` clears it once the revision is stored (a one-row
write at once; a batch's marks are cleared by the next recovery, which finds their
revisions). A process
that dies in between leaves the mark; `recover` (the sweeper, every
`HISTORY_RECOVERY_SECONDS`, and at once when a process starts) finds marks older than
`RECOVERY_GRACE` through a sparse index, stores the missing revision (the row now against its
history folded: `seq` = the row's `_rev`, upserted on `(table, row, seq)`, so it exists exactly
once however often recovery runs) and clears the mark. No transaction is needed, so the
embedded engine and mongoeco get the same guarantee as a replica set.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from bson import ObjectId

from crm_core.accounts.context import TenantContext
from crm_core.platform.clock import utcnow
from crm_core.platform.cursors import merge_after
from crm_core.platform.errors import NotFound
from crm_core.platform.logs import REQUEST_ID
from crm_core.platform.registry import Registry
from crm_core.platform.storage import (
    ASCENDING,
    DESCENDING,
    Collection,
    Database,
    DuplicateKeyError,
    OperationFailure,
    Storage,
    system_collection,
    update_each,
)
from crm_core.tables.columns import Column, ColumnType, render_datetime
from crm_core.tables.definitions import SYSTEM_FIELDS, TABLES, Table
from crm_core.tables.updates import REVISION_FIELD, VERSION_FIELD, at_version, row_version
from models.accounts import Tenant

log = logging.getLogger(__name__)

HISTORY = "_history"
HISTORY_ORDER = [("seq", DESCENDING), ("_id", DESCENDING)]  # newest first (`table_row_seq`)
UNRECORDED_FIELD = "_unrecorded"  # on a row: written at this time, its revision not yet stored
UNRECORDED_ITEM = "unrecorded"  # the same on a row's trash item (a delete)
UNRECORDED_INDEX = "unrecorded"  # sparse: only the rows a crash left marked are in it
RECOVERY_GRACE = timedelta(seconds=60)  # a live write stores its revision well within this
RECOVERY_CHUNK = 500  # marked rows checked with one query of their revisions
RECOVERY_ACTOR = {"type": "system", "id": None, "name": "recovery"}
TRASH = "_trash"  # crm_core/tables/trash.py (which imports this module)

Action = Literal["created", "updated", "deleted", "restored", "reverted"]
ActorType = Literal["user", "token", "import", "system"]
# why the server changed stored values by itself (docs/history.md "Changes the server makes"):
# the `name` of a system revision's actor
SystemReason = Literal[
    "column_type_changed",  # a column's type changed: its values converted (or cleared: force)
    "column_changed",  # options removed, a shorter max_length...: values cleared or cut
    "column_change_undone",  # a conversion that failed half-way put back
    "link_target_deleted",  # a link cleared: the row it named went to the trash
    "link_target_restored",  # the link put back: that row came back from the trash
    "import_rolled_back",  # a failed import's updates undone: the values from before it
    "bulk_update_rolled_back",  # a bulk update that failed half-way: its written rows put back
    "upsert_rolled_back",  # an upsert batch that failed half-way: its updated rows put back
]
SYSTEM_BATCH = 1000  # rows of a server-made change written with one bulk write
SYSTEM_RETRIES = 20  # times a row written meanwhile is read again before it is left as it is
SYSTEM_MARK = "_system_"  # `_system_<id>` on a row: written by that server-made change
# rows of a batch whose revisions are stored, and marks cleared, with one call: a call holds
# the database a short while (mongoeco, the real-driver lane, serves one call at a time)
SYSTEM_STEP = 100
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


@dataclass(frozen=True)
class LiveChange:
    """One recorded row change as the live events see it (crm_core/live): its revision's id
    (the event id), the event name, the stored row before and after, the row as the API
    answers it, and the columns that changed (updates)."""

    id: ObjectId
    event: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    row: dict[str, Any]
    changed: list[str]


class LiveRows(Protocol):
    """Who pushes row changes to connected clients (crm_core/live/events.py `LivePublisher`)."""

    async def rows_changed(
        self, ctx: TenantContext, table: Table, changes: list[LiveChange]
    ) -> None: ...


class TellsUpdates(Protocol):
    """Who tells `row.updated` of revisions a server-made change stored (`ChangeLog`)."""

    async def tell_updates(
        self,
        ctx: TenantContext,
        table: Table,
        items: list[dict[str, Any]],
        live: list[LiveChange],
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


def render_stored(types: Registry[ColumnType], column: Column, value: object) -> object:
    """A stored value as `column` answers it, for a revision of a server-made change: one the
    column's type cannot read (a write's value of another form) is shown as stored."""
    if value is None:
        return None
    try:
        return types.get(column.type).render(column, value)
    except (KeyError, TypeError, ValueError, AttributeError):
        return value if isinstance(value, str | int | float | bool) else str(value)


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
    row[VERSION_FIELD] = row_version(doc)
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

    def __init__(self, events: RowEvents | None = None, live: LiveRows | None = None) -> None:
        self.events = events
        self.live = live  # live events (crm_core/services.py sets it)
        # a test's barrier (tests/history/test_crash.py, HISTORY_PAUSE_BEFORE_REVISION with
        # CRM_ENV=test): a write to this table waits forever between the row and its revision
        self.pause_table: str | None = None
        self._indexed: set[tuple[str, str]] = set()  # (database, rows collection) this process

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
        actor: dict[str, Any] | None = None,
    ) -> int:
        """Record a revision of every change that changed a column value and tell the
        listeners; answers how many revisions were recorded. `action`: the same for every
        change (restored, reverted), else read from the change. `rendered`: the rows as
        already rendered for the answer, in `changes` order. `actor`: the server's own
        (`system_actor`) instead of the caller's."""
        now = utcnow()
        actor = actor or actor_of(ctx)
        request_id = REQUEST_ID.get()
        revisions: list[dict[str, Any]] = []
        items: dict[str, list[dict[str, Any]]] = {}
        live: list[LiveChange] = []
        for index, change in enumerate(changes):
            kind = _action(change, action)
            diff = _changes(table, change)
            if not diff and kind in ("updated", "reverted"):
                continue  # a no-op: no revision, no event
            doc = change.after if change.after is not None else change.before
            assert doc is not None
            revision_id = ObjectId()
            revisions.append(
                {
                    "_id": revision_id,
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
            if self.live is not None:
                live.append(
                    LiveChange(
                        revision_id, EVENTS[kind], change.before, change.after, row, list(diff)
                    )
                )
        if self.pause_table is not None and table.key == self.pause_table:
            log.warning("paused before recording the revisions of %s (test barrier)", table.key)
            await asyncio.Event().wait()
        if revisions:
            await ctx.db[HISTORY].insert_many(revisions, ordered=False)
        await self._settle(ctx.db, table, changes)
        await self._push_live(ctx, table, live)
        for event, event_items in items.items():
            await self._publish(ctx, table, event, event_items, hooks)
        return len(revisions)

    async def tell_updates(
        self,
        ctx: TenantContext,
        table: Table,
        items: list[dict[str, Any]],
        live: list[LiveChange],
    ) -> None:
        """`row.updated` of revisions stored elsewhere (a server-made change, `SystemChange`):
        to the live clients, then the webhooks."""
        await self._push_live(ctx, table, live)
        await self._publish(ctx, table, EVENTS["updated"], items, None)

    async def _push_live(self, ctx: TenantContext, table: Table, changes: list[LiveChange]) -> None:
        """Live events (docs/api.md "Live events"), after the revisions are stored (a client
        resuming from an event id finds it in `_history`); never fails the write."""
        if self.live is None or not changes:
            return
        try:
            await self.live.rows_changed(ctx, table, changes)
        except Exception:
            log.exception("live events on %s could not be published", table.key)

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

    @staticmethod
    async def _settle(db: Database, table: Table, changes: Sequence[Change]) -> None:
        """The revisions are stored: clear the marks of the writes they record (a row written
        again meanwhile keeps the newer write's mark)."""
        one = [c.after for c in changes if c.after is not None]
        gone = [c.before["_id"] for c in changes if c.after is None and c.before is not None]
        if len(one) == 1:  # the common write, one row: its mark goes now, by its id
            seq = int(one[0].get(REVISION_FIELD) or 0)
            await db[table.collection_name].update_one(
                {"_id": one[0]["_id"], REVISION_FIELD: seq}, {"$unset": {UNRECORDED_FIELD: ""}}
            )
        # a batch's marks are left to `recover`, which finds the revisions and only clears them
        # (clearing hundreds of marks on the write path cost more than the write on mongoeco)
        if len(gone) == 1:  # one row deleted: its trash item's mark goes now
            await db[TRASH].update_one(
                {"row_id": gone[0], UNRECORDED_ITEM: {"$exists": True}},
                {"$unset": {UNRECORDED_ITEM: ""}},
            )

    # ---- recovery after a crash -----------------------------------------------------------

    async def recover_all(
        self, storage: Storage, types: Registry[ColumnType], grace: timedelta = RECOVERY_GRACE
    ) -> int:
        """`recover` in every company; answers how many revisions were stored."""
        tenants = system_collection(Tenant).find({}, {"_id": 1})
        stored = 0
        async for tenant in tenants:
            db = storage.tenant_db(str(tenant["_id"]))
            stored += await self.recover(db, types, grace)
        return stored

    async def recover(
        self, db: Database, types: Registry[ColumnType], grace: timedelta = RECOVERY_GRACE
    ) -> int:
        """Store the revision of every write marked longer than `grace` ago (its process died
        between the row and the revision) and clear its mark; answers how many were stored."""
        cutoff = utcnow() - grace
        stored = 0
        tables: dict[str, Table] = {}
        async for doc in db[TABLES].find({}, {"key": 1, "columns": 1, "collection": 1}):
            table = Table(doc, types)
            tables[table.key] = table
            rows = db[table.collection_name]
            await self._index(db, rows.name)
            marked = rows.find({UNRECORDED_FIELD: {"$lt": cutoff}})
            while chunk := await marked.to_list(length=RECOVERY_CHUNK):
                stored += await self._recover_rows(db, table, chunk)
        marked = db[TRASH].find({UNRECORDED_ITEM: {"$lt": cutoff}})
        while items := await marked.to_list(length=RECOVERY_CHUNK):
            stored += await self._recover_deletions(db, tables, items)
        if stored:
            log.warning("recovered %d revisions of writes whose process stopped", stored)
        return stored

    async def _recover_rows(self, db: Database, table: Table, rows: list[dict[str, Any]]) -> int:
        """Marked rows of one table: those whose revision is stored (a batch, or a process
        that died after the revision) only lose their mark; the others get it first."""
        ids = [row["_id"] for row in rows]
        found = db[HISTORY].find({"table": table.key, "row": {"$in": ids}}, {"row": 1, "seq": 1})
        recorded = {(doc["row"], doc["seq"]) async for doc in found}
        stored = 0
        clear = {"$unset": {UNRECORDED_FIELD: ""}}
        done: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for row in rows:
            seq = int(row.get(REVISION_FIELD) or 0)
            if (row["_id"], seq) not in recorded:
                stored += await self._recover_row(db, table, row, row)
            done.append(({"_id": row["_id"], REVISION_FIELD: row.get(REVISION_FIELD)}, clear))
        await update_each(db[table.collection_name], done, ordered=False)
        return stored

    async def _recover_deletions(
        self, db: Database, tables: dict[str, Table], items: list[dict[str, Any]]
    ) -> int:
        """Marked trash items (deletions): the missing `deleted` revisions, then no mark."""
        stored = 0
        by_table: dict[str, list[dict[str, Any]]] = {}
        for item in items:
            by_table.setdefault(item["table"], []).append(item)
        for key, group in by_table.items():
            table = tables.get(key)
            if table is None:
                continue  # the table is gone (or in the trash): its history with it
            group = [i for i in group if table.doc.get("_id") == i.get("table_id")]
            ids = [i["row_id"] for i in group]
            found = db[HISTORY].find({"table": key, "row": {"$in": ids}}, {"row": 1, "seq": 1})
            recorded = {(doc["row"], doc["seq"]) async for doc in found}
            for item in group:
                seq = int(item["doc"].get(REVISION_FIELD) or 0)
                if (item["row_id"], seq) not in recorded:
                    stored += await self._recover_row(db, table, item["doc"], None)
        clear = {"$unset": {UNRECORDED_ITEM: ""}}
        await update_each(db[TRASH], [({"_id": i["_id"]}, clear) for i in items], ordered=False)
        return stored

    async def _index(self, db: Database, collection: str) -> None:
        """The sparse index of marked rows, made once per process and rows collection for
        tables made before it existed (new tables get it at creation)."""
        if (db.name, collection) not in self._indexed:
            await unrecorded_index(db[collection])
            self._indexed.add((db.name, collection))

    async def _recover_row(
        self, db: Database, table: Table, doc: dict[str, Any], now: dict[str, Any] | None
    ) -> int:
        """The revision of the row's last write (`seq` = its `_rev`): its values (None: it
        went to the trash) against its history folded; upserted, so it is stored once."""
        seq = int(doc.get(REVISION_FIELD) or 0)
        query = {"table": table.key, "row": doc["_id"]}
        state: dict[str, object] = {}
        recorded = False
        cursor = db[HISTORY].find(query).sort([("seq", ASCENDING), ("_id", ASCENDING)])
        async for revision in cursor:
            recorded = True
            if revision["seq"] == seq:
                return 0  # stored before the process stopped
            fold(state, revision["changes"])
        after = {} if now is None else render_row(table, now)
        keys = [c.key for c in table.columns]
        diff = {
            key: {"before": state.get(key), "after": after.get(key)}
            for key in keys
            if state.get(key) != after.get(key)
        }
        action: Action = "deleted" if now is None else ("updated" if recorded else "created")
        revision = {
            "_id": ObjectId(),
            **query,
            "seq": seq,
            "at": utcnow(),
            "actor": RECOVERY_ACTOR,
            "action": action,
            "changes": diff,
            "request_id": None,
        }
        result = await db[HISTORY].update_one(
            {**query, "seq": seq}, {"$setOnInsert": revision}, upsert=True
        )
        return 1 if result.upserted_id is not None else 0

    # ---- reading ------------------------------------------------------------------------

    async def page(
        self,
        ctx: TenantContext,
        table: Table,
        row_id: ObjectId,
        limit: int,
        offset: int,
        column: str | None = None,
        after: dict[str, Any] | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """A row's revisions, newest first (one query served by `table_row_seq`), those after
        a cursor's keys when `after` (crm_core/platform/cursors.py) is given."""
        query: dict[str, Any] = {"table": table.key, "row": row_id}
        if column is not None:
            query[f"changes.{column}"] = {"$exists": True}
        history = ctx.db[HISTORY]
        cursor = history.find(merge_after(query, after)).sort(HISTORY_ORDER)
        if offset:
            cursor = cursor.skip(offset)
        docs = await cursor.limit(limit).to_list(length=limit)
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


def system_actor(reason: SystemReason) -> dict[str, Any]:
    """The actor of a revision the server made by itself: `system`, named by its reason."""
    return {"type": "system", "id": None, "name": reason}


@dataclass(frozen=True)
class Rewrite:
    """One row's part of a server-made change: applied only while the row is at `version`
    and still holds the stored values `expect` it was computed from; `changes` are the
    revision's, in the API's shapes."""

    row: ObjectId
    version: int
    expect: dict[str, Any]
    set: dict[str, Any]
    unset: tuple[str, ...]
    changes: dict[str, dict[str, object]]


# a row read again after another write outran a rewrite: its rewrite now (None: nothing to do)
Redo = Callable[[dict[str, Any]], Rewrite | None]
# how a batch of conditional updates is written (`update_each`; tests hook the caller's)
BulkUpdate = Callable[..., Any]


class SystemChange:
    """A change of stored row values the server makes by itself (docs/history.md "Changes
    the server makes"): a column's conversion, a link cleared when its row went to the
    trash. Like any write it adds one to each row's version in the same atomic update as the
    values (so an `If-Match` of the version before answers 412) and leaves one revision per
    row (actor `system`, named by the reason), so a row's revisions stay contiguous.

    Rows go by batches of `SYSTEM_BATCH`: one bulk write of updates conditional on each
    row's version and values, each setting this change's own mark (`_system_<id>`); when it
    matched fewer rows than it holds, one read of the marks tells which (a bulk write answers
    only counts); then, by steps of `SYSTEM_STEP` rows, one `insert_many` of their revisions
    and one clear of the marks. A row another write changed between the read and the bulk is
    read again and rewritten alone (`redo`), the version added atomically (`$inc`) and
    answered by the update itself, so its revision's `seq` is exact."""

    def __init__(
        self,
        ctx: TenantContext,
        table: Table,
        reason: SystemReason,
        redo: Redo,
        write: BulkUpdate = update_each,
        tell: TellsUpdates | None = None,
        batch: int = SYSTEM_BATCH,
    ) -> None:
        self.ctx = ctx
        self.batch = batch
        self.table = table
        self.reason = reason
        self.redo = redo
        self.write = write
        self.tell = tell  # row events and live events (None: a schema change tells nobody)
        self.mark = f"{SYSTEM_MARK}{ObjectId()}"
        self.at = utcnow()
        self.applied: list[Rewrite] = []  # what stands, in order (an undo takes it back)
        self.round_trips = 0  # database calls made (docs/history.md gives the figure)

    @property
    def rows(self) -> Collection:
        return self.ctx.db[self.table.collection_name]

    def _update(self, rewrite: Rewrite) -> dict[str, Any]:
        update: dict[str, Any] = {"$set": {**rewrite.set, UNRECORDED_FIELD: self.at}}
        if rewrite.unset:
            update["$unset"] = dict.fromkeys(rewrite.unset, "")
        return update

    def operation(self, rewrite: Rewrite) -> tuple[dict[str, Any], dict[str, Any]]:
        """The conditional update of one row in a batch: its version and values as read."""
        where = {"_id": rewrite.row, **at_version(rewrite.version), **rewrite.expect}
        update = self._update(rewrite)
        update["$set"].update({REVISION_FIELD: rewrite.version + 1, self.mark: True})
        return where, update

    async def apply(
        self,
        rewrites: Sequence[Rewrite],
        duplicate: Callable[[Rewrite], Rewrite] | None = None,
    ) -> list[Rewrite]:
        """Write, record and (with `tell`) tell every rewrite; answers those that applied.
        A failed bulk write (a duplicate key in a unique column) is raised once what applied
        is recorded, unless `duplicate` says what to write instead (the rows of that batch are
        then written one at a time)."""
        done: list[Rewrite] = []
        for start in range(0, len(rewrites), self.batch):
            chunk = list(rewrites[start : start + self.batch])
            failure: Exception | None = None
            matched: object = None
            try:
                self.round_trips += 1
                operations = [self.operation(r) for r in chunk]
                matched = await self.write(self.rows, operations, ordered=False)
            except OperationFailure as exc:  # a duplicate key (BulkWriteError, DuplicateKeyError)
                failure = exc
            if failure is None and matched == len(chunk):
                applied, missed = chunk, list[Rewrite]()  # each update found its row as read
            else:
                applied, missed = await self._read_marks(chunk)
            for step in range(0, len(applied), SYSTEM_STEP):
                await self._record(applied[step : step + SYSTEM_STEP], marked=True)
            done.extend(applied)
            if failure is not None and duplicate is None:
                raise failure
            alone = await self._one_by_one(missed, duplicate)
            for step in range(0, len(alone), SYSTEM_STEP):
                await self._record(alone[step : step + SYSTEM_STEP], marked=False)
            done.extend(alone)
        return done

    async def apply_rows(self, rows: AsyncIterable[dict[str, Any]]) -> int:
        """Plan each row of `rows` (a cursor of the rows to change, as read) with `redo` and
        apply the rewrites by batches, without holding more than a batch: answers how many
        applied."""
        applied = 0
        pending: list[Rewrite] = []
        async for row in rows:
            if (rewrite := self.redo(row)) is not None:
                pending.append(rewrite)
            if len(pending) >= self.batch:
                applied += len(await self.apply(pending))
                pending = []
        if pending:
            applied += len(await self.apply(pending))
        return applied

    async def _read_marks(self, chunk: list[Rewrite]) -> tuple[list[Rewrite], list[Rewrite]]:
        by_id = {r.row: r for r in chunk}
        query = {"_id": {"$in": list(by_id)}, self.mark: {"$exists": True}}
        self.round_trips += 1
        found = {d["_id"] async for d in self.rows.find(query, {"_id": 1})}
        return [r for r in chunk if r.row in found], [r for r in chunk if r.row not in found]

    async def _one_by_one(
        self, missed: list[Rewrite], duplicate: Callable[[Rewrite], Rewrite] | None
    ) -> list[Rewrite]:
        """Rows another write changed first (or, with `duplicate`, whose new value another
        row holds in a unique column: `duplicate` says what to write instead): each read again
        and rewritten on the values it holds now, the version added by the update itself."""
        done: list[Rewrite] = []
        for rewrite in missed:
            taken = False
            for _ in range(SYSTEM_RETRIES):
                self.round_trips += 1
                doc = await self.rows.find_one({"_id": rewrite.row})
                current = None if doc is None else self.redo(doc)
                if current is not None and taken and duplicate is not None:
                    current = duplicate(current)
                if current is None:
                    break
                update = self._update(current)
                update["$inc"] = {REVISION_FIELD: 1}
                self.round_trips += 1
                try:
                    after = await self.rows.find_one_and_update(
                        {"_id": current.row, **current.expect},
                        update,
                        {REVISION_FIELD: 1},
                        return_document=True,
                    )
                except DuplicateKeyError:
                    if duplicate is None:
                        raise
                    taken = True
                    continue
                if after is not None:
                    done.append(replace(current, version=row_version(after) - 1))
                    break
            else:
                log.warning(
                    "table %s row %s: written again %d times while the server changed it (%s)",
                    self.table.key,
                    rewrite.row,
                    SYSTEM_RETRIES,
                    self.reason,
                )
        return done

    async def _record(self, applied: list[Rewrite], marked: bool) -> None:
        """The revisions of what applied, then their marks cleared (a row written again
        meanwhile keeps the newer write's `_unrecorded`), then the listeners told."""
        if not applied:
            return
        self.applied.extend(applied)
        request_id = REQUEST_ID.get()
        revisions = [
            {
                "_id": ObjectId(),
                "table": self.table.key,
                "row": r.row,
                "seq": r.version + 1,
                "at": self.at,
                "actor": system_actor(self.reason),
                "action": "updated",
                "changes": r.changes,
                "request_id": None if request_id == "-" else request_id,
            }
            for r in applied
        ]
        self.round_trips += 1
        await self.ctx.db[HISTORY].insert_many(revisions, ordered=False)
        await self._clear(applied, marked)
        if self.tell is not None:
            await self._tell(applied, revisions)

    async def _clear(self, applied: list[Rewrite], marked: bool) -> None:
        """This change's marks go. One row's `_unrecorded` too, while the row is at the
        version this change made (a row written again keeps the newer write's); a batch's are
        left to `recover`, which finds their revisions and only clears them, as for any
        batch write ("Crash between a write and its revision")."""
        if len(applied) == 1:
            (one,) = applied
            unset = {UNRECORDED_FIELD: "", self.mark: ""} if marked else {UNRECORDED_FIELD: ""}
            self.round_trips += 1
            result = await self.rows.update_one(
                {"_id": one.row, REVISION_FIELD: one.version + 1}, {"$unset": unset}
            )
            if result.matched_count or not marked:
                return
        if marked:
            self.round_trips += 1
            await self.rows.update_many(
                {"_id": {"$in": [r.row for r in applied]}, self.mark: {"$exists": True}},
                {"$unset": {self.mark: ""}},
            )

    async def _tell(self, applied: list[Rewrite], revisions: list[dict[str, Any]]) -> None:
        """`row.updated` to the webhooks and the live clients, as for a PATCH: the rows as
        they are now, the columns changed and their values before."""
        assert self.tell is not None
        self.round_trips += 1
        docs = {
            d["_id"]: d async for d in self.rows.find({"_id": {"$in": [r.row for r in applied]}})
        }
        items: list[dict[str, Any]] = []
        live: list[LiveChange] = []
        for rewrite, revision in zip(applied, revisions, strict=True):
            after = docs.get(rewrite.row)
            if after is None:  # gone to the trash since: its deletion tells
                continue
            before = {k: v for k, v in after.items() if k not in rewrite.set}
            before.update((k, v) for k, v in rewrite.expect.items() if not _condition(v))
            before[REVISION_FIELD] = rewrite.version
            row = render_row(self.table, after)
            items.append(_event_item("updated", row, rewrite.changes))
            live.append(
                LiveChange(
                    revision["_id"], EVENTS["updated"], before, after, row, list(rewrite.changes)
                )
            )
        await self.tell.tell_updates(self.ctx, self.table, items, live)


# ---- links cleared and put back (docs/history.md "Changes the server makes") ----------


async def unlink(
    ctx: TenantContext, table: Table, key: str, ids: list[ObjectId], changes: TellsUpdates
) -> int:
    """Clear the link column `key` of `table` where it names one of `ids` (rows gone to the
    trash): each row cleared gets its version up, a system revision `link_target_deleted`
    and `row.updated` (a linked row that disappears changes what the row shows). By batches
    of `SYSTEM_BATCH`; answers how many rows were cleared."""
    gone = set(ids)

    def plan(row: dict[str, Any]) -> Rewrite | None:
        value = row.get(key)
        if value not in gone:
            return None  # linked elsewhere since it was read
        before = render_value(table, key, value)
        return Rewrite(
            row=row["_id"],
            version=row_version(row),
            expect={key: value},
            set={},
            unset=(key,),
            changes={key: {"before": before, "after": None}},
        )

    change = SystemChange(ctx, table, "link_target_deleted", plan, tell=changes)
    rows = table.collection(ctx).find({key: {"$in": ids}}, {key: 1, REVISION_FIELD: 1})
    return await change.apply_rows(rows)


async def relink(
    ctx: TenantContext,
    table: Table,
    key: str,
    target: ObjectId,
    ids: list[ObjectId],
    changes: TellsUpdates,
) -> int:
    """The links `unlink` cleared point at `target` again (it came back from the trash),
    in the rows of `ids` whose column nobody filled since: each a write of the server's like
    the clear (`link_target_restored`). Answers how many rows were linked again."""
    after = render_value(table, key, target)

    def plan(row: dict[str, Any]) -> Rewrite | None:
        if row.get(key) is not None:
            return None  # linked elsewhere since the clear: the new link stays
        return Rewrite(
            row=row["_id"],
            version=row_version(row),
            expect={key: {"$exists": False}},
            set={key: target},
            unset=(),
            changes={key: {"before": None, "after": after}},
        )

    change = SystemChange(ctx, table, "link_target_restored", plan, tell=changes)
    query = {"_id": {"$in": ids}, key: {"$exists": False}}
    return await change.apply_rows(table.collection(ctx).find(query, {key: 1, REVISION_FIELD: 1}))


async def put_back(
    ctx: TenantContext,
    table: Table,
    inserted: list[ObjectId],
    originals: list[dict[str, Any]],
    changes: ChangeLog | None,
) -> int:
    """Undo a failed import's written batch (crm_core/files/imports.py): the rows it created
    go, the rows it updated get their column values from before it back. Those were recorded
    (revisions, `row.created`/`row.updated`), so putting them back is a write of the server's,
    not a return to the old version: a created row leaves a `deleted` revision (the next
    `seq`, every value going to null) and `row.deleted`; an updated row's version goes up,
    with a system revision `import_rolled_back` and `row.updated`. Answers how many rows
    were put back."""
    rows = table.collection(ctx)
    gone: list[dict[str, Any]] = []
    for oid in inserted:  # the row as removed: its revision's `seq` and values are exact
        doc = await rows.find_one_and_delete({"_id": oid})
        if doc is not None:
            gone.append({**doc, REVISION_FIELD: row_version(doc) + 1})
    if gone and changes is not None:
        actor = system_actor("import_rolled_back")
        await changes.record(ctx, table, [Change(d, None) for d in gone], actor=actor)
    by_id = {o["_id"]: o for o in originals}

    def plan(row: dict[str, Any]) -> Rewrite | None:
        original = by_id.get(row["_id"])
        return None if original is None else _values_back(table, row, original)

    change = SystemChange(ctx, table, "import_rolled_back", plan, tell=changes)
    return await change.apply_rows(rows.find({"_id": {"$in": list(by_id)}}))


async def roll_back(
    ctx: TenantContext,
    table: Table,
    written: Sequence[Change],
    reason: SystemReason,
    changes: TellsUpdates,
) -> int:
    """Undo the updates a bulk write made before it failed (crm_core/tables/rows.py
    `bulk_update`, crm_core/tables/upsert.py `apply_plan`), once their revisions are
    recorded: a write of the server's, forward like any other (docs/history.md "Changes the
    server makes"). Each row whose version is still the one the failed write gave it
    (`Change.after`) gets the column values from before it back, its version up and a
    system revision `reason`; a row someone wrote since keeps that write. Answers how many
    rows were put back."""
    plans: dict[ObjectId, Rewrite] = {}
    for change in written:
        before, after = change.before, change.after
        if before is None or after is None:
            continue
        rewrite = _values_back(table, after, before, by_version=True)
        if rewrite is not None:
            plans[after["_id"]] = rewrite

    def redo(row: dict[str, Any]) -> Rewrite | None:
        rewrite = plans.get(row["_id"])
        if rewrite is None or row_version(row) != rewrite.version:
            return None  # written since the failed write: that write stays
        return rewrite

    system = SystemChange(ctx, table, reason, redo, tell=changes)
    return len(await system.apply(list(plans.values())))


def _values_back(
    table: Table, row: dict[str, Any], target: dict[str, Any], by_version: bool = False
) -> Rewrite | None:
    """The rewrite giving `row` (as stored now) the column values of `target` back (an undo);
    None when nothing differs. It applies while the row is at its version and still holds the
    values it changes, or with `by_version` while it is at its version only (also when it is
    written again alone)."""
    keys = changed_columns(table, row, target)
    if not keys:
        return None
    version = row_version(row)
    return Rewrite(
        row=row["_id"],
        version=version,
        expect=(
            {REVISION_FIELD: version}
            if by_version
            else {k: row[k] if k in row else {"$exists": False} for k in keys}
        ),
        set={k: target[k] for k in keys if k in target},
        unset=tuple(k for k in keys if k not in target),
        changes={
            k: {
                "before": render_value(table, k, row.get(k)),
                "after": render_value(table, k, target.get(k)),
            }
            for k in keys
        },
    )


async def unrecorded_index(rows: Collection) -> None:
    """The rows a stopped process left marked (`UNRECORDED_FIELD`): only they are in it."""
    await rows.create_index([(UNRECORDED_FIELD, ASCENDING)], name=UNRECORDED_INDEX, sparse=True)


def fold(state: dict[str, object], changes: dict[str, dict[str, object]]) -> None:
    """Apply one revision's changes to a row's values (None: the column is empty)."""
    for key, change in changes.items():
        if change["after"] is None:
            state.pop(key, None)
        else:
            state[key] = change["after"]


def _condition(value: object) -> bool:
    """Whether an expected value of a `Rewrite` is a query condition (`{"$exists": False}`)
    rather than a stored value."""
    return isinstance(value, dict) and any(str(k).startswith("$") for k in value)


def _event_item(kind: str, row: dict[str, Any], diff: dict[str, Any]) -> dict[str, Any]:
    if kind in ("updated", "reverted"):
        previous = {key: change["before"] for key, change in diff.items()}
        return {"id": row["id"], "changed": list(diff), "previous": previous, "row": row}
    if kind == "created":
        return row
    return {"id": row["id"], "row": row}
