"""SMS campaigns and messages (docs/sms.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from bson import ObjectId
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

from models.base import (
    NEXT_CURSOR_DESCRIPTION,
    Cursor,
    InputModel,
    Offset,
    OutputModel,
    QueryModel,
)

MessageStatus = Literal[
    "pending",
    "sending",
    "sent",
    "failed",
    "invalid",
    "cancelled",
    "unknown",
    "delivered",
    "undelivered",
    "expired",
    "blocked",
    "limited",
]
MESSAGE_STATUSES: tuple[str, ...] = get_args(MessageStatus)  # the same, in this order
# what a delivery report may make of a `sent` message (docs/sms.md, "Delivery reports")
FINAL_DELIVERY = ("delivered", "undelivered", "expired")
# messages the provider accepted: the delivery rate's denominator
ACCEPTED = ("sent", *FINAL_DELIVERY)
CampaignStatus = Literal["scheduled", "queued", "sending", "completed", "cancelled"]
ResolveOutcome = Literal["sent", "failed", "resend"]


def _scalar(value: Any) -> Any:
    if value is not None and not isinstance(value, str | int | float | bool):
        raise ValueError("must be text, a number or a boolean")
    return value


Scalar = Annotated[
    Any,
    AfterValidator(_scalar),
    WithJsonSchema({"type": ["string", "number", "boolean", "null"]}),
]


class RecipientIn(BaseModel):
    """A phone and the values of the text's placeholders."""

    model_config = ConfigDict(extra="allow", strict=True)
    __pydantic_extra__: dict[str, Scalar]

    phone: str = Field(max_length=64)


class CampaignIn(InputModel):
    """From a table (`table`, `phone_column`, optional `filters`) or from `recipients`."""

    name: str = Field(min_length=1, max_length=200)
    text: str = Field(
        min_length=1,
        max_length=2000,
        description="May use {{column_key}} (or recipient variable) placeholders",
    )
    table: str | None = Field(default=None, max_length=63)
    phone_column: str | None = Field(default=None, max_length=63)
    filters: list[Any] | dict[str, Any] | None = None
    recipients: list[RecipientIn] | None = Field(
        default=None,
        min_length=1,
        max_length=10_000,
        description='Each {"phone": "...", <variable>: <value>, ...}',
    )
    send_at: str | None = Field(
        default=None,
        max_length=64,
        description="When to start sending: an ISO 8601 moment with its offset "
        "(`2026-12-31T10:00:00+03:00`), in the future; the campaign is `scheduled` until then "
        "(cancellable). Absent: at once.",
        examples=["2026-12-31T10:00:00+03:00"],
    )


class CampaignCounts(OutputModel):
    total: int
    pending: int
    sending: int
    sent: int
    failed: int
    invalid: int
    cancelled: int
    unknown: int
    delivered: int = 0
    undelivered: int = 0
    expired: int = 0
    blocked: int = Field(default=0, description="Numbers on the company's stop list: never sent")
    limited: int = Field(
        default=0,
        description="Refused by a provider's sending limit (SMS.ru 206, 230, 231, 232): not sent",
    )
    delivery_rate: float | None = Field(
        default=None,
        description="delivered / accepted by the provider (sent, delivered, undelivered, "
        "expired); null before any was accepted",
    )


class CampaignOut(OutputModel):
    id: str
    name: str
    text: str
    status: CampaignStatus
    table: str | None
    phone_column: str | None
    duplicates: int = Field(description="Numbers dropped because they repeat an earlier one")
    counts: CampaignCounts
    send_at: datetime | None = None
    created_by: str
    created_at: datetime


class CampaignListQuery(QueryModel):
    limit: int = Field(default=1000, ge=1, le=1000)
    cursor: Cursor = None


class CampaignList(OutputModel):
    items: list[CampaignOut]
    next_cursor: str | None = Field(description=NEXT_CURSOR_DESCRIPTION)


class MessageOut(OutputModel):
    id: str
    campaign_id: str
    phone: str
    text: str
    status: MessageStatus
    attempts: int
    provider_id: str | None
    error: str | None
    delivered_at: datetime | None = None
    provider_code: int | None = Field(
        default=None,
        description="The provider's last code about the message: a delivery status, or the "
        "error that refused it",
    )
    provider_text: str | None = Field(
        default=None, description="What the provider's delivery code means"
    )
    updated_at: datetime


class PageQuery(QueryModel):
    """A page of a list: `limit` items from `offset`."""

    limit: int = Field(default=100, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=10_000_000)


class Page(OutputModel):
    """A page of a list (subclasses name their items' model), with the list's `total`."""

    items: list[Any]
    total: int
    limit: int
    offset: int


class MessagePage(Page):
    items: list[MessageOut]
    next_cursor: str | None = Field(description=NEXT_CURSOR_DESCRIPTION)


class MessageQuery(PageQuery):
    limit: int = Field(default=50, ge=1, le=1000)
    offset: Offset = 0
    cursor: Cursor = None
    status: MessageStatus | None = None


class ResolveIn(InputModel):
    """What the operator decided about a message whose fate is unknown."""

    outcome: ResolveOutcome


