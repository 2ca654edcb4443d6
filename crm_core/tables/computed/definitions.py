"""Computed column definitions (docs/computed.md "Defining"): each is checked against the
table's columns (and, for lookups and rollups, the other table's) when it is defined, its
result kind is stored beside it (`result`), a cycle between formulas is refused naming it, and a
column that computed columns read cannot be deleted or change type while they do."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from crm_core.accounts.context import TenantContext
from crm_core.platform.errors import ValidationFailed
from crm_core.platform.registry import Registry
from crm_core.tables.columns import (
    AutonumberType,
    BooleanType,
    Column,
    ColumnType,
    DateType,
    FloatType,
    IntegerType,
    LookupType,
    RatingType,
    RollupType,
    TextColumnType,
    TimeType,
)
from crm_core.tables.computed.checker import Kind, check
from crm_core.tables.computed.syntax import FormulaError, Node, column_keys, parse
from crm_core.tables.definitions import TABLES

RESULT = "result"  # the stored kind of a computed column's values
ROLLUP_KINDS: dict[str, tuple[Kind, ...]] = {
    "sum": (Kind.NUMBER,),
    "avg": (Kind.NUMBER,),
    "min": (Kind.NUMBER, Kind.DATE, Kind.TEXT),
    "max": (Kind.NUMBER, Kind.DATE, Kind.TEXT),
    "concat": (Kind.TEXT,),
}
NOT_READABLE = (
    "its values are not numbers, text, booleans or dates (decimal and currency values are "
    "exact decimals, which formulas do not compute with)"
)


def stored_kind(column_type: ColumnType) -> Kind | str:
    """The kind a formula reads a stored column's values as; a string says why it cannot."""
    if isinstance(column_type, IntegerType | FloatType | RatingType | AutonumberType):
        return Kind.NUMBER
    if isinstance(column_type, TextColumnType | TimeType):
        return Kind.TEXT
    if isinstance(column_type, BooleanType):
        return Kind.BOOLEAN
    if isinstance(column_type, DateType):
        return Kind.DATE
    return NOT_READABLE


def result_kind(column: Column) -> Kind:
    """The stored result kind of a computed column (text when unknown)."""
    try:
        return Kind(column.extra.get(RESULT, Kind.TEXT.value))
    except ValueError:
        return Kind.TEXT


def formula_of(column: Column) -> str:
    return str(column.extra.get("formula") or "")


def setting(column: Column, name: str) -> str:
    return str(column.extra.get(name) or "")


@dataclass
class Problem(Exception):
    field: str
    message: str
    position: int | None = None
    column: str = ""

    def detail(self) -> dict[str, Any]:
        found: dict[str, Any] = {"field": self.field, "message": self.message}
        if self.position is not None:
            found["position"] = self.position
        return found


def uses(column: Column, column_type: ColumnType) -> set[str]:
    """The keys of the same table a computed column reads."""
    if not column_type.computed:
        return set()
    if isinstance(column_type, LookupType):
        return {setting(column, "link")}
    if isinstance(column_type, RollupType):
        return set()
    try:
        return column_keys(parse(formula_of(column)))
    except FormulaError:
        return set()


