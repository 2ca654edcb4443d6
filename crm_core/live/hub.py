"""The connections of one process and who receives what (docs/api.md "Live events").

Every live message from the bus (crm_core/platform/eventbus.py) is matched here against the
connections of its company: a row event goes to the connections subscribed to its table whose
viewer may read the table now (and whose filter the row matched before or after the change),
with the row as the list answers it; `campaign.progress` to those who asked for campaigns and
hold `sms.read`. Nothing here awaits: a message is turned into frames and queued on each
connection at once; the transport (handlers/events.py) writes them out.

A viewer is one credential (an access token or an API token) with the connections opened
with it. Every `EVENTS_RECHECK_SECONDS` (and at once after a share changes) each viewer is
authenticated again and its tables' access read afresh: a revoked share or role unsubscribes
the table (an `unsubscribed` frame); a deactivated user, an ended session (password change,
logout everywhere), a revoked or expired token closes its connections with code 4401.

A connection queues at most `EVENTS_QUEUE_SIZE` frames: a client that falls further behind is
closed (4408) rather than held in memory. A user has at most `EVENTS_MAX_CONNECTIONS_PER_USER`
connections in a process; the slot is taken before any await of the opening.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from crm_core.accounts.context import TenantContext
from crm_core.live.events import (
    ACCESS_CHANGED,
    CAMPAIGN_PROGRESS,
    TABLE_CHANGED,
    LiveMessage,
)
from crm_core.platform import metrics
from crm_core.platform.errors import CrmError, RateLimited, Unauthorized
from crm_core.platform.storage.embedded import filter_applies
from crm_core.tables.access import Level

log = logging.getLogger(__name__)

# close codes (RFC 6455 and the 4000-4999 range of applications); docs/api.md "Live events"
NORMAL = 1000
GOING_AWAY = 1001
UNSUPPORTED_DATA = 1003
POLICY_VIOLATION = 1008
UNAUTHORIZED = 4401
PASSWORD_CHANGE = 4403
SLOW_CLIENT = 4408
SERVICE_RESTART = 1012  # RFC 6455: reconnect (here: with `since`, events were missed)
TOO_MANY = 4429

Authenticate = Callable[[], Awaitable[TenantContext]]


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame for the client: `data` is its JSON text; `id` the event id (SSE `id:`)."""

    event: str
    data: str
    id: str | None = None


def frame(kind: str, body: dict[str, Any], event_id: str | None = None) -> Frame:
    return Frame(kind, orjson.dumps({"type": kind, **body}).decode(), event_id)


@dataclass(frozen=True, slots=True)
class Closing:
    """Why the server closes a connection: the close code, a stable reason and a sentence."""

    code: int
    reason: str
    message: str

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "reason": self.reason, "message": self.message}


class TooManyConnections(RateLimited):
    code = "too_many_connections"


def closing_for(error: CrmError, was_valid: bool = True) -> Closing:
    """The close of a credential that no longer authenticates (4401), with a stable reason."""
    text = error.message.lower()
    if error.code == "password_change_required":
        return Closing(PASSWORD_CHANGE, "password_change_required", error.message)
    if "expired" in text:
        reason = "token_expired"
    elif "deactivated" in text:
        reason = "user_deactivated"
    elif "ended" in text:
        reason = "session_ended"
    elif "company" in text:
        reason = "company_inactive"
    elif was_valid and "api token" in text:
        reason = "token_revoked"
    else:
        reason = "unauthorized"
    return Closing(UNAUTHORIZED, reason, error.message)


