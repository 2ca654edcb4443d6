"""The table constructor (docs/api.md "Tables"): create, rename and delete tables; add, change and
delete columns, converting every row when a column changes type."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bson import ObjectId
from pydantic import BaseModel

from crm_core.accounts.audit import AuditSink
from crm_core.accounts.cache import tables_changed
from crm_core.accounts.context import TenantContext
from crm_core.platform.errors import Conflict, NotFound, StaleTableVersion, ValidationFailed
from crm_core.platform.registry import Registry
from crm_core.platform.storage import (
    ASCENDING,
    BulkWriteError,
    DuplicateKeyError,
    OperationFailure,
    skip_missing_index_options,
    update_each,
)
from crm_core.platform.versions import IfMatch, PreconditionFailed
from crm_core.tables import fence, ordering, sequences
from crm_core.tables.access import visible_filter
from crm_core.tables.aliases import ALIASES
from crm_core.tables.bodies import MAX_COLUMNS, ColumnPatch, TableIn, column_models
from crm_core.tables.columns import (
    SETTINGS_FIELDS,
    Column,
    ColumnType,
    ColumnValueError,
    DefinitionError,
    referring_query,
)
from crm_core.tables.computed.definitions import outside_dependents, settle_columns
from crm_core.tables.definitions import (
    RESERVED_COLUMN_KEYS,
    TABLES,
    Table,
    check_version,
    rows_collection_name,
    save_definition,
    utcnow,
)
from crm_core.tables.history import (
    Redo,
    Rewrite,
    SystemChange,
    SystemReason,
    render_stored,
    unrecorded_index,
)
from crm_core.tables.trash import KEPT_WITH_TABLE, SchemaTrash
from crm_core.tables.updates import REVISION_FIELD, row_version
from crm_core.tables.validators import ColumnValidator
from models.access import AliasRecord

log = logging.getLogger(__name__)

CONVERSION_BATCH = 1000
SAMPLE_IDS = 5


def unique_index_name(key: str) -> str:
    return f"u_{key}"


def plain_index_name(key: str) -> str:
    return f"i_{key}"


def plain_index_keys(key: str) -> list[tuple[str, int]]:
    """A plain column index: the column, then `_id`. One index serves equality and ranges on
    the column and a page sorted by it with its `_id` tie-breaker (crm_core/platform/cursors.py)
    in either direction, as an index walk instead of an in-memory sort (docs/storage.md)."""
    return [(key, ASCENDING), ("_id", ASCENDING)]


class TableDependents(Protocol):
    """A domain that keeps data about tables (shares, display names): told when a table or a
    column goes, so nothing about it stays behind."""

    async def table_deleted(self, ctx: TenantContext, table_key: str) -> None: ...

    async def column_deleted(self, ctx: TenantContext, table_key: str, column_key: str) -> None: ...


class DisplayNames(Protocol):
    """The tenant's display names of tables and columns (crm_core/tables/aliases.py)."""

    async def find(self, ctx: TenantContext, keys: list[str]) -> dict[str, AliasRecord]:
        """The display names of the tables `keys`, by key (tables without any are absent)."""
        ...


@dataclass(frozen=True)
class NamedTable:
    """A table as the caller sees it: its definition and the tenant's display names of it
    and its columns (None: none are set)."""

    table: Table
    names: AliasRecord | None = None


@contextlib.asynccontextmanager
async def stale_as_precondition(
    ctx: TenantContext, table: Table, version: int | None
) -> AsyncIterator[None]:
    """A definition edit sent with `If-Match` (an `IfMatch` version) that finds the table at
    another version, before it or in the write's own filter (`save_definition`), answers 412
    naming the current version rather than the 409 of `?version=N`."""
    try:
        yield
    except StaleTableVersion:
        if not isinstance(version, IfMatch):
            raise
        current = await ctx.db[TABLES].find_one({"_id": table.id}, {"version": 1})
        if current is None:
            raise NotFound(f"Table '{table.key}' not found") from None
        raise PreconditionFailed.at(version, int(current["version"])) from None


