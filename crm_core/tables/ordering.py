"""Per-user order of rows and columns (SPEC §7).

Rows: each user's manual order is a rank per row. A row the user never moved ranks by its id
(creation order: oldest first, new rows at the end); a moved row carries its own rank in
`_ranks.<user_id>` on the row document, a string of hex digits strictly between its new
neighbours' ranks. A move is one write whatever the table's size (the neighbours are read, not
rewritten); ranks grow a digit only when moves keep landing in the same gap, and nothing needs
rebalancing because a hex string always has room between two others. Deleted rows take their
ranks with them.
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId

from crm_core.context import TenantContext
from crm_core.errors import NotFound, ValidationFailed
from crm_core.tables.definitions import Table

DIGITS = "0123456789abcdef"
VIEWS = "_views"
RANK = "_rank"


def rank_field(user_id: str) -> str:
    return f"_ranks.{user_id}"


def effective_rank(user_id: str) -> dict[str, Any]:
    """Aggregation expression of a row's rank for one user. Implicit ranks end in '8' so that a
    rank below any of them always exists (generated ranks never end in '0' either)."""
    return {"$ifNull": [f"${rank_field(user_id)}", {"$concat": [{"$toString": "$_id"}, "8"]}]}


def rank_between(low: str, high: str | None) -> str:
    """A rank strictly between `low` ("" for the start) and `high` (None for the end)."""
    result = []
    index = 0
    while True:
        low_digit = DIGITS.index(low[index]) if index < len(low) else 0
        high_digit = (
            DIGITS.index(high[index]) if high is not None and index < len(high) else len(DIGITS)
        )
        if high_digit - low_digit > 1:
            result.append(DIGITS[(low_digit + high_digit) // 2])
            return "".join(result)
        result.append(DIGITS[low_digit])
        if high_digit - low_digit == 1:
            high = None  # already below `high` at this digit: any continuation stays below
        index += 1


IMPLICIT_RANK_LENGTH = 25  # 24 hex digits of the id and the trailing '8'


def rank_after(low: str) -> str:
    """A rank just above `low` that stays below the ids of rows created later, so that a row
    moved to the end is followed by new rows (they are never moved, so they come last)."""
    if len(low) < IMPLICIT_RANK_LENGTH:
        return low + "8"
    return low[:IMPLICIT_RANK_LENGTH] + rank_between(low[IMPLICIT_RANK_LENGTH:], None)


def manual_pipeline(
    user_id: str, query: dict[str, Any], offset: int, limit: int
) -> list[dict[str, Any]]:
    return [
        {"$match": query},
        {"$addFields": {RANK: effective_rank(user_id)}},
        {"$sort": {RANK: 1, "_id": 1}},
        {"$skip": offset},
        {"$limit": limit},
        {"$project": {RANK: 0}},
    ]


async def _neighbour_rank(
    ctx: TenantContext, table: Table, moving: ObjectId, below: str | None
) -> str | None:
    """The highest rank under `below` (or of all rows), the moving row left out."""
    match: dict[str, Any] = {RANK: {"$lt": below}} if below is not None else {}
    pipeline = [
        {"$match": {"_id": {"$ne": moving}}},
        {"$addFields": {RANK: effective_rank(ctx.user_id)}},
        {"$match": match},
        {"$sort": {RANK: -1}},
        {"$limit": 1},
        {"$project": {RANK: 1}},
    ]
    docs = await table.collection(ctx).aggregate(pipeline, maxTimeMS=ctx.max_time_ms).to_list(1)
    return docs[0][RANK] if docs else None


async def move_row(
    ctx: TenantContext, table: Table, row_id: ObjectId, before_id: ObjectId | None
) -> dict[str, int]:
    """Place a row just before another (or last). Returns the reads and writes it cost."""
    rows = table.collection(ctx)
    field = rank_field(ctx.user_id)
    reads = 1
    if await rows.count_documents({"_id": row_id}, limit=1) == 0:
        raise NotFound("Row not found")
    if before_id is None:
        last = await _neighbour_rank(ctx, table, row_id, None)
        new_rank = rank_after(last or "")
        reads += 1
    else:
        if before_id == row_id:
            raise ValidationFailed.field("before_id", "a row cannot be moved before itself")
        target = await rows.find_one({"_id": before_id}, {field.split(".")[0]: 1})
        reads += 1
        if target is None:
            raise NotFound(
                "The row given as before_id is not in this table",
                [{"field": "before_id", "message": "no such row in this table"}],
            )
        target_rank = (target.get("_ranks") or {}).get(ctx.user_id) or f"{before_id}8"
        previous = await _neighbour_rank(ctx, table, row_id, target_rank)
        reads += 1
        new_rank = rank_between(previous or "", target_rank)
    await rows.update_one({"_id": row_id}, {"$set": {field: new_rank}})
    return {"reads": reads, "writes": 1}


# ---- column views ---------------------------------------------------------------------------


def effective_view(table: Table, stored: dict[str, Any] | None) -> dict[str, list[str]]:
    """Stored order filtered to today's columns, columns added since appended in table order."""
    keys = [c["key"] for c in table.columns]
    existing = set(keys)
    order = [k for k in (stored or {}).get("column_order", []) if k in existing]
    order += [k for k in keys if k not in order]
    hidden = [k for k in (stored or {}).get("hidden", []) if k in existing]
    return {"column_order": order, "hidden": hidden}


async def get_view(ctx: TenantContext, table: Table) -> dict[str, list[str]]:
    stored = await ctx.db[VIEWS].find_one({"table": table.key, "user_id": ctx.user_id})
    return effective_view(table, stored)


async def put_view(
    ctx: TenantContext, table: Table, column_order: list[str], hidden: list[str]
) -> dict[str, list[str]]:
    existing = {c["key"] for c in table.columns}
    errors = []
    for name, keys in (("column_order", column_order), ("hidden", hidden)):
        seen: set[str] = set()
        for index, key in enumerate(keys):
            if key not in existing:
                errors.append({"field": f"{name}.{index}", "message": f"unknown column '{key}'"})
            elif key in seen:
                errors.append({"field": f"{name}.{index}", "message": f"'{key}' is repeated"})
            seen.add(key)
    if errors:
        raise ValidationFailed(f"{errors[0]['field']}: {errors[0]['message']}", errors)
    await ctx.db[VIEWS].update_one(
        {"table": table.key, "user_id": ctx.user_id},
        {"$set": {"column_order": column_order, "hidden": hidden}},
        upsert=True,
    )
    return await get_view(ctx, table)


async def forget_column(ctx: TenantContext, table_key: str, column_key: str) -> None:
    await ctx.db[VIEWS].update_many(
        {"table": table_key}, {"$pull": {"column_order": column_key, "hidden": column_key}}
    )


async def forget_table(ctx: TenantContext, table_key: str) -> None:
    await ctx.db[VIEWS].delete_many({"table": table_key})
