"""Insert-or-update of many rows, matched on a unique column (`upsert_on`).

Used by `POST /api/data/{table}/bulk` with `upsert_on` and by file imports. A batch is first
*planned* (every value validated, matches looked up, references and unique values checked, all
errors collected with the position of their item), then *applied*: new rows are inserted and
matched rows updated like a PATCH (only the given columns change). Without multi-document
transactions, a write that fails half-way (a concurrent writer took a unique value) is undone:
the inserted rows are deleted and the updated ones put back as they were read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from bson import ObjectId

from crm_core.accounts.context import TenantContext
from crm_core.platform.errors import Conflict, CrmError, ValidationFailed
from crm_core.platform.storage import BulkWriteError, DuplicateKeyError
from crm_core.tables import fence
from crm_core.tables.columns import Column
from crm_core.tables.definitions import Table
from crm_core.tables.history import Change, ChangeLog, roll_back
from crm_core.tables.sequences import number_rows
from crm_core.tables.updates import (
    REVISION_FIELD,
    row_version,
    set_unset,
    unique_conflict,
    written_row,
)


class RowChecker(Protocol):
    """Checks row bodies against a table's columns, collecting `errors`
    (crm_core/tables/rows.py `RowValues`)."""

    errors: list[dict[str, Any]]

    def for_create(self, body: object) -> dict[str, Any]: ...

    def for_update(self, body: object) -> tuple[dict[str, Any], list[str]]: ...


class RowWriter(Protocol):
    """What a batch asks of the row service (crm_core/tables/rows.py `RowService`, which
    calls this module, so the service is declared here rather than imported)."""

    def checker(
        self, table: Table, ctx: TenantContext, path: str = "", lenient: bool = False
    ) -> RowChecker: ...

    def stamp(self, ctx: TenantContext, created: bool) -> dict[str, Any]:
        """The `_created_*`/`_updated_*` fields of a write by the caller, now."""
        ...

    async def check_rules(
        self,
        ctx: TenantContext,
        table: Table,
        docs: list[tuple[str, dict[str, Any]]],
        whole_rows: bool = True,
    ) -> None: ...

    async def fenced(
        self, ctx: TenantContext, table: Table, bodies: list[Any], creating: bool
    ) -> tuple[Table, set[str]]: ...

    def render(self, table: Table, doc: dict[str, Any]) -> dict[str, Any]: ...

    async def record_changes(self, ctx: TenantContext, table: Table, changes: list[Change]) -> int:
        """Record the rows' revisions and tell the listeners (crm_core/tables/history.py)."""
        ...

    @property
    def changes(self) -> ChangeLog:
        """The one path of row changes (a server-made put-back goes through it too)."""
        ...


@dataclass
class Update:
    position: int
    row_id: ObjectId
    set_values: dict[str, Any]
    unset: list[str]
    original: dict[str, Any]


@dataclass
class Plan:
    """What one batch will write. Errors are `{"position", "field", "message"}`, `field` being
    the column key (or "" for the item as a whole)."""

    creates: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    updates: list[Update] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def invalid_positions(self) -> set[int]:
        return {e["position"] for e in self.errors}

    def without(self, positions: set[int]) -> Plan:
        """The plan minus the items at `positions` (skip-invalid imports)."""
        return Plan(
            [(p, d) for p, d in self.creates if p not in positions],
            [u for u in self.updates if u.position not in positions],
            [],
        )

    @property
    def inserted_ids(self) -> list[ObjectId]:
        return [doc["_id"] for _, doc in self.creates]


def check_upsert_column(table: Table, key: str, field_name: str = "upsert_on") -> Column:
    column = table.column(key)
    if column is None:
        raise ValidationFailed.field(field_name, f"'{key[:64]}' is not a column of this table")
    if not column.unique:
        raise ValidationFailed.field(field_name, f"column '{key}' must be unique to match rows")
    return column


