"""The list path of a table with computed columns (docs/computed.md "Listing"): one aggregation
pipeline instead of find(): `$match` on stored fields first (index-served as the find's filter
is), then the computed columns the filter and the sort need (`$lookup` + `$addFields`, in
dependency order), `$match` on computed fields, the cursor's condition, `$sort`, `$skip`,
`$limit`, and only then the computed columns the page shows but nothing selected or sorted
by."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time
from typing import Any

from crm_core.accounts.context import TenantContext
from crm_core.platform.cursors import merge_after
from crm_core.platform.errors import ValidationFailed
from crm_core.platform.registry import Registry
from crm_core.platform.storage import query_purpose
from crm_core.tables.columns import (
    BooleanType,
    Column,
    ColumnType,
    DateType,
    FloatType,
    LookupType,
    RollupType,
    StringType,
)
from crm_core.tables.computed.checker import Kind
from crm_core.tables.computed.compiler import CompileEnv, Expr, compile_formula, operators
from crm_core.tables.computed.definitions import formula_of, result_kind, setting, uses
from crm_core.tables.computed.syntax import parse
from crm_core.tables.definitions import Table, load_table
from crm_core.tables.filters import Field, table_fields

# the filter operators of a computed column are those of the type its values have
KIND_TYPES: dict[Kind, ColumnType] = {
    Kind.NUMBER: FloatType(),
    Kind.TEXT: StringType(),
    Kind.BOOLEAN: BooleanType(),
    Kind.DATE: DateType(),
}
TEMP_PREFIX = "__computed_"  # the `$lookup` arrays, dropped before rows leave the database


def computed_columns(table: Table) -> list[Column]:
    return [c for c in table.columns if table.column_type(c).computed]


def has_computed(table: Table) -> bool:
    return any(table.column_type(c).computed for c in table.columns)


def filter_fields(table: Table, types: Registry[ColumnType]) -> dict[str, Field]:
    """The filter's fields: a computed column filters as its result's kind does."""
    fields = table_fields(table.columns, types)
    for column in computed_columns(table):
        kind_type = KIND_TYPES[result_kind(column)]
        fields[column.key] = Field(column.key, replace(column, type=kind_type.name), kind_type)
    return fields


def field_names(query: object) -> set[str]:
    """The field names a MongoDB query names (keys not starting with `$`, at any depth)."""
    found: set[str] = set()
    if isinstance(query, dict):
        for key, value in query.items():
            if not key.startswith("$"):
                found.add(key.split(".")[0])
            found |= field_names(value)
    elif isinstance(query, list):
        for item in query:
            found |= field_names(item)
    return found


def split_query(query: dict[str, Any], computed: set[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the conditions on stored fields, those on computed fields) of a query whose top level
    is one condition or an `$and` of them."""
    parts = query["$and"] if set(query) == {"$and"} else [query] if query else []
    stored = [p for p in parts if not field_names(p) & computed]
    on_computed = [p for p in parts if field_names(p) & computed]

    def joined(found: list[dict[str, Any]]) -> dict[str, Any]:
        return {} if not found else found[0] if len(found) == 1 else {"$and": found}

    return joined(stored), joined(on_computed)


def refuse_computed(table: Table, query: dict[str, Any], path: str = "filters") -> None:
    """A write selected by a filter selects by stored values only."""
    named = field_names(query) & {c.key for c in computed_columns(table)}
    if named:
        raise ValidationFailed.field(
            path,
            f"computed column '{sorted(named)[0]}' cannot select the rows of a write; list "
            "the rows and write them by id",
        )


def compile_env(ctx: TenantContext, now: datetime | None = None) -> CompileEnv:
    zone = ctx.values.timezone
    today = (now or datetime.now(UTC)).astimezone(zone).date()
    midnight = datetime.combine(today, time(), tzinfo=zone).astimezone(UTC)
    return CompileEnv(timezone=zone.key, today=midnight)


