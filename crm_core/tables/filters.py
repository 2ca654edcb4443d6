"""The filter language (docs/filters.md "Conditions"): a pure translation from the JSON filter to a
MongoDB query.

Each operator is one class in a registry; it declares the capability of a column type it
needs (`ColumnType.capabilities`: equality, blank, text, ordered, period) and names no type; the
column type parses operands. A recursive builder handles `and`/`or`
groups and the limits. Nothing from the client reaches MongoDB as an operator: fields are
checked against the table's columns and every operand goes through its column type.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, ClassVar

import orjson
from bson import ObjectId
from bson.decimal128 import Decimal128

from crm_core.platform.errors import InvalidFilter
from crm_core.platform.jsontext import repeated_key
from crm_core.platform.registry import Registry
from crm_core.tables.columns import (
    BLANK,
    DATE_ONLY,
    EQUALITY,
    ORDERED,
    PERIOD,
    SET,
    TEXT,
    Column,
    ColumnType,
    ColumnValueError,
    DateType,
    StringType,
    ValueContext,
    to_utc_millis,
    value_object_id,
)

MAX_CONDITIONS = 100
MAX_DEPTH = 5
MAX_LIST_VALUES = 1000
MAX_TEXT_OPERAND = 1000
MAX_FILTER_CHARS = 20_000


class ObjectIdType(ColumnType):
    """The row id, as a filterable field (not a column type a table can use)."""

    name = "id"
    capabilities = frozenset({EQUALITY})  # every row has one: never blank

    def coerce(
        self, column: Column, value: object, vctx: ValueContext, lenient: bool = False
    ) -> ObjectId:
        return value_object_id(value)


def _system(key: str, column_type: ColumnType) -> tuple[Column, ColumnType]:
    return Column(key=key, type=column_type.name, name=key), column_type


SYSTEM_COLUMNS: dict[str, tuple[Column, ColumnType]] = {
    "id": _system("_id", ObjectIdType()),
    "_created_at": _system("_created_at", DateType()),
    "_updated_at": _system("_updated_at", DateType()),
    "_created_by": _system("_created_by", StringType()),
    "_updated_by": _system("_updated_by", StringType()),
}


@dataclass(frozen=True)
class FilterEnv:
    """What a translation needs besides the filter: the tenant's value rules and the moment
    `is_within` periods are computed from."""

    values: ValueContext
    now: datetime


@dataclass(frozen=True)
class Field:
    name: str  # the stored field name
    column: Column
    type: ColumnType


class FilterProblem(ValueError):
    """An operand does not fit; the builder adds the condition's path."""


# ---- operators ------------------------------------------------------------------------------


class FilterOperator:
    """Turns (field, operand) into a MongoDB condition.

    `needs` is the capability a column type must have (`ColumnType.capabilities`) for the
    operator to apply to its fields. `build` must parse the operand through the field's column
    type and raise FilterProblem (or ColumnValueError) when it does not fit; it never passes
    client data through as an operator or a field name.
    """

    name: ClassVar[str]
    needs: ClassVar[str] = EQUALITY
    takes_value: ClassVar[bool] = True

    def applies_to(self, column_type: ColumnType) -> bool:
        return self.needs in column_type.capabilities

    def build(self, field: Field, value: object, env: FilterEnv) -> dict[str, Any]:
        raise NotImplementedError


class Negation(FilterOperator):
    """`not_x` matches what `x` does not, blank values included (`$nor` keeps missing fields)."""

    def __init__(self, name: str, positive: FilterOperator) -> None:
        self.name = name  # type: ignore[misc]
        self.positive = positive
        self.needs = positive.needs  # type: ignore[misc]
        self.takes_value = positive.takes_value  # type: ignore[misc]

    def build(self, field: Field, value: object, env: FilterEnv) -> dict[str, Any]:
        return {"$nor": [self.positive.build(field, value, env)]}


def _day_bounds(field: Field, value: object, env: FilterEnv) -> tuple[datetime, datetime] | None:
    """A `YYYY-MM-DD` operand on a date field means that whole day in the tenant's timezone:
    from its local midnight to the next day's local midnight, so a DST day is 23 or 25 hours."""
    if (
        isinstance(field.type, DateType)
        and isinstance(value, str)
        and DATE_ONLY.match(value.strip())
    ):
        start = field.type.coerce(field.column, value, env.values)
        zone = env.values.timezone
        next_day = start.astimezone(zone).date() + timedelta(days=1)
        try:
            end = to_utc_millis(datetime.combine(next_day, time(), tzinfo=zone))
        except OverflowError:
            raise FilterProblem("is outside the accepted dates (years 1 to 9999)") from None
        return start, end
    return None


