"""Who may reach a table, and how far (SPEC §9). The one place that decides it."""

from __future__ import annotations

from enum import IntEnum

from crm_core.context import TenantContext
from crm_core.errors import Forbidden, NotFound
from crm_core.tables.definitions import Table


class Level(IntEnum):
    NONE = 0
    READ = 1  # list and read rows
    WRITE = 2  # also create, edit and delete rows
    MANAGE = 3  # also change the table's columns, rename and delete it


async def access_level(ctx: TenantContext, table: Table) -> Level:
    if ctx.has("tables.all") or table.doc.get("owner_id") == ctx.user_id:
        return Level.MANAGE
    return Level.NONE


async def require(ctx: TenantContext, table: Table, needed: Level) -> None:
    """404 when the caller has no access at all (the table's existence stays hidden),
    403 when the access is too weak for the operation."""
    level = await access_level(ctx, table)
    if level == Level.NONE:
        raise NotFound(f"Table '{table.key}' not found")
    if level < needed:
        raise Forbidden(f"This needs {needed.name.lower()} access to table '{table.key}'")


async def visible_filter(ctx: TenantContext) -> dict[str, object]:
    """The `_tables` query that selects the tables the caller may see."""
    if ctx.has("tables.all"):
        return {}
    return {"owner_id": ctx.user_id}