@dataclass
class Plan:
    """The stages computing a table's computed columns, by column, in dependency order."""

    stages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    needs: dict[str, set[str]] = field(default_factory=dict)  # computed keys each reads
    temporary: list[str] = field(default_factory=list)

    def for_keys(self, keys: Iterable[str], done: set[str]) -> list[dict[str, Any]]:
        """The stages of `keys` and the computed columns they read, none of `done`."""
        wanted: list[str] = []

        def visit(key: str) -> None:
            if key in done or key in wanted or key not in self.stages:
                return
            for used in sorted(self.needs.get(key, ())):
                visit(used)
            wanted.append(key)

        for key in keys:
            visit(key)
        done.update(wanted)
        return [stage for key in wanted for stage in self.stages[key]]

    def cleanup(self) -> list[dict[str, Any]]:
        return [{"$project": dict.fromkeys(self.temporary, 0)}] if self.temporary else []


async def build_plan(
    ctx: TenantContext, table: Table, types: Registry[ColumnType], now: datetime | None = None
) -> Plan:
    env = compile_env(ctx, now)
    plan = Plan()
    computed = {c.key for c in computed_columns(table)}
    for column in computed_columns(table):
        column_type = table.column_type(column)
        plan.needs[column.key] = uses(column, column_type) & computed
        if isinstance(column_type, LookupType):
            plan.stages[column.key] = await _lookup_stages(ctx, table, types, column, plan)
        elif isinstance(column_type, RollupType):
            plan.stages[column.key] = await _rollup_stages(ctx, types, column, plan)
        else:
            expr = compile_formula(parse(formula_of(column)), env)
            if result_kind(column) is Kind.NUMBER and operators(expr) & ARITHMETIC:
                expr = finite(expr)
            plan.stages[column.key] = [{"$addFields": {column.key: expr}}]
    return plan


# the operators that can make a number past the doubles' range from stored (finite) values
ARITHMETIC = {"$add", "$subtract", "$multiply", "$divide"}


def finite(expr: Expr) -> Expr:
    """A number column's value, blank when it is not finite (an overflow past the doubles'
    range, or NaN from inf - inf; docs/computed.md "Blanks"): NaN compares and sorts apart
    from every number, differently on each engine, and a cursor after it would find nothing
    (docs/computed.md "Cursor pages"). Only formulas with arithmetic and sums can overflow:
    stored numbers are finite."""
    within = {
        "$and": [{"$gte": ["$$v", -sys.float_info.max]}, {"$lte": ["$$v", sys.float_info.max]}]
    }
    return {"$let": {"vars": {"v": expr}, "in": {"$cond": [within, "$$v", None]}}}


async def _lookup_stages(
    ctx: TenantContext, table: Table, types: Registry[ColumnType], column: Column, plan: Plan
) -> list[dict[str, Any]]:
    """The linked row's value: `$lookup` by `_id` of the link's table (its `_id` index)."""
    link = table.column(setting(column, "link"))
    target_key = None if link is None else table.column_type(link).target_table(link)
    target = await load_table(ctx, types, target_key or "")
    temp = f"{TEMP_PREFIX}{column.key}"
    plan.temporary.append(temp)
    value = setting(column, "column")
    first = {"$arrayElemAt": [f"${temp}.{value}", 0]}
    return [
        {
            "$lookup": {
                "from": target.collection_name,
                "localField": setting(column, "link"),
                "foreignField": "_id",
                "pipeline": [{"$project": {"_id": 0, value: 1}}],
                "as": temp,
            }
        },
        {"$addFields": {column.key: {"$ifNull": [first, None]}}},
    ]


def _rollup_value(function: str, values: str, rows: str) -> Expr:
    if function == "count":
        return {"$size": rows}
    if function == "concat":
        ordered = {"$sortArray": {"input": values, "sortBy": 1}}
        return {
            "$reduce": {
                "input": ordered,
                "initialValue": None,
                "in": {
                    "$cond": [
                        {"$eq": ["$$value", None]},
                        "$$this",
                        {"$concat": ["$$value", ", ", "$$this"]},
                    ]
                },
            }
        }
    if function in ("min", "max"):  # by sorting: `$min`/`$max` of dates differ on mongoeco
        ordered = {"$sortArray": {"input": values, "sortBy": 1}}
        return {"$ifNull": [{"$arrayElemAt": [ordered, 0 if function == "min" else -1]}, None]}
    return {f"${function}": values}