class Settler:
    """Checks the computed columns of one table definition (`columns`, as they will be)."""

    def __init__(
        self,
        ctx: TenantContext,
        types: Registry[ColumnType],
        table_key: str,
        columns: Sequence[Column],
        paths: Mapping[str, str],
    ) -> None:
        self.ctx = ctx
        self.types = types
        self.table_key = table_key
        self.columns = {c.key: c for c in columns}
        self.order = [c.key for c in columns]
        self.paths = paths
        self.kinds: dict[str, Kind | str] = {}
        self.stack: list[str] = []
        self.others: dict[str, dict[str, Column] | None] = {}

    def type_of(self, column: Column) -> ColumnType:
        return self.types.get(column.type)

    def path(self, key: str, field: str) -> str:
        return f"{self.paths.get(key, '')}{field}"

    async def other(self, key: str) -> dict[str, Column] | None:
        """Another table's columns by key (this table's own when it names itself)."""
        if key == self.table_key:
            return self.columns
        if key not in self.others:
            doc = await self.ctx.db[TABLES].find_one({"key": key}, {"columns": 1})
            self.others[key] = (
                None if doc is None else {c["key"]: Column.from_doc(c) for c in doc["columns"]}
            )
        return self.others[key]

    async def settle(self) -> list[Column]:
        settled: dict[str, Column] = {}
        for key in self.order:
            column = self.columns[key]
            if self.type_of(column).computed:
                kind = await self.kind(key)
                assert isinstance(kind, Kind)
                extra = {**column.extra, RESULT: kind.value}
                table = (
                    await self.lookup_table(column)
                    if isinstance(self.type_of(column), LookupType)
                    else column.table
                )
                column = replace(column, extra=extra, table=table)
            settled[key] = column
        return [settled[k] for k in self.order]

    async def lookup_table(self, column: Column) -> str | None:
        link = self.columns.get(setting(column, "link"))
        return None if link is None else self.type_of(link).target_table(link)

    async def kind(self, key: str) -> Kind | str:
        """The kind of a column's values, resolving computed columns depth first."""
        if key in self.kinds:
            return self.kinds[key]
        column = self.columns[key]
        column_type = self.type_of(column)
        if not column_type.computed:
            self.kinds[key] = stored_kind(column_type)
            return self.kinds[key]
        if key in self.stack:
            cycle = [*self.stack[self.stack.index(key) :], key]
            raise Problem(
                self.path(cycle[0], "formula"),
                f"computed columns refer to each other in a cycle: {' → '.join(cycle)}",
                column=cycle[0],
            )
        self.stack.append(key)
        try:
            if isinstance(column_type, LookupType):
                kind: Kind = await self.lookup_kind(column)
            elif isinstance(column_type, RollupType):
                kind = await self.rollup_kind(column)
            else:
                kind = await self.formula_kind(column)
        except Problem as problem:
            problem.column = problem.column or key
            raise
        finally:
            self.stack.pop()
        self.kinds[key] = kind
        return kind

    async def formula_kind(self, column: Column) -> Kind:
        field = self.path(column.key, "formula")
        try:
            node: Node = parse(formula_of(column))
            known: dict[str, Kind | str] = {}
            for used in column_keys(node):
                if used in self.columns:
                    known[used] = await self.kind(used)
            return check(node, known)
        except FormulaError as exc:
            raise Problem(field, exc.message, exc.position, column.key) from None

    async def lookup_kind(self, column: Column) -> Kind:
        link_key, target_key = setting(column, "link"), setting(column, "column")
        link = self.columns.get(link_key)
        if link is None or not self.type_of(link).links_rows:
            raise Problem(self.path(column.key, "link"), f"'{link_key}' is not a link column")
        target_table = self.type_of(link).target_table(link) or ""
        found = await self.other(target_table)
        target = None if found is None else found.get(target_key)
        if target is None:
            raise Problem(
                self.path(column.key, "column"), f"no column '{target_key}' in '{target_table}'"
            )
        return self.readable(column, target, target_table)

    def readable(self, column: Column, target: Column, table: str) -> Kind:
        target_type = self.type_of(target)
        if target_type.computed:
            raise Problem(
                self.path(column.key, "column"),
                f"'{table}.{target.key}' is computed: lookups and rollups read stored columns",
            )
        kind = stored_kind(target_type)
        if isinstance(kind, str):
            raise Problem(self.path(column.key, "column"), f"'{table}.{target.key}': {kind}")
        return kind

    async def rollup_kind(self, column: Column) -> Kind:
        source_key = column.table or ""
        source = await self.other(source_key)
        if source is None:
            raise Problem(self.path(column.key, "table"), f"no table '{source_key}'")
        link = source.get(setting(column, "link"))
        if link is None or self.type_of(link).target_table(link) != self.table_key:
            raise Problem(
                self.path(column.key, "link"),
                f"'{setting(column, 'link')}' is not a link column of '{source_key}' that points "
                f"at '{self.table_key}'",
            )
        function = setting(column, "function")
        if function == "count":
            return Kind.NUMBER
        target = source.get(setting(column, "column"))
        if target is None:
            raise Problem(
                self.path(column.key, "column"),
                f"{function} needs a column of '{source_key}'",
            )
        kind = self.readable(column, target, source_key)
        if kind not in ROLLUP_KINDS[function]:
            wanted = " or ".join(k.value for k in ROLLUP_KINDS[function])
            raise Problem(
                self.path(column.key, "column"),
                f"{function} rolls up {wanted} columns; '{target.key}' is {kind.value}",
            )
        return Kind.NUMBER if function in ("sum", "avg") else kind


