"""The trash (docs/history.md "Trash"): a deleted row leaves its table's collection for
`_trash`, so no read of rows (lists, filters, exports, SMS recipients, lookups through links)
can meet it, and comes back from there with `restore`. Deleted columns and tables go there too.
Items expire after `TRASH_RETENTION_DAYS` (a TTL index on `expires_at`).

Items (`kind`):
- `row`: `{_id, kind, table, table_id, row_id, name, doc, links, deleted_at, deleted_by,
  expires_at, batch}`; `doc` is the stored row, `links` the rows of other tables (or its own)
  whose link column pointed at it (`[{table, column, rows}]`: the delete cleared them, the
  restore puts them back where the link is still empty), `batch` groups a bulk delete's rows;
  `files` lists the uploaded files the row's attachment columns hold (absent when none): they
  stay while the row is in the trash, come back with it, and a purge releases them
  (`TrashedFiles`);
- `column`: `{..., column, doc: the column's definition, alias: its display name}` and one
  `column_value` child per row that held a value (`{parent, row_id, value}`, expiring with it);
- `table`: `{..., doc: the definition, collection, owner_id, kept: {collection: [docs]}}`: the
  rows stay in the table's own collection (`rows.<table id>`, nobody else's), the shares,
  display names, views and manual orders are kept in the item. Its collection is dropped when
  the item is purged, or by the outbox's `trash.purge` work once the retention has passed
  (the TTL index cannot drop a collection).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from bson import ObjectId

from crm_core.accounts.audit import AuditSink
from crm_core.accounts.context import TenantContext
from crm_core.accounts.grants import check_token_scope
from crm_core.platform.clock import as_utc, utcnow
from crm_core.platform.cursors import PageCursors, PageScope, read_page
from crm_core.platform.errors import Conflict, NotFound, ValidationFailed
from crm_core.platform.outbox import Work
from crm_core.platform.registry import Registry
from crm_core.platform.storage import DESCENDING, Database, DuplicateKeyError
from crm_core.tables import fence
from crm_core.tables.access import SHARES, Level, access_level, visible_filter
from crm_core.tables.aliases import ALIASES
from crm_core.tables.columns import Column, ColumnType, referring_query
from crm_core.tables.definitions import TABLES, Table, load_table
from crm_core.tables.history import (
    UNRECORDED_FIELD,
    UNRECORDED_ITEM,
    Action,
    Change,
    TellsUpdates,
    actor_of,
    relink,
    render_row,
)
from crm_core.tables.ordering import ORDERS, VIEWS
from crm_core.tables.updates import REVISION_FIELD, unique_conflict

TRASH = "_trash"
NAME_LENGTH = 80
LISTED_KINDS = ("row", "column", "table")
COLUMN_VALUE = "column_value"  # a deleted column's value of one row (a child of its item)
CHUNK = 1000
# what a table keeps besides its rows, each document carrying the table's key in `table`
KEPT_WITH_TABLE = (SHARES, ALIASES, VIEWS, ORDERS)
TRASH_PURGE = "trash.purge"  # outbox work: drop a trashed table's rows once it expired
PURGE_LEASE_SECONDS = 300.0
# `claim: {op, id, until}` on an item: the restore or purge working on it; a second one meets
# it and answers 409, so a purge and a restore of one item never both run (docs/history.md
# "Trash"). A crashed holder's claim lapses after the lease; a purge's is only taken by a purge.
CLAIM = "claim"
CLAIM_LEASE_SECONDS = 120.0
BUSY_MESSAGE = "The trash item is being restored or purged; try again"


class PurgeQueue(Protocol):
    """Recorded work due later (crm_core/platform/outbox.py `Outbox`): a trashed table's
    collection is dropped when its item expires."""

    async def record(self, works: list[Work]) -> None: ...

    async def done(self, key: str) -> None: ...


@dataclass(frozen=True)
class TrashSettings:
    retention_days: int = 30


class RestoredRows(TellsUpdates, Protocol):
    """Who records restored rows and tells `row.updated` of the links put back
    (crm_core/tables/history.py `ChangeLog`, `relink`)."""

    async def record(
        self,
        ctx: TenantContext,
        table: Table,
        changes: list[Change],
        action: Action | None = None,
        rendered: list[dict[str, Any]] | None = None,
        hooks: list[ObjectId] | None = None,
    ) -> int: ...


class TrashedFiles(Protocol):
    """Who keeps uploaded files (crm_core/files/attachments.py `FileService`): told the files
    of a purged row, it removes those nothing else holds."""

    async def release(self, ctx: TenantContext, file_ids: list[ObjectId]) -> int: ...


def row_files(table: Table, doc: dict[str, Any]) -> list[ObjectId]:
    """The uploaded files a row's attachment columns hold."""
    found: list[ObjectId] = []
    for column in table.columns:
        value = doc.get(column.key)
        if isinstance(value, list) and table.column_type(column).holds_files:
            found += [v for v in value if isinstance(v, ObjectId) and v not in found]
    return found


