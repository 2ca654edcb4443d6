"""Autonumber sequences (docs/api.md "Tables", docs/storage.md, `_counters`): each column
of a `numbered` type has a counter in the tenant's `_counters` collection, `{_id: "<table
id>:<column key>", n}`. A write that creates rows takes as many numbers as it creates with one
atomic `find_one_and_update` `$inc`, so parallel writers get distinct consecutive ranges and a
number once taken is never handed out again (a failed insert leaves a gap, never a repeat)."""

from __future__ import annotations

from typing import Any

from crm_core.accounts.context import TenantContext
from crm_core.platform.storage import ASCENDING, DuplicateKeyError
from crm_core.tables.columns import Column
from crm_core.tables.definitions import Table

COUNTERS = "_counters"


def counter_id(table: Table, column: Column) -> str:
    return f"{table.id}:{column.key}"


def numbered_columns(table: Table) -> list[Column]:
    return [c for c in table.columns if table.column_type(c).numbered]


async def take(ctx: TenantContext, table: Table, column: Column, count: int) -> int:
    """Reserve `count` numbers of the column's sequence; answers the first of them."""
    for attempt in range(2):
        try:
            found = await ctx.db[COUNTERS].find_one_and_update(
                {"_id": counter_id(table, column)},
                {"$inc": {"n": count}},
                upsert=True,
                return_document=True,
            )
            break
        except DuplicateKeyError:  # two first writers upserted at once: the loser retries
            if attempt:
                raise
    return int(found["n"]) - count + 1


async def number_rows(ctx: TenantContext, table: Table, docs: list[dict[str, Any]]) -> None:
    """Give each new row (in order) its numbers, before it is inserted."""
    if not docs:
        return
    for column in numbered_columns(table):
        first = await take(ctx, table, column, len(docs))
        for offset, doc in enumerate(docs):
            doc[column.key] = first + offset


async def number_existing(ctx: TenantContext, table: Table, column: Column) -> None:
    """A numbered column added to a table with rows: the rows without a number get one, in the
    order they were created (`_id`). Run before the column is saved and once after it (for
    rows created meanwhile, which no write numbered)."""
    rows = table.collection(ctx)
    missing = {column.key: {"$exists": False}}
    while count := await rows.count_documents(missing):
        number = await take(ctx, table, column, count)
        last = number + count - 1
        async for row in rows.find(missing, {"_id": 1}).sort("_id", ASCENDING):
            if number > last:
                break
            await rows.update_one({"_id": row["_id"], **missing}, {"$set": {column.key: number}})
            number += 1
