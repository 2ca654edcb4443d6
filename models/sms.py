"""SMS campaigns and messages (SPEC §11)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

from models.base import InputModel, OutputModel, QueryModel

MESSAGE_STATUSES = ("pending", "sending", "sent", "failed", "invalid", "cancelled", "unknown")
MessageStatus = Literal["pending", "sending", "sent", "failed", "invalid", "cancelled", "unknown"]


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


class CampaignCounts(OutputModel):
    total: int
    pending: int
    sending: int
    sent: int
    failed: int
    invalid: int
    cancelled: int
    unknown: int


class CampaignOut(OutputModel):
    id: str
    name: str
    text: str
    status: Literal["queued", "sending", "completed", "cancelled"]
    table: str | None
    phone_column: str | None
    duplicates: int = Field(description="Numbers dropped because they repeat an earlier one")
    counts: CampaignCounts
    created_by: str
    created_at: datetime


class CampaignList(OutputModel):
    items: list[CampaignOut]


class MessageOut(OutputModel):
    id: str
    campaign_id: str
    phone: str
    text: str
    status: MessageStatus
    attempts: int
    provider_id: str | None
    error: str | None
    updated_at: datetime


class MessagePage(OutputModel):
    items: list[MessageOut]
    total: int
    limit: int
    offset: int


class MessageQuery(QueryModel):
    status: MessageStatus | None = None
    limit: int = Field(default=50, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=10_000_000)


class ResolveIn(InputModel):
    """What the operator decided about a message whose fate is unknown."""

    outcome: Literal["sent", "failed", "resend"]


def message_out(doc: dict[str, Any]) -> MessageOut:
    return MessageOut(
        id=str(doc["_id"]),
        campaign_id=str(doc["campaign_id"]),
        phone=doc["phone"],
        text=doc["text"],
        status=doc["status"],
        attempts=doc.get("attempts", 0),
        provider_id=doc.get("provider_id"),
        error=doc.get("error"),
        updated_at=doc["updated_at"],
    )