def row_name(table: Table, doc: dict[str, Any]) -> str:
    """What a person recognises a row by: its first filled text value, else its id."""
    for column in table.columns:
        value = doc.get(column.key)
        if isinstance(value, str) and value:
            return value[:NAME_LENGTH]
    return str(doc["_id"])


class RowTrash:
    """Rows in the trash: put, list, restore, purge."""

    def __init__(self, settings: TrashSettings) -> None:
        self.settings = settings

    async def put_rows(
        self,
        ctx: TenantContext,
        table: Table,
        docs: list[dict[str, Any]],
        batch: ObjectId | None = None,
    ) -> None:
        """Copy rows into the trash (the caller removes them from the table after)."""
        if not docs:
            return
        now = utcnow()
        actor = actor_of(ctx)
        expires = now + timedelta(days=self.settings.retention_days)
        links = await self.links_to(ctx, table, [doc["_id"] for doc in docs])
        items = [
            {
                "_id": ObjectId(),
                "kind": "row",
                "table": table.key,
                "table_id": table.doc.get("_id"),
                "row_id": doc["_id"],
                "name": row_name(table, doc),
                "doc": doc,
                "links": links.get(doc["_id"], []),
                UNRECORDED_ITEM: now,  # cleared once the deletion's revision is stored
                "deleted_at": now,
                "deleted_by": actor,
                "expires_at": expires,
                "batch": batch,
            }
            for doc in docs
        ]
        for item in items:
            if files := row_files(table, item["doc"]):
                item["files"] = files  # index-served: who holds a file (crm_core/files)
        await ctx.db[TRASH].insert_many(items, ordered=False)

    async def take_back(self, ctx: TenantContext, table: Table, docs: list[dict[str, Any]]) -> None:
        """Remove the copies `put_rows` made of rows that stayed in the table after all (a
        guarded delete that a concurrent write outran)."""
        for doc in docs:
            await ctx.db[TRASH].delete_one(
                {
                    "row_id": doc["_id"],
                    "table": table.key,
                    f"doc.{REVISION_FIELD}": doc.get(REVISION_FIELD),
                }
            )

    async def links_to(
        self, ctx: TenantContext, table: Table, ids: list[ObjectId]
    ) -> dict[ObjectId, list[dict[str, Any]]]:
        """Per row of `ids`: the rows whose link column points at it (`[{table, column,
        rows}]`), read before the delete clears them (one query per link column)."""
        found: dict[ObjectId, dict[tuple[str, str], list[ObjectId]]] = {}
        async for doc in ctx.db[TABLES].find(
            referring_query(table.types, table.key), {"key": 1, "columns": 1, "collection": 1}
        ):
            referring = Table(doc, table.types)
            for column in referring.columns:
                known = column.type in table.types
                if not known or referring.column_type(column).target_table(column) != table.key:
                    continue
                cursor = referring.collection(ctx).find({column.key: {"$in": ids}}, {column.key: 1})
                async for row in cursor:
                    pointing = found.setdefault(row[column.key], {})
                    pointing.setdefault((referring.key, column.key), []).append(row["_id"])
        return {
            row_id: [{"table": t, "column": c, "rows": rows} for (t, c), rows in by.items()]
            for row_id, by in found.items()
        }

    async def holds_row(self, ctx: TenantContext, table: Table, row_id: ObjectId) -> bool:
        """Whether the row is in the trash as a row of this table (not of a deleted table
        whose key was reused since)."""
        query = {"row_id": row_id, "table": table.key, "table_id": table.doc.get("_id")}
        found = await ctx.db[TRASH].find_one(query, {"_id": 1})
        return found is not None