def _operand(field: Field, value: object, env: FilterEnv) -> object:
    if value is None:
        raise FilterProblem("needs a value (use `blank` to find empty values)")
    return field.type.parse_filter_value(field.column, value, env.values)


class Eq(FilterOperator):
    name = "eq"

    def build(self, field: Field, value: object, env: FilterEnv) -> dict[str, Any]:
        bounds = _day_bounds(field, value, env)
        if bounds:
            return {field.name: {"$gte": bounds[0], "$lt": bounds[1]}}
        return {field.name: _operand(field, value, env)}


class In(FilterOperator):
    name = "in"

    def build(self, field: Field, value: object, env: FilterEnv) -> dict[str, Any]:
        if not isinstance(value, list) or not value:
            raise FilterProblem("needs a non-empty list of values")
        if len(value) > MAX_LIST_VALUES:
            raise FilterProblem(f"takes at most {MAX_LIST_VALUES} values")
        days = [_day_bounds(field, v, env) for v in value]
        if any(days):
            return {"$or": [Eq().build(field, v, env) for v in value]}
        return {field.name: {"$in": [_operand(field, v, env) for v in value]}}


class Blank(FilterOperator):
    """Null, missing or the empty string; `false` and `0` are values, not blanks."""

    name = "blank"
    needs = BLANK
    takes_value = False

    def build(self, field: Field, value: object, env: FilterEnv) -> dict[str, Any]:
        return {"$or": field.type.blank_conditions(field.name)}


class OptionSet(FilterOperator):
    """A list of option ids against a list-valued field (multi_select)."""

    needs = SET
    mongo: ClassVar[str]

    def build(self, field: Field, value: object, env: FilterEnv) -> dict[str, Any]:
        if not isinstance(value, list) or not value:
            raise FilterProblem("needs a non-empty list of option ids")
        if len(value) > MAX_LIST_VALUES:
            raise FilterProblem(f"takes at most {MAX_LIST_VALUES} values")
        ids = list(dict.fromkeys(_operand(field, v, env) for v in value))
        return {field.name: {self.mongo: ids}}


class HasAnyOf(OptionSet):
    """At least one of the options."""

    name, mongo = "has_any_of", "$in"


class HasAllOf(OptionSet):
    """Every one of the options (and maybe others)."""

    name, mongo = "has_all_of", "$all"


class HasNoneOf(OptionSet):
    """None of the options; blank values match."""

    name, mongo = "has_none_of", "$nin"


# The end of the string itself: `$` also matches before a final newline (in PCRE, which
# MongoDB uses, and in Python's `re`, which the embedded database uses), so `ends_with "abc"`
# would match "abc\n". "Not followed by any character" means the same in both.
END_OF_STRING = r"(?![\s\S])"


class TextMatch(FilterOperator):
    """Case-insensitive literal matching: the operand is escaped, never a regular expression."""

    needs = TEXT
    template: ClassVar[str] = "{}"

    def build(self, field: Field, value: object, env: FilterEnv) -> dict[str, Any]:
        if not isinstance(value, str) or not value:
            raise FilterProblem("needs a non-empty string")
        if len(value) > MAX_TEXT_OPERAND:
            raise FilterProblem(f"takes at most {MAX_TEXT_OPERAND} characters")
        pattern = self.template.format(re.escape(value))
        return {field.name: {"$regex": pattern, "$options": "i"}}


class Contains(TextMatch):
    name = "contains"


class StartsWith(TextMatch):
    name = "starts_with"
    template = "^{}"  # without the `m` option, `^` is the start of the string only


class EndsWith(TextMatch):
    name = "ends_with"
    template = "{}" + END_OF_STRING


class Compare(FilterOperator):
    """gt/gte/lt/lte; on a date field a `YYYY-MM-DD` operand compares whole days
    (`gt 2025-08-15` starts at the 16th, `lte 2025-08-15` ends with the 15th)."""

    needs = ORDERED
    mongo: ClassVar[str]  # the operator for a plain operand
    day_mongo: ClassVar[str]  # and for a whole day: against its start or the next day's
    day_edge: ClassVar[int]

    def build(self, field: Field, value: object, env: FilterEnv) -> dict[str, Any]:
        bounds = _day_bounds(field, value, env)
        if bounds:
            return {field.name: {self.day_mongo: bounds[self.day_edge]}}
        return {field.name: {self.mongo: _operand(field, value, env)}}


class Gt(Compare):
    name, mongo, day_mongo, day_edge = "gt", "$gt", "$gte", 1


class Gte(Compare):
    name, mongo, day_mongo, day_edge = "gte", "$gte", "$gte", 0


class Lt(Compare):
    name, mongo, day_mongo, day_edge = "lt", "$lt", "$lt", 0


class Lte(Compare):
    name, mongo, day_mongo, day_edge = "lte", "$lte", "$lt", 1


