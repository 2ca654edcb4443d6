"""`GET /api/events`: live events over a WebSocket or, with `Accept: text/event-stream`, SSE
(docs/api.md "Live events"). The transport only: authenticating, reading the client's frames
and writing the connection's queue out; who receives what is crm_core/live."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from crm_core.accounts.context import TenantContext
from crm_core.accounts.grants import check_token_scope
from crm_core.accounts.tokens import is_api_token
from crm_core.live.hub import (
    GOING_AWAY,
    POLICY_VIOLATION,
    UNAUTHORIZED,
    UNSUPPORTED_DATA,
    Closing,
    Connection,
    Frame,
    closing_for,
    frame,
)
from crm_core.live.tickets import LiveTickets
from crm_core.platform import i18n
from crm_core.platform.errors import (
    CrmError,
    PasswordChangeRequired,
    Unauthorized,
    ValidationFailed,
)
from crm_core.platform.settings import Settings
from crm_core.services import Services
from handlers.routing import SERVICES, Authenticated, Call, Public, RouteTable, bearer_token
from models.events import EventsQuery, EventsTicket

log = logging.getLogger(__name__)

routes = RouteTable("events")

PROTOCOL = "crm.events"  # the subprotocol the server answers
BEARER_PROTOCOL = "bearer."  # `bearer.<token>`: the token offered as a subprotocol
MAX_FRAME_BYTES = 64 * 1024
HEARTBEAT = '{"type":"heartbeat"}'
SSE_CHECK_SECONDS = 1.0

DESCRIPTION = """Live events of the tables the caller may read (docs/api.md "Live events").

**WebSocket** (an `Upgrade: websocket` request): authenticate with the subprotocols
`crm.events, bearer.<token>` (an access token or an API token), or send
`{"type": "auth", "token": "..."}` as the first frame. Then `{"type": "subscribe", "table":
"deals", "filters": [...], "since": "<event id>"}`, `{"type": "unsubscribe", "table": "deals"}`,
`{"type": "subscribe", "campaigns": true}`, `{"type": "ping"}`.

**SSE** (`Accept: text/event-stream`): `Authorization: Bearer <token>`, or (a browser's
`EventSource`) `ticket=` from `POST /api/events/ticket`; the subscriptions in the query
(`tables`, `filters`, `campaigns`), resume with `Last-Event-ID`.

Frames: `row.created`, `row.updated` (`changed` columns), `row.deleted`, `row.restored`,
`table.changed`, `campaign.progress`, each with `id` (the event id), `table`, `row_id` and
`row`; control frames `ready`, `subscribed`, `unsubscribed`, `error`, `reload`, `heartbeat`,
`close`. Tokens are never read from the URL (a one-time ticket is)."""

# Before OpenAPI 3.2 (`itemSchema`), the schema of a `text/event-stream` answer describes each
# of its events, not the stream as one string (docs/api.md "Live events")
SSE_EVENT_SCHEMA = {
    "type": "object",
    "description": "One event of the stream; `: heartbeat` comments keep it open",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "description": "The frame's `type` (`row.created`, ...)"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "description": "The frame, a JSON object whose `type` is the event's name",
        },
        "id": {"type": "string", "description": "The event id (row events): `Last-Event-ID`"},
        "retry": {"type": "integer", "description": "Milliseconds before reconnecting"},
    },
}


async def authenticate(services: Services, bearer: str) -> TenantContext:
    """The viewer's context now (401 for anything not current)."""
    if is_api_token(bearer):
        ctx, _, _ = await services.tokens.authenticate(bearer)
    else:
        ctx, _, _ = await services.auth.authenticate(bearer)
    if ctx.user.must_change_password:
        raise PasswordChangeRequired()
    return ctx


def tickets(services: Services) -> LiveTickets:
    return LiveTickets(services.storage.system_db)


async def redeem(services: Services, ticket: str) -> tuple[str, TenantContext]:
    """The credential a ticket was issued with and its viewer now; 401 when the ticket or the
    credential does not stand, or the credential is no longer the ticket's user's."""
    redeemed = await tickets(services).redeem(ticket)
    ctx = await authenticate(services, redeemed.bearer)
    if ctx.tenant_id != redeemed.tenant_id or ctx.user_id != redeemed.user_id:
        raise Unauthorized("The ticket is not valid")
    return redeemed.bearer, ctx