class SchemaTrash:
    """Deleted columns and tables into the trash (crm_core/tables/meta.py `MetaService` calls
    it around its own steps; docs/history.md "Trash" says in which order and why)."""

    def __init__(self, settings: TrashSettings, purges: PurgeQueue | None = None) -> None:
        self.settings = settings
        self.purges = purges

    def _item(self, ctx: TenantContext, kind: str, table: Table, name: str) -> dict[str, Any]:
        now = utcnow()
        return {
            "_id": ObjectId(),
            "kind": kind,
            "table": table.key,
            "table_id": table.doc.get("_id"),
            "name": name[:NAME_LENGTH],
            "deleted_at": now,
            "deleted_by": actor_of(ctx),
            "expires_at": now + timedelta(days=self.settings.retention_days),
        }

    async def put_column(
        self, ctx: TenantContext, table: Table, column: Column, alias: str | None
    ) -> dict[str, Any]:
        """The column's item (its values follow with `copy_values` once the definition no
        longer has it)."""
        item = self._item(ctx, "column", table, alias or column.name or column.key)
        item.update(column=column.key, doc=column.to_doc(), alias=alias)
        await ctx.db[TRASH].insert_one(item)
        return item

    async def copy_values(self, ctx: TenantContext, table: Table, item: dict[str, Any]) -> int:
        """One `column_value` child per row holding a value, by chunks; answers how many."""
        key = item["column"]
        chunk: list[dict[str, Any]] = []
        copied = 0
        async for row in table.collection(ctx).find({key: {"$exists": True}}, {key: 1}):
            chunk.append(
                {
                    "_id": ObjectId(),
                    "kind": COLUMN_VALUE,
                    "parent": item["_id"],
                    "table": table.key,
                    "row": row["_id"],
                    "value": row[key],
                    "expires_at": item["expires_at"],
                }
            )
            if len(chunk) >= CHUNK:
                await ctx.db[TRASH].insert_many(chunk, ordered=False)
                copied, chunk = copied + len(chunk), []
        if chunk:
            await ctx.db[TRASH].insert_many(chunk, ordered=False)
        return copied + len(chunk)

    async def put_table(
        self, ctx: TenantContext, table: Table, alias: str | None
    ) -> dict[str, Any]:
        """The table's item: its definition and what other collections keep of it; its rows
        stay in its own collection until the item is purged (recorded in the outbox now)."""
        kept = {
            name: await ctx.db[name].find({"table": table.key}).to_list(None)
            for name in KEPT_WITH_TABLE
        }
        item = self._item(ctx, "table", table, alias or str(table.doc.get("name") or table.key))
        item.update(
            doc=table.doc,
            owner_id=table.doc.get("owner_id"),
            collection=table.collection_name,
            kept=kept,
        )
        await ctx.db[TRASH].insert_one(item)
        if self.purges is not None:
            await self.purges.record([purge_work(ctx.tenant_id, item)])
        return item

    async def forget(self, ctx: TenantContext, item: dict[str, Any]) -> None:
        """The delete did not happen after all (the definition changed meanwhile)."""
        await ctx.db[TRASH].delete_many({"parent": item["_id"]})
        await ctx.db[TRASH].delete_one({"_id": item["_id"]})
        if self.purges is not None and item["kind"] == "table":
            await self.purges.done(purge_work(ctx.tenant_id, item).key)


def purge_work(tenant_id: str, item: dict[str, Any]) -> Work:
    """Drop the trashed table's collection after the retention (unless restored)."""
    expires_in = (as_utc(item["expires_at"]) - utcnow()).total_seconds()
    return Work(
        TRASH_PURGE,
        tenant_id,
        (str(item["_id"]), item["collection"], str(item["table_id"])),
        PURGE_LEASE_SECONDS,
        start_after=max(0.0, expires_in),
    )


async def claim_item(db: Database, item: dict[str, Any], op: str) -> ObjectId | None:
    """Take the item for a restore or a purge (`op`) in one conditional update: answers the
    claim's id, or None when another holds it (or it is gone, or, for a restore, expired)."""
    now = utcnow()
    lapsed = {f"{CLAIM}.until": {"$lt": now}}
    free: list[dict[str, Any]] = [
        {CLAIM: {"$exists": False}},
        {f"{CLAIM}.op": op, **lapsed},
    ]
    if op == "purge":  # a crashed restore may be finished by a purge, never the other way
        free.append({f"{CLAIM}.op": "restore", **lapsed})
    query: dict[str, Any] = {"_id": item["_id"], "$or": free}
    if op == "restore":  # an expired item waits for its purge (the TTL or the outbox)
        query["expires_at"] = {"$gt": now}
    claim_id = ObjectId()
    until = now + timedelta(seconds=CLAIM_LEASE_SECONDS)
    update: dict[str, Any] = {"$set": {CLAIM: {"op": op, "id": claim_id, "until": until}}}
    if op == "restore":  # neither the TTL nor the outbox's purge takes it while it is held
        update["$max"] = {"expires_at": until}
    claimed = await db[TRASH].find_one_and_update(
        query,
        update,
        projection={"_id": 1},
        return_document=True,
    )
    return claim_id if claimed is not None else None