class MetaService:
    """The table constructor. Every method that answers a table answers it with its display
    names (`NamedTable`), as the routes show it."""

    def __init__(
        self,
        types: Registry[ColumnType],
        validators: Registry[ColumnValidator],
        names: DisplayNames,
        dependents: Sequence[TableDependents] = (),
        audit: AuditSink | None = None,
        trash: SchemaTrash | None = None,
    ) -> None:
        self.types = types
        self.trash = trash  # deleted columns and tables go there (docs/history.md "Trash")
        self.validators = validators
        self.names = names
        self.dependents = dependents
        self.audit = audit
        self.models = column_models(types)  # the body models of the table constructor

    # ---- tables ---------------------------------------------------------------------------

    async def list_tables(self, ctx: TenantContext) -> list[NamedTable]:
        """The tables the caller can see, by key, with their display names."""
        query = await visible_filter(ctx)
        docs = await ctx.db[TABLES].find(query).sort("key", ASCENDING).to_list(None)
        tables = [Table(doc, self.types) for doc in docs]
        found = await self.names.find(ctx, [t.key for t in tables])
        return [NamedTable(t, found.get(t.key)) for t in tables]

    async def named(self, ctx: TenantContext, table: Table) -> NamedTable:
        """`table` with the tenant's display names."""
        found = await self.names.find(ctx, [table.key])
        return NamedTable(table, found.get(table.key))

    async def create_table(self, ctx: TenantContext, data: TableIn) -> NamedTable:
        table = await self._create_table(ctx, data)
        await self._audit(ctx, "table.created", table, None, {"columns": len(table.columns)})
        return await self.named(ctx, table)

    async def _audit(
        self,
        ctx: TenantContext,
        action: str,
        table: Table,
        column: str | None = None,
        changes: dict[str, Any] | None = None,
    ) -> None:
        if self.audit is None:
            return
        target: dict[str, Any] = {"type": "column" if column else "table", "table": table.key}
        if column:
            target["column"] = column
        await self.audit.record(ctx, action, target, changes)

    async def _create_table(self, ctx: TenantContext, data: TableIn) -> Table:
        columns: list[Column] = []
        seen: set[str] = set()
        errors: list[dict[str, Any]] = []
        column_in: BaseModel
        for index, column_in in enumerate(data.columns):
            raw = column_in.model_dump()
            if raw["key"] in seen:
                errors.append(
                    {
                        "field": f"columns.{index}.key",
                        "message": f"duplicate column key '{raw['key']}'",
                    }
                )
                continue
            seen.add(raw["key"])
            try:
                columns.append(self._normalise_column(ctx, raw, f"columns.{index}", None))
            except ValidationFailed as exc:
                errors.extend(exc.details)
        for index, column in enumerate(columns):
            errors += await self._target_errors(ctx, column, data.key, f"columns.{index}")
        if errors:
            raise ValidationFailed(f"{errors[0]['field']}: {errors[0]['message']}", errors)
        paths = {c.key: f"columns.{i}." for i, c in enumerate(columns)}
        columns = await settle_columns(ctx, self.types, data.key, columns, paths=paths)
        now = utcnow()
        table_id = ObjectId()
        doc = {
            "_id": table_id,
            "key": data.key,
            "name": data.name or data.key,
            "builtin": False,
            "owner_id": ctx.user_id,
            "version": 1,
            "collection": rows_collection_name(table_id),
            "columns": [c.to_doc() for c in columns],
            "created_at": now,
            "updated_at": now,
        }
        if await ctx.db[TABLES].find_one({"key": data.key}, {"_id": 1}):
            raise _table_exists(data.key)
        table = Table(doc, self.types)
        # the collection and its indexes exist before the definition is visible: nothing is
        # dropped or rebuilt once a write can reach the table
        await ctx.db.create_collection(table.collection_name)
        try:
            await unrecorded_index(table.collection(ctx))
            for column in columns:
                await self._create_indexes(ctx, table, column)
            await ctx.db[TABLES].insert_one(doc)
        except BaseException as exc:
            await ctx.db.drop_collection(table.collection_name)  # nobody could see it yet
            if isinstance(exc, DuplicateKeyError):
                raise _table_exists(data.key) from None
            raise
        await tables_changed(ctx.tenant)
        log.info("tenant %s created table %s", ctx.tenant_id, data.key)
        return table

    async def rename_table(
        self, ctx: TenantContext, table: Table, name: str | None, version: int | None
    ) -> NamedTable:
        async with stale_as_precondition(ctx, table, version):
            check_version(table, version)
            if name is not None:
                before = table.doc.get("name")
                table = await save_definition(ctx, table, {"name": name})
                await self._audit(ctx, "table.renamed", table, None, {"name": [before, name]})
        return await self.named(ctx, table)

    async def delete_table(self, ctx: TenantContext, table: Table, version: int | None) -> None:
        async with stale_as_precondition(ctx, table, version):
            await self._delete_table(ctx, table, version)

    async def _delete_table(self, ctx: TenantContext, table: Table, version: int | None) -> None:
        check_version(table, version)
        if table.doc.get("builtin"):
            raise Conflict(f"The built-in table '{table.key}' cannot be deleted")
        referring = await ctx.db[TABLES].distinct(
            "key", {"key": {"$ne": table.key}, **referring_query(self.types, table.key)}
        )
        if referring:
            raise Conflict(
                f"Link columns of {', '.join(sorted(referring))} point at this table; "
                "delete or change them first"
            )
        rollups = await outside_dependents(ctx, self.types, table.key, None)
        if rollups:
            raise Conflict(f"Computed columns read this table: {', '.join(rollups)}")
        # into the trash first (the definition, what others keep of the table; its rows stay
        # in its collection): a crash then leaves the table in place and an item to purge
        item = None
        if self.trash is not None:
            names = await self.names.find(ctx, [table.key])
            alias = names[table.key].name if table.key in names else None
            item = await self.trash.put_table(ctx, table, alias)
        result = await ctx.db[TABLES].delete_one({"_id": table.id, "version": table.version})
        if not result.deleted_count:
            if self.trash is not None and item is not None:
                await self.trash.forget(ctx, item)
            raise StaleTableVersion()
        await tables_changed(ctx.tenant)
        # a write that validated against the definition and lands after this finds the table
        # gone when it settles, and removes its rows (crm_core/tables/fence.py)
        if item is None:
            await ctx.db.drop_collection(table.collection_name)
        await ordering.forget_table(ctx, table.key)
        for dependent in self.dependents:
            await dependent.table_deleted(ctx, table.key)
        await self._audit(ctx, "table.deleted", table)

    # ---- columns --------------------------------------------------------------------------

    async def add_column(
        self, ctx: TenantContext, table: Table, column_in: BaseModel, version: int | None
    ) -> NamedTable:
        async with stale_as_precondition(ctx, table, version):
            changed = await self._add_column(ctx, table, column_in, version)
        added = changed.columns[-1]
        await self._audit(ctx, "column.added", changed, added.key, {"type": added.type})
        return await self.named(ctx, changed)

    async def _add_column(
        self, ctx: TenantContext, table: Table, column_in: BaseModel, version: int | None
    ) -> Table:
        check_version(table, version)
        raw = column_in.model_dump()
        if table.column(raw["key"]) is not None:
            raise Conflict(
                f"Column '{raw['key']}' already exists",
                [{"field": "key", "message": "already exists"}],
            )
        if len(table.columns) >= MAX_COLUMNS:
            raise ValidationFailed.field("key", f"a table has at most {MAX_COLUMNS} columns")
        column = self._normalise_column(ctx, raw, "", None)
        _raise(await self._target_errors(ctx, column, table.key, ""))
        wanted = [*table.columns, column]
        column = (await settle_columns(ctx, self.types, table.key, wanted, subject=column.key))[-1]
        rows = table.collection(ctx)
        if column.required:
            if column.default is None:
                count = await rows.count_documents({})
                if count:
                    raise Conflict(
                        f"{count} rows would have no value for the required column "
                        f"'{column.key}'; give it a default",
                        [{"field": "default", "message": "required on a table with rows"}],
                    )
            else:
                stored = self.types.get(column.type).coerce(column, column.default, ctx.values)
                await rows.update_many({}, {"$set": {column.key: stored}})
        await self._create_indexes(ctx, table, column)
        numbered = self.types.get(column.type).numbered
        if numbered:
            await sequences.number_existing(ctx, table, column)
        try:
            # creates validated before this version take its default themselves (fence.settle)
            changes = {
                "columns": [*table.columns, column],
                f"revisions.{column.key}": table.version + 1,
            }
            saved = await save_definition(ctx, table, changes)
        except Conflict:
            # another change won: undo only what the definition that holds now does not use
            # (a concurrent add of the same column may have won with these indexes and numbers)
            stored = await self._indexes_as_stored(ctx, table, column.key)
            if numbered and stored is None:
                await rows.update_many({}, {"$unset": {column.key: ""}})
                await self._numbers_as_stored(ctx, table, column.key)
            raise
        await self._indexes_as_stored(ctx, saved, column.key)
        if numbered:  # rows created while the column was being added
            await sequences.number_existing(ctx, saved, column)
        return saved

    async def change_column(
        self, ctx: TenantContext, table: Table, key: str, patch: ColumnPatch, version: int | None
    ) -> NamedTable:
        """Changing the type converts every row, or answers 409 with what would fail
        (crm_core/tables/fence.py keeps writes of the column out meanwhile)."""
        async with stale_as_precondition(ctx, table, version):
            changed = await self._change_column(ctx, table, key, patch, version)
        fields = patch.model_dump(exclude_unset=True)
        await self._audit(ctx, "column.changed", changed, key, {"fields": sorted(fields)})
        return await self.named(ctx, changed)

    async def _change_column(
        self, ctx: TenantContext, table: Table, key: str, patch: ColumnPatch, version: int | None
    ) -> Table:
        check_version(table, version)
        current = table.column(key)
        if current is None:
            raise NotFound(f"Column '{key}' not found in table '{table.key}'")
        changes = patch.model_dump(exclude_unset=True)
        force = bool(changes.pop("force", False))
        merged = self._merge_patch(table, current, changes)
        column = self._normalise_column(ctx, merged, "", current)
        wanted = [column if c.key == key else c for c in table.columns]
        settled = await settle_columns(
            ctx, self.types, table.key, wanted, table.columns, subject=key
        )
        column = next(c for c in settled if c.key == key)
        new_type = self.types.get(column.type)
        removed = new_type.removed_values(current, column)
        if not removed and not new_type.needs_conversion(current, column):
            return await self._change_definition(ctx, table, current, column)
        # stored values change: fenced against row writes (crm_core/tables/fence.py)
        marked = await fence.begin(ctx, table, [key])
        try:
            await self._rewrite_values(ctx, marked, current, column, removed, force)
            await self._swap_indexes(ctx, marked, current, column)
        except BaseException:
            await fence.abort(ctx, marked)
            raise
        columns = [column if c.key == key else c for c in table.columns]
        updated = await fence.finish(ctx, marked, {"columns": columns})
        # the writes validated before the marker that landed during the conversion
        reason: SystemReason = (
            "column_type_changed" if current.type != column.type else "column_changed"
        )
        await convert_as_system(ctx, table, updated, [key], {key: {"$exists": True}}, reason)
        return updated

    async def _change_definition(
        self, ctx: TenantContext, table: Table, current: Column, column: Column
    ) -> Table:
        """A change that leaves the stored values as they are (name, flags, indexes)."""
        key = column.key
        if column.required and not current.required:
            missing = await table.collection(ctx).count_documents({key: {"$exists": False}})
            if missing:
                raise Conflict(
                    f"{missing} rows have no value for '{key}'",
                    [{"field": "required", "message": f"{missing} rows are empty"}],
                )
        await self._swap_indexes(ctx, table, current, column)
        columns = [column if c.key == key else c for c in table.columns]
        try:
            saved = await save_definition(ctx, table, {"columns": columns})
        except Conflict:
            await self._indexes_as_stored(ctx, table, key)
            raise
        await self._indexes_as_stored(ctx, saved, key)
        return saved

    async def _rewrite_values(
        self,
        ctx: TenantContext,
        table: Table,
        old: Column,
        new: Column,
        removed: list[Any],
        force: bool = False,
    ) -> None:
        """All or nothing: every value is converted first in memory; values that cannot be
        (unless `force`: then they are cleared), values that would repeat in a unique column,
        or rows a required column would leave empty answer 409 listing them with nothing
        changed. A write that fails half-way is undone value by value (each only if still what
        this change wrote)."""
        key = new.key
        rows = table.collection(ctx)
        plan = _Conversion(self.types, ctx, old, new, removed, force)
        updates: list[Rewrite] = []
        cleared: list[Rewrite] = []
        failures: list[str] = []
        reason = ""
        final: dict[Any, list[str]] = {}
        async for row in rows.find({key: {"$exists": True}}, {key: 1, REVISION_FIELD: 1}):
            value = row[key]
            target, ok = plan.target(value)
            if not ok and target is _CLEAR:
                cleared.append(plan.rewrite(row, None))
                continue
            if not ok:
                failures.append(str(row["_id"]))
                reason = reason or _reason(self.types, old, new, value, ctx)
                continue
            if new.unique:
                final.setdefault(_hashable(target), []).append(str(row["_id"]))
            if not fence.same_value(target, value):
                updates.append(plan.rewrite(row, target))
        if failures:
            raise _unconvertible(key, new.type, failures, reason)
        _raise_collisions(key, new.type, final)
        if new.required and not old.required:
            missing = await rows.count_documents({key: {"$exists": False}}) + len(cleared)
            if missing:
                raise Conflict(
                    f"{missing} rows have no value for '{key}'",
                    [{"field": "required", "message": f"{missing} rows are empty"}],
                )
        # each row's version goes up with its value, and it gets a system revision
        # (docs/history.md "Changes the server makes")
        change = SystemChange(
            ctx, table, plan.reason, plan.redo, write=update_each, batch=CONVERSION_BATCH
        )
        try:
            await change.apply(updates)
        except (DuplicateKeyError, BulkWriteError, OperationFailure) as exc:
            undone = plan.undo(change.applied)
            undo = SystemChange(
                ctx, table, "column_change_undone", undone, update_each, batch=CONVERSION_BATCH
            )
            await undo.apply([plan.inverse(r) for r in change.applied])
            log.warning("conversion of %s.%s undone: %s", table.key, key, exc)
            raise Conflict(
                f"Converting '{key}' failed half-way and was undone; nothing was changed",
                [{"field": key, "message": "a converted value collided with another row"}],
            ) from None
        await change.apply(cleared)

    async def _swap_indexes(
        self, ctx: TenantContext, table: Table, current: Column, column: Column
    ) -> None:
        """The indexes `column` needs are built before those only `current` had are dropped:
        a unique column is never without its unique index (409 listing repeated values when
        the stored data already breaks the uniqueness asked for; nothing changed)."""
        wanted, had = self._index_names(column), self._index_names(current)
        if wanted == had:
            return
        try:
            if wanted - had:
                await self._create_indexes(ctx, table, column)
        except Conflict as exc:
            exc.details = [{**exc.details[0], **await self._repeats(ctx, table, column.key)}]
            raise
        rows = table.collection(ctx)
        existing = await rows.index_information()
        for name in sorted(had - wanted):
            if name in existing:
                await rows.drop_index(name)

    def _index_names(self, column: Column) -> set[str]:
        if column.unique:
            return {unique_index_name(column.key)}
        if self.types.get(column.type).plain_index(column):
            return {plain_index_name(column.key)}
        return set()

    async def _repeats(self, ctx: TenantContext, table: Table, key: str) -> dict[str, Any]:
        """How many stored values repeat and the first of them, with their rows."""
        pipeline: list[dict[str, Any]] = [
            {"$match": {key: {"$exists": True}}},
            {"$group": {"_id": f"${key}", "n": {"$sum": 1}, "ids": {"$push": "$_id"}}},
            {"$match": {"n": {"$gt": 1}}},
            {"$sort": {"n": -1}},
        ]
        groups = await table.collection(ctx).aggregate(pipeline).to_list(None)
        if not groups:
            return {}
        return {
            "repeated_values": len(groups),
            "value": groups[0]["_id"],
            "row_ids": [str(i) for i in groups[0]["ids"][:SAMPLE_IDS]],
        }

    async def delete_column(
        self, ctx: TenantContext, table: Table, key: str, version: int | None
    ) -> NamedTable:
        async with stale_as_precondition(ctx, table, version):
            changed = await self._delete_column(ctx, table, key, version)
        await self._audit(ctx, "column.deleted", changed, key)
        return await self.named(ctx, changed)

    async def _delete_column(
        self, ctx: TenantContext, table: Table, key: str, version: int | None
    ) -> Table:
        check_version(table, version)
        column = table.column(key)
        if column is None:
            raise NotFound(f"Column '{key}' not found in table '{table.key}'")
        if column.predefined:
            raise Conflict(f"'{key}' is a predefined column of '{table.key}' and cannot be removed")
        columns = [c for c in table.columns if c.key != key]
        await settle_columns(ctx, self.types, table.key, columns, table.columns)
        # the item first, the values after the definition no longer has the column (no write
        # sets it then): a crash in between leaves the values in the rows, where the restore
        # finds them too
        item = None
        if self.trash is not None:
            names = await self.names.find(ctx, [table.key])
            alias = names[table.key].columns.get(key) if table.key in names else None
            item = await self.trash.put_column(ctx, table, column, alias)
        try:
            # writes validated before this version remove their values themselves
            # (crm_core/tables/fence.py `settle`)
            changes = {"columns": columns, f"revisions.{key}": table.version + 1}
            updated = await save_definition(ctx, table, changes)
        except StaleTableVersion:
            if self.trash is not None and item is not None:
                await self.trash.forget(ctx, item)
            raise
        if self.trash is not None and item is not None:
            await self.trash.copy_values(ctx, table, item)
        await table.collection(ctx).update_many({key: {"$exists": True}}, {"$unset": {key: ""}})
        await self._drop_indexes(ctx, table, key)
        await ordering.forget_column(ctx, table.key, key)
        for dependent in self.dependents:
            await dependent.column_deleted(ctx, table.key, key)
        return updated

    # ---- back from the trash (crm_core/tables/trash.py `SchemaRestorer`) -------------------

    async def restore_column(
        self, ctx: TenantContext, table: Table, item: dict[str, Any], values: list[dict[str, Any]]
    ) -> Table:
        """The column's values go back into the rows that still exist and have none (a crash
        during the delete may have left some there), its indexes are built, then the
        definition gets it back; its display name comes back where none was set since."""
        column = Column.from_doc(item["doc"])
        if table.column(column.key) is not None:
            raise Conflict(
                f"A column '{column.key}' was added to '{table.key}' since; rename it first",
                [{"field": "column", "message": f"'{column.key}' exists again"}],
            )
        if len(table.columns) >= MAX_COLUMNS:
            raise Conflict(f"Table '{table.key}' has {MAX_COLUMNS} columns already")
        errors = await self._target_errors(ctx, column, table.key, "")
        if errors:
            raise Conflict(f"The column links to {errors[0]['message']}", errors)
        key = column.key
        rows = table.collection(ctx)
        for start in range(0, len(values), CONVERSION_BATCH):
            await update_each(
                rows,
                [
                    ({"_id": v["row"], key: {"$exists": False}}, {"$set": {key: v["value"]}})
                    for v in values[start : start + CONVERSION_BATCH]
                ],
            )
        await self._create_indexes(ctx, table, column)
        try:
            updated = await save_definition(ctx, table, {"columns": [*table.columns, column]})
        except Conflict:
            await self._indexes_as_stored(ctx, table, key)
            raise
        await self._indexes_as_stored(ctx, updated, key)
        if item.get("alias"):
            await ctx.db[ALIASES].update_one(
                {"table": table.key, f"columns.{key}": {"$exists": False}},
                {"$set": {f"columns.{key}": item["alias"]}},
            )
        await self._audit(ctx, "column.restored", updated, key)
        return updated

    async def restore_table(self, ctx: TenantContext, item: dict[str, Any]) -> Table:
        """The definition back under its id (its rows never left their collection, indexes
        included), one version on; then its shares, display names, views and orders."""
        doc = dict(item["doc"])
        key = doc["key"]
        if await ctx.db[TABLES].find_one({"key": key}, {"_id": 1}):
            raise Conflict(
                f"A table '{key}' was created since; delete or rename it first",
                [{"field": "key", "message": f"'{key}' is taken"}],
            )
        doc["version"] = int(doc.get("version") or 0) + 1
        doc["updated_at"] = utcnow()
        try:
            await ctx.db[TABLES].insert_one(doc)
        except DuplicateKeyError:
            raise _table_exists(key) from None
        for name in KEPT_WITH_TABLE:
            kept = (item.get("kept") or {}).get(name) or []
            if kept:
                try:
                    await ctx.db[name].insert_many(kept, ordered=False)
                except BulkWriteError:
                    pass  # one made again since (a share, a display name): kept as it is now
        await tables_changed(ctx.tenant)
        table = Table(doc, self.types)
        await self._audit(ctx, "table.restored", table)
        return table

    # ---- the caller's view ----------------------------------------------------------------

    @staticmethod
    async def view(ctx: TenantContext, table: Table) -> dict[str, list[str]]:
        """The caller's column order and hidden columns (crm_core/tables/ordering.py)."""
        return await ordering.get_view(ctx, table)

    @staticmethod
    async def save_view(
        ctx: TenantContext, table: Table, column_order: list[str], hidden: list[str]
    ) -> dict[str, list[str]]:
        """Replace the caller's own view; unknown or repeated keys are a 400."""
        return await ordering.put_view(ctx, table, column_order, hidden)

    # ---- helpers --------------------------------------------------------------------------

    def _merge_patch(
        self, table: Table, current: Column, changes: dict[str, Any]
    ) -> dict[str, Any]:
        """The column definition a PATCH asks for (checked and normalised afterwards): what a
        type change drops (the settings the new type has not, the default) and what it may not
        do. Settings given replace the current ones (a select's `options` list)."""
        key = current.key
        new_name = changes.get("type") or current.type
        if current.predefined and new_name != current.type:
            raise Conflict(f"'{key}' is a predefined column: its type cannot change")
        if new_name not in self.types:  # pragma: no cover - the model admits registered types
            raise ValidationFailed.field("type", "unknown column type")
        new_type = self.types.get(new_name)
        if new_name != current.type and (
            new_type.references or table.column_type(current).references
        ):
            raise ValidationFailed.field(
                "type", "link and user columns cannot change type; add a new column instead"
            )
        if new_name != current.type:
            try:
                new_type.check_change_from(current)
            except DefinitionError as exc:
                raise ValidationFailed.field(exc.field, str(exc)) from None
        # a field given as null clears it, except `options` (null: keep the list)
        merged = {**current.to_doc(), **{k: v for k, v in changes.items() if k != "options"}}
        if changes.get("options") is not None:
            merged["options"] = changes["options"]
        merged["type"] = new_name
        own = new_type.settings_fields()
        every = dict.fromkeys(
            [*SETTINGS_FIELDS, *(n for t in self.types for n in t.settings_fields())]
        )
        for name in every:
            if name in own:
                continue
            if changes.get(name):
                having = sorted(t.name for t in self.types if name in t.settings_fields())
                raise ValidationFailed.field(
                    name, f"only {', '.join(having) or 'no'} columns have {name}"
                )
            merged.pop(name, None)
        if new_name != current.type and "default" not in changes:
            merged["default"] = None
        return merged

    def _normalise_column(
        self, ctx: TenantContext, raw: dict[str, Any], path: str, previous: Column | None
    ) -> Column:
        prefix = f"{path}." if path else ""
        key = raw["key"]
        if key in RESERVED_COLUMN_KEYS:
            raise ValidationFailed.field(f"{prefix}key", f"'{key}' is reserved")
        column_type = self.types.get(raw["type"])
        try:
            settings = column_type.normalise_settings(raw, previous)
        except DefinitionError as exc:
            raise ValidationFailed.field(f"{prefix}{exc.field}", str(exc)) from None
        for index, name in enumerate(settings.get("validators") or []):
            if name not in self.validators or not self.validators.get(name).accepts(column_type):
                raise ValidationFailed.field(
                    f"{prefix}validators.{index}",
                    f"no validator '{name[:32]}' for {raw['type']} columns "
                    f"(known: {', '.join(self.validators.names())})",
                )
        if settings.get("validators"):
            settings["validators"] = list(dict.fromkeys(settings["validators"]))
        column = Column.from_doc(
            {
                "key": key,
                "name": raw.get("name") or key,
                "type": raw["type"],
                "required": bool(raw.get("required")),
                "unique": bool(raw.get("unique")),
                "indexed": bool(raw.get("indexed")),
                "default": raw.get("default"),
                **settings,
                # built-in columns keep their mark through edits
                **({"predefined": True} if raw.get("predefined") else {}),
            }
        )
        if column.unique and not column_type.unique_values:
            raise ValidationFailed.field(
                f"{prefix}unique", f"{raw['type']} columns cannot be unique"
            )
        try:
            column_type.check_definition(column, ctx.values)
        except DefinitionError as exc:
            raise ValidationFailed.field(f"{prefix}{exc.field}", str(exc)) from None
        if column.default is not None:
            try:
                column_type.coerce(column, column.default, ctx.values)
            except ColumnValueError as exc:
                raise ValidationFailed.field(f"{prefix}default", str(exc)) from None
        return column

    async def _target_errors(
        self, ctx: TenantContext, column: Column, table_key: str, path: str
    ) -> list[dict[str, Any]]:
        """A reference to another table's rows needs that table (a table may refer to itself:
        it is being created or exists)."""
        target = self.types.get(column.type).target_table(column)
        if target is None or target == table_key:
            return []
        if await ctx.db[TABLES].count_documents({"key": target}, limit=1):
            return []
        prefix = f"{path}." if path else ""
        return [{"field": f"{prefix}table", "message": f"no table '{target}'"}]

    async def _create_indexes(self, ctx: TenantContext, table: Table, column: Column) -> None:
        rows = table.collection(ctx)
        key = column.key
        try:
            if column.unique:
                # rows without a value do not collide with each other. `(key)` alone, unlike
                # a plain index: unique values have no ties for `_id` to break, and the index
                # is partial (rows without a value are not in it), so it serves lookups and
                # ranges on the column, never a page sorted over every row anyway
                await rows.create_index(
                    [(key, ASCENDING)],
                    name=unique_index_name(key),
                    unique=True,
                    **skip_missing_index_options(rows, key),
                )
            elif self.types.get(column.type).plain_index(column):
                await rows.create_index(plain_index_keys(key), name=plain_index_name(key))
        except (DuplicateKeyError, OperationFailure):
            raise Conflict(
                f"Column '{key}' has duplicate values; it cannot be unique",
                [{"field": "unique", "message": "existing rows repeat values"}],
            ) from None

    async def _drop_indexes(
        self, ctx: TenantContext, table: Table, key: str, keep: frozenset[str] = frozenset()
    ) -> None:
        rows = table.collection(ctx)
        existing = await rows.index_information()
        for name in (unique_index_name(key), plain_index_name(key)):
            if name in existing and name not in keep:
                with contextlib.suppress(OperationFailure):  # dropped by a concurrent change
                    await rows.drop_index(name)

    async def _stored_column(self, ctx: TenantContext, table: Table, key: str) -> Column | None:
        doc = await ctx.db[TABLES].find_one({"_id": table.doc["_id"]})
        return None if doc is None else Table(doc, self.types).column(key)

    async def _indexes_as_stored(self, ctx: TenantContext, table: Table, key: str) -> Column | None:
        """The column's indexes as the stored definition wants them, after a change of it was
        saved or lost to a concurrent one; answers the stored column (None: not there).

        Concurrent changes of one column (two adds, two restores, two PATCHes) each build
        indexes before their optimistic save, so the loser must not drop what the winner's
        definition uses. The loser reads the definition, drops the rest, then reads it again
        and builds what it wants now; the winner builds them after its save. Whichever order
        the steps run in, the last one leaves the indexes the stored column needs."""
        stored = await self._stored_column(ctx, table, key)
        keep = frozenset(self._index_names(stored)) if stored is not None else frozenset()
        await self._drop_indexes(ctx, table, key, keep)
        stored = await self._stored_column(ctx, table, key)
        if stored is not None:
            with contextlib.suppress(Conflict):  # values repeated meanwhile: kept as they are
                await self._create_indexes(ctx, table, stored)
        return stored

    async def _numbers_as_stored(self, ctx: TenantContext, table: Table, key: str) -> None:
        """After a lost add of a numbered column cleared its numbers: a concurrent add of the
        same column that won meanwhile numbers the rows left without (the winner numbers once
        more after its save too)."""
        doc = await ctx.db[TABLES].find_one({"_id": table.doc["_id"]})
        if doc is None:
            return
        stored = Table(doc, self.types)
        column = stored.column(key)
        if column is not None and stored.column_type(column).numbered:
            await sequences.number_existing(ctx, stored, column)