class Between(FilterOperator):
    """`[low, high]`, both ends included (whole days for `YYYY-MM-DD` operands)."""

    name = "between"
    needs = ORDERED

    def build(self, field: Field, value: object, env: FilterEnv) -> dict[str, Any]:
        if not isinstance(value, list) or len(value) != 2:
            raise FilterProblem("needs [low, high]")
        low = Gte().build(field, value[0], env)[field.name]
        high = Lte().build(field, value[1], env)[field.name]
        low_value, high_value = next(iter(low.values())), next(iter(high.values()))
        if not in_order(low_value, high_value):
            raise FilterProblem("low is greater than high")
        return {field.name: {**low, **high}}


def in_order(low: object, high: object) -> bool:
    """low <= high, for operands of one ordered type (a Decimal128 compared as its Decimal)."""
    low, high = (v.to_decimal() if isinstance(v, Decimal128) else v for v in (low, high))
    return not low > high  # type: ignore[operator]


PERIODS = (
    "today",
    "yesterday",
    "tomorrow",
    "this_week",
    "this_month",
    "this_year",
    "past_week",
    "past_month",
    "past_year",
    "next_week",
    "next_month",
    "next_year",
)
MAX_DAYS = 36_600


def add_months(day: date, months: int) -> date:
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def period_days(period: object, today: date) -> tuple[date, date]:
    """The days [first, last) of a named period or `{"past_days"|"next_days": N}`.

    `past_*` runs from that far back up to and including today; `next_*` from today up to and
    including that far ahead; weeks start on Monday.
    """
    tomorrow = today + timedelta(days=1)
    if isinstance(period, dict):
        if len(period) != 1:
            raise FilterProblem("takes one of past_days or next_days")
        ((kind, count),) = period.items()
        if kind not in ("past_days", "next_days"):
            raise FilterProblem(f"unknown period '{kind}'")
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_DAYS:
            raise FilterProblem(f"{kind} needs a whole number from 1 to {MAX_DAYS}")
        if kind == "past_days":
            return today - timedelta(days=count), tomorrow
        return today, tomorrow + timedelta(days=count)
    if not isinstance(period, str) or period not in PERIODS:
        raise FilterProblem(f"needs one of {', '.join(PERIODS)}, past_days or next_days")
    week_start = today - timedelta(days=today.weekday())
    month_start = today.replace(day=1)
    year_start = today.replace(month=1, day=1)
    ranges = {
        "today": (today, tomorrow),
        "yesterday": (today - timedelta(days=1), today),
        "tomorrow": (tomorrow, tomorrow + timedelta(days=1)),
        "this_week": (week_start, week_start + timedelta(days=7)),
        "this_month": (month_start, add_months(month_start, 1)),
        "this_year": (year_start, year_start.replace(year=year_start.year + 1)),
        "past_week": (today - timedelta(days=7), tomorrow),
        "past_month": (add_months(today, -1), tomorrow),
        "past_year": (add_months(today, -12), tomorrow),
        "next_week": (today, tomorrow + timedelta(days=7)),
        "next_month": (today, add_months(today, 1) + timedelta(days=1)),
        "next_year": (today, add_months(today, 12) + timedelta(days=1)),
    }
    return ranges[period]


class IsWithin(FilterOperator):
    name = "is_within"
    needs = PERIOD

    def build(self, field: Field, value: object, env: FilterEnv) -> dict[str, Any]:
        zone = env.values.timezone
        today = env.now.astimezone(zone).date()
        first, last = period_days(value, today)
        start = datetime.combine(first, time(), tzinfo=zone)
        end = datetime.combine(last, time(), tzinfo=zone)
        return {field.name: {"$gte": to_utc_millis(start), "$lt": to_utc_millis(end)}}


def default_filter_operators() -> Registry[FilterOperator]:
    registry: Registry[FilterOperator] = Registry("filter operator")
    eq, in_, blank, contains = Eq(), In(), Blank(), Contains()
    for operator in (
        eq,
        in_,
        blank,
        contains,
        StartsWith(),
        EndsWith(),
        Gt(),
        Gte(),
        Lt(),
        Lte(),
        Between(),
        IsWithin(),
        HasAnyOf(),
        HasAllOf(),
        HasNoneOf(),
    ):
        registry.register(operator)
    registry.register(Negation("neq", eq))
    registry.register(Negation("not_in", in_))
    registry.register(Negation("not_blank", blank))
    registry.register(Negation("not_contains", contains))
    return registry


# ---- the builder ----------------------------------------------------------------------------


