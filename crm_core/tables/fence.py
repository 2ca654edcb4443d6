"""The fence between schema changes and row writes (issue #29, docs/storage.md "Schema changes
and concurrent writes").

MongoDB without transactions cannot make "the definition still holds" and "store the row" one
atomic step, so the fence has three parts:

1. A change that rewrites stored values (a type change) first puts a `changing` marker on the
   table's `_tables` document and bumps its `version` (`begin`). Row writes load the definition
   through the process cache, which every request re-validates with the tenant's version
   counter it reads anyway: a writer that loads the table afterwards sees the marker, waits a
   moment for the change to end (`ready`) and then validates against the new definition, or
   answers 409 `schema_changing` with `Retry-After`.
2. When its rows are converted, the change swaps the definition and clears the marker in one
   conditional update (`finish`, recording in `revisions` the version from which each changed
   column holds the new form), then converts once more every value still of the old form: the
   writes that were validated before the marker and landed during the conversion.
3. Every row write reads the table's marker and revisions once after its write (`settle`). A
   write validated against an older form of a column than the stored one converts its own
   values (or drops a value the new type cannot hold, and says so with 409 `schema_changing`).
   A write that lands after the change's last pass therefore still fixes itself, and one that
   lands before it is fixed by that pass: no value stays stored against a definition that no
   longer holds.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from bson import ObjectId

from crm_core.accounts.cache import tables_changed
from crm_core.accounts.context import TenantContext
from crm_core.platform.clock import as_utc
from crm_core.platform.errors import Conflict, NotFound, StaleTableVersion
from crm_core.platform.registry import Registry
from crm_core.platform.storage import DuplicateKeyError
from crm_core.tables.columns import Column, ColumnType, ColumnValueError
from crm_core.tables.definitions import TABLES, Table, utcnow

log = logging.getLogger(__name__)

# how long a write waits for a running schema change before answering 409 schema_changing
WAIT_SECONDS = 2.0
POLL_SECONDS = 0.02
RETRY_AFTER_SECONDS = 1
# a marker this old was left by a process that died mid-change: writes no longer wait for it
ABANDONED_AFTER = timedelta(minutes=15)


class SchemaChanging(Conflict):
    """409: a schema change of the columns written is running; retry after `Retry-After`."""

    code = "schema_changing"
    default_message = "A schema change of this table is running; retry in a moment"

    def __init__(self, message: str | None = None, details: list[dict[str, Any]] | None = None):
        super().__init__(message, details, {"Retry-After": str(RETRY_AFTER_SECONDS)})


def marker(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The running change of a stored definition, None when there is none (or it was
    abandoned by a process that died)."""
    found: dict[str, Any] | None = doc.get("changing")
    if not found:
        return None
    since = found.get("since")
    if since is not None and utcnow() - as_utc(since) > ABANDONED_AFTER:
        return None
    return found


def changing_columns(doc: dict[str, Any]) -> set[str]:
    found = marker(doc)
    return set(found.get("columns") or ()) if found else set()


# ---- the schema change's side -------------------------------------------------------------


async def begin(ctx: TenantContext, table: Table, columns: list[str]) -> Table:
    """Put the marker on (if nobody else changed the table since it was loaded)."""
    found = marker(table.doc)
    if found is not None:
        raise SchemaChanging(
            f"Another schema change of table '{table.key}' is running",
            [{"field": "columns", "message": f"changing: {', '.join(found['columns'])}"}],
        )
    token = uuid.uuid4().hex
    updated = await ctx.db[TABLES].find_one_and_update(
        {"_id": table.id, "version": table.version},
        {
            "$set": {"changing": {"id": token, "columns": columns, "since": utcnow()}},
            "$inc": {"version": 1},
        },
        return_document=True,
    )
    if updated is None:
        raise StaleTableVersion()
    await tables_changed(ctx.tenant)
    return Table(updated, table.types)


