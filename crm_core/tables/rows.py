"""Rows of a table (docs/api.md "Rows"): validation against the columns, CRUD, bulk, sorted
pages."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, NoReturn

from bson import ObjectId

from crm_core.accounts.context import TenantContext
from crm_core.platform.cursors import (
    PageCursors,
    PageScope,
    after,
    check_offset,
    merge_after,
    next_cursor,
)
from crm_core.platform.errors import Conflict, NotFound, ValidationFailed
from crm_core.platform.ids import object_id
from crm_core.platform.registry import Registry
from crm_core.platform.storage import (
    ASCENDING,
    DESCENDING,
    BulkWriteError,
    DuplicateKeyError,
    query_purpose,
    update_each,
)
from crm_core.platform.versions import PreconditionFailed
from crm_core.tables import fence, ordering, upsert
from crm_core.tables.access import Level, access_level
from crm_core.tables.bodies import (
    BulkCreateIn,
    BulkDeleteIds,
    BulkDeleteWhere,
    BulkUpdateItems,
    BulkUpdateWhere,
    RowListQuery,
)
from crm_core.tables.columns import (
    Column,
    ColumnType,
    ColumnValueError,
    referring_query,
)
from crm_core.tables.computed import pipeline as computed
from crm_core.tables.definitions import SYSTEM_FIELDS, TABLES, Table, load_table, utcnow
from crm_core.tables.filters import FilterBuilder, FilterEnv
from crm_core.tables.history import (
    HISTORY_ORDER,
    UNRECORDED_FIELD,
    Action,
    Change,
    ChangeLog,
    RowEvents,
    render_row,
    roll_back,
    unlink,
)
from crm_core.tables.ordering import forget_rows, manual_page
from crm_core.tables.references import VisibleReferences
from crm_core.tables.sequences import number_rows
from crm_core.tables.trash import RowTrash, TrashSettings
from crm_core.tables.updates import (
    REVISION_FIELD,
    VERSION_FIELD,
    at_version,
    row_version,
    set_unset,
    unique_conflict,
    written_row,
)
from crm_core.tables.validators import ColumnValidator
from models.history import HistoryQuery

log = logging.getLogger(__name__)
EVENT_CHUNK = 500  # rows read per round when a by-filter write must tell webhooks what changed
WRITE_MARK = "_write_"  # `_write_<id>` on a row: written by that update-by-filter (a moment)

# the filter and sort of these queries are the client's (audited apart:
# crm_core/platform/indexes.py)
CLIENT_QUERY = "rows.client_query"

SORT_FIELDS = {"id": "_id", "_id": "_id", **{f: f for f in SYSTEM_FIELDS}}


def parse_row_id(row_id: object) -> ObjectId:
    return object_id(row_id, "Row")


class RowValues:
    """Checks a row body against the table's columns, collecting every error."""

    def __init__(
        self,
        table: Table,
        ctx: TenantContext,
        path: str = "",
        validators: Registry[ColumnValidator] | None = None,
        lenient: bool = False,
    ) -> None:
        self.table = table
        self.ctx = ctx
        self.path = path
        self.validators = validators
        self.lenient = lenient  # the typecast of file imports: "42" is 42, labels are options
        self.errors: list[dict[str, Any]] = []

    def _error(self, field: str, message: str) -> None:
        self.errors.append({"field": f"{self.path}{field}", "message": message})

    def _coerce(self, column: Column, value: object) -> object:
        try:
            stored = self.table.column_type(column).coerce(
                column, value, self.ctx.values, lenient=self.lenient
            )
            for name in column.validators or ():
                if self.validators is not None and name in self.validators:
                    self.validators.get(name).check(stored)
            return stored
        except ColumnValueError as exc:
            self._error(column.key, str(exc))
            return None

    def for_create(self, body: object) -> dict[str, Any]:
        if not isinstance(body, dict):
            self._error("", "must be a JSON object")
            return {}
        values = self._known(body)
        doc: dict[str, Any] = {}
        for column in self.table.columns:
            key = column.key
            value = values.get(key)
            if value is None and column.default is not None:
                value = column.default
            if value is None:
                if column.required:
                    self._error(key, "is required")
                continue
            stored = self._coerce(column, value)
            if stored is not None:
                doc[key] = stored
        return doc

    def for_update(self, body: object) -> tuple[dict[str, Any], list[str]]:
        if not isinstance(body, dict):
            self._error("", "must be a JSON object")
            return {}, []
        values = self._known(body)
        set_values: dict[str, Any] = {}
        unset: list[str] = []
        for key, value in values.items():
            column = self.table.column(key)
            assert column is not None
            if value is None:
                if column.required:
                    self._error(key, "is required and cannot be cleared")
                else:
                    unset.append(key)
                continue
            stored = self._coerce(column, value)
            if stored is not None:
                set_values[key] = stored
        return set_values, unset

    def _known(self, body: dict[str, Any]) -> dict[str, Any]:
        known = {}
        for key, value in body.items():
            column = self.table.column(key)
            if column is not None and self.table.column_type(column).computed:
                self._error(key, "is a computed column and read-only")
                continue
            if column is None:
                if key == VERSION_FIELD:
                    self._error(key, "is read-only; send the version as If-Match")
                elif key == "id" or key in SYSTEM_FIELDS:
                    self._error(key, "is read-only")
                else:
                    self._error(key, "unknown column")
                continue
            if self.table.column_type(column).numbered:
                self._error(key, "is read-only: the server numbers new rows")
                continue
            known[key] = value
        return known

    def raise_if_invalid(self) -> None:
        if self.errors:
            first = self.errors[0]
            raise ValidationFailed(f"{first['field']}: {first['message']}", self.errors)