def open_connection(
    services: Services, bearer: str, ctx: TenantContext, transport: str
) -> Connection:
    async def again() -> TenantContext:
        return await authenticate(services, bearer)

    return services.live.open(bearer, ctx, again, transport)


@routes.get(
    "/api/events",
    access=Public(),  # authenticated here: a WebSocket may send its token in the first frame
    summary="Live events (WebSocket, or SSE with Accept: text/event-stream)",
    query=EventsQuery,
    errors=(400, 401, 429),
    description=DESCRIPTION,
    response_content={"text/event-stream": {"schema": SSE_EVENT_SCHEMA}},
)
async def events(call: Call, query: EventsQuery) -> web.StreamResponse:
    request = call.request
    if query.filters is not None and len(split_tables(query.tables)) != 1:
        raise ValidationFailed.field("filters", "needs exactly one table in tables")
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return await websocket(call, query)
    if "text/event-stream" in request.headers.get("Accept", ""):
        return await server_sent_events(call, query)
    raise ValidationFailed.field(
        "Accept", "open a WebSocket, or send Accept: text/event-stream for SSE"
    )


@routes.post(
    "/api/events/ticket",
    access=Authenticated(),
    summary="A one-time ticket for an EventSource (GET /api/events?ticket=...)",
    response=EventsTicket,
    status=201,
    errors=(401, 403),
)
async def create_ticket(call: Call) -> EventsTicket:
    """A browser's `EventSource` cannot send `Authorization`: it opens `GET
    /api/events?ticket=...` with this instead. The ticket acts as the signed-in session that
    made it (its access is re-checked as any connection's), for one request within
    `expires_in` (30) seconds; the token itself never goes in the URL. A used, expired or
    altered ticket is a 401. A signed-in session only: an API token answers 403 (a program
    sends its token in a header)."""
    check_token_scope(call.ctx, "make a live-events ticket")
    ticket = await tickets(call.services).issue(call.ctx, bearer_token(call.request))
    return EventsTicket(ticket=ticket, expires_in=tickets(call.services).seconds)


def split_tables(tables: str | None) -> list[str]:
    """The `tables` list, each key once (a key named twice would replay its events twice)."""
    return list(dict.fromkeys(t.strip() for t in (tables or "").split(",") if t.strip()))


async def subscribe_from_query(
    services: Services, connection: Connection, query: EventsQuery, since: str | None
) -> None:
    """The query's subscriptions; a refused one is an `error` frame, the others stand."""
    filters = None
    if query.filters is not None:
        try:
            filters = services.rows.filters.parse_param(query.filters)
        except CrmError as error:
            connection.offer(error_frame(error, {"table": query.tables}))
            return
    for table in split_tables(query.tables):
        await subscribe_or_tell(services, connection, table, filters, since)
    if query.campaigns:
        try:
            services.live.subscribe_campaigns(connection)
        except CrmError as error:
            connection.offer(error_frame(error, {"campaigns": True}))


async def subscribe_or_tell(
    services: Services, connection: Connection, table: object, filters: object, since: object
) -> None:
    try:
        await services.live.subscribe(connection, table, filters, since)
    except CrmError as error:
        extra = {"table": table} if isinstance(table, str) else {}
        connection.offer(error_frame(error, extra))


def error_frame(error: CrmError, extra: dict[str, Any] | None = None) -> Frame:
    """An `error` frame: the error's body as a response would carry it, its `message` (and its
    details') in the connection's language: its opening request's `Accept-Language`, else
    `DEFAULT_LANGUAGE` (docs/api.md "Languages"); the `code` and `field`s stay."""
    rendered = error.to_body(i18n.translate)["error"]
    body: dict[str, Any] = {"code": error.code, "message": rendered["message"], **(extra or {})}
    if error.details:
        body["details"] = rendered["details"]
    return frame("error", body)


# ---- WebSocket ------------------------------------------------------------------------------


def offered_bearer(request: web.Request) -> str | None:
    offered = request.headers.get("Sec-WebSocket-Protocol", "")
    for protocol in offered.split(","):
        protocol = protocol.strip()
        if protocol.startswith(BEARER_PROTOCOL) and len(protocol) > len(BEARER_PROTOCOL):
            return protocol[len(BEARER_PROTOCOL) :]
    return None


