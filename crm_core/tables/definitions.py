"""Loading and storing table definitions (`_tables` in the tenant's database)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from bson import ObjectId
from cachetools import LRUCache

from crm_core.accounts.cache import tables_changed
from crm_core.accounts.context import TenantContext
from crm_core.platform.clock import utcnow as utcnow
from crm_core.platform.errors import NotFound, StaleTableVersion
from crm_core.platform.registry import Registry
from crm_core.platform.storage.types import Collection
from crm_core.tables.columns import Column, ColumnType

TABLES = "_tables"
SYSTEM_FIELDS = ("_created_at", "_updated_at", "_created_by", "_updated_by")
RESERVED_COLUMN_KEYS = frozenset({"id"})


def rows_collection_name(table_id: ObjectId) -> str:
    """The collection of a table's rows (docs/storage.md): table keys have no dot, so it never
    meets a collection named by a key (the layout before issue #29)."""
    return f"rows.{table_id}"


# parsed columns by their stored form: `Column`s are immutable, so one parse serves every
# request that loads the same definition (parsing costs about what the process cache's copy
# of the document does; the key, the columns as JSON, is built in a small part of that)
_PARSED: LRUCache[bytes, tuple[Column, ...]] = LRUCache(1000)


def parse_columns(doc: dict[str, Any]) -> tuple[Column, ...]:
    """The definition's columns, parsed once per distinct content."""
    stored = doc.get("columns", [])
    try:
        key = orjson.dumps(stored)
    except TypeError:  # a value JSON cannot hold: parse without the memo
        return tuple(Column.from_doc(c) for c in stored)
    columns: tuple[Column, ...] | None = _PARSED.get(key)
    if columns is None:
        columns = _PARSED[key] = tuple(Column.from_doc(c) for c in stored)
    return columns


@dataclass
class Table:
    """A loaded table definition: the stored document and its columns, parsed once into
    `Column`s (written back with `Column.to_doc`, the `_tables` layout of docs/storage.md)."""

    doc: dict[str, Any]
    types: Registry[ColumnType] = field(repr=False)
    _columns: tuple[Column, ...] = field(init=False, repr=False)
    _by_key: dict[str, Column] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._columns = parse_columns(self.doc)
        self._by_key = {c.key: c for c in self._columns}

    @property
    def key(self) -> str:
        return str(self.doc["key"])

    @property
    def version(self) -> int:
        return int(self.doc["version"])

    @property
    def columns(self) -> list[Column]:
        return list(self._columns)

    def column(self, key: str) -> Column | None:
        return self._by_key.get(key)

    def column_type(self, column: Column) -> ColumnType:
        return self.types.get(column.type)

    @property
    def id(self) -> ObjectId:
        return self.doc["_id"]  # type: ignore[no-any-return]

    @property
    def collection_name(self) -> str:
        """The rows' collection: named by the table's id (`rows.<id>`, docs/storage.md), so a
        table re-created with the same key starts empty; a table made before that layout keeps
        its key until `crm migrate` renames it."""
        return str(self.doc.get("collection") or self.doc["key"])

    def collection(self, ctx: TenantContext) -> Collection:
        return ctx.db[self.collection_name]


async def load_table(ctx: TenantContext, types: Registry[ColumnType], key: str) -> Table:
    if not isinstance(key, str) or not key or key.startswith("_") or len(key) > 63:
        raise NotFound(f"Table '{key[:63]}' not found")
    if ctx.cache is not None:
        doc = await ctx.cache.table(ctx.db, ctx.tenant, key)
    else:
        doc = await ctx.db[TABLES].find_one({"key": key})
    if doc is None:
        raise NotFound(f"Table '{key}' not found")
    return Table(doc, types)


def check_version(table: Table, expected: int | None) -> None:
    if expected is not None and expected != table.version:
        raise StaleTableVersion(
            f"The table is at version {table.version}, the edit was based on {expected}",
            [{"field": "version", "message": f"current version is {table.version}"}],
        )


async def save_definition(ctx: TenantContext, table: Table, changes: dict[str, Any]) -> Table:
    """Write changes if nobody else changed the table since it was loaded (optimistic lock);
    `columns` may be given as `Column`s."""
    changes = {**changes, "updated_at": utcnow()}
    if "columns" in changes:
        changes["columns"] = [
            c.to_doc() if isinstance(c, Column) else c for c in changes["columns"]
        ]
    updated = await ctx.db[TABLES].find_one_and_update(
        {"_id": table.doc["_id"], "version": table.version},
        {"$set": changes, "$inc": {"version": 1}},
        return_document=True,
    )
    if updated is None:
        raise StaleTableVersion()
    await tables_changed(ctx.tenant)
    return Table(updated, table.types)