def naive(value: Any) -> Any:
    """Datetimes as UTC without a zone, as the events' stored rows carry them, so the filter
    compares like with like (BSON keeps no zone; MongoDB compares instants)."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            offset = value.utcoffset()
            value = value.replace(tzinfo=None) - (offset if offset is not None else 0)  # type: ignore[operator]
        return value
    if isinstance(value, dict):
        return {k: naive(v) for k, v in value.items()}
    if isinstance(value, list):
        return [naive(v) for v in value]
    return value


def matches(query: dict[str, Any], doc: dict[str, Any] | None) -> bool:
    """Whether a stored row is one the compiled filter selects (mongomock's evaluator: the
    one the embedded database answers the list with)."""
    return doc is not None and filter_applies(query, doc)


@dataclass(slots=True)
class Subscription:
    table: str
    query: dict[str, Any] | None = None  # the compiled filter, datetimes naive
    buffer: list[Frame] | None = None  # events arriving while the history replays


class Viewer:
    """One credential in this process and the connections opened with it."""

    def __init__(self, key: str, ctx: TenantContext, authenticate: Authenticate) -> None:
        self.key = key
        self.ctx = ctx
        self.authenticate = authenticate
        self.levels: dict[str, Level] = {}
        self.connections: set[Connection] = set()

    def can_read(self, table: str) -> bool:
        return self.levels.get(table, Level.NONE) >= Level.READ


class Connection:
    """One client's queue of frames; `next` is what the transport writes out."""

    def __init__(self, hub: LiveHub, viewer: Viewer, transport: str) -> None:
        self.hub = hub
        self.viewer = viewer
        self.transport = transport
        self.limit = hub.settings_queue_size
        self.queue: asyncio.Queue[Frame | Closing] = asyncio.Queue()
        self.subscriptions: dict[str, Subscription] = {}
        self.campaigns = False
        self.closing: Closing | None = None

    @property
    def tenant_id(self) -> str:
        return self.viewer.ctx.tenant_id

    def offer(self, item: Frame) -> None:
        if self.closing is not None:
            return
        if self.queue.qsize() >= self.limit:
            metrics.LIVE_DROPS.labels("slow_client").inc()
            self.close(
                Closing(
                    SLOW_CLIENT,
                    "slow_client",
                    f"More than {self.limit} events waited for this client; reconnect with since",
                )
            )
            return
        self.queue.put_nowait(item)
        metrics.LIVE_DELIVERED.inc()

    def deliver(self, item: Frame, subscription: Subscription) -> None:
        if subscription.buffer is not None:
            subscription.buffer.append(item)
        else:
            self.offer(item)

    def close(self, closing: Closing) -> None:
        if self.closing is None:
            self.closing = closing
            self.queue.put_nowait(closing)

    async def next(self, heartbeat: float) -> Frame | Closing | None:
        """The next frame, the close, or None when `heartbeat` seconds passed without one."""
        if self.closing is not None:
            return self.closing
        if not self.queue.empty():
            return self.queue.get_nowait()
        try:
            async with asyncio.timeout(heartbeat):
                item = await self.queue.get()
        except TimeoutError:
            return None
        return self.closing if self.closing is not None else item

    def unsubscribe(self, table: str, reason: str) -> None:
        if self.subscriptions.pop(table, None) is not None:
            self.offer(frame("unsubscribed", {"table": table, "reason": reason}))


@dataclass
class HubSettings:
    queue_size: int = 1000
    recheck_seconds: float = 0.5
    max_per_user: int = 20


AccessOf = Callable[[TenantContext, str], Awaitable[Level]]


