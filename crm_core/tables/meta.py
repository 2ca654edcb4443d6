"""The table constructor (SPEC §5): create, rename and delete tables; add, change and delete
columns, converting every row when a column changes type."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from bson import ObjectId
from pydantic import BaseModel

from crm_core.cache import tables_changed
from crm_core.columns import (
    SETTINGS_FIELDS,
    Column,
    ColumnType,
    ColumnValueError,
    DefinitionError,
    referring_query,
)
from crm_core.context import TenantContext
from crm_core.errors import Conflict, NotFound, ValidationFailed
from crm_core.registry import Registry
from crm_core.storage import (
    ASCENDING,
    DuplicateKeyError,
    OperationFailure,
    skip_missing_index_options,
    update_each,
)
from crm_core.tables import ordering
from crm_core.tables.access import visible_filter
from crm_core.tables.definitions import (
    RESERVED_COLUMN_KEYS,
    TABLES,
    Table,
    check_version,
    save_definition,
    utcnow,
)
from crm_core.validators import ColumnValidator
from models.tables import MAX_COLUMNS, ColumnPatch, TableIn, column_models

log = logging.getLogger(__name__)

CONVERSION_BATCH = 1000
SAMPLE_IDS = 5


def unique_index_name(key: str) -> str:
    return f"u_{key}"


def plain_index_name(key: str) -> str:
    return f"i_{key}"


class TableDependents(Protocol):
    """A domain that keeps data about tables (shares, display names): told when a table or a
    column goes, so nothing about it stays behind."""

    async def table_deleted(self, ctx: TenantContext, table_key: str) -> None: ...

    async def column_deleted(self, ctx: TenantContext, table_key: str, column_key: str) -> None: ...


class MetaService:
    def __init__(
        self,
        types: Registry[ColumnType],
        validators: Registry[ColumnValidator],
        dependents: Sequence[TableDependents] = (),
    ) -> None:
        self.types = types
        self.validators = validators
        self.dependents = dependents
        self.models = column_models(types)  # the body models of the table constructor

    # ---- tables ---------------------------------------------------------------------------

    async def list_tables(self, ctx: TenantContext) -> list[Table]:
        query = await visible_filter(ctx)
        docs = await ctx.db[TABLES].find(query).sort("key", ASCENDING).to_list(None)
        return [Table(doc, self.types) for doc in docs]

    async def create_table(self, ctx: TenantContext, data: TableIn) -> Table:
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
        now = utcnow()
        doc = {
            "_id": ObjectId(),
            "key": data.key,
            "name": data.name or data.key,
            "builtin": False,
            "owner_id": ctx.user_id,
            "version": 1,
            "columns": [c.to_doc() for c in columns],
            "created_at": now,
            "updated_at": now,
        }
        if await ctx.db[TABLES].find_one({"key": data.key}, {"_id": 1}):
            raise _table_exists(data.key)
        try:
            await ctx.db[TABLES].insert_one(doc)
            await tables_changed(ctx.tenant)
        except DuplicateKeyError:
            raise _table_exists(data.key) from None
        table = Table(doc, self.types)
        # a leftover collection of a deleted table must not leak rows into the new one
        await ctx.db.drop_collection(data.key)
        await ctx.db.create_collection(data.key)
        for column in columns:
            await self._create_indexes(ctx, table, column)
        log.info("tenant %s created table %s", ctx.tenant_id, data.key)
        return table

    async def rename_table(
        self, ctx: TenantContext, table: Table, name: str | None, version: int | None
    ) -> Table:
        check_version(table, version)
        if name is None:
            return table
        return await save_definition(ctx, table, {"name": name})

    async def delete_table(self, ctx: TenantContext, table: Table, version: int | None) -> None:
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
        result = await ctx.db[TABLES].delete_one({"_id": table.doc["_id"]})
        if result.deleted_count:
            await tables_changed(ctx.tenant)
            await ctx.db.drop_collection(table.key)
            await ordering.forget_table(ctx, table.key)
            for dependent in self.dependents:
                await dependent.table_deleted(ctx, table.key)

    # ---- columns --------------------------------------------------------------------------

    async def add_column(
        self, ctx: TenantContext, table: Table, column_in: Any, version: int | None
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
        try:
            return await save_definition(ctx, table, {"columns": [*table.columns, column]})
        except Conflict:
            await self._drop_indexes(ctx, table, column.key)
            raise

    async def change_column(
        self, ctx: TenantContext, table: Table, key: str, patch: ColumnPatch, version: int | None
    ) -> Table:
        check_version(table, version)
        current = table.column(key)
        if current is None:
            raise NotFound(f"Column '{key}' not found in table '{table.key}'")
        changes = patch.model_dump(exclude_unset=True)
        merged = self._merge_patch(table, current, changes)
        column = self._normalise_column(ctx, merged, "", current)
        new_type = self.types.get(column.type)
        rows = table.collection(ctx)

        removed = new_type.removed_values(current, column)
        if removed:
            await rows.update_many({key: {"$in": removed}}, {"$unset": {key: ""}})
        if new_type.needs_conversion(current, column):
            await self._convert_rows(ctx, table, current, column)
        if column.required and not current.required:
            missing = await rows.count_documents({key: {"$exists": False}})
            if missing:
                raise Conflict(
                    f"{missing} rows have no value for '{key}'",
                    [{"field": "required", "message": f"{missing} rows are empty"}],
                )
        if (column.unique, column.indexed) != (current.unique, current.indexed):
            await self._drop_indexes(ctx, table, key)
            try:
                await self._create_indexes(ctx, table, column)
            except Conflict:
                await self._create_indexes(ctx, table, current)
                raise
        columns = [column if c.key == key else c for c in table.columns]
        return await save_definition(ctx, table, {"columns": columns})

    async def delete_column(
        self, ctx: TenantContext, table: Table, key: str, version: int | None
    ) -> Table:
        check_version(table, version)
        column = table.column(key)
        if column is None:
            raise NotFound(f"Column '{key}' not found in table '{table.key}'")
        if column.predefined:
            raise Conflict(f"'{key}' is a predefined column of '{table.key}' and cannot be removed")
        columns = [c for c in table.columns if c.key != key]
        updated = await save_definition(ctx, table, {"columns": columns})
        await table.collection(ctx).update_many({key: {"$exists": True}}, {"$unset": {key: ""}})
        await self._drop_indexes(ctx, table, key)
        await ordering.forget_column(ctx, table.key, key)
        for dependent in self.dependents:
            await dependent.column_deleted(ctx, table.key, key)
        return updated

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

    async def _convert_rows(
        self, ctx: TenantContext, table: Table, old: Column, new: Column
    ) -> None:
        """Convert every stored value or change nothing and answer 409 with the failures."""
        key = new.key
        old_type, new_type = table.column_type(old), self.types.get(new.type)
        rows = table.collection(ctx)
        updates: list[tuple[dict[str, Any], dict[str, Any]]] = []
        failures = 0
        sample: list[str] = []
        reason = ""
        cursor = rows.find({key: {"$exists": True}}, {key: 1})
        async for row in cursor:
            try:
                value = new_type.coerce(
                    new, old_type.export_value(old, row[key]), ctx.values, lenient=True
                )
            except ColumnValueError as exc:
                failures += 1
                reason = reason or str(exc)
                if len(sample) < SAMPLE_IDS:
                    sample.append(str(row["_id"]))
                continue
            if value != row[key] or type(value) is not type(row[key]):
                updates.append(({"_id": row["_id"]}, {"$set": {key: value}}))
        if failures:
            raise Conflict(
                f"{failures} rows cannot be converted to {new.type}; nothing was changed",
                [{"field": key, "message": reason, "failed_rows": failures, "row_ids": sample}],
            )
        for start in range(0, len(updates), CONVERSION_BATCH):
            await update_each(rows, updates[start : start + CONVERSION_BATCH], ordered=False)

    async def _create_indexes(self, ctx: TenantContext, table: Table, column: Column) -> None:
        rows = table.collection(ctx)
        key = column.key
        try:
            if column.unique:
                # rows without a value do not collide with each other
                await rows.create_index(
                    [(key, ASCENDING)],
                    name=unique_index_name(key),
                    unique=True,
                    **skip_missing_index_options(rows, key),
                )
            elif self.types.get(column.type).plain_index(column):
                await rows.create_index([(key, ASCENDING)], name=plain_index_name(key))
        except (DuplicateKeyError, OperationFailure):
            raise Conflict(
                f"Column '{key}' has duplicate values; it cannot be unique",
                [{"field": "unique", "message": "existing rows repeat values"}],
            ) from None

    async def _drop_indexes(self, ctx: TenantContext, table: Table, key: str) -> None:
        rows = table.collection(ctx)
        existing = await rows.index_information()
        for name in (unique_index_name(key), plain_index_name(key)):
            if name in existing:
                await rows.drop_index(name)


def _raise(errors: list[dict[str, Any]]) -> None:
    if errors:
        raise ValidationFailed(f"{errors[0]['field']}: {errors[0]['message']}", errors)


def _table_exists(key: str) -> Conflict:
    return Conflict(
        f"A table with key '{key}' already exists", [{"field": "key", "message": "already exists"}]
    )
