"""Tenant-wide display names for tables and columns (docs/api.md "Roles, users, shares, aliases");
keys and data never change."""

from __future__ import annotations

from crm_core.accounts.context import TenantContext
from crm_core.platform.errors import ValidationFailed
from crm_core.tables.definitions import Table
from models.access import AliasIn, AliasRecord

ALIASES = "_aliases"


class AliasService:
    """One `_aliases` document per table: its display name and its columns' names."""

    async def find(self, ctx: TenantContext, keys: list[str]) -> dict[str, AliasRecord]:
        """The aliases of the tables `keys`, by table key (tables without any are absent)."""
        cursor = ctx.db[ALIASES].find({"table": {"$in": keys}})
        return {doc["table"]: AliasRecord.from_document(doc) async for doc in cursor}

    async def put(self, ctx: TenantContext, table: Table, data: AliasIn) -> AliasRecord:
        """Replace the table's aliases; unknown column keys are a 400 naming each."""
        errors = [
            {"field": f"columns.{key[:64]}", "message": "unknown column"}
            for key in data.columns
            if table.column(key) is None
        ]
        if errors:
            raise ValidationFailed(f"{errors[0]['field']}: {errors[0]['message']}", errors)
        alias = AliasRecord(table=table.key, name=data.table, columns=data.columns)
        await ctx.db[ALIASES].replace_one({"table": table.key}, alias.to_document(), upsert=True)
        return alias

    @staticmethod
    async def delete(ctx: TenantContext, table_key: str) -> None:
        """Reset a table's display names (and a deleted table's go with it)."""
        await ctx.db[ALIASES].delete_one({"table": table_key})

    table_deleted = delete

    @staticmethod
    async def column_deleted(ctx: TenantContext, table_key: str, column_key: str) -> None:
        """A deleted column's display name goes with it."""
        await ctx.db[ALIASES].update_one(
            {"table": table_key}, {"$unset": {f"columns.{column_key}": ""}}
        )