async def release_item(db: Database, item: dict[str, Any], claim_id: ObjectId) -> None:
    """Give a claim back (the restore or purge failed and changed nothing)."""
    await db[TRASH].update_one(
        {"_id": item["_id"], f"{CLAIM}.id": claim_id}, {"$unset": {CLAIM: ""}}
    )


@asynccontextmanager
async def claimed(ctx: TenantContext, item: dict[str, Any], op: str) -> AsyncIterator[None]:
    """Run the block holding the item: 409 when a restore or purge holds it, 404 when it is
    gone (or expired, for a restore). A restore that fails gives its claim back; a purge that
    fails keeps it (it may have dropped the rows already): only another purge finishes it."""
    claim_id = await claim_item(ctx.db, item, op)
    if claim_id is None:
        now = utcnow()
        current = await ctx.db[TRASH].find_one({"_id": item["_id"]}, {"expires_at": 1})
        if current is None or (op == "restore" and as_utc(current["expires_at"]) <= now):
            raise NotFound("Trash item not found")
        raise Conflict(BUSY_MESSAGE)
    try:
        yield
    except BaseException:
        if op == "restore":
            await release_item(ctx.db, item, claim_id)
        raise


class SchemaRestorer(Protocol):
    """Puts columns and tables back (crm_core/tables/meta.py `MetaService`: indexes, the
    definition's version, the caches)."""

    async def restore_column(
        self, ctx: TenantContext, table: Table, item: dict[str, Any], values: list[dict[str, Any]]
    ) -> Table:
        """Add the column back with its values (rows deleted since are skipped); 409 naming
        `column` when a column of that key exists again."""
        ...

    async def restore_table(self, ctx: TenantContext, item: dict[str, Any]) -> Table:
        """Put the definition and what was kept back; 409 naming `key` when a table of that
        key exists again."""
        ...


TRASH_ORDER = (("deleted_at", DESCENDING), ("_id", DESCENDING))  # index `table_deleted_at_id`


