"""What a live event carries between processes, and who publishes them.

Row events come from the one path of row changes (crm_core/tables/history.py
`ChangeLog.record`, through its `LiveRows` hook): their id is the revision's id in `_history`,
so a client resuming from it is replayed from there. Schema events (`table.changed`) come from
the table constructor's audit records, campaign progress from the SMS sender; their ids are
new ObjectIds (they are not replayed). An `access.changed` message (a share granted or
revoked) is not sent to clients: it makes every process re-check its subscribers at once.

A message is BSON (stored rows keep their types: the filters are matched against them).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import bson
from bson import ObjectId
from bson.codec_options import CodecOptions

from crm_core.accounts.audit import AuditSink
from crm_core.accounts.context import TenantContext
from crm_core.platform import metrics
from crm_core.platform.clock import utcnow
from crm_core.platform.eventbus import EventBus
from crm_core.platform.storage import Database
from crm_core.tables.definitions import Table
from crm_core.tables.history import LiveChange

log = logging.getLogger(__name__)

ROW_EVENTS = ("row.created", "row.updated", "row.deleted", "row.restored")
TABLE_CHANGED = "table.changed"
CAMPAIGN_PROGRESS = "campaign.progress"
ACCESS_CHANGED = "access.changed"  # internal: re-check the tenant's subscribers now
SCHEMA_ACTIONS = ("table.", "column.")
ACCESS_ACTIONS = ("share.",)
CODEC: CodecOptions[dict[str, Any]] = CodecOptions(tz_aware=False)


@dataclass
class LiveMessage:
    """One event as every process receives it."""

    id: str
    tenant: str
    event: str
    table: str | None = None
    row_id: str | None = None
    before: dict[str, Any] | None = None  # stored row (the filter is matched against it)
    after: dict[str, Any] | None = None
    row: dict[str, Any] | None = None  # as the API answers it
    changed: list[str] | None = None
    data: dict[str, Any] | None = None  # table.changed, campaign.progress

    def encode(self) -> bytes:
        return bson.encode({k: v for k, v in self.__dict__.items() if v is not None})

    @classmethod
    def decode(cls, raw: bytes) -> LiveMessage:
        doc: dict[str, Any] = bson.decode(raw, codec_options=CODEC)
        # fields a newer process adds are left out (a rolling upgrade shares the channel)
        return cls(**{k: v for k, v in doc.items() if k in cls.__dataclass_fields__})


class LivePublisher:
    """Publishes live events on the bus (`ChangeLog`'s `LiveRows`)."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus

    async def send(self, message: LiveMessage) -> None:
        metrics.LIVE_PUBLISHED.labels(message.event).inc()
        await self.bus.publish(message.encode())

    async def rows_changed(
        self, ctx: TenantContext, table: Table, changes: list[LiveChange]
    ) -> None:
        for change in changes:
            await self.send(
                LiveMessage(
                    id=str(change.id),
                    tenant=ctx.tenant_id,
                    event=change.event,
                    table=table.key,
                    row_id=change.row["id"],
                    before=change.before,
                    after=change.after,
                    row=change.row,
                    changed=change.changed if change.event == "row.updated" else None,
                )
            )

    async def table_changed(
        self, tenant_id: str, table_key: str, action: str, column: str | None
    ) -> None:
        data: dict[str, Any] = {"action": action}
        if column is not None:
            data["column"] = column
        await self.send(
            LiveMessage(str(ObjectId()), tenant_id, TABLE_CHANGED, table=table_key, data=data)
        )

    async def access_changed(self, tenant_id: str) -> None:
        await self.send(LiveMessage(str(ObjectId()), tenant_id, ACCESS_CHANGED))

    async def campaign_progress(
        self, tenant_id: str, campaign: dict[str, Any], counts: dict[str, int]
    ) -> None:
        data = {
            "campaign_id": str(campaign["_id"]),
            "name": campaign.get("name"),
            "status": campaign.get("status"),
            "counts": counts,
            "at": utcnow().isoformat(),
        }
        await self.send(LiveMessage(str(ObjectId()), tenant_id, CAMPAIGN_PROGRESS, data=data))


class LiveAudit:
    """The audit sink the tables domain is given, told on to the live events: a table or a
    column changed (`table.changed`), a share was granted or revoked (subscribers re-checked
    at once). The audit trail records first; a failure to publish is logged."""

    def __init__(self, trail: AuditSink, publisher: LivePublisher) -> None:
        self.trail = trail
        self.publisher = publisher

    async def record(
        self,
        ctx: TenantContext,
        action: str,
        target: dict[str, Any],
        changes: dict[str, Any] | None = None,
    ) -> None:
        await self.trail.record(ctx, action, target, changes)
        try:
            if action.startswith(SCHEMA_ACTIONS) and isinstance(target.get("table"), str):
                column = target.get("column")
                await self.publisher.table_changed(
                    ctx.tenant_id,
                    target["table"],
                    action,
                    column if isinstance(column, str) else None,
                )
            elif action.startswith(ACCESS_ACTIONS):
                await self.publisher.access_changed(ctx.tenant_id)
        except Exception:
            log.exception("live event for %s could not be published", action)

    async def record_in(
        self,
        db: Database,
        actor: dict[str, Any],
        action: str,
        target: dict[str, Any],
        changes: dict[str, Any] | None = None,
        address: str | None = None,
    ) -> None:
        """Entries outside a signed-in request (sign-ins, the system) change no schema or
        access a subscriber holds: recorded only."""
        await self.trail.record_in(db, actor, action, target, changes, address)


class CampaignFinished(Protocol):
    """The webhooks' `campaign.finished` (crm_core/webhooks/service.py)."""

    async def campaign_finished(
        self, db: Database, tenant_id: str, campaign: dict[str, Any]
    ) -> None: ...


CampaignReader = Callable[
    [Database, ObjectId], Awaitable[tuple[dict[str, Any], dict[str, int]] | None]
]


class LiveCampaignEvents:
    """The SMS domain's campaign events: `campaign.finished` to the webhooks, and
    `campaign.progress` (the counters by status) to the live clients after every batch sent
    and when the campaign finishes. `read`: the campaign and its counters (crm_core/services.py
    reads them with the SMS domain's own function)."""

    def __init__(
        self, webhooks: CampaignFinished, publisher: LivePublisher, read: CampaignReader
    ) -> None:
        self.webhooks = webhooks
        self.publisher = publisher
        self.read = read

    async def campaign_finished(
        self, db: Database, tenant_id: str, campaign: dict[str, Any]
    ) -> None:
        await self.webhooks.campaign_finished(db, tenant_id, campaign)
        await self.campaign_progress(db, tenant_id, campaign["_id"])

    async def campaign_progress(self, db: Database, tenant_id: str, campaign_id: ObjectId) -> None:
        """Never fails the sending: a failure to tell is logged."""
        try:
            found = await self.read(db, campaign_id)
            if found is not None:
                await self.publisher.campaign_progress(tenant_id, found[0], found[1])
        except Exception:
            log.exception("campaign.progress of %s could not be published", campaign_id)
