"""Companies (tenants): creating and dropping one, and its own settings (docs/api.md "Company
settings")."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from functools import cache
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from bson import ObjectId
from pydantic import BaseModel

from crm_core.accounts.audit import AuditSink, diff
from crm_core.accounts.context import TenantContext
from crm_core.accounts.permissions import BUILTIN_ROLES
from crm_core.accounts.roles import ROLES
from crm_core.platform.errors import ValidationFailed
from crm_core.platform.indexes import ensure_tenant_indexes
from crm_core.platform.storage import Database, Storage
from models.access import RoleRecord
from models.accounts import Tenant, TenantPatch, timezone_names


class CompanyTables(Protocol):
    """What a new company's database gets besides its roles and indexes: the built-in
    tables (crm_core.tables.builtin `ensure_builtin_tables`, passed in by
    crm_core/services.py)."""

    async def __call__(self, db: Database) -> list[str]:
        """Create the tables `db` lacks; returns what changed."""
        ...


# ---- company settings (`/api/tenant`) -----------------------------------------------------


@cache
def _zone_names() -> frozenset[str]:
    return frozenset(timezone_names())


def check_timezone(name: str) -> ZoneInfo:
    """The IANA zone called `name`; a 400 naming `timezone` otherwise."""
    if name in _zone_names():
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    raise ValidationFailed.field(
        "timezone", f"unknown time zone {name!r}: use an IANA name such as 'Europe/Moscow'"
    )


def check_phone_region(code: str) -> str:
    """A region phonenumbers can parse national numbers for; a 400 naming `phone_region`."""
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise ValidationFailed.field(
            "phone_region", f"unknown phone region {code!r}: use an ISO 3166 code such as 'RU'"
        )
    return code


class TenantService:
    """Companies: creating one (its database and built-in roles), dropping one, and its own
    settings: name, time zone, default phone region.

    `update_settings` is the ONE place that writes the settings: a per-process cache of tenant
    settings invalidates itself there.
    """

    def __init__(self, builtin_tables: CompanyTables, audit: AuditSink) -> None:
        self.builtin_tables = builtin_tables
        self.audit = audit

    async def create_tenant(self, storage: Storage, name: str) -> tuple[Tenant, str]:
        """Create the tenant document and its database with the built-in roles.

        Returns the tenant and the id of its `owner` role.
        """
        settings = storage.settings
        tenant = Tenant(
            name=name,
            timezone=settings.default_timezone,
            phone_region=settings.default_phone_region,
        )
        await tenant.insert()
        db = storage.tenant_db(str(tenant.id))
        now = datetime.now(UTC)
        roles = [
            RoleRecord(
                id=ObjectId(),
                key=key,
                name=title,
                permissions=perms,
                builtin=True,
                created_at=now,
                updated_at=now,
            )
            for key, (title, perms) in BUILTIN_ROLES.items()
        ]
        await db[ROLES].insert_many([role.to_document() for role in roles])
        await ensure_tenant_indexes(db)
        await self.builtin_tables(db)
        owner_role = next(r for r in roles if r.key == "owner")
        return tenant, str(owner_role.id)

    @staticmethod
    async def drop_tenant(storage: Storage, tenant: Tenant) -> None:
        await storage.drop_tenant_db(str(tenant.id))
        await tenant.delete()

    async def get_settings(self, ctx: TenantContext) -> Tenant:
        return ctx.tenant

    async def update_settings(self, ctx: TenantContext, patch: TenantPatch) -> Tenant:
        """Validate everything first, then write only the fields given, in one `$set`.

        Changing the time zone or the phone region rewrites no stored value: dates are kept in
        UTC and phones in E.164, so only how new input and date filters are read changes.
        """
        changes: dict[str, Any] = {}
        if patch.name is not None:
            name = patch.name.strip()
            if not name:
                raise ValidationFailed.field("name", "must not be blank")
            changes["name"] = name
        zone = None
        if patch.timezone is not None:
            zone = check_timezone(patch.timezone)
            changes["timezone"] = patch.timezone
        if patch.phone_region is not None:
            changes["phone_region"] = check_phone_region(patch.phone_region)
        if "sms_quiet_hours" in patch.model_fields_set:  # null: off (docs/sms.md)
            quiet = patch.sms_quiet_hours
            changes["sms_quiet_hours"] = quiet.model_dump() if quiet is not None else None
        if "sms_daily_cap" in patch.model_fields_set:  # null: no cap (docs/sms.md)
            changes["sms_daily_cap"] = patch.sms_daily_cap
        before = {key: _plain(getattr(ctx.tenant, key)) for key in changes}
        if changes:
            await ctx.tenant.set(changes)
            ctx.values = replace(
                ctx.values,
                timezone=zone or ctx.values.timezone,
                phone_region=ctx.tenant.phone_region,
            )
            changed = diff(before, changes)
            if changed:
                target = {"type": "company", "id": ctx.tenant_id}
                await self.audit.record(ctx, "tenant.changed", target, changed)
        return ctx.tenant


def _plain(value: object) -> object:
    """A setting as stored (a model as its dict), for the audit trail's before/after."""
    return value.model_dump() if isinstance(value, BaseModel) else value