class FilterBuilder:
    """Translates a filter (a list of conditions, all of which must hold) for one table."""

    def __init__(self, operators: Registry[FilterOperator]) -> None:
        self.operators = operators

    def parse_param(self, text: str | None) -> object:
        if text is None or not text.strip():
            return []
        check_filters_param(text)
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise _invalid("filters", "is not valid JSON (URL-encode the JSON array)") from None
        # orjson keeps the last of two equal keys; a condition with two `field`s is a mistake
        refuse_duplicate_keys(text)
        return parsed

    def translate(
        self, filters: object, fields: dict[str, Field], env: FilterEnv, path: str = "filters"
    ) -> dict[str, Any]:
        if isinstance(filters, dict):
            filters = [filters]
        if not isinstance(filters, list):
            raise _invalid(path, "must be a JSON array of conditions")
        counter = [0]
        parts = [
            self._node(c, fields, env, f"{path}.{i}", 1, counter) for i, c in enumerate(filters)
        ]
        if not parts:
            return {}
        return parts[0] if len(parts) == 1 else {"$and": parts}

    def _node(
        self,
        node: object,
        fields: dict[str, Field],
        env: FilterEnv,
        path: str,
        depth: int,
        counter: list[int],
    ) -> dict[str, Any]:
        if not isinstance(node, dict):
            raise _invalid(path, "must be a condition object or an and/or group")
        if "and" in node or "or" in node:
            if depth > MAX_DEPTH:
                raise _invalid(path, f"groups nest at most {MAX_DEPTH} levels deep")
            if len(node) != 1:
                raise _invalid(path, "a group has exactly one key, `and` or `or`")
            ((kind, children),) = node.items()
            if not isinstance(children, list) or not children:
                raise _invalid(f"{path}.{kind}", "must be a non-empty array of conditions")
            parts = [
                self._node(c, fields, env, f"{path}.{kind}.{i}", depth + 1, counter)
                for i, c in enumerate(children)
            ]
            return {f"${kind}": parts}
        counter[0] += 1
        if counter[0] > MAX_CONDITIONS:
            raise _invalid(path, f"a filter has at most {MAX_CONDITIONS} conditions")
        unknown = set(node) - {"field", "op", "value"}
        if unknown:
            raise _invalid(path, f"unknown key '{sorted(unknown)[0]}' in a condition")
        name = node.get("field")
        if not isinstance(name, str) or name not in fields:
            raise _invalid(path, f"unknown field '{str(name)[:64]}'")
        field = fields[name]
        op_name = node.get("op", "eq")
        if not isinstance(op_name, str) or op_name not in self.operators:
            raise _invalid(path, f"unknown operator '{str(op_name)[:32]}'")
        operator = self.operators.get(op_name)
        if not operator.applies_to(field.type):
            raise _invalid(
                path, f"operator '{op_name}' does not apply to {field.type.name} field '{name}'"
            )
        if not operator.takes_value and node.get("value") is not None:
            raise _invalid(path, f"'{op_name}' takes no value")
        try:
            return operator.build(field, node.get("value"), env)
        except (FilterProblem, ColumnValueError) as exc:
            raise _invalid(path, f"'{name}' {op_name}: {exc}") from None


def check_filters_param(value: object) -> object:
    """The `filters` query parameter before its model's own checks: given twice or too long is
    an `invalid_filter` (docs/filters.md "Errors"), not a generic validation error."""
    if isinstance(value, list):
        raise _invalid("filters", "is given more than once: send one JSON array of conditions")
    if isinstance(value, str) and len(value) > MAX_FILTER_CHARS:
        raise _invalid(
            "filters",
            f"is {len(value)} characters long, over the limit of {MAX_FILTER_CHARS}: "
            "split the request or use `in` with fewer values",
        )
    return value


def refuse_duplicate_keys(text: str | bytes) -> None:
    """Raise `invalid_filter` naming a key given twice in one JSON object of `text` (the
    `filters` parameter's JSON)."""
    found = repeated_key(text)
    if found is not None:
        where, key = found
        raise repeated_filter_key(f"filters.{where}" if where else "filters", key)


def repeated_filter_key(path: str, key: str) -> InvalidFilter:
    """The error for an object at `path` of a filter that names `key` twice."""
    return _invalid(path, f"the key '{key[:64]}' appears twice in one object")


def _invalid(path: str, message: str) -> InvalidFilter:
    return InvalidFilter(f"{path}: {message}", [{"field": path, "message": message}])


def table_fields(columns: list[Column], types: Registry[ColumnType]) -> dict[str, Field]:
    fields = {
        key: Field(column.key, column, column_type)
        for key, (column, column_type) in SYSTEM_COLUMNS.items()
    }
    for column in columns:
        fields[column.key] = Field(column.key, column, types.get(column.type))
    return fields


def operators_for(column_type: ColumnType, operators: Registry[FilterOperator]) -> list[str]:
    """The names of the operators that apply to a column type's fields."""
    return [op.name for op in operators if op.applies_to(column_type)]