def _hashable(value: object) -> object:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def _reason(
    types: Registry[ColumnType], old: Column, new: Column, value: object, ctx: TenantContext
) -> str:
    try:
        types.get(new.type).convert(types.get(old.type), old, new, value, ctx.values)
    except ColumnValueError as exc:
        return str(exc)
    except (KeyError, TypeError, ValueError):
        pass
    return f"cannot be converted to {new.type}"


def _unconvertible(key: str, new_type: str, failures: list[str], reason: str) -> Conflict:
    """409: values that cannot convert, how many, the first rows and why."""
    return Conflict(
        f"{len(failures)} rows cannot be converted to {new_type}; nothing was changed "
        "(with force: true their values are cleared)",
        [
            {
                "field": key,
                "message": reason,
                "failed_rows": len(failures),
                "row_ids": failures[:SAMPLE_IDS],
            }
        ],
    )


def _raise_collisions(key: str, new_type: str, final: dict[Any, list[str]]) -> None:
    """409 when converted values of a unique column would repeat."""
    collisions = {v: ids for v, ids in final.items() if len(ids) > 1}
    if collisions:
        first = next(iter(collisions.items()))
        raise Conflict(
            f"{len(collisions)} values of unique column '{key}' would repeat after the "
            f"conversion to {new_type}; nothing was changed",
            [
                {
                    "field": key,
                    "message": "converted values would repeat",
                    "repeated_values": len(collisions),
                    "value": first[0] if not isinstance(first[0], tuple) else list(first[0]),
                    "row_ids": first[1][:SAMPLE_IDS],
                }
            ],
        )