def _referenced(value: object) -> list[Any]:
    """The references a stored value holds: none, one, or a list's items (attachments)."""
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


MAX_SORT_KEYS = 5


class RowService:
    """Row operations; the caller has already checked the table access level."""

    def __init__(
        self,
        types: Registry[ColumnType],
        filters: FilterBuilder,
        validators: Registry[ColumnValidator],
        events: RowEvents | None = None,
        trash: RowTrash | None = None,
        cursors: PageCursors | None = None,
    ) -> None:
        self.cursors = cursors or PageCursors.ephemeral()
        self.types = types
        self.filters = filters
        self.validators = validators
        self.events = events
        self.changes = ChangeLog(events)  # every row change is recorded and told from here
        self.trash = trash or RowTrash(TrashSettings())

    def checker(
        self, table: Table, ctx: TenantContext, path: str = "", lenient: bool = False
    ) -> RowValues:
        return RowValues(table, ctx, path, self.validators, lenient)

    async def check_rules(
        self,
        ctx: TenantContext,
        table: Table,
        docs: list[tuple[str, dict[str, Any]]],
        whole_rows: bool = True,
    ) -> None:
        """What single values cannot tell: references to rows and users that must exist (and
        be visible to the caller), and a table's 'at least one of' rules. `docs` pairs each
        document (complete, as it will be stored) with the path its errors are reported at."""
        errors: list[dict[str, Any]] = []
        refs = VisibleReferences(ctx, self.types)
        for column in table.columns:
            column_type = table.column_type(column)
            if not column_type.references:
                continue
            key = column.key
            values = {v for _, doc in docs for v in _referenced(doc.get(key))}
            if not values:
                continue
            missing = await column_type.missing_references(refs, column, list(values))
            message = column_type.missing_reference_message(column)
            errors += [
                {"field": f"{path}{key}", "message": message}
                for path, doc in docs
                if any(v in missing for v in _referenced(doc.get(key)))
            ]
        for group in table.doc.get("require_any") or [] if whole_rows else []:
            for path, doc in docs:
                if all(doc.get(k) in (None, "") for k in group):
                    errors.append(
                        {
                            "field": f"{path}{group[0]}",
                            "message": f"give at least one of {', '.join(group)}",
                        }
                    )
        _raise_errors(errors)

    async def referring_columns(self, ctx: TenantContext, table: Table) -> list[tuple[Table, str]]:
        """(table, column key) of every link column that points at this table."""
        query = referring_query(self.types, table.key)
        found = []
        async for doc in ctx.db[TABLES].find(query):
            referring = Table(doc, self.types)
            for column in referring.columns:
                if self._target(column) == table.key:
                    found.append((referring, column.key))
        return found

    def _target(self, column: Column) -> str | None:
        if column.type not in self.types:
            return None
        return self.types.get(column.type).target_table(column)

    async def clear_references(
        self,
        ctx: TenantContext,
        table: Table,
        ids: list[ObjectId],
        referring: list[tuple[Table, str]] | None = None,
    ) -> None:
        """Deleted rows: link columns that pointed at them are cleared, never left dangling;
        each row cleared is a write of the server's (its version, a system revision,
        `row.updated`: crm_core/tables/history.py `unlink`)."""
        if not ids:
            return
        if referring is None:
            referring = await self.referring_columns(ctx, table)
        for other, column_key in referring:
            await unlink(ctx, other, column_key, ids, self.changes)

    async def expand(
        self, ctx: TenantContext, table: Table, rows: list[dict[str, Any]], keys: list[str]
    ) -> None:
        """Replace the ids of the named link columns with the referenced rows (when the caller
        may read their table; otherwise the ids stay). A key named twice is expanded once."""
        for key in dict.fromkeys(keys):
            column = table.column(key)
            target_key = None if column is None else self._target(column)
            if target_key is None:
                raise ValidationFailed.field("expand", f"'{key[:64]}' is not a link column")
            ids = {ObjectId(r[key]) for r in rows if r.get(key)}
            if not ids:
                continue
            try:
                target = await load_table(ctx, self.types, target_key)
            except NotFound:
                continue
            if await access_level(ctx, target) < Level.READ:
                continue
            found = {
                str(d["_id"]): self.render(target, d)
                async for d in target.collection(ctx).find({"_id": {"$in": list(ids)}})
            }
            for row in rows:
                if row.get(key):
                    row[key] = found.get(row[key], row[key])

    def query(
        self, ctx: TenantContext, table: Table, filters: object, now: datetime | None = None
    ) -> dict[str, Any]:
        """The MongoDB query for a filter (already parsed from JSON); 400 invalid_filter."""
        env = FilterEnv(ctx.values, now or datetime.now(UTC))
        return self.filters.translate(filters, computed.filter_fields(table, self.types), env)

    def render(self, table: Table, doc: dict[str, Any]) -> dict[str, Any]:
        return render_row(table, doc)

    async def get(
        self, ctx: TenantContext, table: Table, row_id: str, expand: str | None = None
    ) -> dict[str, Any]:
        """One row; `expand` (comma-separated link columns) answers those columns with the
        referenced rows (`expand`)."""
        doc = await table.collection(ctx).find_one({"_id": parse_row_id(row_id)})
        if doc is None:
            raise NotFound("Row not found")
        row = (await self.with_computed(ctx, table, [self.render(table, doc)]))[0]
        await self.expand(ctx, table, [row], expand_keys(expand))
        return row

    async def create(self, ctx: TenantContext, table: Table, body: object) -> dict[str, Any]:
        table, keys = await self.fenced(ctx, table, [body], creating=True)
        checker = self.checker(table, ctx)
        doc = checker.for_create(body)
        checker.raise_if_invalid()
        await self.check_rules(ctx, table, [("", doc)])
        doc.update(self.stamp(ctx, created=True), _id=ObjectId())
        await number_rows(ctx, table, [doc])
        try:
            await table.collection(ctx).insert_one(doc)
        except DuplicateKeyError as exc:
            raise unique_conflict(exc) from None
        table, [doc] = await self.settled(ctx, table, [doc], keys)
        row = self.render(table, doc)
        await self.changes.record(ctx, table, [Change(None, doc)], rendered=[row])
        return (await self.with_computed(ctx, table, [row]))[0]

    async def update(
        self,
        ctx: TenantContext,
        table: Table,
        row_id: str,
        body: object,
        action: Action = "updated",
        expected: int | None = None,
    ) -> dict[str, Any]:
        """Change the given columns; with `expected` (If-Match), only while the row is still
        at that version: the version is part of the update's filter, so of concurrent
        writes sent with the same version exactly one lands (412 for the others)."""
        oid = parse_row_id(row_id)
        table, keys = await self.fenced(ctx, table, [body], creating=False)
        checker = self.checker(table, ctx)
        set_values, unset = checker.for_update(body)
        checker.raise_if_invalid()
        if table.doc.get("require_any"):
            # an "at least one of" rule needs the whole row as it will be
            current = await table.collection(ctx).find_one({"_id": oid})
            if current is None:
                raise NotFound("Row not found")
            merged = {k: v for k, v in {**current, **set_values}.items() if k not in unset}
            await self.check_rules(ctx, table, [("", merged)])
        else:
            await self.check_rules(ctx, table, [("", set_values)], whole_rows=False)
        stamp = self.stamp(ctx, created=False)
        update = set_unset({**set_values, **stamp}, unset)
        where = {"_id": oid} if expected is None else {"_id": oid, **at_version(expected)}
        try:
            before = await table.collection(ctx).find_one_and_update(
                where, update, return_document=False
            )
        except DuplicateKeyError as exc:
            raise unique_conflict(exc) from None
        if before is None:
            await self._stale_or_missing(ctx, table, oid, expected)
        after = {k: v for k, v in {**before, **set_values, **stamp}.items() if k not in unset}
        after[REVISION_FIELD] = int(before.get(REVISION_FIELD) or 0) + 1
        table, [after] = await self.settled(ctx, table, [after], keys)
        row = self.render(table, after)
        await self.changes.record(ctx, table, [Change(before, after)], action, rendered=[row])
        return (await self.with_computed(ctx, table, [row]))[0]

    async def delete(
        self, ctx: TenantContext, table: Table, row_id: str, expected: int | None = None
    ) -> None:
        """To the trash; with `expected` (If-Match), only while the row is at that version
        (the delete's own filter: a write landing first makes it 412)."""
        oid = parse_row_id(row_id)
        where = {"_id": oid} if expected is None else {"_id": oid, **at_version(expected)}
        if not await self.to_trash(ctx, table, where, guarded=expected is not None):
            await self._stale_or_missing(ctx, table, oid, expected)

    async def _stale_or_missing(
        self, ctx: TenantContext, table: Table, oid: ObjectId, expected: int | None
    ) -> NoReturn:
        """A write by id that matched nothing: 412 naming the current version when the row is
        there at another one, else 404."""
        current = await table.collection(ctx).find_one({"_id": oid}, {REVISION_FIELD: 1})
        if current is None or expected is None:
            raise NotFound("Row not found")
        raise PreconditionFailed.at(expected, row_version(current))

    # ---- bulk -----------------------------------------------------------------------------

    async def bulk_create(
        self, ctx: TenantContext, table: Table, items: list[Any], full_rows: bool = True
    ) -> list[dict[str, Any]]:
        """All or nothing: every item is validated first, errors are reported by index.
        Answers the stored rows, or with `full_rows=False` only `{"id"}` of each."""
        ctx = replace(ctx, values=ctx.values.with_memo())  # each distinct phone/email parsed once
        table, keys = await self.fenced(ctx, table, items, creating=True)
        docs: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        stamp = self.stamp(ctx, created=True)
        for index, item in enumerate(items):
            checker = self.checker(table, ctx, f"items.{index}.")
            doc = checker.for_create(item)
            errors.extend(checker.errors)
            docs.append({**doc, **stamp, "_id": ObjectId()})
        _raise_errors(errors)
        await self.check_rules(ctx, table, [(f"items.{i}.", d) for i, d in enumerate(docs)])
        await self._check_unique(ctx, table, docs, exclude=[])
        await number_rows(ctx, table, docs)
        collection = table.collection(ctx)
        try:
            await collection.insert_many(docs, ordered=True)
        except (BulkWriteError, DuplicateKeyError) as exc:
            # a concurrent writer took a unique value between the check and the insert
            await collection.delete_many({"_id": {"$in": [d["_id"] for d in docs]}})
            raise unique_conflict(exc) from None
        table, docs = await self.settled(ctx, table, docs, keys)
        rows = [self.render(table, doc) for doc in docs]
        await self.changes.record(ctx, table, [Change(None, d) for d in docs], rendered=rows)
        if not full_rows:
            return [{"id": row["id"]} for row in rows]
        return rows

    async def bulk_update(
        self, ctx: TenantContext, table: Table, items: list[Any]
    ) -> list[dict[str, Any]]:
        ctx = replace(ctx, values=ctx.values.with_memo())
        table, keys = await self.fenced(ctx, table, items, creating=False)
        errors: list[dict[str, Any]] = []
        changes: list[tuple[ObjectId, dict[str, Any], list[str]]] = []
        versions: dict[ObjectId, int] = {}  # the `_version` each item is based on, if given
        seen: set[ObjectId] = set()
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                errors.append({"field": f"items.{index}", "message": "must be a JSON object"})
                continue
            body = dict(item)
            raw_id = body.pop("id", None)
            version = body.pop(VERSION_FIELD, None)
            try:
                oid = parse_row_id(raw_id)
            except NotFound:
                errors.append({"field": f"items.{index}.id", "message": "a row id is required"})
                continue
            if oid in seen:
                errors.append({"field": f"items.{index}.id", "message": "repeats another item"})
                continue
            seen.add(oid)
            if version is not None:
                if isinstance(version, bool) or not isinstance(version, int) or version < 0:
                    errors.append(
                        {"field": f"items.{index}.{VERSION_FIELD}", "message": "not a version"}
                    )
                else:
                    versions[oid] = version
            checker = self.checker(table, ctx, f"items.{index}.")
            set_values, unset = checker.for_update(body)
            errors.extend(checker.errors)
            changes.append((oid, set_values, unset))
        _raise_errors(errors)
        collection = table.collection(ctx)
        ids = [oid for oid, _, _ in changes]
        originals = {d["_id"]: d async for d in collection.find({"_id": {"$in": ids}})}
        missing = [
            {"field": f"items.{i}.id", "message": "row not found"}
            for i, oid in enumerate(ids)
            if oid not in originals
        ]
        if missing:
            raise NotFound(f"{len(missing)} rows not found", missing)
        _check_versions(ids, originals, versions)
        await self.check_rules(
            ctx,
            table,
            [
                (f"items.{i}.", {k: v for k, v in {**originals[oid], **s}.items() if k not in u})
                for i, (oid, s, u) in enumerate(changes)
            ],
        )
        await self._check_unique(ctx, table, [s for _, s, _ in changes], exclude=ids)
        stamp = self.stamp(ctx, created=False)
        # one write per row that answers the row as it was before it (exact `before`, and the
        # version it gave: `seq` = that + 1), so no read-back can see a later write's version
        written: list[Change] = []
        try:
            for index, (oid, set_values, unset) in enumerate(changes):
                where = {"_id": oid}
                if oid in versions:  # the version the item was based on, in the write's filter
                    where.update(at_version(versions[oid]))
                update = set_unset({**set_values, **stamp}, unset)
                before = await collection.find_one_and_update(where, update, return_document=False)
                if before is not None:
                    written.append(
                        Change(before, written_row(before, {**set_values, **stamp}, unset))
                    )
                elif oid in versions:  # written meanwhile: all or nothing, 412 naming it
                    await self._undo_bulk(ctx, table, written)
                    current = await collection.find_one({"_id": oid}, {REVISION_FIELD: 1})
                    now = row_version(current or {})
                    raise PreconditionFailed.at(
                        versions[oid], now, f"items.{index}.{VERSION_FIELD}"
                    )
                # else gone to the trash meanwhile: not answered, as before
        except (BulkWriteError, DuplicateKeyError) as exc:
            # a concurrent writer took a unique value after the check: put the batch back
            await self._undo_bulk(ctx, table, written)
            raise unique_conflict(exc) from None
        table, docs = await self.settled(ctx, table, [c.after for c in written if c.after], keys)
        befores = [c.before for c in written]
        await self.changes.record(
            ctx, table, [Change(b, d) for b, d in zip(befores, docs, strict=True)]
        )
        return [self.render(table, doc) for doc in docs]

    async def _undo_bulk(self, ctx: TenantContext, table: Table, written: list[Change]) -> None:
        """A bulk update that failed half-way: the rows it wrote are recorded (their
        revisions), then put back by a write of the server's (`bulk_update_rolled_back`,
        docs/history.md "Changes the server makes"), conditional on the version it gave them."""
        if not written:
            return
        await self.changes.record(ctx, table, written)
        await roll_back(ctx, table, written, "bulk_update_rolled_back", self.changes)

    async def bulk_write(
        self, ctx: TenantContext, table: Table, body: BulkCreateIn, full_rows: bool
    ) -> dict[str, Any]:
        """`POST .../bulk`: the items created, or with `upsert_on` created or updated
        (`{"items", "created", "updated"}`, crm_core/tables/upsert.py); all or nothing. Each
        answered item is the stored row, or with `full_rows=False` only its `{"id"}`."""
        if body.upsert_on is None:
            return {"items": await self.bulk_create(ctx, table, body.items, full_rows)}
        result = await upsert.bulk_upsert(self, ctx, table, body.items, body.upsert_on)
        if not full_rows:
            result["items"] = [{"id": row["id"]} for row in result["items"]]
        return result

    async def bulk_change(
        self, ctx: TenantContext, table: Table, change: BulkUpdateItems | BulkUpdateWhere
    ) -> dict[str, Any]:
        """`PATCH .../bulk`: each item's own values (`{"items": [rows]}`), or the same values
        on every row a non-empty filter selects (`{"updated": N}`)."""
        if isinstance(change, BulkUpdateItems):
            return {"items": await self.bulk_update(ctx, table, change.items)}
        where = self.selection(ctx, table, change.filters)
        return {"updated": await self.update_where(ctx, table, where, change.values)}

    async def bulk_remove(
        self, ctx: TenantContext, table: Table, which: BulkDeleteIds | BulkDeleteWhere
    ) -> int:
        """`POST .../bulk-delete`: the rows named by id, or those a non-empty filter
        selects; answers how many went."""
        if isinstance(which, BulkDeleteIds):
            return await self.bulk_delete(ctx, table, which.ids)
        return await self.delete_where(ctx, table, self.selection(ctx, table, which.filters))

    def selection(self, ctx: TenantContext, table: Table, filters: object) -> dict[str, Any]:
        """The query of a filter that must select by at least one condition (a write to
        many rows never means every row by an empty filter)."""
        where = self.query(ctx, table, filters)
        if not where:
            raise ValidationFailed.field("filters", "must have at least one condition")
        computed.refuse_computed(table, where)
        return where

    async def move(
        self, ctx: TenantContext, table: Table, row_id: str, before_id: str | None
    ) -> dict[str, int]:
        """Place a row just before `before_id` (None: last) in the caller's manual order
        (crm_core/tables/ordering.py); answers the reads and writes it took."""
        oid, before = parse_row_id(row_id), None
        if before_id is not None:
            try:
                before = parse_row_id(before_id)
            except NotFound:
                raise ValidationFailed.field("before_id", "is not a row id") from None
        return await ordering.move_row(ctx, table, oid, before)

    async def bulk_delete(self, ctx: TenantContext, table: Table, ids: list[str]) -> int:
        errors = []
        oids = []
        for index, raw in enumerate(ids):
            try:
                oids.append(parse_row_id(raw))
            except NotFound:
                errors.append({"field": f"ids.{index}", "message": "not a row id"})
        _raise_errors(errors)
        return await self.to_trash(ctx, table, {"_id": {"$in": oids}}, batch=ObjectId())

    # ---- listing --------------------------------------------------------------------------

    async def list_page(
        self, ctx: TenantContext, table: Table, query: RowListQuery
    ) -> dict[str, Any]:
        """`GET /api/data/{table}`: the page the query asks for (its filter parsed and
        translated here, docs/filters.md; its sort, `sort_spec`; its `expand`ed link columns)
        as `{"items", "total", "limit", "offset", "next_cursor"}`: from `offset`, or after
        `cursor` (crm_core/platform/cursors.py), bound to this table, sort and filter."""
        check_offset(query.offset, query.cursor)
        sort = self.sort_spec(table, query.sort_by, query.sort_order, query.sort)
        filters = self.filters.parse_param(query.filters)
        where = self.query(ctx, table, filters)
        items, total, cursor = await self.page(
            ctx, table, where, sort, query.limit, query.offset, query.cursor, filters
        )
        await self.expand(ctx, table, items, expand_keys(query.expand))
        return {
            "items": items,
            "total": total,
            "limit": query.limit,
            "offset": query.offset,
            "next_cursor": cursor,
        }

    async def page(
        self,
        ctx: TenantContext,
        table: Table,
        query: dict[str, Any],
        sort: list[tuple[str, int]] | None,
        limit: int,
        offset: int,
        cursor: str | None = None,
        filters: object = None,
    ) -> tuple[list[dict[str, Any]], int, str | None]:
        """One page, the total and the next page's cursor; `sort=None` is the caller's manual
        order. The page is read with one row more than `limit`: whether a next page exists."""
        if sort is not None and computed.has_computed(table):
            return await self.computed_page(ctx, table, query, sort, limit, offset, cursor, filters)
        collection = table.collection(ctx)
        max_time = ctx.max_time_ms
        scope = self.page_scope(table, sort, filters)
        keys = None if cursor is None else self.cursors.read(scope, *_caller(ctx), cursor)
        if sort is None:
            computed.refuse_computed(table, query, "sort")  # the order reads stored rows
            after_rank = None if keys is None else str(keys[0])
            ranked = await manual_page(ctx, table, query, offset, limit + 1, after_rank)
            docs = [doc for _, doc in ranked]
            last = [{"rank": rank} for rank, _ in ranked]
        else:
            sort = list(scope.sort)
            where = query if keys is None else merge_after(query, after(sort, keys))
            found = collection.find(where, max_time_ms=max_time).sort(sort)
            if offset:
                found = found.skip(offset)
            with query_purpose(CLIENT_QUERY):
                docs = await found.limit(limit + 1).to_list(length=limit + 1)
            last = docs
        with query_purpose(CLIENT_QUERY):
            total = await collection.count_documents(query, maxTimeMS=max_time)
        following = next_cursor(self.cursors, scope, *_caller(ctx), last, limit)
        rows = [self.render(table, d) for d in docs[:limit]]
        return await self.with_computed(ctx, table, rows), total, following

    @staticmethod
    def page_scope(table: Table, sort: list[tuple[str, int]] | None, filters: object) -> PageScope:
        """What a page's cursor is bound to; the sort ends with `_id` (ties broken by it:
        pages never overlap) or is the manual order (`rank`)."""
        if sort is None:
            return PageScope(f"rows:{table.key}", (("rank", ASCENDING),), filters)
        if not any(field == "_id" for field, _ in sort):
            direction = sort[-1][1] if sort else ASCENDING
            sort = [*sort, ("_id", direction)]
        return PageScope(f"rows:{table.key}", tuple(sort), filters)

    async def computed_page(
        self,
        ctx: TenantContext,
        table: Table,
        query: dict[str, Any],
        sort: list[tuple[str, int]],
        limit: int,
        offset: int,
        cursor: str | None = None,
        filters: object = None,
    ) -> tuple[list[dict[str, Any]], int, str | None]:
        """`page` of a table with computed columns: one aggregation pipeline computes what the
        filter, the sort and the page need, the cursor's condition (the plain list's `after`)
        applied where the sort's values exist (crm_core/tables/computed/pipeline.py)."""
        collection = table.collection(ctx)
        max_time = ctx.max_time_ms
        scope = self.page_scope(table, sort, filters)
        keys = None if cursor is None else self.cursors.read(scope, *_caller(ctx), cursor)
        condition = None if keys is None else after(scope.sort, keys)
        plan = await computed.build_plan(ctx, table, self.types)
        shapes = computed.page_pipelines(
            plan, query, list(scope.sort), offset, limit + 1, condition
        )
        with query_purpose(CLIENT_QUERY):
            docs = await collection.aggregate(shapes.rows, maxTimeMS=max_time).to_list(None)
            if shapes.faceted:  # the page and its total from one pass
                counted = docs[0]["total"] if docs else []
                docs = docs[0]["rows"] if docs else []
                total = int(counted[0]["n"]) if counted else 0
            else:
                total = await collection.count_documents(shapes.stored, maxTimeMS=max_time)
        following = next_cursor(self.cursors, scope, *_caller(ctx), docs, limit)
        return [self.render(table, d) for d in docs[:limit]], total, following

    async def with_computed(
        self, ctx: TenantContext, table: Table, rows: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Rendered rows with the values of the table's computed columns, computed by the
        database (a copy of each row; webhooks and history keep the stored values)."""
        if not rows or not computed.has_computed(table):
            return rows
        docs = [{"_id": ObjectId(r["id"])} for r in rows]
        found = await computed.add_values(ctx, table, self.types, docs)
        result = []
        for row, values in zip(rows, found, strict=True):
            extra = {
                c.key: table.column_type(c).render(c, values[c.key])
                for c in computed.computed_columns(table)
                if c.key in values
            }
            result.append({**row, **extra})
        return result

    @staticmethod
    def sort_spec(
        table: Table, sort_by: str | None, sort_order: str, sort: str | None = None
    ) -> list[tuple[str, int]] | None:
        """`sort_by` + `sort_order`, or `sort=-a,b`; None means the manual order."""
        if sort is not None and sort_by is not None:
            raise ValidationFailed.field("sort", "use either sort or sort_by, not both")
        if sort is None:
            if sort_by == "manual":
                return None
            direction = DESCENDING if sort_order == "desc" else ASCENDING
            keys = [(sort_by, direction)] if sort_by is not None else []
            field = "sort_by"
        else:
            parts = [p.strip() for p in sort.split(",")]
            if not all(parts) or len(parts) > MAX_SORT_KEYS:
                raise ValidationFailed.field(
                    "sort", f"give 1 to {MAX_SORT_KEYS} comma-separated keys"
                )
            keys = [(p.lstrip("-"), DESCENDING if p.startswith("-") else ASCENDING) for p in parts]
            field = "sort"
        result: list[tuple[str, int]] = []
        for key, direction in keys:
            if key in SORT_FIELDS:
                target = SORT_FIELDS[key]
            elif (column := table.column(key)) is not None:
                target = key
                if not table.column_type(column).sortable:
                    raise ValidationFailed.field(field, f"rows cannot be sorted by '{key[:64]}'")
            else:
                raise ValidationFailed.field(field, f"unknown column or field '{key[:64]}'")
            if any(existing == target for existing, _ in result):
                raise ValidationFailed.field(field, f"'{key[:64]}' is named twice")
            result.append((target, direction))
        return result or [("_id", ASCENDING)]

    async def update_where(
        self, ctx: TenantContext, table: Table, query: dict[str, Any], values: object
    ) -> int:
        """The same values on every row the filter selects."""
        table, keys = await self.fenced(ctx, table, [values], creating=False)
        checker = self.checker(table, ctx, "values.")
        set_values, unset = checker.for_update(values)
        checker.raise_if_invalid()
        await self.check_rules(ctx, table, [("values.", set_values)], whole_rows=False)
        if table.doc.get("require_any") and unset:
            raise ValidationFailed.field(
                f"values.{unset[0]}", "cannot be cleared on many rows of this table at once"
            )
        collection = table.collection(ctx)
        for key in set_values:
            column = table.column(key)
            if column is not None and column.unique:
                with query_purpose(CLIENT_QUERY):
                    matches = await collection.count_documents(query, limit=2)
                if matches > 1:
                    raise Conflict(
                        f"Many rows cannot share one value of unique column '{key}'",
                        [{"field": f"values.{key}", "message": "unique column"}],
                    )
        values = {**set_values, **self.stamp(ctx, created=False)}
        update = set_unset(values, unset)
        # every row's revision names what changed in it: go by chunks of ids
        with query_purpose(CLIENT_QUERY):
            ids = [d["_id"] async for d in collection.find(query, {"_id": 1})]
        matched = 0
        for start in range(0, len(ids), EVENT_CHUNK):
            chunk = {"$and": [query, {"_id": {"$in": ids[start : start + EVENT_CHUNK]}}]}
            before = {d["_id"]: d async for d in collection.find(chunk)}
            try:
                written = await self._write_as_read(ctx, table, query, before, update)
            except (BulkWriteError, DuplicateKeyError) as exc:
                raise unique_conflict(exc) from None
            matched += len(written)
            current, docs = await self.settled(
                ctx, table, [written_row(b, values, unset) for b in written], keys
            )
            await self.changes.record(
                ctx, current, [Change(b, d) for b, d in zip(written, docs, strict=True)]
            )
        return matched

    @staticmethod
    async def _write_as_read(
        ctx: TenantContext,
        table: Table,
        query: dict[str, Any],
        rows: dict[ObjectId, dict[str, Any]],
        update: dict[str, Any],
    ) -> list[dict[str, Any]]:
        """Update `rows` (as just read), each conditional on the version read, with one bulk
        write that also sets this write's own mark; answers each written row as it was before
        its update (its revision's `seq` is that version + 1: exact, with no read-back that a
        later write could outrun). When fewer matched, one read of the marks tells which; a row
        written meanwhile is updated again alone, the update answering the row before it
        (`find_one_and_update`), if it still matches `query`. Round trips per chunk: the bulk
        write and the clear of its marks, +1 (the marks read) when a row was written meanwhile,
        +1 per such row."""
        collection = table.collection(ctx)
        mark = f"{WRITE_MARK}{ObjectId()}"
        marked = {**update, "$set": {**update["$set"], mark: True}}
        operations = [
            ({"_id": oid, **at_version(row_version(d))}, marked) for oid, d in rows.items()
        ]
        matched = await update_each(collection, operations, ordered=False)
        if matched == len(operations):
            applied = set(rows)
        else:
            found = collection.find(
                {"_id": {"$in": list(rows)}, mark: {"$exists": True}}, {"_id": 1}
            )
            applied = {d["_id"] async for d in found}
        if applied:
            await collection.update_many(
                {"_id": {"$in": list(applied)}, mark: {"$exists": True}}, {"$unset": {mark: ""}}
            )
        written = [rows[oid] for oid in rows if oid in applied]
        for oid in rows:
            if oid in applied:
                continue
            with query_purpose(CLIENT_QUERY):
                before = await collection.find_one_and_update(
                    {"$and": [query, {"_id": oid}]}, update, return_document=False
                )
            if before is not None:
                written.append(before)
        return written

    async def delete_where(self, ctx: TenantContext, table: Table, query: dict[str, Any]) -> int:
        return await self.to_trash(ctx, table, query, batch=ObjectId(), client_query=True)

    # ---- the trash (crm_core/tables/trash.py) and history (crm_core/tables/history.py) ----

    async def to_trash(
        self,
        ctx: TenantContext,
        table: Table,
        query: dict[str, Any],
        batch: ObjectId | None = None,
        client_query: bool = False,
        guarded: bool = False,
    ) -> int:
        """Move the rows the query selects to the trash by chunks: copied there first (a
        crash leaves a row in both places, never in neither), then removed from the table,
        their order entries forgotten, links to them cleared, a `deleted` revision recorded
        and the listeners told. Answers how many rows went. `guarded`: the removal repeats
        `query` (a version condition), and a row written meanwhile stays, its copy taken
        back from the trash."""
        collection = table.collection(ctx)
        if client_query:
            with query_purpose(CLIENT_QUERY):
                ids = [d["_id"] async for d in collection.find(query, {"_id": 1})]
        else:
            ids = [d["_id"] async for d in collection.find(query, {"_id": 1})]
        referring = await self.referring_columns(ctx, table) if ids else []
        deleted = 0
        for start in range(0, len(ids), EVENT_CHUNK):
            chunk = {"_id": {"$in": ids[start : start + EVENT_CHUNK]}}
            docs = await collection.find(chunk).to_list(None)
            for doc in docs:  # the deletion is the row's next revision
                doc[REVISION_FIELD] = int(doc.get(REVISION_FIELD) or 0) + 1
            await self.trash.put_rows(ctx, table, docs, batch)
            gone = [d["_id"] for d in docs]
            removal: dict[str, Any] = {"_id": {"$in": gone}}
            result = await collection.delete_many(
                {"$and": [query, removal]} if guarded else removal
            )
            deleted += int(result.deleted_count)
            if guarded and result.deleted_count < len(docs):
                kept = {d["_id"] async for d in collection.find(removal, {"_id": 1})}
                await self.trash.take_back(ctx, table, [d for d in docs if d["_id"] in kept])
                docs = [d for d in docs if d["_id"] not in kept]
                gone = [d["_id"] for d in docs]
            await forget_rows(ctx, table.key, gone)
            await self.clear_references(ctx, table, gone, referring)
            await self.changes.record(ctx, table, [Change(d, None) for d in docs])
        return deleted

    async def history(
        self, ctx: TenantContext, table: Table, row_id: str, query: HistoryQuery
    ) -> dict[str, Any]:
        """`GET .../{id}/history`: the row's revisions, newest first (`{items, total}`); 404
        for a row that is neither in the table nor in the trash as one of its rows."""
        oid = parse_row_id(row_id)
        if query.column is not None and table.column(query.column) is None:
            raise ValidationFailed.field("column", f"'{query.column[:64]}' is not a column")
        await self._known_row(ctx, table, oid)
        check_offset(query.offset, query.cursor)
        scope = PageScope(f"history:{table.key}:{oid}", tuple(HISTORY_ORDER), query.column)
        keys = (
            None if query.cursor is None else self.cursors.read(scope, *_caller(ctx), query.cursor)
        )
        items, total = await self.changes.page(
            ctx,
            table,
            oid,
            query.limit + 1,
            query.offset,
            query.column,
            None if keys is None else after(scope.sort, keys),
        )
        following = next_cursor(self.cursors, scope, *_caller(ctx), items, query.limit)
        return {"items": items[: query.limit], "total": total, "next_cursor": following}

    async def _known_row(self, ctx: TenantContext, table: Table, oid: ObjectId) -> None:
        """404 unless the row is this table's, in it or in the trash: revisions are keyed by
        the table's key, and a deleted table's rows must not be read through a new table
        given its key (docs/history.md "Routes")."""
        if await table.collection(ctx).find_one({"_id": oid}, {"_id": 1}) is not None:
            return
        if not await self.trash.holds_row(ctx, table, oid):
            raise NotFound("Row not found")

    async def revert(
        self, ctx: TenantContext, table: Table, row_id: str, revision_id: str
    ) -> dict[str, Any]:
        """Put back the values the row had right after the revision (a PATCH of the columns
        that differ, validated like one; a `reverted` revision). 409 for a row in the trash
        or a revision after which the row was in the trash."""
        oid = parse_row_id(row_id)
        await self._known_row(ctx, table, oid)
        revision = await self.changes.revision(ctx, table, oid, object_id(revision_id, "Revision"))
        if revision["action"] == "deleted":
            raise Conflict("The row was in the trash after that revision")
        state = await self.changes.state_after(ctx, table, revision)
        while True:
            current = await table.collection(ctx).find_one({"_id": oid})
            if current is None:
                if await self.trash.holds_row(ctx, table, oid):
                    raise Conflict("The row is in the trash: restore it first")
                raise NotFound("Row not found")
            row = self.render(table, current)
            body = {  # a number the server gave stays (an autonumber added after the revision)
                c.key: state.get(c.key)
                for c in table.columns
                if state.get(c.key) != row.get(c.key) and not table.column_type(c).numbered
            }
            if not body:
                return row
            # only over the version just read: a write that came between would make this
            # one change less than it says (or nothing, a version with no revision); read again
            try:
                return await self.update(
                    ctx, table, row_id, body, action="reverted", expected=row_version(current)
                )
            except PreconditionFailed:
                continue

    # ---- the fence against schema changes (crm_core/tables/fence.py) ----------------------

    async def fenced(
        self, ctx: TenantContext, table: Table, bodies: list[Any], creating: bool
    ) -> tuple[Table, set[str]]:
        """The definition to validate a write against (after any running change of the
        columns written), and those columns."""
        keys = fence.written_keys(table, bodies, creating)
        return await fence.ready(ctx, table, keys), keys

    async def record_changes(self, ctx: TenantContext, table: Table, changes: list[Change]) -> int:
        return await self.changes.record(ctx, table, changes)

    async def settled(
        self, ctx: TenantContext, table: Table, docs: list[dict[str, Any]], keys: set[str]
    ) -> tuple[Table, list[dict[str, Any]]]:
        """The definition that holds now and the written rows as they are once the write is
        settled against it (read again only when a column changed form meanwhile): the rows
        are rendered and recorded under that definition, not the one the write validated
        against (a value converted to a decimal meanwhile is answered as one)."""
        current = await fence.settle(ctx, table, [d["_id"] for d in docs], keys)
        if current is table:
            return table, docs
        ids = [d["_id"] for d in docs]
        found = {d["_id"]: d async for d in current.collection(ctx).find({"_id": {"$in": ids}})}
        # the write's revision keeps the write's own version: a conversion of the schema
        # change may have added its own since (with its own revision, docs/history.md)
        return current, [
            {**found[d["_id"]], REVISION_FIELD: d.get(REVISION_FIELD)} if d["_id"] in found else d
            for d in docs
        ]

    # ---- helpers --------------------------------------------------------------------------

    @staticmethod
    def stamp(ctx: TenantContext, created: bool) -> dict[str, Any]:
        now = utcnow()
        stamp: dict[str, Any] = {"_updated_at": now, "_updated_by": ctx.user_id}
        stamp[UNRECORDED_FIELD] = now  # cleared once its revision is stored (tables/history.py)
        if created:
            stamp.update(_created_at=now, _created_by=ctx.user_id)
            stamp[REVISION_FIELD] = 1
        return stamp

    async def _check_unique(
        self, ctx: TenantContext, table: Table, docs: list[dict[str, Any]], exclude: list[ObjectId]
    ) -> None:
        for column in table.columns:
            if not column.unique:
                continue
            key = column.key
            first_index: dict[Any, int] = {}
            for index, doc in enumerate(docs):
                if key not in doc:
                    continue
                value = doc[key]
                if value in first_index:
                    raise Conflict(
                        f"Items {first_index[value]} and {index} repeat the value of unique "
                        f"column '{key}'",
                        [{"field": f"items.{index}.{key}", "message": "duplicate value"}],
                    )
                first_index[value] = index
            if not first_index:
                continue
            query: dict[str, Any] = {key: {"$in": list(first_index)}}
            if exclude:
                query["_id"] = {"$nin": exclude}
            taken = await table.collection(ctx).find_one(query, {key: 1})
            if taken is not None:
                index = first_index[taken[key]]
                raise Conflict(
                    f"Item {index}: the value of unique column '{key}' is already used",
                    [{"field": f"items.{index}.{key}", "message": "already used by another row"}],
                )


def _check_versions(
    ids: list[ObjectId], originals: dict[ObjectId, dict[str, Any]], versions: dict[ObjectId, int]
) -> None:
    """412 naming every item whose row is no longer at the `_version` it was based on (the
    writes check again, atomically, each in its own filter)."""
    stale = []
    for index, oid in enumerate(ids):
        if oid in versions and row_version(originals[oid]) != versions[oid]:
            current = row_version(originals[oid])
            stale.append(
                {
                    "field": f"items.{index}.{VERSION_FIELD}",
                    "message": f"current version is {current}",
                    "current": current,
                }
            )
    if stale:
        raise PreconditionFailed(
            f"{len(stale)} rows changed since the versions sent; read them again", stale
        )


def _caller(ctx: TenantContext) -> tuple[str, str]:
    """Whose cursor it is: the company and the user (a cursor works for its caller only)."""
    return ctx.tenant_id, ctx.user_id


def expand_keys(text: str | None) -> list[str]:
    """Comma-separated keys, each once (`expand=a,a` is `expand=a`)."""
    return list(dict.fromkeys(k.strip() for k in (text or "").split(",") if k.strip()))


def _raise_errors(errors: list[dict[str, Any]]) -> None:
    if errors:
        raise ValidationFailed(f"{errors[0]['field']}: {errors[0]['message']}", errors)
