"""Shares of one table with a user or a role of the same tenant (SPEC §9)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bson import ObjectId

from crm_core.columns import ColumnType
from crm_core.context import TenantContext
from crm_core.errors import Forbidden, NotFound, ValidationFailed
from crm_core.grants import check_grant
from crm_core.ids import object_id
from crm_core.registry import Registry
from crm_core.tables.access import LEVEL_NAMES, SHARES, Level, access_level, require
from crm_core.tables.definitions import load_table
from crm_core.tenancy import ROLES
from models.accounts import User


async def _subject(
    ctx: TenantContext, user_id: str | None, role_id: str | None
) -> dict[str, str | None]:
    if (user_id is None) == (role_id is None):
        raise ValidationFailed.field("user_id", "give exactly one of user_id or role_id")
    if user_id is not None:
        valid = len(user_id) == 24 and ObjectId.is_valid(user_id)
        user = await User.get(ObjectId(user_id)) if valid else None
        if user is None or user.tenant_id != ctx.tenant.id:
            raise ValidationFailed.field("user_id", "no such user in this company")
        return {"user_id": user_id, "role_id": None}
    assert role_id is not None
    valid = len(role_id) == 24 and ObjectId.is_valid(role_id)
    if not valid or not await ctx.db[ROLES].count_documents({"_id": ObjectId(role_id)}, limit=1):
        raise ValidationFailed.field("role_id", "no such role in this company")
    return {"user_id": None, "role_id": role_id}


async def grant(
    ctx: TenantContext,
    types: Registry[ColumnType],
    table_key: str,
    user_id: str | None,
    role_id: str | None,
    access: str,
) -> dict[str, Any]:
    """Share a table; sharing again with the same user or role changes the access level."""
    table = await load_table(ctx, types, table_key)
    level = await require(ctx, table, Level.READ)
    if level < Level.MANAGE and not ctx.has("shares.manage"):
        raise Forbidden("Sharing a table needs manage access to it")
    check_grant(ctx, level=LEVEL_NAMES[access], held_level=level)
    subject = await _subject(ctx, user_id, role_id)
    now = datetime.now(UTC)
    share = await ctx.db[SHARES].find_one_and_update(
        {"table": table.key, **subject},
        {
            "$set": {"access": access, "granted_by": ctx.user_id, "updated_at": now},
            "$setOnInsert": {"created_at": now},
        },
        upsert=True,
        return_document=True,
    )
    return share  # type: ignore[no-any-return]


async def list_shares(ctx: TenantContext) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    granted = await ctx.db[SHARES].find({"granted_by": ctx.user_id}).to_list(None)
    received = (
        await ctx.db[SHARES]
        .find(
            {
                "$or": [
                    {"user_id": ctx.user_id},
                    {"role_id": {"$in": list(ctx.user.role_ids)}},
                ]
            }
        )
        .to_list(None)
    )
    return granted, received


async def revoke(ctx: TenantContext, types: Registry[ColumnType], share_id: str) -> None:
    share = await ctx.db[SHARES].find_one({"_id": object_id(share_id, "Share")})
    if share is None:
        raise NotFound("Share not found")
    if share["granted_by"] != ctx.user_id and not ctx.has("shares.manage"):
        try:
            table = await load_table(ctx, types, share["table"])
        except NotFound:
            table = None
        if table is None or await access_level(ctx, table) < Level.MANAGE:
            raise NotFound("Share not found")
    await ctx.db[SHARES].delete_one({"_id": share["_id"]})


async def forget_table(ctx: TenantContext, table_key: str) -> None:
    await ctx.db[SHARES].delete_many({"table": table_key})


async def forget_role(ctx: TenantContext, role_id: str) -> None:
    await ctx.db[SHARES].delete_many({"role_id": role_id})