def _raise(errors: list[dict[str, Any]]) -> None:
    if errors:
        raise ValidationFailed(f"{errors[0]['field']}: {errors[0]['message']}", errors)


def _table_exists(key: str) -> Conflict:
    return Conflict(
        f"A table with key '{key}' already exists", [{"field": "key", "message": "already exists"}]
    )


_CLEAR = object()  # a value a conversion clears (an option removed, or `force`)


class _Conversion:
    """One column change's rewrite of a stored value (`MetaService._rewrite_values`): what it
    becomes, the row's `Rewrite` (its version goes up, a system revision), and the undo."""

    def __init__(
        self,
        types: Registry[ColumnType],
        ctx: TenantContext,
        old: Column,
        new: Column,
        removed: list[Any],
        force: bool,
    ) -> None:
        self.types, self.ctx, self.old, self.new = types, ctx, old, new
        self.removed, self.force = removed, force
        self.reason: SystemReason = (
            "column_type_changed" if old.type != new.type else "column_changed"
        )

    def target(self, value: object) -> tuple[object, bool]:
        """(the value in the new form, True); (_CLEAR, False) when it is cleared; (None,
        False) when it cannot be converted."""
        if value in self.removed:
            return _CLEAR, False
        old_type = self.types.get(self.old.type)
        if fence.holds(self.types, self.new, value, self.ctx) and not old_type.needs_conversion(
            self.old, self.new
        ):
            return value, True
        target, ok = fence.convert_one(self.types, self.old, self.new, value, self.ctx)
        if not ok and self.force:
            return _CLEAR, False
        return target, ok

    def rewrite(self, row: dict[str, Any], target: object) -> Rewrite:
        """`target` None: the value is cleared."""
        key, value = self.new.key, row[self.new.key]
        change = {
            "before": render_stored(self.types, self.old, value),
            "after": render_stored(self.types, self.new, target),
        }
        return Rewrite(
            row=row["_id"],
            version=row_version(row),
            expect={key: value},
            set={} if target is None else {key: target},
            unset=(key,) if target is None else (),
            changes={key: change},
        )

    def redo(self, row: dict[str, Any]) -> Rewrite | None:
        """A row written while the conversion ran, read again: its rewrite now (None: its
        value is already in the new form, or cannot be held; the pass after the swap,
        `convert_as_system`, takes care of that one)."""
        if self.new.key not in row:
            return None
        value = row[self.new.key]
        target, ok = self.target(value)
        if not ok:
            return self.rewrite(row, None) if target is _CLEAR else None
        return None if fence.same_value(target, value) else self.rewrite(row, target)

    def inverse(self, done: Rewrite) -> Rewrite:
        """The undo of a conversion that stands (the value back, its version one more)."""
        key = self.new.key
        before = done.changes[key]
        return Rewrite(
            row=done.row,
            version=done.version + 1,
            expect={key: done.set[key]},
            set={key: done.expect[key]},
            unset=(),
            changes={key: {"before": before["after"], "after": before["before"]}},
        )

    def undo(self, applied: list[Rewrite]) -> Redo:
        """For a converted row written again before the undo reached it: its value goes back
        only while it is still the converted one."""
        by_row = {r.row: r for r in applied}
        key = self.new.key

        def again(row: dict[str, Any]) -> Rewrite | None:
            done = by_row.get(row["_id"])
            if done is None or key not in row or not fence.same_value(row[key], done.set[key]):
                return None
            return dataclasses.replace(self.inverse(done), version=row_version(row))

        return again


