"""Per-user order of rows and columns (docs/filters.md "Per-user row order").

Rows: each user's manual order is a rank per row, a string of hex digits. A row the user never
moved ranks by its id (`<24 hex digits of _id>8`: creation order, oldest first, new rows at the
end). A moved row has an entry in `_orders` (`{table, user, row, rank}`, unique per user and
rank and per user and row) with a rank strictly between its new neighbours' ranks. A move is one
write (an upsert of that entry) whatever the table's size; ranks grow a digit only when moves
keep landing in the same gap, and nothing is ever rebalanced because a hex string always has
room between two others.

A page in manual order merges two index-ordered streams: the user's entries by rank (index
`table, user, rank`, then the rows fetched by `_id`) and the rows in `_id` order (the `_id`
index) less the ones the user moved (looked up by `table, user, row`). Both are range reads
that stop once the page is full, so a page costs what its offset and length cost, not the
table's size. Deleted rows take their entries with them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from bson import ObjectId

from crm_core.accounts.context import TenantContext
from crm_core.platform.errors import Conflict, NotFound, ValidationFailed
from crm_core.platform.storage import DuplicateKeyError
from crm_core.tables.definitions import Table

DIGITS = "0123456789abcdef"
VIEWS = "_views"
ORDERS = "_orders"
MOVE_ATTEMPTS = 3


def implicit_rank(row_id: ObjectId) -> str:
    """The rank of a row its user never moved. It ends in '8' so that a rank below any of them
    always exists (generated ranks never end in '0' either)."""
    return f"{row_id}8"


def _ids_below(rank: str) -> dict[str, Any]:
    """The `_id` condition of the rows whose implicit rank is below `rank`."""
    if len(rank) < 24:
        return {"$lt": ObjectId(rank.ljust(24, "0"))}
    head, rest = rank[:24], rank[24:]
    return {"$lte": ObjectId(head)} if rest > "8" else {"$lt": ObjectId(head)}


def _ids_above(rank: str) -> dict[str, Any]:
    """The `_id` condition of the rows whose implicit rank is above `rank` (a cursor's)."""
    if len(rank) < 24:
        return {"$gte": ObjectId(rank.ljust(24, "0"))}
    head, rest = rank[:24], rank[24:]
    return {"$gte": ObjectId(head)} if rest < "8" else {"$gt": ObjectId(head)}


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


@dataclass
class Cost:
    """Database operations a move or a page issued (reported by the move endpoint)."""

    reads: int = 0
    writes: int = 0


def _and(*clauses: dict[str, Any]) -> dict[str, Any]:
    present = [c for c in clauses if c]
    if not present:
        return {}
    return present[0] if len(present) == 1 else {"$and": present}


async def _unmoved(
    ctx: TenantContext,
    table: Table,
    query: dict[str, Any],
    cost: Cost,
    batch: int,
    descending: bool = False,
    below: str | None = None,
    projection: dict[str, Any] | None = None,
    above: str | None = None,
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Rows matching `query` the user never moved, by `_id`, with their implicit ranks
    (those between `above` and `below` when given)."""
    rows, orders = table.collection(ctx), ctx.db[ORDERS]
    bound = {"_id": _ids_below(below)} if below is not None else {}
    if above is not None:
        bound = _and(bound, {"_id": _ids_above(above)})
    last: ObjectId | None = None
    while True:
        after = {"_id": {"$lt" if descending else "$gt": last}} if last is not None else {}
        docs = (
            await rows.find(_and(query, bound, after), projection, max_time_ms=ctx.max_time_ms)
            .sort("_id", -1 if descending else 1)
            .limit(batch)
            .to_list(batch)
        )
        cost.reads += 1
        if not docs:
            return
        ids = [d["_id"] for d in docs]
        moved = {
            o["row"]
            async for o in orders.find(
                {"table": table.key, "user": ctx.user_id, "row": {"$in": ids}}, {"row": 1}
            )
        }
        cost.reads += 1
        for doc in docs:
            if doc["_id"] not in moved:
                yield implicit_rank(doc["_id"]), doc
        if len(docs) < batch:
            return
        last = ids[-1]


async def _moved(
    ctx: TenantContext,
    table: Table,
    query: dict[str, Any],
    cost: Cost,
    batch: int,
    descending: bool = False,
    below: str | None = None,
    projection: dict[str, Any] | None = None,
    above: str | None = None,
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Rows matching `query` the user moved, by rank (entries whose row is gone are skipped),
    those ranked between `above` and `below` when given."""
    rows, orders = table.collection(ctx), ctx.db[ORDERS]
    last: str | None = None
    while True:
        rank: dict[str, Any] = {}
        if below is not None:
            rank["$lt"] = below
        if above is not None:
            rank["$gt"] = above
        if last is not None:
            rank["$lt" if descending else "$gt"] = last
        where: dict[str, Any] = {"table": table.key, "user": ctx.user_id}
        if rank:
            where["rank"] = rank
        entries = (
            await orders.find(where, {"row": 1, "rank": 1})
            .sort("rank", -1 if descending else 1)
            .limit(batch)
            .to_list(batch)
        )
        cost.reads += 1
        if not entries:
            return
        ids = [e["row"] for e in entries]
        found = {
            d["_id"]: d
            async for d in rows.find(
                _and(query, {"_id": {"$in": ids}}), projection, max_time_ms=ctx.max_time_ms
            )
        }
        cost.reads += 1
        for entry in entries:
            if entry["row"] in found:
                yield entry["rank"], found[entry["row"]]
        if len(entries) < batch:
            return
        last = entries[-1]["rank"]


async def _merge(
    streams: list[AsyncIterator[tuple[str, dict[str, Any]]]], descending: bool
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Streams each already in rank order, merged into one as they are read."""
    heads: list[tuple[str, dict[str, Any]] | None] = [
        await anext(stream, None) for stream in streams
    ]
    try:
        while True:
            live = [(head, i) for i, head in enumerate(heads) if head is not None]
            if not live:
                return
            pick, index = (max if descending else min)(live, key=lambda item: item[0][0])
            yield pick
            heads[index] = await anext(streams[index], None)
    finally:
        for stream in streams:
            await stream.aclose()  # type: ignore[attr-defined]


async def _merged(
    streams: list[AsyncIterator[tuple[str, dict[str, Any]]]], descending: bool, count: int
) -> list[tuple[str, dict[str, Any]]]:
    """The first `count` items of streams each already in rank order."""
    merged = _merge(streams, descending)
    result: list[tuple[str, dict[str, Any]]] = []
    try:
        async for item in merged:
            result.append(item)
            if len(result) >= count:
                break
    finally:
        await merged.aclose()  # type: ignore[attr-defined]
    return result


async def manual_page(
    ctx: TenantContext,
    table: Table,
    query: dict[str, Any],
    offset: int,
    limit: int,
    after: str | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """One page of rows matching `query` in the caller's manual order, each with its rank:
    from `offset`, or after the rank `after` (a cursor's: both streams start there, so the
    page costs what its length costs at any depth)."""
    need = offset + limit
    batch = min(max(need, 1), 1000)
    cost = Cost()
    streams = [
        _moved(ctx, table, query, cost, batch, above=after),
        _unmoved(ctx, table, query, cost, batch, above=after),
    ]
    items = await _merged(streams, False, need)
    return items[offset:]


async def manual_rows(
    ctx: TenantContext, table: Table, query: dict[str, Any], batch: int = 1000
) -> AsyncIterator[dict[str, Any]]:
    """Every row matching `query` in the caller's manual order, streamed: the two
    index-ordered streams merged as they are read (exports), `batch` documents per read."""
    cost = Cost()
    streams = [_moved(ctx, table, query, cost, batch), _unmoved(ctx, table, query, cost, batch)]
    async for _rank, doc in _merge(streams, False):
        yield doc


async def _highest_below(
    ctx: TenantContext, table: Table, moving: ObjectId, below: str | None, cost: Cost
) -> str | None:
    """The highest rank under `below` (or of all rows), the moving row left out."""
    query = {"_id": {"$ne": moving}}
    streams = [
        _moved(ctx, table, query, cost, 16, True, below, {"_id": 1}),
        _unmoved(ctx, table, query, cost, 16, True, below, {"_id": 1}),
    ]
    items = await _merged(streams, True, 1)
    return items[0][0] if items else None


async def move_row(
    ctx: TenantContext, table: Table, row_id: ObjectId, before_id: ObjectId | None
) -> dict[str, int]:
    """Place a row just before another (or last). Returns the reads and writes it cost."""
    rows, orders = table.collection(ctx), ctx.db[ORDERS]
    cost = Cost(reads=1)
    wanted = [row_id] if before_id is None else [row_id, before_id]
    found = {d["_id"] async for d in rows.find({"_id": {"$in": wanted}}, {"_id": 1})}
    if row_id not in found:
        raise NotFound("Row not found")
    if before_id == row_id:
        raise ValidationFailed.field("before_id", "a row cannot be moved before itself")
    target_rank: str | None = None
    if before_id is not None and before_id not in found:
        raise NotFound(
            "The row given as before_id is not in this table",
            [{"field": "before_id", "message": "no such row in this table"}],
        )
    entry = {"table": table.key, "user": ctx.user_id, "row": row_id}
    for _ in range(MOVE_ATTEMPTS):
        if before_id is None:
            last = await _highest_below(ctx, table, row_id, None, cost)
            new_rank = rank_after(last or "")
        else:
            target = await orders.find_one(
                {"table": table.key, "user": ctx.user_id, "row": before_id}, {"rank": 1}
            )
            cost.reads += 1
            target_rank = target["rank"] if target else implicit_rank(before_id)
            previous = await _highest_below(ctx, table, row_id, target_rank, cost)
            new_rank = rank_between(previous or "", target_rank)
        try:
            await orders.update_one(entry, {"$set": {"rank": new_rank}}, upsert=True)
        except DuplicateKeyError:  # a concurrent move took this rank first: look again
            await _drop_stale_rank(ctx, table, new_rank)
            continue
        cost.writes += 1
        return {"reads": cost.reads, "writes": cost.writes}
    raise Conflict("The row's neighbours kept changing; try the move again")


async def _drop_stale_rank(ctx: TenantContext, table: Table, rank: str) -> None:
    """Remove the entry holding `rank` when its row is gone (a delete by filter on a table
    nothing links to does not collect the ids it deletes, so its rows' entries stay behind;
    pages and moves skip them, but one could keep a rank a move needs)."""
    holder = await ctx.db[ORDERS].find_one(
        {"table": table.key, "user": ctx.user_id, "rank": rank}, {"row": 1}
    )
    if holder is None:
        return
    if await table.collection(ctx).find_one({"_id": holder["row"]}, {"_id": 1}) is None:
        await ctx.db[ORDERS].delete_one({"_id": holder["_id"], "rank": rank})


async def forget_rows(ctx: TenantContext, table_key: str, row_ids: list[ObjectId]) -> None:
    """Every user's order entries of deleted rows."""
    if row_ids:
        await ctx.db[ORDERS].delete_many({"table": table_key, "row": {"$in": row_ids}})


# ---- column views ---------------------------------------------------------------------------


def effective_view(table: Table, stored: dict[str, Any] | None) -> dict[str, list[str]]:
    """Stored order filtered to today's columns, columns added since appended in table order."""
    keys = [c.key for c in table.columns]
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
    existing = {c.key for c in table.columns}
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
    await ctx.db[ORDERS].delete_many({"table": table_key})