async def plan_batch(
    rows: RowWriter,
    ctx: TenantContext,
    table: Table,
    items: list[tuple[int, Any]],
    upsert_on: str | None,
    lenient: bool = False,
) -> Plan:
    """Validate `(position, body)` items and decide, per item, insert or update."""
    plan = Plan()
    stamp_create = rows.stamp(ctx, created=True)
    stamp_update = rows.stamp(ctx, created=False)
    matches: dict[Any, dict[str, Any]] = {}
    keys: dict[int, Any] = {}
    if upsert_on is not None:
        column = check_upsert_column(table, upsert_on)
        column_type = table.column_type(column)
        first_seen: dict[Any, int] = {}
        for position, body in items:
            raw = body.get(upsert_on) if isinstance(body, dict) else None
            if raw is None:
                continue  # reported below: the body is checked as a whole
            try:
                value = column_type.coerce(column, raw, ctx.values, lenient=lenient)
            except ValueError:
                continue  # the row checker names the bad value
            if value in first_seen:
                plan.errors.append(
                    {
                        "position": position,
                        "field": upsert_on,
                        "message": "repeats an earlier item",
                    }
                )
                continue
            first_seen[value] = position
            keys[position] = value
        if first_seen:
            cursor = table.collection(ctx).find({upsert_on: {"$in": list(first_seen)}})
            matches = {doc[upsert_on]: doc async for doc in cursor}
    repeated = plan.invalid_positions
    for position, body in items:
        if position in repeated:
            continue
        checker = rows.checker(table, ctx, lenient=lenient)
        if upsert_on is not None and (not isinstance(body, dict) or body.get(upsert_on) is None):
            plan.errors.append(
                {"position": position, "field": upsert_on, "message": "is needed to match rows"}
            )
            continue
        original = matches.get(keys.get(position)) if position in keys else None
        if original is not None:
            set_values, unset = checker.for_update(body)
            if not checker.errors:
                plan.updates.append(
                    Update(
                        position,
                        original["_id"],
                        {**set_values, **stamp_update},
                        [k for k in unset if k != upsert_on],
                        original,
                    )
                )
        else:
            doc = checker.for_create(body)
            if not checker.errors:
                plan.creates.append((position, {**doc, **stamp_create, "_id": ObjectId()}))
        plan.errors += [
            {"position": position, "field": e["field"], "message": e["message"]}
            for e in checker.errors
        ]
    await _check_rules(rows, ctx, table, plan)
    await _check_unique(ctx, table, plan)
    return plan


async def _check_rules(rows: RowWriter, ctx: TenantContext, table: Table, plan: Plan) -> None:
    docs = [(f"{p}.", d) for p, d in plan.creates]
    for update in plan.updates:
        merged = {**update.original, **update.set_values}
        docs.append(
            (f"{update.position}.", {k: v for k, v in merged.items() if k not in update.unset})
        )
    if not docs:
        return
    try:
        await rows.check_rules(ctx, table, docs)
    except ValidationFailed as exc:
        for detail in exc.details:
            position, _, key = detail["field"].partition(".")
            plan.errors.append(
                {"position": int(position), "field": key, "message": detail["message"]}
            )


async def _check_unique(ctx: TenantContext, table: Table, plan: Plan) -> None:
    """Every unique column: values repeated within the batch, or held by a row this batch does
    not update, are errors of the items that carry them."""
    values_of = [(p, d) for p, d in plan.creates] + [
        (u.position, u.set_values) for u in plan.updates
    ]
    updated_ids = [u.row_id for u in plan.updates]
    for column in table.columns:
        if not column.unique:
            continue
        key = column.key
        holders: dict[Any, int] = {}
        for position, values in values_of:
            if key not in values:
                continue
            value = values[key]
            if value in holders:
                plan.errors.append(
                    {"position": position, "field": key, "message": "repeats an earlier item"}
                )
                continue
            holders[value] = position
        if not holders:
            continue
        query: dict[str, Any] = {key: {"$in": list(holders)}}
        if updated_ids:
            query["_id"] = {"$nin": updated_ids}
        async for taken in table.collection(ctx).find(query, {key: 1}):
            plan.errors.append(
                {
                    "position": holders[taken[key]],
                    "field": key,
                    "message": "already used by another row",
                }
            )