async def finish(ctx: TenantContext, table: Table, changes: dict[str, Any]) -> Table:
    """Swap the definition and take the marker off in one conditional update; the columns
    named by the marker hold their new form from the new version on (`revisions`)."""
    found = table.doc.get("changing") or {}
    new_version = table.version + 1
    changes = {**changes, "updated_at": utcnow()}
    if "columns" in changes:
        changes["columns"] = [
            c.to_doc() if isinstance(c, Column) else c for c in changes["columns"]
        ]
    for key in found.get("columns") or ():
        changes[f"revisions.{key}"] = new_version
    updated = await ctx.db[TABLES].find_one_and_update(
        {"_id": table.id, "changing.id": found.get("id")},
        {"$set": changes, "$unset": {"changing": ""}, "$inc": {"version": 1}},
        return_document=True,
    )
    if updated is None:  # pragma: no cover - only a manual edit of `_tables` takes it off
        raise StaleTableVersion()
    await tables_changed(ctx.tenant)
    return Table(updated, table.types)


async def abort(ctx: TenantContext, table: Table) -> None:
    """Take the marker off, leaving the definition as it was."""
    found = table.doc.get("changing") or {}
    await ctx.db[TABLES].update_one(
        {"_id": table.id, "changing.id": found.get("id")},
        {"$unset": {"changing": ""}, "$inc": {"version": 1}},
    )
    await tables_changed(ctx.tenant)


# ---- the writer's side --------------------------------------------------------------------


async def _stored(ctx: TenantContext, table_id: ObjectId) -> dict[str, Any] | None:
    found: dict[str, Any] | None = await ctx.db[TABLES].find_one({"_id": table_id})
    return found


async def _wait_unmarked(
    ctx: TenantContext, table: Table, keys: set[str], wait: float
) -> dict[str, Any]:
    """The stored definition once no running change names `keys`; 409 after `wait`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        doc = await _stored(ctx, table.id)
        if doc is None:
            raise NotFound(f"Table '{table.key}' not found")
        busy = changing_columns(doc) & keys
        if not busy:
            return doc
        if loop.time() >= deadline:
            raise SchemaChanging(
                f"Column '{sorted(busy)[0]}' of table '{table.key}' is changing; retry in a moment",
                [
                    {"field": key, "message": "a schema change of this column is running"}
                    for key in sorted(busy)
                ],
            )
        await asyncio.sleep(POLL_SECONDS)


async def ready(ctx: TenantContext, table: Table, keys: Iterable[str]) -> Table:
    """The definition to validate a write of `keys` against: the one given, or, when a change
    of one of them is running, the one that holds once it ends (409 if it takes too long)."""
    keys = set(keys)
    if not changing_columns(table.doc) & keys:
        return table
    return Table(await _wait_unmarked(ctx, table, keys, WAIT_SECONDS), table.types)


def written_keys(table: Table, bodies: Iterable[Any], creating: bool) -> set[str]:
    """The columns a write may store: those given, and on a create those with a default."""
    keys: set[str] = set()
    for body in bodies:
        if isinstance(body, dict):
            keys.update(body)
    if creating:
        keys.update(c.key for c in table.columns if c.default is not None)
    return keys


async def settle(
    ctx: TenantContext, table: Table, row_ids: list[ObjectId] | None, keys: Iterable[str]
) -> Table:
    """After a write validated against `table`: make sure what it stored holds under the
    definition that holds now. Answers that definition (the table given when nothing changed:
    callers compare with `is`). `row_ids` None: the rows written are not known, every row of a
    changed column is looked at."""
    keys = set(keys)
    doc = await _stored(ctx, table.id)
    if doc is None:  # the table was deleted while the write ran: its rows go with it
        if row_ids:
            await table.collection(ctx).delete_many({"_id": {"$in": row_ids}})
        raise NotFound(f"Table '{table.key}' not found")
    if changing_columns(doc) & keys:
        # a 409 here leaves the write stored: the change has not swapped its definition yet,
        # so its last pass, after the swap, reads these rows and converts them
        doc = await _wait_unmarked(ctx, table, keys, WAIT_SECONDS)
    revisions = doc.get("revisions") or {}
    newer = {k for k, v in revisions.items() if int(v) > table.version}
    stale = [k for k in keys if k in newer]
    added = sorted(k for k in newer if table.column(k) is None)
    if not stale and not added:
        return table
    current = Table(doc, table.types)
    if row_ids == []:
        return current
    gone = [k for k in stale if current.column(k) is None]
    stale = [k for k in stale if current.column(k) is not None]
    await _remove_deleted(ctx, current, row_ids, gone)
    if row_ids is not None:
        await _fill_added(ctx, current, row_ids, added)
    if not stale:
        return current
    query = (
        {"_id": {"$in": row_ids}}
        if row_ids is not None
        else {"$or": [{k: {"$exists": True}} for k in stale]}
    )
    dropped = await convert_values(ctx, table, current, stale, query)
    if dropped:
        raise SchemaChanging(
            "A column changed type while this write was in flight; the values it cannot hold "
            "were not kept, the rest was saved",
            [
                {"field": key, "message": "not kept: the column changed type", "row_id": str(rid)}
                for rid, key in dropped
            ],
        )
    return current


async def _remove_deleted(
    ctx: TenantContext, current: Table, row_ids: list[ObjectId] | None, keys: list[str]
) -> None:
    """Values a write stored for columns deleted while it ran (validated against a definition
    that still had them): the delete's own pass has already run, so they are removed here."""
    if not keys:
        return
    query = (
        {"_id": {"$in": row_ids}}
        if row_ids is not None
        else {"$or": [{k: {"$exists": True}} for k in keys]}
    )
    await current.collection(ctx).update_many(query, {"$unset": dict.fromkeys(keys, "")})