class Malformed(Exception):
    """A client frame that breaks the protocol: the connection closes with `code`."""

    def __init__(self, message: str, code: int = POLICY_VIOLATION) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def parse_frame(data: str) -> dict[str, Any]:
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise Malformed("malformed frame: not JSON") from None
    if not isinstance(parsed, dict):
        raise Malformed("malformed frame: not a JSON object")
    kind = parsed.get("type")
    if not isinstance(kind, str):
        raise Malformed("malformed frame: no `type`")
    return parsed


async def websocket(call: Call, query: EventsQuery) -> web.WebSocketResponse:
    services, request = call.services, call.request
    connection: Connection | None = None
    bearer = offered_bearer(request)
    if query.ticket is not None:  # a refused ticket is a plain 401 before the upgrade
        bearer, ctx = await redeem(services, query.ticket)
        connection = open_connection(services, bearer, ctx, "websocket")
    elif bearer is not None:  # a refused token is a plain 401 before the upgrade
        ctx = await authenticate(services, bearer)
        connection = open_connection(services, bearer, ctx, "websocket")
    ws = web.WebSocketResponse(protocols=(PROTOCOL,), max_msg_size=MAX_FRAME_BYTES)
    try:
        await ws.prepare(request)
        if connection is None:
            connection = await first_frame_auth(services, ws)
            if connection is None:
                return ws
        connection.offer(frame("ready", {"user_id": connection.viewer.ctx.user_id}))
        await subscribe_from_query(services, connection, query, query.since)
        reader = asyncio.get_running_loop().create_task(read_frames(services, ws, connection))
        closing = None
        try:
            closing = await write_frames(ws, connection, services.settings.events_heartbeat_seconds)
        finally:
            # the reader stops first: a close sent while it waits would end the connection
            # before the client's answer, and a browser would see 1006 instead of our code
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        if closing is not None and closing.reason != "client_closed":
            await close_ws(ws, closing)
    finally:
        if connection is not None:
            services.live.hub.release(connection)
    return ws


async def close_ws(ws: web.WebSocketResponse, closing: Closing) -> None:
    with contextlib.suppress(Exception):
        await ws.send_str(frame("close", closing.body()).data)
    await ws.close(code=closing.code, message=closing.message.encode()[:120])


async def first_frame_auth(services: Services, ws: web.WebSocketResponse) -> Connection | None:
    """`{"type": "auth", "token": ...}` within EVENTS_AUTH_TIMEOUT_SECONDS, else closed."""
    timeout = services.settings.events_auth_timeout_seconds
    try:
        async with asyncio.timeout(timeout):
            message = await ws.receive()
    except TimeoutError:
        await close_ws(ws, Closing(UNAUTHORIZED, "auth_timeout", "No auth frame in time"))
        return None
    if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
        return None
    try:
        if message.type != WSMsgType.TEXT:
            raise Malformed("binary frames are not accepted: send JSON text", UNSUPPORTED_DATA)
        parsed = parse_frame(message.data)
        token = parsed.get("token")
        if parsed["type"] != "auth" or not isinstance(token, str) or not token:
            raise Malformed('the first frame must be {"type": "auth", "token": "..."}')
    except Malformed as bad:
        await close_ws(ws, Closing(bad.code, "malformed_frame", bad.message))
        return None
    try:
        ctx = await authenticate(services, token)
        return open_connection(services, token, ctx, "websocket")
    except CrmError as error:
        if isinstance(error, Unauthorized) or error.code == "password_change_required":
            await close_ws(ws, closing_for(error, was_valid=False))
        else:  # too many connections
            await close_ws(ws, Closing(4429, error.code, error.message))
        return None


async def read_frames(
    services: Services, ws: web.WebSocketResponse, connection: Connection
) -> None:
    try:
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                await handle_frame(services, connection, parse_frame(message.data))
            elif message.type == WSMsgType.BINARY:
                raise Malformed("binary frames are not accepted: send JSON text", UNSUPPORTED_DATA)
            elif message.type == WSMsgType.ERROR:
                break
    except Malformed as bad:
        connection.close(Closing(bad.code, "malformed_frame", bad.message))
        return
    connection.close(Closing(1000, "client_closed", "The client closed the connection"))


