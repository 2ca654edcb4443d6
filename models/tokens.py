"""API tokens (docs/integrations.md): long-lived bearer tokens for integrations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from beanie import Document, PydanticObjectId
from pydantic import Field, field_validator

from crm_core.platform.storage import ASCENDING, IndexModel
from models.base import InputModel, OutputModel

TableAccessCap = Literal["none", "read", "write", "manage"]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ApiToken(Document):
    """One token of one user. Only the SHA-256 digest of the secret is stored."""

    token_hash: str
    prefix: str  # the secret's first characters, to tell tokens apart in lists
    name: str
    user_id: PydanticObjectId
    tenant_id: PydanticObjectId
    permissions: list[str]
    table_access: TableAccessCap = "none"
    session_epoch: int = 0  # the user's session_epoch at creation; a newer one ends the token
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    created_at: datetime = Field(default_factory=_utcnow)

    class Settings:
        name = "api_tokens"
        indexes = [
            IndexModel([("token_hash", ASCENDING)], unique=True, name="token_hash_unique"),
            IndexModel([("user_id", ASCENDING), ("_id", ASCENDING)], name="user"),
            IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0, name="expiry_ttl"),
        ]


class ApiTokenIn(InputModel):
    name: str = Field(min_length=1, max_length=200)
    permissions: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="Permission codes (GET /api/permissions), each one the caller holds",
    )
    table_access: TableAccessCap = Field(
        default="none",
        description="The most the token reaches of tables through ownership, shares and "
        "`tables.all`; built-in tables follow their own permission codes",
    )
    expires_at: datetime | None = Field(
        default=None, description="In the future, with a timezone; absent: never expires"
    )

    @field_validator("permissions")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


class ApiTokenOut(OutputModel):
    id: str
    name: str
    prefix: str
    permissions: list[str] = Field(description="The scope; each request also needs the user")
    table_access: str
    expires_at: datetime | None
    last_used_at: datetime | None = Field(description="Updated at most once a minute")
    created_at: datetime


class ApiTokenCreated(ApiTokenOut):
    token: str = Field(description="Shown only now: send it as `Authorization: Bearer <token>`")


class ApiTokenList(OutputModel):
    items: list[ApiTokenOut]


def api_token_out(token: ApiToken) -> ApiTokenOut:
    return ApiTokenOut(
        id=str(token.id),
        name=token.name,
        prefix=token.prefix,
        permissions=token.permissions,
        table_access=token.table_access,
        expires_at=token.expires_at,
        last_used_at=token.last_used_at,
        created_at=token.created_at,
    )


def api_token_created(token: ApiToken, secret: str) -> ApiTokenCreated:
    return ApiTokenCreated(**api_token_out(token).model_dump(), token=secret)
