"""`GET /api/events` (live events, docs/api.md "Live events"): its query."""

from __future__ import annotations

from pydantic import Field

from models.base import OutputModel, QueryModel


class EventsQuery(QueryModel):
    tables: str | None = Field(
        default=None,
        max_length=2000,
        description="Tables to subscribe to at once, comma-separated (a WebSocket may also "
        "send `subscribe` frames). Never a token: tokens go in a header, "
        "`Sec-WebSocket-Protocol` or the first frame",
        examples=["deals,contacts"],
    )
    filters: str | None = Field(
        default=None,
        max_length=20_000,
        description="With exactly one table: the list's filters (docs/filters.md); only rows "
        "the filter selects before or after a change are sent",
    )
    campaigns: bool = Field(
        default=False, description="Also `campaign.progress` (needs `sms.read`)"
    )
    since: str | None = Field(
        default=None,
        max_length=24,
        description="Resume after this event id (SSE: the `Last-Event-ID` header does the "
        "same); up to EVENTS_REPLAY_SECONDS back, else a `reload` frame",
    )
    ticket: str | None = Field(
        default=None,
        max_length=128,
        description="A one-time ticket from `POST /api/events/ticket` (valid 30 s, one use), "
        "for a browser's `EventSource`, which cannot send headers; never the token itself",
    )


class EventsTicket(OutputModel):
    ticket: str = Field(
        description="Opens one `GET /api/events?ticket=...` as the caller, within "
        "`expires_in` seconds"
    )
    expires_in: int = Field(description="Seconds the ticket stays valid", examples=[30])