async def handle_frame(services: Services, connection: Connection, parsed: dict[str, Any]) -> None:
    kind = parsed["type"]
    if kind == "subscribe":
        if parsed.get("campaigns") is True:
            try:
                services.live.subscribe_campaigns(connection)
            except CrmError as error:
                connection.offer(error_frame(error, {"campaigns": True}))
            return
        await subscribe_or_tell(
            services, connection, parsed.get("table"), parsed.get("filters"), parsed.get("since")
        )
    elif kind == "unsubscribe":
        table = parsed.get("table")
        if parsed.get("campaigns") is True:
            connection.campaigns = False
            connection.offer(frame("unsubscribed", {"campaigns": True, "reason": "asked"}))
        elif not isinstance(table, str):
            raise Malformed("malformed frame: unsubscribe needs a `table`")
        else:
            connection.unsubscribe(table, "asked")
    elif kind == "ping":
        connection.offer(frame("pong", {}))
    elif kind == "auth":  # a renewed token (before the old one expires): the same user only
        token = parsed.get("token")
        if not isinstance(token, str) or not token:
            raise Malformed("malformed frame: auth needs a `token`")
        await renew(services, connection, token)
    else:
        raise Malformed(f"malformed frame: unknown type '{kind[:32]}'")


async def renew(services: Services, connection: Connection, token: str) -> None:
    try:
        ctx = await authenticate(services, token)
    except CrmError as error:
        connection.offer(error_frame(error))
        return
    if ctx.user_id != connection.viewer.ctx.user_id:
        raise Malformed("auth: the token is another user's")
    viewer = connection.viewer

    async def again() -> TenantContext:
        return await authenticate(services, token)

    viewer.ctx, viewer.authenticate = ctx, again
    connection.offer(frame("ready", {"user_id": ctx.user_id, "renewed": True}))
    # the new token's scope holds from now, not from the next periodic re-check
    await services.live.hub.recheck(viewer)


async def write_frames(
    ws: web.WebSocketResponse, connection: Connection, heartbeat: float
) -> Closing | None:
    """The connection's frames until it closes: answers why (None: the socket went)."""
    while not ws.closed:
        item = await connection.next(heartbeat)
        if item is None:
            await ws.send_str(HEARTBEAT)
        elif isinstance(item, Closing):
            return item
        else:
            await ws.send_str(item.data)
    return None


# ---- SSE ------------------------------------------------------------------------------------


def client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def sse_bytes(item: Frame) -> bytes:
    head = f"id: {item.id}\n" if item.id else ""
    return f"{head}event: {item.event}\ndata: {item.data}\n\n".encode()


async def server_sent_events(call: Call, query: EventsQuery) -> web.StreamResponse:
    services, request = call.services, call.request
    if query.ticket is not None:
        bearer, ctx = await redeem(services, query.ticket)
    else:
        bearer = bearer_token(request)
        ctx = await authenticate(services, bearer)
    connection = open_connection(services, bearer, ctx, "sse")
    try:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        await response.write(b"retry: 2000\n\n")
        connection.offer(frame("ready", {"user_id": ctx.user_id}))
        since = request.headers.get("Last-Event-ID") or query.since
        await subscribe_from_query(services, connection, query, since)
        with contextlib.suppress(ConnectionResetError, ConnectionError):
            await write_events(request, response, connection, services.settings)
        return response
    finally:
        services.live.hub.release(connection)


async def write_events(
    request: web.Request,
    response: web.StreamResponse,
    connection: Connection,
    settings: Settings,
) -> None:
    """The connection's frames as SSE events until it closes or the client leaves (noticed
    within SSE_CHECK_SECONDS: the handler is not cancelled when the client goes)."""
    heartbeat = settings.events_heartbeat_seconds
    quiet_since = time.monotonic()
    while True:
        item = await connection.next(min(heartbeat, SSE_CHECK_SECONDS))
        if item is None:
            if client_gone(request):
                return
            if time.monotonic() - quiet_since >= heartbeat:
                await response.write(b": heartbeat\n\n")
                quiet_since = time.monotonic()
            continue
        quiet_since = time.monotonic()
        if isinstance(item, Closing):
            await response.write(sse_bytes(frame("close", item.body())))
            return
        await response.write(sse_bytes(item))


async def shutdown(app: web.Application) -> None:
    """Close every live connection before the server waits for its handlers."""
    app[SERVICES].live.hub.close_all(
        Closing(GOING_AWAY, "server_shutdown", "The server is shutting down; reconnect")
    )