async def convert_as_system(
    ctx: TenantContext,
    old: Table,
    new: Table,
    keys: list[str],
    query: dict[str, Any],
    reason: SystemReason,
) -> list[tuple[ObjectId, str]]:
    """`fence.convert_values` as a server-made change (the change's own pass after the swap):
    each row's version goes up and it gets a system revision (history.py `SystemChange`),
    by batches; a value the new type cannot hold, or that another row holds in a unique
    column, is removed. Answers those as (row id, key)."""
    pairs = [(b, a) for b, a in ((old.column(k), new.column(k)) for k in keys) if b and a]

    def plan(row: dict[str, Any]) -> Rewrite | None:
        expect: dict[str, Any] = {}
        values: dict[str, Any] = {}
        changes: dict[str, dict[str, object]] = {}
        for before, after in pairs:
            if after.key not in row or fence.holds(new.types, after, row[after.key], ctx):
                continue
            value = row[after.key]
            target, ok = fence.convert_one(old.types, before, after, value, ctx)
            if ok and fence.same_value(target, value):
                continue
            expect[after.key] = value
            if ok:
                values[after.key] = target
            changes[after.key] = {
                "before": render_stored(old.types, before, value),
                "after": render_stored(new.types, after, target) if ok else None,
            }
        if not expect:
            return None
        unset = tuple(k for k in expect if k not in values)
        return Rewrite(row["_id"], row_version(row), expect, values, unset, changes)

    def without_values(rewrite: Rewrite) -> Rewrite:
        """A converted value another row holds in a unique column: not kept."""
        changes = {k: {**c, "after": None} for k, c in rewrite.changes.items()}
        return dataclasses.replace(rewrite, set={}, unset=tuple(rewrite.expect), changes=changes)

    projection = {**dict.fromkeys(keys, 1), REVISION_FIELD: 1}
    rewrites = [
        r for r in [plan(row) async for row in new.collection(ctx).find(query, projection)] if r
    ]
    change = SystemChange(ctx, new, reason, plan)
    applied = await change.apply(rewrites, duplicate=without_values)
    dropped = [(r.row, k) for r in applied for k in r.unset]
    for row_id, key in dropped:
        log.warning(
            "table %s row %s: a value of '%s' written against the old type was not kept",
            new.key,
            row_id,
            key,
        )
    return dropped
