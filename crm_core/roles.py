"""Tenant roles (SPEC §9): built-in `owner`, `admin`, `manager`, `viewer` and custom ones."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bson import ObjectId

from crm_core.context import TenantContext
from crm_core.errors import Conflict, NotFound, ValidationFailed
from crm_core.grants import check_grant
from crm_core.ids import object_id
from crm_core.tenancy import ROLES
from models.accounts import User

OWNER = "owner"


async def list_roles(ctx: TenantContext) -> list[dict[str, Any]]:
    roles: list[dict[str, Any]] = (
        await ctx.db[ROLES].find().sort([("builtin", -1), ("name", 1)]).to_list(None)
    )
    return roles


async def get_role(ctx: TenantContext, role_id: str) -> dict[str, Any]:
    role: dict[str, Any] | None = await ctx.db[ROLES].find_one({"_id": object_id(role_id, "Role")})
    if role is None:
        raise NotFound("Role not found")
    return role


async def owner_role_id(ctx: TenantContext) -> str:
    role = await ctx.db[ROLES].find_one({"key": OWNER}, {"_id": 1})
    return str(role["_id"]) if role else ""


async def create_role(ctx: TenantContext, name: str, permissions: list[str]) -> dict[str, Any]:
    check_grant(ctx, permissions)
    now = datetime.now(UTC)
    role = {
        "_id": ObjectId(),
        "key": None,
        "name": name,
        "permissions": sorted(set(permissions)),
        "builtin": False,
        "created_at": now,
        "updated_at": now,
    }
    await ctx.db[ROLES].insert_one(role)
    return role


async def update_role(
    ctx: TenantContext, role_id: str, name: str | None, permissions: list[str] | None
) -> dict[str, Any]:
    role = await get_role(ctx, role_id)
    if role.get("key") == OWNER:
        raise Conflict("The owner role cannot be changed")
    changes: dict[str, Any] = {"updated_at": datetime.now(UTC)}
    if name is not None:
        changes["name"] = name
    if permissions is not None:
        # a role above the caller is not theirs to reshape, and what it gets must be held
        check_grant(ctx, role.get("permissions", []), what="change a role with")
        check_grant(ctx, permissions)
        changes["permissions"] = sorted(set(permissions))
    await ctx.db[ROLES].update_one({"_id": role["_id"]}, {"$set": changes})
    return {**role, **changes}


async def delete_role(ctx: TenantContext, role_id: str) -> None:
    role = await get_role(ctx, role_id)
    if role.get("builtin"):
        raise Conflict("Built-in roles cannot be deleted")
    holders = await User.find(
        User.tenant_id == ctx.tenant.id,
        User.role_ids == str(role["_id"]),  # type: ignore[comparison-overlap]  # array holds it
    ).count()
    if holders:
        raise Conflict(f"{holders} users hold this role; give them other roles first")
    await ctx.db[ROLES].delete_one({"_id": role["_id"]})
    from crm_core.shares import forget_role

    await forget_role(ctx, str(role["_id"]))


async def check_role_ids(
    ctx: TenantContext, role_ids: list[str], field: str = "role_ids"
) -> list[str]:
    """Every id must be a role of this tenant: anything else is a 400 naming the item."""
    errors = []
    for index, role_id in enumerate(role_ids):
        ok = isinstance(role_id, str) and len(role_id) == 24 and ObjectId.is_valid(role_id)
        if not ok or not await ctx.db[ROLES].count_documents({"_id": ObjectId(role_id)}, limit=1):
            errors.append({"field": f"{field}.{index}", "message": "no such role"})
    if errors:
        raise ValidationFailed(f"{errors[0]['field']}: {errors[0]['message']}", errors)
    return list(dict.fromkeys(role_ids))