async def _rollup_stages(
    ctx: TenantContext, types: Registry[ColumnType], column: Column, plan: Plan
) -> list[dict[str, Any]]:
    """The rows of another table whose link points at this row: `$lookup` by that link column
    (its `i_<link>` index), then the function over their values."""
    source = await load_table(ctx, types, column.table or "")
    temp = f"{TEMP_PREFIX}{column.key}"
    plan.temporary.append(temp)
    function = setting(column, "function")
    value = setting(column, "column") or "_id"
    projection: dict[str, Any] = {"_id": 0, value: 1} if value != "_id" else {"_id": 1}
    rolled = _rollup_value(function, f"${temp}.{value}", f"${temp}")
    return [
        {
            "$lookup": {
                "from": source.collection_name,
                "localField": "_id",
                "foreignField": setting(column, "link"),
                "pipeline": [{"$project": projection}],
                "as": temp,
            }
        },
        {"$addFields": {column.key: rolled if function not in ("sum", "avg") else finite(rolled)}},
    ]


@dataclass(frozen=True)
class PagePipelines:
    """The page's pipeline: `rows` alone (the total is `count_documents(stored)`), or, with a
    condition on a computed column, one `$facet` of the page (`rows`) and the `total` after the
    computed stages they share (`faceted`)."""

    rows: list[dict[str, Any]]
    stored: dict[str, Any]
    faceted: bool = False


def page_pipelines(
    plan: Plan,
    query: dict[str, Any],
    sort: list[tuple[str, int]],
    offset: int,
    limit: int,
    after: dict[str, Any] | None = None,
) -> PagePipelines:
    """The page of `query` in `sort` order from `offset`, or after a cursor (`after`, the
    condition crm_core/platform/cursors.py builds from its keys; docs/computed.md "Cursor
    pages"): merged into the stored `$match` when the sort and the filter read stored fields
    only (served by the sort's index), else a `$match` after the sort's computed values exist
    and before the `$sort` (in the page's arm of the `$facet`, so the total counts every row;
    without a `$facet`, its top-level conditions on stored fields, such as the range on a
    stored first sort key, also narrow the stored `$match`)."""
    computed = set(plan.stages)
    stored, on_computed = split_query(query, computed)
    sorted_by_computed = any(key in computed for key, _ in sort)
    early = after is not None and not sorted_by_computed and not on_computed
    first = stored
    if after is not None and not on_computed:
        first = merge_after(stored, after if early else stored_part(after, computed))
    done: set[str] = set()
    head: list[dict[str, Any]] = [{"$match": first}] if first else []
    selecting = plan.for_keys(sorted(field_names(on_computed) & computed), done)
    head += selecting
    if on_computed:
        head.append({"$match": on_computed})
    tail = plan.for_keys([k for k, _ in sort if k in computed], done)
    if after is not None and not early:
        tail.append({"$match": after})
    tail.append({"$sort": dict(sort)})
    if offset:
        tail.append({"$skip": offset})
    tail.append({"$limit": limit})
    tail += plan.for_keys(sorted(computed), done)
    tail += plan.cleanup()
    if not on_computed:
        return PagePipelines([*head, *tail], stored)
    facet = {"$facet": {"rows": tail, "total": [{"$count": "n"}]}}
    return PagePipelines([*head, facet], stored, faceted=True)


def stored_part(condition: dict[str, Any], computed: set[str]) -> dict[str, Any]:
    """The top-level conditions of `condition` on stored fields: each is implied by it."""
    return {
        key: value
        for key, value in condition.items()
        if not key.startswith("$") and key.split(".")[0] not in computed
    }


def values_pipeline(plan: Plan, ids: list[Any]) -> list[dict[str, Any]]:
    """The computed values of the rows `ids` (by the `_id` index)."""
    return [
        {"$match": {"_id": {"$in": ids}}},
        *plan.for_keys(sorted(plan.stages), set()),
        {"$project": {"_id": 1, **dict.fromkeys(plan.stages, 1)}},
    ]