class TrashService:
    """`/api/trash`: what the caller may restore: rows of the tables they may write, columns
    of the tables they manage, the tables they own (all of them with `tables.all`)."""

    def __init__(
        self,
        types: Registry[ColumnType],
        changes: RestoredRows,
        audit: AuditSink | None = None,
        schema: SchemaRestorer | None = None,
        purges: PurgeQueue | None = None,
        files: TrashedFiles | None = None,
        cursors: PageCursors | None = None,
    ) -> None:
        self.types = types
        self.changes = changes
        self.audit = audit
        self.schema = schema
        self.purges = purges
        self.files = files
        self.cursors = cursors or PageCursors.ephemeral()

    async def _levels(self, ctx: TenantContext) -> dict[str, tuple[Level, Any]]:
        """The caller's level on each visible table, with the table's id."""
        levels: dict[str, tuple[Level, Any]] = {}
        async for doc in ctx.db[TABLES].find(await visible_filter(ctx)):
            table = Table(doc, self.types)
            levels[table.key] = (await access_level(ctx, table), doc.get("_id"))
        return levels

    def _tables_filter(self, ctx: TenantContext) -> dict[str, Any] | None:
        """The deleted tables the caller may restore: their own, or all with `tables.all`;
        None for a token whose scope does not reach `manage`."""
        cap = ctx.table_level_cap
        if cap is not None and cap < Level.MANAGE:
            return None
        return {} if ctx.has("tables.all") else {"owner_id": ctx.user_id}

    async def list_page(
        self,
        ctx: TenantContext,
        kind: str | None,
        table_key: str | None,
        limit: int,
        offset: int,
        cursor: str | None = None,
    ) -> tuple[list[dict[str, Any]], int, str | None]:
        """Newest first: a page from `offset` or after `cursor`, the total and the next
        page's cursor (crm_core/platform/cursors.py)."""
        levels = await self._levels(ctx)
        if table_key is not None:
            levels = {k: v for k, v in levels.items() if k == table_key}
        branches: list[dict[str, Any]] = []
        for listed, needed in (("row", Level.WRITE), ("column", Level.MANAGE)):
            if kind in (None, listed):
                held = {k: i for k, (level, i) in levels.items() if level >= needed}
                # by id too: a deleted table's items stay out of a new table of its key
                ids = list(held.values())
                branches.append(
                    {"table": {"$in": list(held)}, "table_id": {"$in": ids}, "kind": listed}
                )
        tables = self._tables_filter(ctx)
        if kind in (None, "table") and tables is not None:
            extra = {} if table_key is None else {"table": table_key}
            branches.append({"kind": "table", **tables, **extra})
        if not branches:  # deleted tables asked by a token whose scope stops below manage
            return [], 0, None
        query: dict[str, Any] = branches[0] if len(branches) == 1 else {"$or": branches}
        trash = ctx.db[TRASH]
        scope = PageScope("trash", TRASH_ORDER, {"kind": kind, "table": table_key})
        items, following = await read_page(
            self.cursors, ctx, scope, trash, query, limit, offset, cursor, {"doc": 0, "kept": 0}
        )
        total = await trash.count_documents(query)
        return items, total, following

    async def _found(self, ctx: TenantContext, item_id: ObjectId) -> dict[str, Any]:
        item = await ctx.db[TRASH].find_one({"_id": item_id, "kind": {"$in": LISTED_KINDS}})
        if item is None:
            raise NotFound("Trash item not found")
        return dict(item)

    async def _table_item(self, ctx: TenantContext, item: dict[str, Any]) -> dict[str, Any]:
        """A deleted table the caller may restore or purge; else 404 (or 403 for a token)."""
        check_token_scope(ctx, "restore or purge a table", level=Level.MANAGE)
        tables = self._tables_filter(ctx)
        if tables is None or any(item.get(k) != v for k, v in tables.items()):
            raise NotFound("Trash item not found")
        return item

    async def _item(self, ctx: TenantContext, item_id: ObjectId) -> tuple[dict[str, Any], Table]:
        """A row or column item and its table, when the caller may write (a row) or manage
        (a column) that table; else 404."""
        item = await self._found(ctx, item_id)
        needed = Level.MANAGE if item["kind"] == "column" else Level.WRITE
        check_token_scope(ctx, "restore or purge from the trash", level=needed)
        try:
            table = await load_table(ctx, self.types, item["table"])
        except NotFound:
            raise NotFound("Trash item not found") from None
        if await access_level(ctx, table) < needed:
            raise NotFound("Trash item not found")
        if item.get("table_id") is not None and table.doc.get("_id") != item["table_id"]:
            raise Conflict(
                f"Table '{table.key}' was deleted and its key reused since",
                [{"field": "table", "message": "key reused since"}],
            )
        return item, table

    async def restore(self, ctx: TenantContext, item_id: ObjectId) -> dict[str, Any]:
        """Put a row back in its table (columns deleted since are left out; links to it that
        are still empty point at it again), a column back with its values, a table back with
        its rows, shares, display names, views and orders. 409 names the column whose unique
        value is taken, the column or table key taken since, or says the table's key was
        reused. Answers the restored row, or `{id, kind, table, column?}`."""
        item = await self._found(ctx, item_id)
        if item["kind"] == "table":
            item = await self._table_item(ctx, item)
            async with claimed(ctx, item, "restore"):
                return await self._restore_table(ctx, item)
        item, table = await self._item(ctx, item_id)
        async with claimed(ctx, item, "restore"):
            if item["kind"] == "column":
                return await self._restore_column(ctx, table, item)
            return await self._restore_row(ctx, table, item)

    def _restorer(self) -> SchemaRestorer:
        if self.schema is None:
            raise Conflict("Columns and tables cannot be restored here")
        return self.schema

    async def _restore_column(
        self, ctx: TenantContext, table: Table, item: dict[str, Any]
    ) -> dict[str, Any]:
        children = {"parent": item["_id"], "kind": COLUMN_VALUE}
        values = await ctx.db[TRASH].find(children).to_list(None)
        await self._restorer().restore_column(ctx, table, item, values)
        await ctx.db[TRASH].delete_many(children)
        await ctx.db[TRASH].delete_one({"_id": item["_id"]})
        await self._audit(ctx, "trash.restored", item)
        return {
            "id": str(item["_id"]),
            "kind": "column",
            "table": table.key,
            "column": item["column"],
        }

    async def _restore_table(self, ctx: TenantContext, item: dict[str, Any]) -> dict[str, Any]:
        table = await self._restorer().restore_table(ctx, item)
        await ctx.db[TRASH].delete_one({"_id": item["_id"]})
        if self.purges is not None:
            await self.purges.done(purge_work(ctx.tenant_id, item).key)
        await self._audit(ctx, "trash.restored", item)
        return {"id": str(item["_id"]), "kind": "table", "table": table.key}

    async def _audit(self, ctx: TenantContext, action: str, item: dict[str, Any]) -> None:
        if self.audit is None:
            return
        target: dict[str, Any] = {"type": item["kind"], "table": item["table"]}
        if item["kind"] == "row":
            target["id"] = str(item["row_id"])
        if item["kind"] == "column":
            target["column"] = item["column"]
        await self.audit.record(ctx, action, target)

    async def _restore_row(
        self, ctx: TenantContext, table: Table, item: dict[str, Any]
    ) -> dict[str, Any]:
        stored = item["doc"]
        doc = {k: v for k, v in stored.items() if k.startswith("_")}
        for column in table.columns:  # today's columns, each value in today's form or left out
            if column.key in stored:
                value, ok = held_value(table, column, stored[column.key], ctx)
                if ok:
                    doc[column.key] = value
        doc[REVISION_FIELD] = int(stored.get(REVISION_FIELD) or 0) + 1
        doc[UNRECORDED_FIELD] = utcnow()  # cleared once the restore's revision is stored
        try:
            await table.collection(ctx).insert_one(doc)
        except DuplicateKeyError as exc:
            if await table.collection(ctx).find_one({"_id": doc["_id"]}, {"_id": 1}):
                raise Conflict("The row is already in its table") from None
            raise unique_conflict(exc) from None
        table, doc = await self._settled(ctx, table, doc)
        await ctx.db[TRASH].delete_one({"_id": item["_id"]})
        await self._relink(ctx, table, doc["_id"], item.get("links") or [])
        await self.changes.record(ctx, table, [Change(None, doc)], "restored")
        await self._audit(ctx, "trash.restored", item)
        return render_row(table, doc)

    async def _settled(
        self, ctx: TenantContext, table: Table, doc: dict[str, Any]
    ) -> tuple[Table, dict[str, Any]]:
        """The restored row under the definition that holds now: a column deleted or changed
        while the restore ran keeps no value of its old form (crm_core/tables/fence.py, the
        same pass as any row write); a value the new form cannot hold is left out."""
        keys = {k for k in doc if not k.startswith("_")}
        try:
            current = await fence.settle(ctx, table, [doc["_id"]], keys)
        except fence.SchemaChanging:
            current = await load_table(ctx, self.types, table.key)
        if current is table:
            return table, doc
        found = await current.collection(ctx).find_one({"_id": doc["_id"]})
        return current, dict(found) if found is not None else doc

    async def _relink(
        self, ctx: TenantContext, table: Table, row_id: ObjectId, links: list[dict[str, Any]]
    ) -> None:
        """The links the delete cleared point at the row again, where the referring row still
        exists, its column still links to this table and nobody filled it since (each such
        row a write of the server's: crm_core/tables/history.py `relink`)."""
        for link in links:
            try:
                referring = await load_table(ctx, self.types, link["table"])
            except NotFound:
                continue
            column = referring.column(link["column"])
            if column is None or column.type not in self.types:
                continue
            if referring.column_type(column).target_table(column) != table.key:
                continue
            # a write of the server's: versions up, system revisions (docs/history.md)
            await relink(ctx, referring, column.key, row_id, link["rows"], self.changes)

    async def restore_many(
        self, ctx: TenantContext, ids: dict[int, ObjectId]
    ) -> list[dict[str, Any]]:
        """Every item is looked up first (404 naming `ids.N`, N its place in the request; a
        column or a table is not a row); then each is restored, a unique value taken naming
        `ids.N.<column>` in a 409 after the others are back."""
        found: list[tuple[int, dict[str, Any], Table]] = []
        missing = []
        for index, item_id in ids.items():
            try:
                item, table = await self._item(ctx, item_id)
            except NotFound:
                missing.append({"field": f"ids.{index}", "message": "not in the trash"})
                continue
            if item["kind"] != "row":
                missing.append({"field": f"ids.{index}", "message": "not a row in the trash"})
            found.append((index, item, table))
        if missing:
            raise NotFound(f"{len(missing)} trash items not found", missing)
        rows, conflicts = [], []
        for index, item, table in found:
            try:
                async with claimed(ctx, item, "restore"):
                    rows.append(await self._restore_row(ctx, table, item))
            except NotFound as exc:  # purged since it was looked up
                conflicts.append({"field": f"ids.{index}", "message": exc.message})
            except Conflict as exc:
                field = (exc.details or [{}])[0].get("field", "")
                conflicts.append(
                    {"field": f"ids.{index}.{field}".rstrip("."), "message": exc.message}
                )
        if conflicts:
            raise Conflict(f"{conflicts[0]['field']}: {conflicts[0]['message']}", conflicts)
        return rows

    async def purge(self, ctx: TenantContext, item_id: ObjectId) -> None:
        """Gone for good: a table's rows (its collection) and the rows of it in the trash,
        a column's values."""
        item = await self._found(ctx, item_id)
        if item["kind"] == "table":
            await self._table_item(ctx, item)
            async with claimed(ctx, item, "purge"):
                await purge_table(ctx.db, item)
            if self.purges is not None:
                await self.purges.done(purge_work(ctx.tenant_id, item).key)
        else:
            item, _ = await self._item(ctx, item_id)
            async with claimed(ctx, item, "purge"):
                await ctx.db[TRASH].delete_many({"parent": item["_id"]})
                await ctx.db[TRASH].delete_one({"_id": item["_id"]})
            if self.files is not None and item.get("files"):
                await self.files.release(ctx, list(item["files"]))
        await self._audit(ctx, "trash.purged", item)

    async def purge_expired(
        self, db: Database, item_id: str, collection: str, table_id: str
    ) -> bool:
        """The outbox's `trash.purge` work, due when the table's item expires: drop the rows
        unless the table was restored (its definition uses the collection again) or the item
        lives on (not expired yet: False, the work stays due)."""
        item = await db[TRASH].find_one({"_id": ObjectId(item_id)})
        if item is not None and as_utc(item["expires_at"]) > utcnow():
            return False
        if item is not None and await claim_item(db, item, "purge") is None:
            return False  # a restore holds it: due again later, then it finds the table back
        gone = {"_id": ObjectId(item_id), "collection": collection, "table_id": ObjectId(table_id)}
        await purge_table(db, item or gone)
        return True