@dataclass
class LiveHub:
    settings: HubSettings
    access_of: AccessOf  # a viewer's level on a table now (NONE: gone or not theirs)
    tenants: dict[str, set[Connection]] = field(default_factory=dict)
    viewers: dict[str, Viewer] = field(default_factory=dict)
    per_user: dict[str, int] = field(default_factory=dict)
    _wake: asyncio.Event | None = None
    _loop: asyncio.Task[None] | None = None
    _due: set[str] = field(default_factory=set)  # tenants to re-check at once

    @property
    def settings_queue_size(self) -> int:
        return self.settings.queue_size

    # ---- opening and closing ------------------------------------------------------------

    def open(
        self, key: str, ctx: TenantContext, authenticate: Authenticate, transport: str
    ) -> Connection:
        """Take the user's slot and register the connection (no await: the cap holds)."""
        user = ctx.user_id
        count = self.per_user.get(user, 0)
        if count >= self.settings.max_per_user:
            metrics.LIVE_DROPS.labels("too_many").inc()
            raise TooManyConnections(
                f"A user has at most {self.settings.max_per_user} live connections per server"
            )
        self.per_user[user] = count + 1
        viewer = self.viewers.get(key)
        if viewer is None:
            viewer = self.viewers[key] = Viewer(key, ctx, authenticate)
        connection = Connection(self, viewer, transport)
        viewer.connections.add(connection)
        self.tenants.setdefault(ctx.tenant_id, set()).add(connection)
        metrics.LIVE_CONNECTIONS.labels(transport).inc()
        return connection

    def release(self, connection: Connection) -> None:
        viewer = connection.viewer
        if connection not in viewer.connections:
            return
        viewer.connections.discard(connection)
        if not viewer.connections:
            self.viewers.pop(viewer.key, None)
        user = viewer.ctx.user_id
        left = self.per_user.get(user, 1) - 1
        if left > 0:
            self.per_user[user] = left
        else:
            self.per_user.pop(user, None)
        tenant = self.tenants.get(connection.tenant_id)
        if tenant is not None:
            tenant.discard(connection)
            if not tenant:
                self.tenants.pop(connection.tenant_id, None)
        metrics.LIVE_CONNECTIONS.labels(connection.transport).dec()

    def close_all(self, closing: Closing) -> None:
        for connections in list(self.tenants.values()):
            for connection in list(connections):
                connection.close(closing)

    def events_missed(self) -> None:
        """The bus was cut off from the other processes (crm_core/platform/eventbus.py `gap`):
        every connection closes (1012) so that its client resumes with `since`, replayed
        from the row history (docs/api.md "Live events", "Resume")."""
        count = sum(len(connections) for connections in self.tenants.values())
        if count:
            metrics.LIVE_DROPS.labels("events_missed").inc(count)
            log.warning("live events: %d connections closed to resume after a gap", count)
        self.close_all(
            Closing(
                SERVICE_RESTART,
                "events_missed",
                "Live events from other servers were interrupted; reconnect with since",
            )
        )

    # ---- events from the bus --------------------------------------------------------------

    def receive(self, raw: bytes) -> None:
        message = LiveMessage.decode(raw)
        connections = self.tenants.get(message.tenant)
        if not connections:
            return
        if message.event == ACCESS_CHANGED:
            self.recheck_soon(message.tenant)
        elif message.event == CAMPAIGN_PROGRESS:
            item = frame(CAMPAIGN_PROGRESS, {"id": message.id, **(message.data or {})}, message.id)
            for connection in connections:
                if connection.campaigns and connection.viewer.ctx.has("sms.read"):
                    connection.offer(item)
        elif message.event == TABLE_CHANGED:
            body = {"id": message.id, "table": message.table, **(message.data or {})}
            item = frame(TABLE_CHANGED, body, message.id)
            for connection in connections:
                subscription = connection.subscriptions.get(message.table or "")
                if subscription is not None and connection.viewer.can_read(subscription.table):
                    connection.deliver(item, subscription)
            self.recheck_soon(message.tenant)  # a deleted table, a changed owner
        else:
            self._rows(message, connections)

    def _rows(self, message: LiveMessage, connections: set[Connection]) -> None:
        table = message.table or ""
        frames: dict[bool | None, Frame] = {}
        for connection in connections:
            subscription = connection.subscriptions.get(table)
            if subscription is None or not connection.viewer.can_read(table):
                continue
            match: bool | None = None
            if subscription.query is not None:
                match = matches(subscription.query, message.after)
                if not match and not matches(subscription.query, message.before):
                    continue
            item = frames.get(match)
            if item is None:
                item = frames[match] = row_frame(message, match)
            connection.deliver(item, subscription)

    # ---- re-checking access -------------------------------------------------------------

    def recheck_soon(self, tenant: str) -> None:
        self._due.add(tenant)
        if self._wake is not None:
            self._wake.set()

    async def start(self) -> None:
        if self._loop is None:
            self._wake = asyncio.Event()
            self._loop = asyncio.get_running_loop().create_task(self._rechecking())

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None

    async def _rechecking(self) -> None:
        assert self._wake is not None
        every = self.settings.recheck_seconds
        last = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, last + every - time.monotonic())):
                    await self._wake.wait()
            self._wake.clear()
            due, self._due = self._due, set()
            everyone = time.monotonic() - last >= every
            if everyone:
                last = time.monotonic()
            viewers = [
                v
                for v in list(self.viewers.values())
                if v.connections and (everyone or v.ctx.tenant_id in due)
            ]
            try:
                await asyncio.gather(*(self.recheck(v) for v in viewers))
            except Exception:
                log.exception("live events: re-checking access failed")

    async def recheck(self, viewer: Viewer) -> None:
        """Authenticate the viewer again and read its tables' access afresh."""
        try:
            ctx = await viewer.authenticate()
        except CrmError as error:
            if isinstance(error, Unauthorized) or error.code == "password_change_required":
                closing = closing_for(error)
                metrics.LIVE_DROPS.labels(closing.reason).inc()
                for connection in list(viewer.connections):
                    connection.close(closing)
                return
            log.warning("live events: re-check of a viewer failed: %s", error.message)
            return
        except Exception:  # the database is away: keep what was known, try again later
            log.warning("live events: re-check of a viewer failed", exc_info=True)
            return
        viewer.ctx = ctx
        tables = {t for c in viewer.connections for t in c.subscriptions}
        for table in tables:
            viewer.levels[table] = await self.access_of(ctx, table)
        for connection in list(viewer.connections):
            for table in list(connection.subscriptions):
                if not viewer.can_read(table):
                    connection.unsubscribe(table, "access_revoked")
            if connection.campaigns and not ctx.has("sms.read"):
                connection.campaigns = False
                connection.offer(
                    frame("unsubscribed", {"campaigns": True, "reason": "access_revoked"})
                )


def row_frame(message: LiveMessage, match: bool | None) -> Frame:
    body: dict[str, Any] = {
        "id": message.id,
        "table": message.table,
        "row_id": message.row_id,
    }
    if message.changed is not None:
        body["changed"] = message.changed
    body["row"] = message.row
    if match is not None:
        body["match"] = match
    return frame(message.event, body, message.id)
