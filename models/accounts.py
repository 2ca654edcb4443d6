"""Tenants, users and refresh tokens: fixed-schema documents of the system database (beanie),
and the auth API's request/response models."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Self
from zoneinfo import available_timezones

import phonenumbers
from beanie import Document, PydanticObjectId
from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator, model_validator

from crm_core.platform.clock import utcnow as utcnow
from crm_core.platform.passwords import PASSWORD_MAX_BYTES, PASSWORD_MIN_CHARS
from crm_core.platform.storage import ASCENDING, IndexModel
from models.base import InputModel, OutputModel
from models.tokens import ApiToken

CLOCK = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


class QuietHours(BaseModel):
    """When the company sends no SMS (docs/sms.md, "Quiet hours"), in its time zone; a window
    may cross midnight (`21:00`-`09:00`)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    start: str = Field(pattern=CLOCK, description="HH:MM, 24-hour", examples=["21:00"])
    end: str = Field(pattern=CLOCK, description="HH:MM, 24-hour", examples=["09:00"])

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError("start and end must differ")
        return self


class Tenant(Document):
    name: str
    timezone: str = "UTC"
    phone_region: str = "RU"
    sms_quiet_hours: QuietHours | None = None  # off by default
    sms_daily_cap: int | None = None  # no cap by default (docs/sms.md, "Daily cap")
    is_active: bool = True
    created_at: datetime = Field(default_factory=utcnow)
    # version counters of what processes cache per tenant (crm_core/accounts/cache.py)
    versions: dict[str, int] = Field(default_factory=dict)

    class Settings:
        name = "tenants"


class User(Document):
    tenant_id: PydanticObjectId
    email: str
    full_name: str
    password_hash: str
    role_ids: list[str] = Field(default_factory=list)
    is_active: bool = True
    is_superadmin: bool = False
    # Sessions (docs/api.md "Sessions"): access tokens carry `token_epoch` in their `ep` claim
    # and die when it moves on; refresh tokens carry `session_epoch`. Both only ever grow, so
    # tokens ended by a deactivation stay dead after a reactivation.
    token_epoch: int = 0
    session_epoch: int = 0
    must_change_password: bool = False
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "users"
        indexes = [
            IndexModel([("email", ASCENDING)], unique=True, name="email_unique"),
            IndexModel([("tenant_id", ASCENDING)], name="tenant"),
            # a company's user list, sorted by email (issue #12 §1)
            IndexModel([("tenant_id", ASCENDING), ("email", ASCENDING)], name="tenant_email"),
        ]


class RefreshToken(Document):
    token_hash: str
    family_id: str
    user_id: PydanticObjectId
    tenant_id: PydanticObjectId
    session_epoch: int = 0  # the user's session_epoch when issued; an older one is refused
    expires_at: datetime
    used_at: datetime | None = None
    revoked_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "refresh_tokens"
        indexes = [
            IndexModel([("token_hash", ASCENDING)], unique=True, name="token_hash_unique"),
            IndexModel([("family_id", ASCENDING)], name="family"),
            IndexModel([("user_id", ASCENDING)], name="user"),
            IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0, name="expiry_ttl"),
        ]


class RevokedAccessToken(Document):
    """Access tokens ended by logout before their expiry (kept until they expire anyway)."""

    jti: str
    expires_at: datetime

    class Settings:
        name = "revoked_access_tokens"
        indexes = [
            IndexModel([("jti", ASCENDING)], unique=True, name="jti_unique"),
            IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0, name="expiry_ttl"),
        ]


SYSTEM_DOCUMENTS: list[type] = [Tenant, User, RefreshToken, RevokedAccessToken, ApiToken]


def normalise_email(value: str) -> str:
    """Emails are unique platform-wide and compared case-insensitively."""
    return value.strip().lower()


class PasswordField(InputModel):
    password: str = Field(
        min_length=PASSWORD_MIN_CHARS,
        max_length=PASSWORD_MAX_BYTES,
        description=f"{PASSWORD_MIN_CHARS} characters to {PASSWORD_MAX_BYTES} bytes in UTF-8 "
        "(bcrypt's limit; longer is refused, never truncated)",
        json_schema_extra={"format": "password"},
    )


class RegisterIn(PasswordField):
    company_name: str = Field(min_length=1, max_length=200)
    email: EmailStr
    full_name: str = Field(min_length=1, max_length=200)

    _email = field_validator("email")(normalise_email)


class LoginIn(InputModel):
    email: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=1024)


class RefreshIn(InputModel):
    refresh_token: str = Field(min_length=1, max_length=512)


class LogoutIn(InputModel):
    refresh_token: str | None = Field(default=None, max_length=512)