async def purge_table(db: Database, item: dict[str, Any]) -> None:
    """Drop a trashed table's collection (unless a definition uses it: the delete did not
    happen, or the table is back), its rows in the trash and the item."""
    if not await db[TABLES].count_documents({"_id": item["table_id"]}, limit=1):
        await db.drop_collection(item["collection"])
        if "table" in item:  # its rows deleted before it (else they expire by themselves)
            await db[TRASH].delete_many({"table": item["table"], "table_id": item["table_id"]})
    await db[TRASH].delete_one({"_id": item["_id"]})


def held_value(
    table: Table, column: Column, value: object, ctx: TenantContext
) -> tuple[object, bool]:
    """A trashed row's value in the column's form today: as stored when it holds, else as
    the column's type reads it (a type change since converted the table's rows, not the
    trash's); (None, False) when it cannot be held, so it is left out."""
    if table.column_type(column).numbered or fence.holds(table.types, column, value, ctx):
        return value, True  # a number the server gave stays (its type reads no input)
    return fence.convert_one(table.types, column, column, value, ctx)


def check_ids(raw: list[str]) -> dict[int, ObjectId]:
    """The ids by their place in the request; a repeated id (in either case of its hex
    digits) keeps its first place only, so it is restored once (as a bulk delete's repeated
    ids are deleted once)."""
    errors: list[dict[str, str]] = []
    ids: dict[int, ObjectId] = {}
    seen: set[ObjectId] = set()
    for index, value in enumerate(raw):
        if not ObjectId.is_valid(value):
            errors.append({"field": f"ids.{index}", "message": "not a trash item id"})
        elif (item_id := ObjectId(value)) not in seen:
            seen.add(item_id)
            ids[index] = item_id
    if errors:
        raise ValidationFailed(f"{errors[0]['field']}: {errors[0]['message']}", errors)
    return ids
