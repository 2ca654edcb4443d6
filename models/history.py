"""Row history, the trash and the company's audit trail: queries, bodies and answers
(docs/history.md)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import Field, field_validator

from models.base import (
    NEXT_CURSOR_DESCRIPTION,
    Cursor,
    InputModel,
    Offset,
    OutputModel,
    QueryModel,
)


class Actor(OutputModel):
    type: Literal["user", "token", "import", "system"]
    id: str | None = None
    name: str | None = None


class AuditActor(OutputModel):
    """Who acted: a user, an API token, an import or the system (a webhook disabled after
    failed deliveries); `anonymous` for a failed sign-in (whoever typed the email)."""

    type: Literal["user", "token", "import", "system", "anonymous"]
    id: str | None = None
    name: str | None = None


class HistoryQuery(QueryModel):
    limit: int = Field(default=50, ge=1, le=1000)
    offset: Offset = 0
    cursor: Cursor = None
    column: str | None = Field(
        default=None, max_length=64, description="Only the revisions that changed this column"
    )


class ValueChange(OutputModel):
    before: Any = None
    after: Any = None


class RevisionOut(OutputModel):
    id: str
    at: datetime
    actor: Actor
    action: Literal["created", "updated", "deleted", "restored", "reverted"]
    changes: dict[str, ValueChange]
    request_id: str | None = None

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> RevisionOut:
        return cls(
            id=str(doc["_id"]),
            at=doc["at"],
            actor=Actor(**doc["actor"]),
            action=doc["action"],
            changes={k: ValueChange(**v) for k, v in doc["changes"].items()},
            request_id=doc.get("request_id"),
        )


class HistoryPage(OutputModel):
    items: list[RevisionOut]
    total: int
    next_cursor: str | None = Field(description=NEXT_CURSOR_DESCRIPTION)

    @classmethod
    def from_page(cls, page: dict[str, Any]) -> HistoryPage:
        return cls(
            items=[RevisionOut.from_document(d) for d in page["items"]],
            total=page["total"],
            next_cursor=page["next_cursor"],
        )


TrashKind = Literal["row", "column", "table"]


class TrashQuery(QueryModel):
    kind: TrashKind | None = None
    table: str | None = Field(default=None, max_length=64)
    limit: int = Field(default=50, ge=1, le=1000)
    offset: Offset = 0
    cursor: Cursor = None


class TrashItemOut(OutputModel):
    id: str
    kind: TrashKind
    table: str
    row_id: str | None = None
    column: str | None = None
    name: str
    deleted_at: datetime
    deleted_by: Actor
    expires_at: datetime

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> TrashItemOut:
        row_id = doc.get("row_id")
        return cls(
            id=str(doc["_id"]),
            kind=doc["kind"],
            table=doc["table"],
            row_id=None if row_id is None else str(row_id),
            column=doc.get("column"),
            name=doc["name"],
            deleted_at=doc["deleted_at"],
            deleted_by=Actor(**doc["deleted_by"]),
            expires_at=doc["expires_at"],
        )


class RestoredDefinitionOut(OutputModel):
    """A column or a table back from the trash (a row answers the row itself)."""

    id: str = Field(description="The trash item's id")
    kind: Literal["column", "table"]
    table: str
    column: str | None = None


class TrashPage(OutputModel):
    items: list[TrashItemOut]
    total: int
    next_cursor: str | None = Field(description=NEXT_CURSOR_DESCRIPTION)


class TrashRestoreIn(InputModel):
    ids: list[str] = Field(min_length=1, max_length=1000)


class RestoredOut(OutputModel):
    items: list[dict[str, Any]]


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class AuditQuery(QueryModel):
    action: str | None = Field(default=None, max_length=64)
    actor: str | None = Field(default=None, max_length=64, description="A user id")
    since: datetime | None = None
    until: datetime | None = None
    limit: int = Field(default=50, ge=1, le=1000)
    offset: Offset = 0
    cursor: Cursor = None

    @field_validator("since", "until", mode="before")
    @classmethod
    def _iso_only(cls, value: object) -> object:
        """A date-time as the document declares it (pydantic alone takes `0.5` as a Unix time)."""
        if isinstance(value, str) and not _ISO_DATE.match(value):
            raise ValueError("must be an ISO 8601 date-time, e.g. 2026-12-05T10:00:00Z")
        return value


class AuditEntryOut(OutputModel):
    id: str
    at: datetime
    action: str
    actor: AuditActor
    address: str | None = None
    request_id: str | None = None
    target: dict[str, Any]
    changes: dict[str, Any] | None = None

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> AuditEntryOut:
        return cls(
            id=str(doc["_id"]),
            at=doc["at"],
            action=doc["action"],
            actor=AuditActor(**doc["actor"]),
            address=doc.get("address"),
            request_id=doc.get("request_id"),
            target=doc.get("target") or {},
            changes=doc.get("changes"),
        )


class AuditPage(OutputModel):
    items: list[AuditEntryOut]
    total: int
    next_cursor: str | None = Field(description=NEXT_CURSOR_DESCRIPTION)
