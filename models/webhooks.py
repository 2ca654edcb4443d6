"""Webhooks and their delivery log (docs/integrations.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, field_validator

from models.base import InputModel, OutputModel, QueryModel

ROW_EVENTS = ("row.created", "row.updated", "row.deleted", "row.restored")
EVENTS = (*ROW_EVENTS, "campaign.finished")
EventName = Literal[
    "row.created", "row.updated", "row.deleted", "row.restored", "campaign.finished"
]
DELIVERY_STATUSES = ("pending", "delivering", "retrying", "succeeded", "failed", "skipped")
DeliveryStatus = Literal["pending", "delivering", "retrying", "succeeded", "failed", "skipped"]

TABLE_KEY = r"^[a-z][a-z0-9_]{0,62}$"


def _unique(values: list[str] | None) -> list[str] | None:
    return None if values is None else list(dict.fromkeys(values))


class WebhookIn(InputModel):
    name: str = Field(min_length=1, max_length=200)
    url: str = Field(
        min_length=1,
        max_length=2048,
        description="http(s) URL; it must resolve to public addresses only",
    )
    events: list[EventName] = Field(min_length=1, max_length=20)
    tables: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="Tables whose row events are sent; the caller must be able to read each",
    )
    is_active: bool = True

    _events = field_validator("events")(_unique)
    _tables = field_validator("tables")(_unique)


class WebhookPatch(InputModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    url: str | None = Field(default=None, min_length=1, max_length=2048)
    events: list[EventName] | None = Field(default=None, min_length=1, max_length=20)
    tables: list[str] | None = Field(default=None, max_length=100)
    is_active: bool | None = Field(
        default=None, description="true re-enables a webhook and clears its failure count"
    )

    _events = field_validator("events")(_unique)
    _tables = field_validator("tables")(_unique)


class WebhookOut(OutputModel):
    id: str
    name: str
    url: str
    events: list[str]
    tables: list[str]
    is_active: bool
    consecutive_failures: int = Field(description="Deliveries failed in a row (all retries)")
    disabled_reason: str | None
    disabled_at: datetime | None
    secret_hint: str = Field(description="The secret's last characters, to tell secrets apart")
    previous_secret_until: datetime | None = Field(
        default=None,
        description="After a rotation, until when the previous secret also signs deliveries",
    )
    created_by: str
    created_at: datetime
    updated_at: datetime


class WebhookWithSecret(WebhookOut):
    secret: str = Field(description="Shown only now: the key of the HMAC-SHA256 signatures")


class WebhookList(OutputModel):
    items: list[WebhookOut]


class AttemptOut(OutputModel):
    at: datetime
    response_code: int | None
    latency_ms: float | None
    error: str | None = Field(
        description="`receiver slow: ...`, `could not connect: ...`, `HTTP 500`... "
        "(docs/integrations.md)"
    )
    response_excerpt: str | None = Field(
        default=None, description="The first 512 bytes of the receiver's answer"
    )


class DeliveryOut(OutputModel):
    id: str
    webhook_id: str
    event: str
    status: DeliveryStatus
    attempts: int
    response_code: int | None
    latency_ms: float | None
    error: str | None
    next_attempt_at: datetime | None
    payload: dict[str, Any]
    attempt_log: list[AttemptOut] = Field(description="The last 20 attempts, oldest first")
    redelivery_of: str | None = Field(
        default=None, description="The delivery this one sends again (redeliver, replay)"
    )
    created_at: datetime
    updated_at: datetime


class DeliveryPage(OutputModel):
    items: list[DeliveryOut]
    total: int
    limit: int
    offset: int


class DeliveryQuery(QueryModel):
    status: DeliveryStatus | None = None
    event_id: str | None = Field(
        default=None, max_length=64, description="Only the deliveries of this event (`id`)"
    )
    limit: int = Field(default=50, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=10_000_000)


class ReplayIn(InputModel):
    since: datetime = Field(
        description="Deliveries recorded from this moment on (ISO 8601 with an offset) that "
        "did not succeed are sent again"
    )


class ReplayOut(OutputModel):
    queued: int = Field(description="How many deliveries were sent again")


def webhook_out(doc: dict[str, Any]) -> WebhookOut:
    return WebhookOut(
        id=str(doc["_id"]),
        name=doc["name"],
        url=doc["url"],
        events=doc["events"],
        tables=doc.get("tables", []),
        is_active=doc["is_active"],
        consecutive_failures=doc.get("consecutive_failures", 0),
        disabled_reason=doc.get("disabled_reason"),
        disabled_at=doc.get("disabled_at"),
        secret_hint="…" + doc["secret"][-4:],
        previous_secret_until=doc.get("previous_secret_until")
        if doc.get("previous_secret")
        else None,
        created_by=doc["created_by"],
        created_at=doc["created_at"],
        updated_at=doc["updated_at"],
    )


def webhook_with_secret(doc: dict[str, Any]) -> WebhookWithSecret:
    return WebhookWithSecret(**webhook_out(doc).model_dump(), secret=doc["secret"])


def delivery_out(doc: dict[str, Any]) -> DeliveryOut:
    return DeliveryOut(
        id=str(doc["_id"]),
        webhook_id=str(doc["webhook_id"]),
        event=doc["event"],
        status=doc["status"],
        attempts=doc.get("attempts", 0),
        response_code=doc.get("response_code"),
        latency_ms=doc.get("latency_ms"),
        error=doc.get("error"),
        next_attempt_at=doc.get("next_attempt_at"),
        payload=doc["payload"],
        attempt_log=[AttemptOut(**a) for a in doc.get("attempt_log", [])],
        redelivery_of=str(doc["redelivery_of"]) if doc.get("redelivery_of") else None,
        created_at=doc["created_at"],
        updated_at=doc["updated_at"],
    )
