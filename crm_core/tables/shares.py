"""Shares of one table with a user or a role of the same tenant (docs/api.md "Roles, users, shares,
aliases")."""

from __future__ import annotations

from datetime import UTC, datetime

from bson import ObjectId

from crm_core.accounts.audit import AuditSink
from crm_core.accounts.context import TenantContext
from crm_core.accounts.grants import check_grant, check_token_scope
from crm_core.accounts.roles import ROLES
from crm_core.platform.errors import Forbidden, NotFound, ValidationFailed
from crm_core.platform.ids import parse_object_id
from crm_core.platform.registry import Registry
from crm_core.tables.access import (
    LEVEL_NAMES,
    SHARES,
    Level,
    access_level,
    require,
    subject_query,
)
from crm_core.tables.columns import ColumnType
from crm_core.tables.definitions import load_table
from models.access import ShareIn, ShareRecord
from models.accounts import User


class ShareService:
    """Granting, listing and revoking shares. Who a share reaches, and what it gives, is
    decided in crm_core/tables/access.py (`subject_query`: the user or one of their roles)."""

    def __init__(self, types: Registry[ColumnType], audit: AuditSink | None = None) -> None:
        self.types = types
        self.audit = audit

    async def grant(self, ctx: TenantContext, data: ShareIn) -> ShareRecord:
        """Share a table; sharing again with the same user or role changes the access level."""
        table = await load_table(ctx, self.types, data.table)
        level = await require(ctx, table, Level.READ)
        if level < Level.MANAGE and not ctx.has("shares.manage"):
            raise Forbidden("Sharing a table needs manage access to it")
        check_grant(ctx, level=LEVEL_NAMES[data.access], held_level=level)
        subject = await self._subject(ctx, data.user_id, data.role_id)
        now = datetime.now(UTC)
        share = await ctx.db[SHARES].find_one_and_update(
            {"table": table.key, **subject},
            {
                "$set": {"access": data.access, "granted_by": ctx.user_id, "updated_at": now},
                "$setOnInsert": {"created_at": now},
            },
            upsert=True,
            return_document=True,
        )
        if self.audit is not None:
            target = {"type": "share", "id": str(share["_id"]), "table": table.key, **subject}
            await self.audit.record(ctx, "share.granted", target, {"access": data.access})
        return ShareRecord.from_document(share)

    async def list_shares(self, ctx: TenantContext) -> tuple[list[ShareRecord], list[ShareRecord]]:
        """The shares the caller granted, and those that reach the caller."""
        granted = ctx.db[SHARES].find({"granted_by": ctx.user_id})
        received = ctx.db[SHARES].find(subject_query(ctx))
        return (
            [ShareRecord.from_document(doc) async for doc in granted],
            [ShareRecord.from_document(doc) async for doc in received],
        )

    async def revoke(self, ctx: TenantContext, share_id: ObjectId) -> None:
        """Holders of `shares.manage`, the granter and managers of the table revoke; anyone
        else learns nothing of the share (404). An API token of the granter needs
        `table_access: manage` (what sharing needs), else 403."""
        doc = await ctx.db[SHARES].find_one({"_id": share_id})
        if doc is None:
            raise NotFound("Share not found")
        share = ShareRecord.from_document(doc)
        if ctx.has("shares.manage"):
            pass
        elif share.granted_by == ctx.user_id:
            # what granting needed: an API token revokes within its scope, like any write
            check_token_scope(ctx, "revoke a share", level=Level.MANAGE)
        else:
            try:
                table = await load_table(ctx, self.types, share.table)
            except NotFound:
                table = None
            if table is None or await access_level(ctx, table) < Level.MANAGE:
                raise NotFound("Share not found")
        await ctx.db[SHARES].delete_one({"_id": share.id})
        if self.audit is not None:
            target = {"type": "share", "id": str(share.id), "table": share.table}
            await self.audit.record(ctx, "share.revoked", target, {"access": share.access})

    @staticmethod
    async def table_deleted(ctx: TenantContext, table_key: str) -> None:
        """A deleted table's shares go with it."""
        await ctx.db[SHARES].delete_many({"table": table_key})

    @staticmethod
    async def column_deleted(ctx: TenantContext, table_key: str, column_key: str) -> None:
        """Shares are of whole tables: a column's going changes none."""

    @staticmethod
    async def forget_role(ctx: TenantContext, role_id: str) -> None:
        """A deleted role's shares go with it."""
        await ctx.db[SHARES].delete_many({"role_id": role_id})

    @staticmethod
    async def _subject(
        ctx: TenantContext, user_id: str | None, role_id: str | None
    ) -> dict[str, str | None]:
        """Exactly one of a user or a role of this company (400 naming the field)."""
        if (user_id is None) == (role_id is None):
            raise ValidationFailed.field("user_id", "give exactly one of user_id or role_id")
        if user_id is not None:
            parsed = parse_object_id(user_id)
            user = await User.get(parsed) if parsed is not None else None
            if user is None or user.tenant_id != ctx.tenant.id:
                raise ValidationFailed.field("user_id", "no such user in this company")
            return {"user_id": user_id, "role_id": None}
        parsed = parse_object_id(role_id)
        if parsed is None or not await ctx.db[ROLES].count_documents({"_id": parsed}, limit=1):
            raise ValidationFailed.field("role_id", "no such role in this company")
        return {"user_id": None, "role_id": role_id}
