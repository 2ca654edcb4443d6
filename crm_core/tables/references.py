"""What reference column types (link, user) may see: the caller's answer to
`crm_core.tables.columns.References`, built by the row service for one check."""

from __future__ import annotations

from typing import Any

from bson import ObjectId

from crm_core.accounts.context import TenantContext
from crm_core.platform.errors import CrmError
from crm_core.platform.registry import Registry
from crm_core.platform.storage import system_collection
from crm_core.tables.access import Level, access_level
from crm_core.tables.columns import ColumnType
from crm_core.tables.definitions import load_table
from models.accounts import User


class VisibleReferences:
    """References resolved in the caller's tenant, with the caller's table access."""

    def __init__(self, ctx: TenantContext, types: Registry[ColumnType]) -> None:
        self.ctx = ctx
        self.types = types

    async def readable_rows(self, table: str, ids: list[Any]) -> set[Any]:
        try:
            target = await load_table(self.ctx, self.types, table)
        except CrmError:
            return set()
        if await access_level(self.ctx, target) < Level.READ:
            return set()
        cursor = target.collection(self.ctx).find({"_id": {"$in": list(ids)}}, {"_id": 1})
        return {d["_id"] async for d in cursor}

    async def tenant_users(self, ids: list[str]) -> set[str]:
        cursor = system_collection(User).find(
            {"_id": {"$in": [ObjectId(v) for v in ids]}, "tenant_id": self.ctx.tenant.id},
            {"_id": 1},
        )
        return {str(d["_id"]) async for d in cursor}