def computed_names(types: Registry[ColumnType]) -> list[str]:
    return [t.name for t in types if t.computed]


async def outside_dependents(
    ctx: TenantContext, types: Registry[ColumnType], table_key: str, column_key: str | None
) -> list[str]:
    """`table.column` of the lookups and rollups of other tables that read `column_key` of
    `table_key` (any of its columns when None)."""
    query = {
        "key": {"$ne": table_key},
        "columns": {"$elemMatch": {"table": table_key, "type": {"$in": computed_names(types)}}},
    }
    found: list[str] = []
    async for doc in ctx.db[TABLES].find(query, {"key": 1, "columns": 1}):
        for column in map(Column.from_doc, doc["columns"]):
            if column.type not in types or column.table != table_key:
                continue
            column_type = types.get(column.type)
            read = {setting(column, "column")}
            if isinstance(column_type, RollupType):
                read.add(setting(column, "link"))
            if column_type.computed and (column_key is None or column_key in read):
                found.append(f"{doc['key']}.{column.key}")
    return sorted(found)


async def settle_columns(
    ctx: TenantContext,
    types: Registry[ColumnType],
    table_key: str,
    columns: Sequence[Column],
    previous: Sequence[Column] | None = None,
    paths: Mapping[str, str] | None = None,
    subject: str | None = None,
) -> list[Column]:
    """The table's columns with each computed column checked and its result kind stored;
    ValidationFailed (400) for a formula that does not parse or type-check (with `position`),
    a cycle (naming it), a lookup or rollup that names nothing usable, a change of type into
    or out of a computed type, and a column that computed columns read being deleted or
    changing type (listing them). `paths` prefixes a column's error fields (`columns.2.`);
    `subject` is the column a route adds or changes: a problem of another column it causes is
    reported naming that column as a dependent."""
    errors: list[dict[str, Any]] = []
    by_key = {c.key: c for c in columns}
    for old in previous or ():
        new = by_key.get(old.key)
        if new is not None and new.type == old.type:
            continue
        old_type = types.get(old.type) if old.type in types else None
        if new is not None and old_type is not None:
            if old_type.computed or types.get(new.type).computed:
                errors.append(
                    {
                        "field": "type",
                        "message": "a computed column cannot become a stored one or the other "
                        "way round; add a new column instead",
                    }
                )
                continue
        readers = sorted(
            c.key for c in columns if old.key in uses(c, types.get(c.type)) and c.key != old.key
        )
        readers += await outside_dependents(ctx, types, table_key, old.key)
        if readers:
            action = "be deleted" if new is None else "change type"
            message = (
                f"computed columns read '{old.key}': {', '.join(readers)}; it cannot {action} "
                "while they do"
            )
            field = "type" if new is not None else old.key
            errors.append({"field": field, "message": message, "dependents": readers})
    if errors:
        raise ValidationFailed(f"{errors[0]['field']}: {errors[0]['message']}", errors)
    if not any(types.get(c.type).computed for c in columns if c.type in types):
        return list(columns)
    settler = Settler(ctx, types, table_key, columns, paths or {})
    try:
        return await settler.settle()
    except Problem as problem:
        detail = problem.detail()
        if subject is not None and problem.column and problem.column != subject:
            detail = {
                "field": problem.field,
                "message": f"computed column '{problem.column}' would break: {problem.message}",
                "dependents": [problem.column],
            }
        raise ValidationFailed(f"{detail['field']}: {detail['message']}", [detail]) from None