def value_type(table: Table, column: Column) -> ColumnType:
    """The type a column's values have: a computed column's result kind's, or its own."""
    column_type = table.column_type(column)
    return KIND_TYPES[result_kind(column)] if column_type.computed else column_type


async def with_computed_stages(
    ctx: TenantContext,
    table: Table,
    types: Registry[ColumnType],
    pipeline: list[dict[str, Any]],
    keys: Iterable[str],
) -> list[dict[str, Any]]:
    """A pipeline that starts with the list's `$match`, given the computed columns it reads
    (`keys`, and those its `$match` names): the `$match` on stored fields first, then the
    computed columns, then the `$match` on them (aggregates, crm_core/tables/aggregate.py)."""
    if not has_computed(table) or not pipeline or "$match" not in pipeline[0]:
        return pipeline
    plan = await build_plan(ctx, table, types)
    computed = set(plan.stages)
    stored, on_computed = split_query(pipeline[0]["$match"], computed)
    wanted = (set(keys) | field_names(on_computed)) & computed
    if not wanted:
        return pipeline
    head: list[dict[str, Any]] = [{"$match": stored}, *plan.for_keys(sorted(wanted), set())]
    if on_computed:
        head.append({"$match": on_computed})
    return [*head, *pipeline[1:]]


async def add_values(
    ctx: TenantContext, table: Table, types: Registry[ColumnType], docs: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Stored rows with their computed values (copies), computed by the database."""
    if not docs or not has_computed(table):
        return docs
    plan = await build_plan(ctx, table, types)
    pipeline = values_pipeline(plan, [d["_id"] for d in docs])
    found = {d["_id"]: d async for d in table.collection(ctx).aggregate(pipeline)}
    return [{**doc, **found.get(doc["_id"], {})} for doc in docs]


async def count_rows(
    ctx: TenantContext,
    table: Table,
    types: Registry[ColumnType],
    query: dict[str, Any],
    limit: int | None = None,
) -> int:
    """How many rows a list query (computed conditions included) selects, up to `limit`."""
    computed = {c.key for c in computed_columns(table)}
    collection = table.collection(ctx)
    if not field_names(query) & computed:
        if limit is None:
            return int(await collection.count_documents(query))
        return int(await collection.count_documents(query, limit=limit))
    plan = await build_plan(ctx, table, types)
    stored, on_computed = split_query(query, computed)
    counting: list[dict[str, Any]] = [{"$match": stored}] if stored else []
    counting += plan.for_keys(sorted(field_names(on_computed) & computed), set())
    counting.append({"$match": on_computed})
    if limit is not None:
        counting.append({"$limit": limit})
    found = await collection.aggregate([*counting, {"$count": "n"}]).to_list(1)
    return int(found[0]["n"]) if found else 0


async def sorted_batches(
    ctx: TenantContext,
    table: Table,
    types: Registry[ColumnType],
    query: dict[str, Any],
    sort: list[tuple[str, int]],
    size: int,
    purpose: str,
) -> AsyncIterator[list[dict[str, Any]]]:
    """Every row the query selects, in `sort` order, with its computed values, in lists of
    `size` (exports, crm_core/files/exports.py): one pipeline read as a cursor, its reads
    under the query `purpose` (the client's filter and sort: crm_core/tables/rows.py)."""
    plan = await build_plan(ctx, table, types)
    computed = set(plan.stages)
    stored, on_computed = split_query(query, computed)
    done: set[str] = set()
    pipeline: list[dict[str, Any]] = [{"$match": stored}] if stored else []
    pipeline += plan.for_keys(sorted(field_names(on_computed) & computed), done)
    if on_computed:
        pipeline.append({"$match": on_computed})
    pipeline += plan.for_keys([k for k, _ in sort if k in computed], done)
    pipeline.append({"$sort": dict(sort)})
    pipeline += plan.for_keys(sorted(computed), done)
    pipeline += plan.cleanup()
    cursor = table.collection(ctx).aggregate(pipeline, batchSize=size)
    while True:
        with query_purpose(purpose):  # each read, not the consumer's work between them
            batch = await cursor.to_list(size)
        if not batch:
            return
        yield batch
