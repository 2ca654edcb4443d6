"""Tenant-wide display names for tables and columns (SPEC §8); keys and data never change."""

from __future__ import annotations

from typing import Any

from crm_core.context import TenantContext
from crm_core.errors import ValidationFailed
from crm_core.tables.definitions import Table

ALIASES = "_aliases"


async def aliases_for(ctx: TenantContext, keys: list[str]) -> dict[str, dict[str, Any]]:
    docs = await ctx.db[ALIASES].find({"table": {"$in": keys}}).to_list(None)
    return {d["table"]: d for d in docs}


async def put_alias(
    ctx: TenantContext, table: Table, name: str | None, columns: dict[str, str]
) -> dict[str, Any]:
    errors = [
        {"field": f"columns.{key[:64]}", "message": "unknown column"}
        for key in columns
        if table.column(key) is None
    ]
    if errors:
        raise ValidationFailed(f"{errors[0]['field']}: {errors[0]['message']}", errors)
    doc = {"table": table.key, "name": name, "columns": columns}
    await ctx.db[ALIASES].replace_one({"table": table.key}, doc, upsert=True)
    return doc


async def delete_alias(ctx: TenantContext, table_key: str) -> None:
    await ctx.db[ALIASES].delete_one({"table": table_key})


async def forget_column(ctx: TenantContext, table_key: str, column_key: str) -> None:
    await ctx.db[ALIASES].update_one(
        {"table": table_key}, {"$unset": {f"columns.{column_key}": ""}}
    )
