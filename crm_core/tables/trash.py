"""The trash (docs/history.md "Trash"): a deleted row leaves its table's collection for
`_trash`, so no read of rows (lists, filters, exports, SMS recipients, lookups through links)
can meet it, and comes back from there with `restore`. Items expire after
`TRASH_RETENTION_DAYS` (a TTL index on `expires_at`).

An item: `{_id, kind: "row", table, table_id, row_id, name, doc, deleted_at, deleted_by,
expires_at, batch}`; `doc` is the stored row, `batch` groups the rows of one bulk delete.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from bson import ObjectId

from crm_core.accounts.context import TenantContext
from crm_core.accounts.grants import check_token_scope
from crm_core.platform.clock import utcnow
from crm_core.platform.errors import Conflict, NotFound, ValidationFailed
from crm_core.platform.registry import Registry
from crm_core.platform.storage import DESCENDING, DuplicateKeyError
from crm_core.tables.access import Level, access_level, visible_filter
from crm_core.tables.columns import ColumnType
from crm_core.tables.definitions import TABLES, Table, load_table
from crm_core.tables.history import (
    Action,
    AuditSink,
    Change,
    actor_of,
    render_row,
)
from crm_core.tables.updates import REVISION_FIELD, unique_conflict

TRASH = "_trash"
NAME_LENGTH = 80


@dataclass(frozen=True)
class TrashSettings:
    retention_days: int = 30


class RestoredRows(Protocol):
    """Who records restored rows (crm_core/tables/history.py `ChangeLog`)."""

    async def record(
        self,
        ctx: TenantContext,
        table: Table,
        changes: list[Change],
        action: Action | None = None,
        rendered: list[dict[str, Any]] | None = None,
        hooks: list[ObjectId] | None = None,
    ) -> int: ...


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
        items = [
            {
                "_id": ObjectId(),
                "kind": "row",
                "table": table.key,
                "table_id": table.doc.get("_id"),
                "row_id": doc["_id"],
                "name": row_name(table, doc),
                "doc": doc,
                "deleted_at": now,
                "deleted_by": actor,
                "expires_at": expires,
                "batch": batch,
            }
            for doc in docs
        ]
        await ctx.db[TRASH].insert_many(items, ordered=False)

    async def holds_row(self, ctx: TenantContext, table: Table, row_id: ObjectId) -> bool:
        found = await ctx.db[TRASH].find_one({"row_id": row_id, "table": table.key}, {"_id": 1})
        return found is not None


class TrashService:
    """`/api/trash`: what the caller may restore (rows of the tables they may write)."""

    def __init__(
        self,
        types: Registry[ColumnType],
        changes: RestoredRows,
        audit: AuditSink | None = None,
    ) -> None:
        self.types = types
        self.changes = changes
        self.audit = audit

    async def _writable(self, ctx: TenantContext) -> dict[str, Table]:
        tables: dict[str, Table] = {}
        async for doc in ctx.db[TABLES].find(await visible_filter(ctx)):
            table = Table(doc, self.types)
            if await access_level(ctx, table) >= Level.WRITE:
                tables[table.key] = table
        return tables

    async def list_page(
        self,
        ctx: TenantContext,
        kind: str | None,
        table_key: str | None,
        limit: int,
        offset: int,
    ) -> tuple[list[dict[str, Any]], int]:
        keys = list(await self._writable(ctx))
        if table_key is not None:
            keys = [k for k in keys if k == table_key]
        query: dict[str, Any] = {"table": {"$in": keys}}
        if kind is not None:
            query["kind"] = kind
        trash = ctx.db[TRASH]
        cursor = trash.find(query, {"doc": 0}).sort([("deleted_at", DESCENDING)])
        items = await cursor.skip(offset).limit(limit).to_list(length=limit)
        total = await trash.count_documents(query)
        return items, total

    async def _item(self, ctx: TenantContext, item_id: ObjectId) -> tuple[dict[str, Any], Table]:
        """The item and its table, when the caller may write that table; else 404."""
        check_token_scope(ctx, "restore or purge from the trash", level=Level.WRITE)
        item = await ctx.db[TRASH].find_one({"_id": item_id})
        if item is None:
            raise NotFound("Trash item not found")
        try:
            table = await load_table(ctx, self.types, item["table"])
        except NotFound:
            raise NotFound("Trash item not found") from None
        if await access_level(ctx, table) < Level.WRITE:
            raise NotFound("Trash item not found")
        if item.get("table_id") is not None and table.doc.get("_id") != item["table_id"]:
            raise Conflict(
                f"Table '{table.key}' was deleted and its key reused since",
                [{"field": "table", "message": "key reused since"}],
            )
        return item, table

    async def restore(self, ctx: TenantContext, item_id: ObjectId) -> dict[str, Any]:
        """Put a row back in its table (columns deleted since are left out); 409 naming the
        column when a unique value is now taken. Answers the restored row."""
        item, table = await self._item(ctx, item_id)
        return await self._restore_row(ctx, table, item)

    async def _restore_row(
        self, ctx: TenantContext, table: Table, item: dict[str, Any]
    ) -> dict[str, Any]:
        stored = item["doc"]
        keys = {c.key for c in table.columns}
        doc = {k: v for k, v in stored.items() if k in keys or k.startswith("_")}
        doc[REVISION_FIELD] = int(stored.get(REVISION_FIELD) or 0) + 1
        try:
            await table.collection(ctx).insert_one(doc)
        except DuplicateKeyError as exc:
            if await table.collection(ctx).find_one({"_id": doc["_id"]}, {"_id": 1}):
                raise Conflict("The row is already in its table") from None
            raise unique_conflict(exc) from None
        await ctx.db[TRASH].delete_one({"_id": item["_id"]})
        await self.changes.record(ctx, table, [Change(None, doc)], "restored")
        if self.audit is not None:
            target = {"type": "row", "table": table.key, "id": str(doc["_id"])}
            await self.audit.record(ctx, "trash.restored", target)
        return render_row(table, doc)

    async def restore_many(
        self, ctx: TenantContext, ids: dict[int, ObjectId]
    ) -> list[dict[str, Any]]:
        """Every item is looked up first (404 naming `ids.N`, N its place in the request); then
        each is restored, a unique value taken naming `ids.N.<column>` in a 409 after the
        others are back."""
        found: list[tuple[int, dict[str, Any], Table]] = []
        missing = []
        for index, item_id in ids.items():
            try:
                found.append((index, *await self._item(ctx, item_id)))
            except NotFound:
                missing.append({"field": f"ids.{index}", "message": "not in the trash"})
        if missing:
            raise NotFound(f"{len(missing)} trash items not found", missing)
        rows, conflicts = [], []
        for index, item, table in found:
            try:
                rows.append(await self._restore_row(ctx, table, item))
            except Conflict as exc:
                field = (exc.details or [{}])[0].get("field", "")
                conflicts.append(
                    {"field": f"ids.{index}.{field}".rstrip("."), "message": exc.message}
                )
        if conflicts:
            raise Conflict(f"{conflicts[0]['field']}: {conflicts[0]['message']}", conflicts)
        return rows

    async def purge(self, ctx: TenantContext, item_id: ObjectId) -> None:
        item, table = await self._item(ctx, item_id)
        await ctx.db[TRASH].delete_one({"_id": item["_id"]})
        if self.audit is not None:
            target = {"type": item["kind"], "table": table.key, "id": str(item["row_id"])}
            await self.audit.record(ctx, "trash.purged", target)


def check_ids(raw: list[str]) -> dict[int, ObjectId]:
    """The ids by their place in the request; a repeated id keeps its first place only, so it
    is restored once (as a bulk delete's repeated ids are deleted once)."""
    errors: list[dict[str, str]] = []
    ids: dict[int, ObjectId] = {}
    seen: set[str] = set()
    for index, value in enumerate(raw):
        if not ObjectId.is_valid(value):
            errors.append({"field": f"ids.{index}", "message": "not a trash item id"})
        elif value not in seen:
            seen.add(value)
            ids[index] = ObjectId(value)
    if errors:
        raise ValidationFailed(f"{errors[0]['field']}: {errors[0]['message']}", errors)
    return ids