async def _fill_added(
    ctx: TenantContext, current: Table, row_ids: list[ObjectId], keys: list[str]
) -> None:
    """Rows a write created while a column with a default was added (validated against a
    definition without it): the add's backfill ran before they landed, so they get the
    default here, where they have no value."""
    for key in keys:
        column = current.column(key)
        if column is None or column.default is None:
            continue
        stored = current.types.get(column.type).coerce(column, column.default, ctx.values)
        await current.collection(ctx).update_many(
            {"_id": {"$in": row_ids}, key: {"$exists": False}}, {"$set": {key: stored}}
        )


async def convert_values(
    ctx: TenantContext,
    old: Table,
    new: Table,
    keys: list[str],
    query: dict[str, Any],
) -> list[tuple[ObjectId, str]]:
    """Convert the values of `keys` in the rows `query` selects from their form under `old`
    to the one under `new`, each only if it is still what was read (a compare-and-set). A value
    the new type cannot hold, or that would repeat a unique value, is removed and reported as
    (row id, key)."""
    rows = new.collection(ctx)
    dropped: list[tuple[ObjectId, str]] = []
    pairs = [(old.column(k), new.column(k)) for k in keys]
    projection = dict.fromkeys(keys, 1)
    async for row in rows.find(query, projection):
        for before, after in pairs:
            if before is None or after is None or after.key not in row:
                continue
            value = row[after.key]
            if holds(new.types, after, value, ctx):
                continue
            target, ok = convert_one(old.types, before, after, value, ctx)
            if ok and same_value(target, value):
                continue
            where = {"_id": row["_id"], after.key: value}
            try:
                if ok:
                    await rows.update_one(where, {"$set": {after.key: target}})
                    continue
            except DuplicateKeyError:
                pass
            result = await rows.update_one(where, {"$unset": {after.key: ""}})
            if result.modified_count:
                log.warning(
                    "table %s row %s: a value of '%s' written against the old type was not kept",
                    new.key,
                    row["_id"],
                    after.key,
                )
                dropped.append((row["_id"], after.key))
    return dropped


def convert_one(
    types: Registry[ColumnType], old: Column, new: Column, value: object, ctx: TenantContext
) -> tuple[object, bool]:
    """(the value under `new`, True), or (None, False) when it cannot be converted."""
    try:
        new_type = types.get(new.type)
        return new_type.convert(types.get(old.type), old, new, value, ctx.values), True
    except (ColumnValueError, KeyError, TypeError, ValueError):
        return None, False


def holds(types: Registry[ColumnType], column: Column, value: object, ctx: TenantContext) -> bool:
    """Whether a stored value is already in the column's form."""
    try:
        column_type = types.get(column.type)
        stored = column_type.coerce(column, column_type.render(column, value), ctx.values)
    except (ColumnValueError, KeyError, TypeError, ValueError, AttributeError):
        return False
    return same_value(stored, value)


def same_value(a: object, b: object) -> bool:
    """The same stored value: equal and of the same type (1 is not 1.0 nor True)."""
    return type(a) is type(b) and a == b