class TokenPair(OutputModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="Access token lifetime in seconds")
    must_change_password: bool = Field(
        default=False,
        description="The password is a temporary one: every route but `POST /api/auth/password`, "
        "`GET /api/auth/me` and `POST /api/auth/logout` answers 403 `password_change_required` "
        "until it is changed",
    )


class PasswordChangeIn(InputModel):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(
        min_length=PASSWORD_MIN_CHARS,
        max_length=PASSWORD_MAX_BYTES,
        description=f"{PASSWORD_MIN_CHARS} characters to {PASSWORD_MAX_BYTES} bytes in UTF-8; "
        "must differ from the current one",
        json_schema_extra={"format": "password"},
    )


class TemporaryPasswordOut(OutputModel):
    temporary_password: str = Field(
        description="Shown once and never stored in clear: hand it to the user, who must change "
        "it at the next sign-in"
    )


class TenantOut(OutputModel):
    id: str
    name: str
    timezone: str
    phone_region: str
    sms_quiet_hours: QuietHours | None = None
    sms_daily_cap: int | None = None


class UserOut(OutputModel):
    id: str
    tenant_id: str
    email: str
    full_name: str
    role_ids: list[str]
    is_active: bool
    must_change_password: bool = False
    created_at: datetime


class MeOut(OutputModel):
    user: UserOut
    tenant: TenantOut
    permissions: list[str]

    @classmethod
    def build(cls, user: User, tenant: Tenant, permissions: Iterable[str]) -> Self:
        return cls(user=user_out(user), tenant=tenant_out(tenant), permissions=sorted(permissions))


def user_out(user: User) -> UserOut:
    return UserOut(
        id=str(user.id),
        tenant_id=str(user.tenant_id),
        email=user.email,
        full_name=user.full_name,
        role_ids=user.role_ids,
        is_active=user.is_active,
        must_change_password=user.must_change_password,
        created_at=user.created_at,
    )


def tenant_out(tenant: Tenant) -> TenantOut:
    return TenantOut(
        id=str(tenant.id),
        name=tenant.name,
        timezone=tenant.timezone,
        phone_region=tenant.phone_region,
        sms_quiet_hours=tenant.sms_quiet_hours,
        sms_daily_cap=tenant.sms_daily_cap,
    )


# ---- company settings (`/api/tenant`) -----------------------------------------------------


def timezone_names() -> list[str]:
    """The IANA zones a company may pick (`localtime` and `Factory` are not places)."""
    return sorted(available_timezones() - {"localtime", "Factory"})


def phone_regions() -> list[str]:
    return sorted(phonenumbers.SUPPORTED_REGIONS)


def _tenant_patch_schema(schema: dict[str, Any]) -> None:
    """Document what is accepted: strings only (`null` is refused), regions as the list the
    service knows. Time zones are an open list (the IANA database grows; some names differ
    only in punctuation, `GMT+0` and `GMT0`, which no generator can turn into enum members):
    a string whose format the description gives."""
    enums: dict[str, list[str]] = {"phone_region": phone_regions()}
    for name, prop in schema["properties"].items():
        if name in ("sms_quiet_hours", "sms_daily_cap"):  # null turns them off
            continue
        string = next(b for b in prop.pop("anyOf") if b.get("type") == "string")
        prop.pop("default", None)
        prop.update(string)
        if name in enums:
            prop["enum"] = enums[name]


class TenantPatch(InputModel):
    """The company settings to change; absent fields stay as they are, `null` is refused."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=_tenant_patch_schema)

    name: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"\S")
    timezone: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="An IANA time zone name such as `Europe/Moscow` (a name of the tz "
        "database, as `zoneinfo` knows it; others answer 400 naming `timezone`): naive dates "
        "in rows and filters and the `is_within` periods follow it. Stored values never "
        "change with it.",
        examples=["Europe/Moscow"],
    )
    phone_region: str | None = Field(
        default=None,
        min_length=2,
        max_length=3,
        description="Region for national phone numbers, as an ISO 3166 code that phonenumbers "
        "knows (`RU`, `KZ`, `US`...). Numbers already stored keep their E.164 form.",
        examples=["RU"],
    )

    sms_quiet_hours: QuietHours | None = Field(
        default=None,
        description='SMS quiet hours in the company\'s time zone, e.g. {"start": "21:00", "end": '
        '"09:00"}: messages that come due inside the window wait for its end. `null` turns '
        "them off (the default).",
    )
    sms_daily_cap: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="The most SMS the company sends a day (its time zone's day): a campaign "
        "that would go past it is refused (409 `sms_daily_cap`). `null` removes the cap (the "
        "default).",
        examples=[5000],
    )

    @field_validator("name", "timezone", "phone_region", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("cannot be null; leave the field out to keep it")
        return value
