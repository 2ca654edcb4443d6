"""Tenant roles (docs/api.md "Roles, users, shares, aliases"): built-in `owner`, `admin`, `manager`,
`viewer` and custom ones."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

from bson import ObjectId

from crm_core.accounts.audit import AuditSink, diff
from crm_core.accounts.cache import roles_changed
from crm_core.accounts.context import TenantContext
from crm_core.accounts.grants import check_grant
from crm_core.platform.errors import Conflict, NotFound, ValidationFailed
from crm_core.platform.ids import parse_object_id
from crm_core.platform.storage import Database
from models.access import RoleIn, RolePatch, RoleRecord
from models.accounts import User

ROLES = "_roles"
OWNER = "owner"


class RoleShares(Protocol):
    """What the tables a role was given hear of its deletion (crm_core.tables.shares
    `ShareService`, passed in by crm_core/services.py)."""

    async def forget_role(self, ctx: TenantContext, role_id: str) -> None:
        """End every share given to the role `role_id`."""


class RoleService:
    """The company's roles. Every write moves the tenant's `roles` version
    (crm_core/accounts/cache.py), so every process re-reads permissions at its next request;
    deleting a role ends its shares."""

    def __init__(self, shares: RoleShares, audit: AuditSink) -> None:
        self.shares = shares
        self.audit = audit

    async def list_roles(self, ctx: TenantContext) -> list[RoleRecord]:
        cursor = ctx.db[ROLES].find().sort([("builtin", -1), ("name", 1)])
        return [RoleRecord.from_document(doc) async for doc in cursor]

    async def get_role(self, ctx: TenantContext, role_id: ObjectId) -> RoleRecord:
        doc: dict[str, Any] | None = await ctx.db[ROLES].find_one({"_id": role_id})
        if doc is None:
            raise NotFound("Role not found")
        return RoleRecord.from_document(doc)

    async def owner_role_id(self, ctx: TenantContext) -> str:
        role = await ctx.db[ROLES].find_one({"key": OWNER}, {"_id": 1})
        return str(role["_id"]) if role else ""

    async def create_role(self, ctx: TenantContext, data: RoleIn) -> RoleRecord:
        """Unknown codes never get here (RoleIn); codes the caller lacks are a 403."""
        check_grant(ctx, data.permissions)
        now = datetime.now(UTC)
        role = RoleRecord(
            id=ObjectId(),
            # no `key`: left unset, so it is not stored (see RoleRecord)
            name=data.name,
            permissions=sorted(set(data.permissions)),
            builtin=False,
            created_at=now,
            updated_at=now,
        )
        await ctx.db[ROLES].insert_one(role.to_document())
        await roles_changed(ctx.tenant)
        given = {"name": role.name, "permissions": role.permissions}
        await self.audit.record(ctx, "role.created", _target(role), given)
        return role

    async def update_role(
        self, ctx: TenantContext, role_id: ObjectId, patch: RolePatch
    ) -> RoleRecord:
        role = await self.get_role(ctx, role_id)
        if role.key == OWNER:
            raise Conflict("The owner role cannot be changed")
        changes: dict[str, Any] = {"updated_at": datetime.now(UTC)}
        if patch.name is not None:
            changes["name"] = patch.name
        if patch.permissions is not None:
            # a role above the caller is not theirs to reshape, and what it gets must be held
            check_grant(ctx, role.permissions, what="change a role with")
            check_grant(ctx, patch.permissions)
            changes["permissions"] = sorted(set(patch.permissions))
        await ctx.db[ROLES].update_one({"_id": role.id}, {"$set": changes})
        await roles_changed(ctx.tenant)
        updated = role.model_copy(update=changes)
        fields = ("name", "permissions")
        changed = diff(
            {f: getattr(role, f) for f in fields}, {f: getattr(updated, f) for f in fields}
        )
        if changed:
            await self.audit.record(ctx, "role.changed", _target(updated), changed)
        return updated

    async def delete_role(self, ctx: TenantContext, role_id: ObjectId) -> None:
        role = await self.get_role(ctx, role_id)
        if role.builtin:
            raise Conflict("Built-in roles cannot be deleted")
        holders = await User.find(
            User.tenant_id == ctx.tenant.id,
            User.role_ids == str(role.id),  # type: ignore[comparison-overlap]  # array holds it
        ).count()
        if holders:
            raise Conflict(f"{holders} users hold this role; give them other roles first")
        await ctx.db[ROLES].delete_one({"_id": role.id})
        await roles_changed(ctx.tenant)
        await self.shares.forget_role(ctx, str(role.id))
        await self.audit.record(
            ctx, "role.deleted", _target(role), {"permissions": role.permissions}
        )

    @staticmethod
    async def permissions_of(db: Database, role_ids: list[str]) -> frozenset[str]:
        """The union of the permissions of the roles `role_ids` in the tenant database `db`
        (ids that are not roles grant nothing). The process cache (crm_core/accounts/cache.py)
        answers this on the request path; this reads afresh."""
        ids = [parsed for r in role_ids if (parsed := parse_object_id(r)) is not None]
        if not ids:
            return frozenset()
        perms: set[str] = set()
        async for role in db[ROLES].find({"_id": {"$in": ids}}, {"permissions": 1}):
            perms.update(role.get("permissions", []))
        return frozenset(perms)

    async def check_role_ids(
        self, ctx: TenantContext, role_ids: list[str], field: str = "role_ids"
    ) -> list[str]:
        """Every id must be a role of this tenant: anything else is a 400 naming the item.
        Returns the ids without repeats, in their order."""
        errors = []
        for index, role_id in enumerate(role_ids):
            parsed = parse_object_id(role_id)
            if parsed is None or not await ctx.db[ROLES].count_documents({"_id": parsed}, limit=1):
                errors.append({"field": f"{field}.{index}", "message": "no such role"})
        if errors:
            raise ValidationFailed(f"{errors[0]['field']}: {errors[0]['message']}", errors)
        return list(dict.fromkeys(role_ids))


def _target(role: RoleRecord) -> dict[str, Any]:
    return {"type": "role", "id": str(role.id), "name": role.name}