async def apply_plan(
    ctx: TenantContext, table: Table, plan: Plan, rows: RowWriter | None = None
) -> None:
    """Write a valid plan; on a unique conflict undo this batch and raise 409. With `rows`,
    the written rows' revisions are recorded and told to the listeners (row.created,
    row.updated: crm_core/tables/history.py). Each update answers the row as it was before
    it (`find_one_and_update`), so its revision's `before` and `seq` are the write's own, not
    a read that another write could outrun."""
    collection = table.collection(ctx)
    await number_rows(ctx, table, [d for _, d in plan.creates])
    written: list[Change] = []
    try:
        if plan.creates:
            await collection.insert_many([d for _, d in plan.creates], ordered=True)
        for update in plan.updates:
            change = set_unset(update.set_values, update.unset)
            before = await collection.find_one_and_update(
                {"_id": update.row_id}, change, return_document=False
            )
            if before is not None:  # else gone to the trash since the plan read it
                after = written_row(before, update.set_values, update.unset)
                written.append(Change(before, after))
    except (BulkWriteError, DuplicateKeyError) as exc:
        await undo(ctx, table, plan.inserted_ids, written, rows)
        raise unique_conflict(exc) from None
    keys: set[str] = set()
    for _, doc in plan.creates:
        keys.update(doc)
    for update in plan.updates:
        keys.update(update.set_values, update.unset)
    written_ids = [*plan.inserted_ids, *(c.before["_id"] for c in written if c.before)]
    # a schema change that ran meanwhile: the written values take the form that holds now
    await fence.settle(ctx, table, written_ids, keys)
    changes = [Change(None, doc) for _, doc in plan.creates] + written
    if rows is not None:
        await rows.record_changes(ctx, table, changes)


async def undo(
    ctx: TenantContext,
    table: Table,
    inserted: list[ObjectId],
    written: list[Change],
    rows: RowWriter | None = None,
) -> None:
    """Undo a batch that failed half-way: remove the rows it inserted (not recorded yet: no
    revision, nobody told) and put back the rows it updated. Those updates gave versions, so
    with `rows` they are recorded and put back by a write of the server's
    (`upsert_rolled_back`, docs/history.md "Changes the server makes"), conditional on the
    version each update gave: a row written since keeps that write."""
    collection = table.collection(ctx)
    if inserted:
        await collection.delete_many({"_id": {"$in": inserted}})
    if not written:
        return
    if rows is None:  # nobody records: the values from before, as the update found them
        for change in written:
            assert change.before is not None and change.after is not None
            version = row_version(change.after)
            await collection.replace_one(
                {"_id": change.before["_id"], REVISION_FIELD: version},
                {**change.before, REVISION_FIELD: version + 1},
            )
        return
    await rows.record_changes(ctx, table, written)
    await roll_back(ctx, table, written, "upsert_rolled_back", rows.changes)


def raise_plan_errors(plan: Plan, prefix: str = "items.") -> None:
    """The API's all-or-nothing answer: 409 for unique values taken, else 400, by item."""
    if not plan.errors:
        return
    errors = sorted(plan.errors, key=lambda e: e["position"])
    details = [
        {"field": f"{prefix}{e['position']}.{e['field']}".rstrip("."), "message": e["message"]}
        for e in errors
    ]
    error_class: type[CrmError] = ValidationFailed
    if all(e["message"] in UNIQUE_MESSAGES for e in errors):
        error_class = Conflict
    first = details[0]
    raise error_class(f"{first['field']}: {first['message']}", details)


UNIQUE_MESSAGES = frozenset({"already used by another row", "repeats an earlier item"})


async def bulk_upsert(
    rows: RowWriter, ctx: TenantContext, table: Table, items: list[Any], upsert_on: str
) -> dict[str, Any]:
    """All or nothing: `{"items": [rows in item order], "created": [indexes], "updated":
    [indexes]}`."""
    check_upsert_column(table, upsert_on)
    table, _ = await rows.fenced(ctx, table, items, creating=True)
    plan = await plan_batch(rows, ctx, table, list(enumerate(items)), upsert_on)
    raise_plan_errors(plan)
    await apply_plan(ctx, table, plan, rows)
    created = {p: d for p, d in plan.creates}
    updated_ids = {u.position: u.row_id for u in plan.updates}
    stored = {
        d["_id"]: d
        async for d in table.collection(ctx).find({"_id": {"$in": list(updated_ids.values())}})
    }
    result = []
    for position in range(len(items)):
        doc = created.get(position) or stored.get(updated_ids.get(position))
        if doc is not None:
            result.append(rows.render(table, doc))
    return {
        "items": result,
        "created": sorted(created),
        "updated": sorted(updated_ids),
    }
