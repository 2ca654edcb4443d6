"""`LiveService`: subscriptions of a connection, the replay from `_history`, and the process's
hub and bus (docs/api.md "Live events").

A resume is replayed only while the table's schema stands as the client knew it: a schema
change of the table in the company's audit trail (`_audit`, the entries `LiveAudit` turns into
`table.changed`) after the resume point is a `reload` frame instead of the rows."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId

from crm_core.accounts.context import TenantContext
from crm_core.live.events import LivePublisher
from crm_core.live.hub import (
    Authenticate,
    Connection,
    Frame,
    HubSettings,
    LiveHub,
    Subscription,
    frame,
    matches,
    naive,
)
from crm_core.platform.errors import Forbidden, NotFound, ValidationFailed
from crm_core.platform.eventbus import EventBus
from crm_core.platform.ids import parse_object_id
from crm_core.platform.settings import Settings
from crm_core.tables.access import Level, access_level, require
from crm_core.tables.definitions import Table, load_table
from crm_core.tables.history import EVENTS, HISTORY, render_row
from crm_core.tables.rows import RowService

DELETED = "row.deleted"
AUDIT = "_audit"  # the company's audit trail (crm_core/audit/service.py, a sibling package)
# the audit actions that change a table's schema as a client holds it (crm_core/tables/meta.py);
# `table.created` is not one: a table created after the resume point replaced a deleted one,
# and its `table.deleted` is after the resume point too
SCHEMA_CHANGES = (
    "table.renamed",
    "table.deleted",
    "table.restored",
    "column.added",
    "column.changed",
    "column.deleted",
    "column.restored",
)


class LiveService:
    def __init__(self, settings: Settings, bus: EventBus, rows: RowService) -> None:
        self.settings = settings
        self.bus = bus
        self.rows = rows
        self.publisher = LivePublisher(bus)
        self.hub = LiveHub(
            HubSettings(
                queue_size=settings.events_queue_size,
                recheck_seconds=settings.events_recheck_seconds,
                max_per_user=settings.events_max_connections_per_user,
            ),
            self.access_of,
        )
        bus.listen(self.hub.receive)
        bus.on_gap(self.hub.events_missed)

    async def start(self) -> None:
        """The API process: read the bus, re-check viewers."""
        await self.bus.start()
        await self.hub.start()

    async def stop(self) -> None:
        await self.hub.stop()
        await self.bus.close()

    def open(
        self, bearer: str, ctx: TenantContext, authenticate: Authenticate, transport: str
    ) -> Connection:
        """Register a connection of an authenticated viewer (429 over the user's cap)."""
        key = hashlib.sha256(bearer.encode()).hexdigest()
        return self.hub.open(key, ctx, authenticate, transport)

    async def access_of(self, ctx: TenantContext, key: str) -> Level:
        try:
            table = await load_table(ctx, self.rows.types, key)
        except NotFound:
            return Level.NONE
        return await access_level(ctx, table)

    # ---- subscribing --------------------------------------------------------------------

    async def subscribe(
        self, connection: Connection, key: object, filters: object = None, since: object = None
    ) -> None:
        """Subscribe to a table's row events (and `table.changed`); with `filters` (the list's
        filter language) only rows matching it before or after a change; with `since` (an
        event id) what happened after it is replayed first. Raises NotFound (no such table,
        or not readable), InvalidFilter, ValidationFailed naming the field."""
        ctx = connection.viewer.ctx
        if not isinstance(key, str) or not key:
            raise ValidationFailed.field("table", "must be a table key (a string)")
        if key not in connection.subscriptions:
            if len(connection.subscriptions) >= self.settings.events_max_subscriptions:
                limit = self.settings.events_max_subscriptions
                raise ValidationFailed.field("table", f"at most {limit} tables per connection")
        since_id = self._since(since)
        table = await load_table(ctx, self.rows.types, key)
        level = await require(ctx, table, Level.READ)
        query = None
        if filters is not None and filters != []:
            query = naive(self.rows.query(ctx, table, filters))
        connection.viewer.levels[key] = level
        subscription = Subscription(key, query or None, [] if since_id is not None else None)
        connection.subscriptions[key] = subscription
        connection.offer(frame("subscribed", {"table": key, "filtered": query is not None}))
        if since_id is not None:
            await self._replay(connection, ctx, table, subscription, since_id)

    def subscribe_campaigns(self, connection: Connection) -> None:
        if not connection.viewer.ctx.has("sms.read"):
            raise Forbidden("campaign.progress needs the 'sms.read' permission")
        connection.campaigns = True
        connection.offer(frame("subscribed", {"campaigns": True}))

    def _since(self, since: object) -> ObjectId | None:
        if since is None or since == "":
            return None
        parsed = parse_object_id(since) if isinstance(since, str) else None
        if parsed is None:
            raise ValidationFailed.field("since", "must be an event id (24 hex characters)")
        return parsed

    # ---- replay -------------------------------------------------------------------------

    async def _replay(
        self,
        connection: Connection,
        ctx: TenantContext,
        table: Table,
        subscription: Subscription,
        since: ObjectId,
    ) -> None:
        """The table's events after `since` from `_history` (at least once: events of the same
        second may come again; a client keeps the ids it saw), then what arrived meanwhile.
        Older than EVENTS_REPLAY_SECONDS, or more than EVENTS_REPLAY_MAX: a `reload` frame
        (`beyond_replay`); the table's schema changed after `since`: a `reload` frame
        (`schema_changed`) instead of the rows (rendered under a schema the client lacks)."""
        replayed: set[str] = set()
        reason = None
        try:
            frames = await self.replay(ctx, table, since, subscription.query)
            if frames is None:
                reason = "beyond_replay"
            elif await self.schema_changed(ctx, table.key, since):
                reason = "schema_changed"
        finally:
            buffered, subscription.buffer = subscription.buffer or [], None
        if reason is not None or frames is None:
            connection.offer(frame("reload", {"table": table.key, "reason": reason}))
        else:
            for item in frames:
                replayed.add(item.id or "")
                connection.offer(item)
        for item in buffered:
            if item.id not in replayed:
                connection.offer(item)

    async def schema_changed(self, ctx: TenantContext, key: str, since: ObjectId) -> bool:
        """Whether the audit trail holds a schema change of table `key` from the second of
        `since` on (at least once, as the replay: ids of one second from two processes do not
        order). Served by `_audit`'s `table_action_id` index (crm_core/platform/indexes.py)."""
        start = ObjectId.from_datetime(since.generation_time)
        where = {
            "target.table": key,
            "action": {"$in": list(SCHEMA_CHANGES)},
            "_id": {"$gte": start},
        }
        return await ctx.db[AUDIT].find_one(where, {"_id": 1}) is not None

    async def replay(
        self, ctx: TenantContext, table: Table, since: ObjectId, query: dict[str, Any] | None
    ) -> list[Frame] | None:
        now = datetime.now(UTC)
        horizon = now - timedelta(seconds=self.settings.events_replay_seconds)
        if since.generation_time < horizon:
            return None
        limit = self.settings.events_replay_max
        start = ObjectId.from_datetime(since.generation_time)
        # after the table was made: a deleted table's events stay out of a new one of its key
        where = {"_id": {"$gte": start, "$gt": table.id}, "table": table.key}
        cursor = ctx.db[HISTORY].find(where).sort("_id", 1).limit(limit + 1)
        revisions = [r for r in await cursor.to_list(length=limit + 1) if r["_id"] != since]
        if len(revisions) > limit:
            return None
        row_ids = list({r["row"] for r in revisions})
        current: dict[Any, dict[str, Any]] = {}
        if row_ids:
            found = table.collection(ctx).find({"_id": {"$in": row_ids}})
            current = {d["_id"]: d async for d in found}
        frames = []
        for revision in revisions:
            event = EVENTS[revision["action"]]
            doc = current.get(revision["row"])
            if query is not None and event != DELETED and not matches(query, naive(doc)):
                continue
            body: dict[str, Any] = {
                "id": str(revision["_id"]),
                "table": table.key,
                "row_id": str(revision["row"]),
            }
            if event == "row.updated":
                body["changed"] = list(revision.get("changes") or {})
            body["row"] = render_row(table, doc) if doc is not None and event != DELETED else None
            body["replayed"] = True
            frames.append(frame(event, body, body["id"]))
        return frames