class CampaignPreview(OutputModel):
    """What a campaign would be, nothing stored (docs/sms.md, "Preview")."""

    recipients: int = Field(description="Distinct numbers, valid or not")
    duplicates: int
    invalid: int
    stop_listed: int
    to_send: int = Field(description="Messages that would be sent")
    encodings: dict[str, int] = Field(description="Messages to send by encoding: GSM-7, UCS-2")
    parts_per_message: dict[str, int] = Field(
        description="Messages to send by their number of parts ('1', '2', ...)"
    )
    total_parts: int
    price: float | None = Field(
        description="The provider's price of the send (`sms/cost`), null when it gives none"
    )
    daily_cap: int | None = Field(
        default=None, description="The company's daily SMS cap (`sms_daily_cap`), null: none"
    )
    daily_cap_left: int | None = Field(
        default=None,
        description="What the cap leaves on the campaign's day (its `send_at`, or today, in the "
        "company's time zone); creating it is refused (409 `sms_daily_cap`) when `to_send` is "
        "more. Null without a cap",
    )


class StopListIn(InputModel):
    """Numbers to add to (or remove from) the company's stop list; each is normalised to E.164
    with the company's region."""

    phones: list[str] = Field(min_length=1, max_length=10_000)


class StopListQuery(PageQuery):
    """A page of the stop list, by number."""


class StopListEntry(OutputModel):
    phone: str
    added_by: str | None
    added_at: datetime


class StopListPage(Page):
    items: list[StopListEntry]


class StopListChange(OutputModel):
    changed: int = Field(description="Numbers added (POST) or removed (DELETE)")
    unchanged: int = Field(description="Numbers already on the list (POST) or not on it (DELETE)")
    phones: list[str] = Field(description="The numbers as normalised, in the order given")


# ---- the stored documents, as the SMS domain reads them (docs/storage.md) ------------------


class StoredModel(BaseModel):
    """A document of `_sms_campaigns` or `_sms_messages`: `_id` as `id`, unknown fields kept
    out, missing optional ones defaulted (documents stored by earlier versions stay readable)."""

    model_config = ConfigDict(
        arbitrary_types_allowed=True, extra="ignore", populate_by_name=True, frozen=True
    )

    id: ObjectId = Field(alias="_id")


class CampaignRecord(StoredModel):
    """One `_sms_campaigns` document. `counts` is None only for a campaign stored before the
    counters existed (the domain counts and stores them on its first read)."""

    name: str
    text: str
    status: CampaignStatus
    table: str | None = None
    phone_column: str | None = None
    filters: Any = None
    duplicates: int = 0
    counts: dict[str, int] | None = None
    send_at: datetime | None = None
    created_by: str
    created_at: datetime
    updated_at: datetime | None = None

    def totals(self) -> CampaignCounts:
        """The counters by status, with `total` (never negative: a counter left behind by a
        stopped worker is repaired when the campaign completes)."""
        stored = self.counts or {}
        values = {status: max(0, int(stored.get(status, 0))) for status in MESSAGE_STATUSES}
        accepted = sum(values[s] for s in ACCEPTED)
        rate = round(values["delivered"] / accepted, 4) if accepted else None
        return CampaignCounts(total=sum(values.values()), delivery_rate=rate, **values)


class Outgoing(StoredModel):
    """What a sender needs of a message it is about to send (a projection of MessageRecord)."""

    phone: str
    text: str
    attempts: int = 0
    seq: int | None = None
    status: MessageStatus = "pending"
    claimed_by: str | None = None
    claimed_at: datetime | None = None


class MessageRecord(Outgoing):
    """One `_sms_messages` document. `seq` is None for messages stored before it existed."""

    campaign_id: ObjectId
    status: MessageStatus
    provider_id: str | None = None
    error: str | None = None
    batch: int = 0
    claim: ObjectId | None = None
    delivered_at: datetime | None = None
    provider_code: int | None = None
    provider_text: str | None = None
    updated_at: datetime


class SendOutcome(BaseModel):
    """What one attempt came to: the message's new status and the fields recorded with it."""

    model_config = ConfigDict(frozen=True)

    status: MessageStatus
    error: str | None = None
    provider_id: str | None = None
    sent_at: datetime | None = None
    provider_code: int | None = None


class BatchResult(BaseModel):
    """A sending task's result (what taskiq stores)."""

    sent: int = 0


# ---- output mappers ------------------------------------------------------------------------


def campaign_out(campaign: CampaignRecord) -> CampaignOut:
    return CampaignOut(
        id=str(campaign.id),
        name=campaign.name,
        text=campaign.text,
        status=campaign.status,
        table=campaign.table,
        phone_column=campaign.phone_column,
        duplicates=campaign.duplicates,
        counts=campaign.totals(),
        send_at=campaign.send_at,
        created_by=campaign.created_by,
        created_at=campaign.created_at,
    )


def message_out(message: MessageRecord) -> MessageOut:
    return MessageOut(
        id=str(message.id),
        campaign_id=str(message.campaign_id),
        phone=message.phone,
        text=message.text,
        status=message.status,
        attempts=message.attempts,
        provider_id=message.provider_id,
        error=message.error,
        delivered_at=message.delivered_at,
        provider_code=message.provider_code,
        provider_text=message.provider_text,
        updated_at=message.updated_at,
    )
