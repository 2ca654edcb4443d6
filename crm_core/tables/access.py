"""Who may reach a table, and how far (docs/api.md "Roles, users, shares, aliases"). The one place
that decides it.

A custom table belongs to its creator. `tables.all` reaches every table. Anyone else reaches it
only through a share (`_shares`) to the user or to one of the user's roles; the strongest share
wins. Without access the table is 404 (its existence stays hidden); with access too weak for
the operation, 403.
"""

from __future__ import annotations

from typing import Any

from crm_core.accounts.context import TenantContext
from crm_core.accounts.permissions import LEVEL_NAMES as LEVEL_NAMES
from crm_core.accounts.permissions import Level as Level
from crm_core.platform.errors import Forbidden, NotFound
from crm_core.tables.definitions import Table

SHARES = "_shares"


def subject_query(ctx: TenantContext) -> dict[str, Any]:
    """The `_shares` condition for the shares held by the caller or one of their roles."""
    return {"$or": [{"user_id": ctx.user_id}, {"role_id": {"$in": list(ctx.user.role_ids)}}]}


def _capped(ctx: TenantContext, level: Level) -> Level:
    """An API token's scope caps what ownership, shares and `tables.all` give."""
    if ctx.table_level_cap is None:
        return level
    return min(level, Level(ctx.table_level_cap))


async def access_level(ctx: TenantContext, table: Table) -> Level:
    builtin = table.doc.get("builtin_permission")
    if builtin:  # built-in tables (leads...) are reached through their own permissions
        level = _capped(ctx, Level.MANAGE) if ctx.has("tables.all") else Level.NONE
        if ctx.has(f"{builtin}.write"):
            return max(level, Level.WRITE)
        return max(level, Level.READ) if ctx.has(f"{builtin}.read") else level
    if ctx.has("tables.all") or table.doc.get("owner_id") == ctx.user_id:
        return _capped(ctx, Level.MANAGE)
    if ctx.table_level_cap == Level.NONE:
        return Level.NONE
    best = Level.NONE
    async for share in ctx.db[SHARES].find({"table": table.key, **subject_query(ctx)}):
        best = max(best, LEVEL_NAMES.get(share.get("access", ""), Level.NONE))
    return _capped(ctx, best)


async def require(ctx: TenantContext, table: Table, needed: Level) -> Level:
    """404 when the caller has no access at all, 403 when it is too weak for the operation."""
    level = await access_level(ctx, table)
    if level == Level.NONE and table.doc.get("builtin_permission"):
        # standard entities exist in every company: lacking their permission is a 403
        raise Forbidden(f"This needs the '{table.doc['builtin_permission']}.read' permission")
    if level == Level.NONE:
        raise NotFound(f"Table '{table.key}' not found")
    if level < needed:
        raise Forbidden(f"This needs {needed.name.lower()} access to table '{table.key}'")
    return level


async def visible_filter(ctx: TenantContext) -> dict[str, Any]:
    """The `_tables` query that selects the tables the caller may see."""
    readable_builtins = [
        p.split(".")[0] for p in ctx.permissions if p.endswith(".read") or p.endswith(".write")
    ]
    if ctx.table_level_cap == Level.NONE:  # an API token without table access
        return {"builtin_permission": {"$in": readable_builtins}}
    if ctx.has("tables.all"):
        return {}
    shared = await ctx.db[SHARES].distinct("table", subject_query(ctx))
    return {
        "$or": [
            {"owner_id": ctx.user_id},
            {"key": {"$in": shared}, "builtin_permission": None},
            {"builtin_permission": {"$in": readable_builtins}},
        ]
    }
