"""What reference column types (link, user) may see: the caller's answer to
`crm_core.tables.columns.References`, built by the row service for one check; and the links
the server clears when the rows they name go (docs/history.md "Changes the server makes")."""

from __future__ import annotations

from typing import Any

from bson import ObjectId

from crm_core.accounts.context import TenantContext
from crm_core.platform.errors import CrmError
from crm_core.platform.registry import Registry
from crm_core.platform.storage import system_collection
from crm_core.tables.access import Level, access_level
from crm_core.tables.columns import ColumnType
from crm_core.tables.definitions import Table, load_table
from crm_core.tables.history import SYSTEM_BATCH, ChangeLog, Rewrite, SystemChange, render_value
from crm_core.tables.updates import REVISION_FIELD, row_version
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


async def unlink(
    ctx: TenantContext, table: Table, key: str, ids: list[ObjectId], changes: ChangeLog
) -> int:
    """Clear the link column `key` of `table` where it names one of `ids` (rows gone to the
    trash): each row cleared gets its version up, a system revision `link_target_deleted`
    and `row.updated` (a linked row that disappears changes what the row shows). By batches
    of `SYSTEM_BATCH`; answers how many rows were cleared."""
    gone = set(ids)

    def plan(row: dict[str, Any]) -> Rewrite | None:
        value = row.get(key)
        if value not in gone:
            return None  # linked elsewhere since it was read
        before = render_value(table, key, value)
        return Rewrite(
            row=row["_id"],
            version=row_version(row),
            expect={key: value},
            set={},
            unset=(key,),
            changes={key: {"before": before, "after": None}},
        )

    change = SystemChange(ctx, table, "link_target_deleted", plan, tell=changes)
    cleared = 0
    pending: list[Rewrite] = []
    cursor = table.collection(ctx).find({key: {"$in": ids}}, {key: 1, REVISION_FIELD: 1})
    async for row in cursor:
        if (rewrite := plan(row)) is not None:
            pending.append(rewrite)
        if len(pending) >= SYSTEM_BATCH:
            cleared += len(await change.apply(pending))
            pending = []
    cleared += len(await change.apply(pending))
    return cleared
