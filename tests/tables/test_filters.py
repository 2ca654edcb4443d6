"""The filter translator, table-driven: every operator against every column type, the exact
MongoDB conditions, and every error answer."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from bson import ObjectId
from bson.decimal128 import Decimal128

from crm_core.platform.errors import InvalidFilter
from crm_core.tables.columns import Column, ValueContext, default_column_types
from crm_core.tables.filters import (
    MAX_CONDITIONS,
    FilterBuilder,
    FilterEnv,
    default_filter_operators,
    operators_for,
    period_days,
    table_fields,
)

TYPES = default_column_types()
OPERATORS = default_filter_operators()
BUILDER = FilterBuilder(OPERATORS)
COLUMNS = [
    {"key": "s", "type": "string"},
    {"key": "i", "type": "integer"},
    {"key": "f", "type": "float"},
    {"key": "d", "type": "date"},
    {"key": "t", "type": "time"},
    {"key": "b", "type": "boolean"},
    {"key": "sel", "type": "select", "options": [{"id": 1, "label": "a"}, {"id": 2, "label": "b"}]},
    {"key": "e", "type": "email"},
    {"key": "p", "type": "phone"},
    {"key": "u", "type": "url"},
    {"key": "lt", "type": "long_text"},
    {
        "key": "ms",
        "type": "multi_select",
        "options": [{"id": 1, "label": "a"}, {"id": 2, "label": "b"}],
    },
    {"key": "dec", "type": "decimal", "scale": 2},
    {"key": "cur", "type": "currency", "currency": "RUB", "scale": 2},
    {"key": "pct", "type": "percent"},
    {"key": "r", "type": "rating", "max": 5},
    {"key": "no", "type": "autonumber"},
]
FIELDS = table_fields([Column.from_doc(c) for c in COLUMNS], TYPES)
NOW = datetime(2025, 8, 15, 12, 30, tzinfo=UTC)  # a Friday
ENV = FilterEnv(ValueContext(ZoneInfo("UTC"), "RU", 10_000), NOW)
MSK = FilterEnv(ValueContext(ZoneInfo("Europe/Moscow"), "RU", 10_000), NOW)
SAMPLE = {
    "s": "abc",
    "i": 5,
    "f": 1.5,
    "d": "2025-08-15T10:00:00Z",
    "t": "10:00",
    "b": True,
    "sel": 1,
    "e": "a@example.com",
    "p": "+79161234567",
    "u": "https://example.com",
    "lt": "notes",
    "ms": 1,
    "dec": "1.5",
    "cur": 10,
    "pct": 15.5,
    "r": 3,
    "no": 7,
}


def translate(filters, env=ENV):
    return BUILDER.translate(filters, FIELDS, env)


def day(y, m, d, h=0):
    return datetime(y, m, d, h, tzinfo=UTC)


def operand_for(op, key):
    value = SAMPLE[key]
    if op in ("in", "not_in"):
        return [value]
    if op == "between":
        return [value, value]
    if op == "is_within":
        return "today"
    if op in ("blank", "not_blank"):
        return None
    if op in ("contains", "not_contains", "starts_with", "ends_with"):
        return "a"
    if op in ("has_any_of", "has_all_of", "has_none_of"):
        return [value]
    return value


@pytest.mark.parametrize("op", OPERATORS.names())
@pytest.mark.parametrize("key", [c["key"] for c in COLUMNS])
def test_operator_type_matrix(op, key):
    """Every operator either translates for a type that lists it or is refused naming it."""
    column_type = FIELDS[key].type
    condition = {"field": key, "op": op, "value": operand_for(op, key)}
    if op in operators_for(column_type, OPERATORS):
        query = translate([condition])
        assert query and isinstance(query, dict)
    else:
        with pytest.raises(InvalidFilter) as info:
            translate([condition])
        assert info.value.details == [
            {
                "field": "filters.0",
                "message": f"operator '{op}' does not apply to {column_type.name} field '{key}'",
            }
        ]


CASES = [
    ({"field": "s", "value": "x"}, {"s": "x"}),
    ({"field": "s", "op": "neq", "value": "x"}, {"$nor": [{"s": "x"}]}),
    ({"field": "i", "op": "in", "value": [1, 2]}, {"i": {"$in": [1, 2]}}),
    ({"field": "i", "op": "not_in", "value": [1]}, {"$nor": [{"i": {"$in": [1]}}]}),
    ({"field": "i", "op": "gt", "value": 5}, {"i": {"$gt": 5}}),
    ({"field": "i", "op": "gte", "value": 5.0}, {"i": {"$gte": 5}}),
    ({"field": "f", "op": "lt", "value": 2}, {"f": {"$lt": 2.0}}),
    ({"field": "f", "op": "lte", "value": 2.5}, {"f": {"$lte": 2.5}}),
    ({"field": "i", "op": "between", "value": [1, 3]}, {"i": {"$gte": 1, "$lte": 3}}),
    ({"field": "t", "op": "gt", "value": "9:00"}, {"t": {"$gt": "09:00:00"}}),
    ({"field": "b", "value": False}, {"b": False}),
    ({"field": "sel", "op": "in", "value": [1, 2]}, {"sel": {"$in": [1, 2]}}),
    ({"field": "e", "value": "A@Example.COM"}, {"e": "A@example.com"}),
    ({"field": "p", "value": "8 916 123-45-67"}, {"p": "+79161234567"}),
    ({"field": "s", "op": "blank"}, {"$or": [{"s": None}, {"s": ""}]}),
    ({"field": "ms", "op": "blank"}, {"$or": [{"ms": None}, {"ms": {"$size": 0}}]}),
    ({"field": "ms", "op": "has_any_of", "value": [2, 1, 2]}, {"ms": {"$in": [2, 1]}}),
    ({"field": "ms", "op": "has_all_of", "value": [1, 2]}, {"ms": {"$all": [1, 2]}}),
    ({"field": "ms", "op": "has_none_of", "value": [1]}, {"ms": {"$nin": [1]}}),
    ({"field": "dec", "value": 1.5}, {"dec": Decimal128("1.50")}),
    ({"field": "dec", "op": "gt", "value": "0.005"}, {"dec": {"$gt": Decimal128("0.005")}}),
    (
        {"field": "cur", "op": "between", "value": [1, "2.5"]},
        {"cur": {"$gte": Decimal128("1.00"), "$lte": Decimal128("2.50")}},
    ),
    ({"field": "no", "op": "gte", "value": 3}, {"no": {"$gte": 3}}),
    ({"field": "r", "op": "in", "value": [1, 5]}, {"r": {"$in": [1, 5]}}),
    (
        {"field": "lt", "op": "contains", "value": "x"},
        {"lt": {"$regex": "x", "$options": "i"}},
    ),
    ({"field": "s", "op": "not_blank"}, {"$nor": [{"$or": [{"s": None}, {"s": ""}]}]}),
    (
        {"field": "s", "op": "contains", "value": "a.b*"},
        {"s": {"$regex": re.escape("a.b*"), "$options": "i"}},
    ),
    (
        {"field": "s", "op": "not_contains", "value": "x"},
        {"$nor": [{"s": {"$regex": "x", "$options": "i"}}]},
    ),
    (
        {"field": "e", "op": "starts_with", "value": "^a"},
        {"e": {"$regex": "^" + re.escape("^a"), "$options": "i"}},
    ),
    (
        {"field": "u", "op": "ends_with", "value": ".com$"},
        {"u": {"$regex": re.escape(".com$") + "(?![\\s\\S])", "$options": "i"}},
    ),
    # a date given as a day is the whole day in the tenant's timezone
    (
        {"field": "d", "value": "2025-08-15"},
        {"d": {"$gte": day(2025, 8, 15), "$lt": day(2025, 8, 16)}},
    ),
    ({"field": "d", "op": "gt", "value": "2025-08-15"}, {"d": {"$gte": day(2025, 8, 16)}}),
    ({"field": "d", "op": "gte", "value": "2025-08-15"}, {"d": {"$gte": day(2025, 8, 15)}}),
    ({"field": "d", "op": "lt", "value": "2025-08-15"}, {"d": {"$lt": day(2025, 8, 15)}}),
    ({"field": "d", "op": "lte", "value": "2025-08-15"}, {"d": {"$lt": day(2025, 8, 16)}}),
    (
        {"field": "d", "op": "between", "value": ["2025-08-01", "2025-08-31"]},
        {"d": {"$gte": day(2025, 8, 1), "$lt": day(2025, 9, 1)}},
    ),
    (
        {"field": "d", "op": "gt", "value": "2025-08-15T10:00:00Z"},
        {"d": {"$gt": day(2025, 8, 15, 10)}},
    ),
    (
        {"field": "d", "op": "is_within", "value": "today"},
        {"d": {"$gte": day(2025, 8, 15), "$lt": day(2025, 8, 16)}},
    ),
    (
        {"field": "d", "op": "is_within", "value": {"past_days": 3}},
        {"d": {"$gte": day(2025, 8, 12), "$lt": day(2025, 8, 16)}},
    ),
    (
        {"field": "_created_at", "op": "gte", "value": "2025-01-01"},
        {"_created_at": {"$gte": day(2025, 1, 1)}},
    ),
    ({"field": "_created_by", "value": "u1"}, {"_created_by": "u1"}),
    (
        {"field": "id", "value": "66b0c1d2e3f4a5b6c7d8e9f0"},
        {"_id": ObjectId("66b0c1d2e3f4a5b6c7d8e9f0")},
    ),
]


@pytest.mark.parametrize(("condition", "expected"), CASES)
def test_translation(condition, expected):
    assert translate([condition]) == expected


def test_moscow_day_and_period():
    assert translate([{"field": "d", "value": "2025-08-15"}], MSK) == {
        "d": {"$gte": day(2025, 8, 14, 21), "$lt": day(2025, 8, 15, 21)}
    }
    assert translate([{"field": "d", "op": "is_within", "value": "today"}], MSK) == {
        "d": {"$gte": day(2025, 8, 14, 21), "$lt": day(2025, 8, 15, 21)}
    }


def test_groups_and_all_conditions_must_hold():
    query = translate(
        [
            {"field": "i", "op": "gt", "value": 1},
            {
                "or": [
                    {"field": "s", "value": "a"},
                    {
                        "and": [
                            {"field": "b", "value": True},
                            {"field": "f", "op": "lt", "value": 2},
                        ]
                    },
                ]
            },
        ]
    )
    assert query == {
        "$and": [
            {"i": {"$gt": 1}},
            {"$or": [{"s": "a"}, {"$and": [{"b": True}, {"f": {"$lt": 2.0}}]}]},
        ]
    }
    assert translate([]) == {}
    assert translate({"field": "i", "value": 1}) == {"i": 1}


TODAY = datetime(2025, 8, 15).date()


@pytest.mark.parametrize(
    ("period", "first", "last"),
    [
        ("today", "2025-08-15", "2025-08-16"),
        ("yesterday", "2025-08-14", "2025-08-15"),
        ("tomorrow", "2025-08-16", "2025-08-17"),
        ("this_week", "2025-08-11", "2025-08-18"),
        ("this_month", "2025-08-01", "2025-09-01"),
        ("this_year", "2025-01-01", "2026-01-01"),
        ("past_week", "2025-08-08", "2025-08-16"),
        ("past_month", "2025-07-15", "2025-08-16"),
        ("past_year", "2024-08-15", "2025-08-16"),
        ("next_week", "2025-08-15", "2025-08-23"),
        ("next_month", "2025-08-15", "2025-09-16"),
        ("next_year", "2025-08-15", "2026-08-16"),
        ({"past_days": 1}, "2025-08-14", "2025-08-16"),
        ({"next_days": 2}, "2025-08-15", "2025-08-18"),
    ],
)
def test_periods(period, first, last):
    start, end = period_days(period, TODAY)
    assert (start.isoformat(), end.isoformat()) == (first, last)


def test_month_end_clamps():
    start, _ = period_days("past_month", datetime(2025, 3, 31).date())
    assert start.isoformat() == "2025-02-28"


ERRORS = [
    ("not a list", "filters", "must be a JSON array"),
    ([5], "filters.0", "must be a condition object"),
    ([{"field": "nope", "value": 1}], "filters.0", "unknown field 'nope'"),
    ([{"field": "$where", "value": 1}], "filters.0", "unknown field"),
    ([{"field": "s", "op": "regex", "value": "x"}], "filters.0", "unknown operator"),
    ([{"field": "s", "op": "$ne", "value": "x"}], "filters.0", "unknown operator"),
    ([{"field": "i", "op": "contains", "value": "1"}], "filters.0", "does not apply"),
    ([{"field": "s", "op": "gt", "value": "a"}], "filters.0", "does not apply"),
    ([{"field": "i", "value": "5"}], "filters.0", "expected a whole number"),
    ([{"field": "i", "value": {"$gt": 1}}], "filters.0", "expected a whole number"),
    ([{"field": "s", "value": {"$ne": None}}], "filters.0", "expected a string"),
    ([{"field": "i", "value": None}], "filters.0", "needs a value"),
    ([{"field": "d", "value": "2025-02-30"}], "filters.0", "not a valid date"),
    ([{"field": "sel", "value": 99}], "filters.0", "not an option"),
    ([{"field": "i", "op": "in", "value": []}], "filters.0", "non-empty list"),
    ([{"field": "i", "op": "in", "value": 1}], "filters.0", "non-empty list"),
    ([{"field": "i", "op": "in", "value": list(range(1001))}], "filters.0", "at most 1000"),
    ([{"field": "i", "op": "between", "value": [3, 1]}], "filters.0", "greater than high"),
    ([{"field": "i", "op": "between", "value": [1]}], "filters.0", "[low, high]"),
    ([{"field": "s", "op": "contains", "value": ""}], "filters.0", "non-empty string"),
    ([{"field": "s", "op": "contains", "value": "x" * 1001}], "filters.0", "at most 1000"),
    ([{"field": "s", "op": "contains", "value": 5}], "filters.0", "non-empty string"),
    ([{"field": "s", "op": "blank", "value": "x"}], "filters.0", "takes no value"),
    ([{"field": "d", "op": "is_within", "value": "last_decade"}], "filters.0", "needs one of"),
    ([{"field": "d", "op": "is_within", "value": {"past_days": 0}}], "filters.0", "1 to"),
    ([{"field": "d", "op": "is_within", "value": {"past_days": True}}], "filters.0", "1 to"),
    ([{"field": "d", "op": "is_within", "value": {"ago": 3}}], "filters.0", "unknown period"),
    ([{"field": "s", "value": "x", "extra": 1}], "filters.0", "unknown key 'extra'"),
    ([{"or": []}], "filters.0.or", "non-empty array"),
    ([{"or": [{"field": "s", "value": "x"}], "and": []}], "filters.0", "exactly one key"),
    ([{"or": [{"field": "nope"}]}], "filters.0.or.0", "unknown field"),
    (
        [{"or": [{"or": [{"or": [{"or": [{"or": [{"or": [{"field": "s", "value": "x"}]}]}]}]}]}]}],
        "filters.0.or.0.or.0.or.0.or.0.or.0",
        "at most 5 levels",
    ),
    (
        [{"field": "s", "value": "x"}] * (MAX_CONDITIONS + 1),
        f"filters.{MAX_CONDITIONS}",
        "at most 100 conditions",
    ),
    ([{"field": "id", "value": "nope"}], "filters.0", "not a row id"),
    ([{"field": "id", "op": "blank"}], "filters.0", "does not apply"),
]


@pytest.mark.parametrize(("filters", "path", "message"), ERRORS)
def test_errors_name_the_condition(filters, path, message):
    with pytest.raises(InvalidFilter) as info:
        translate(filters)
    assert info.value.code == "invalid_filter" and info.value.status == 400
    assert info.value.details[0]["field"] == path
    assert message in info.value.details[0]["message"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[{", "not valid JSON"),
        ("x" * 20_001, "over the limit of 20000"),
    ],
)
def test_param_errors(text, message):
    with pytest.raises(InvalidFilter, match=re.escape(message)):
        BUILDER.parse_param(text)


def test_param_parsing():
    assert BUILDER.parse_param(None) == [] and BUILDER.parse_param(" ") == []
    assert BUILDER.parse_param('[{"field":"s","value":"x"}]') == [{"field": "s", "value": "x"}]


def test_five_nested_groups_are_allowed():
    five = {"field": "s", "value": "x"}
    for _ in range(5):
        five = {"or": [five]}
    assert translate([five])


EQUALITY_OPERATORS = {"eq", "neq", "in", "not_in", "blank", "not_blank"}
TEXT_OPERATORS = EQUALITY_OPERATORS | {"contains", "not_contains", "starts_with", "ends_with"}
ORDER_OPERATORS = EQUALITY_OPERATORS | {"gt", "gte", "lt", "lte", "between"}


@pytest.mark.parametrize(
    ("type_name", "expected"),
    [
        ("string", TEXT_OPERATORS),
        ("email", TEXT_OPERATORS),
        ("phone", TEXT_OPERATORS),
        ("url", TEXT_OPERATORS),
        ("integer", ORDER_OPERATORS),
        ("float", ORDER_OPERATORS),
        ("time", ORDER_OPERATORS),
        ("date", ORDER_OPERATORS | {"is_within"}),
        ("boolean", EQUALITY_OPERATORS),
        ("select", EQUALITY_OPERATORS),
        ("link", EQUALITY_OPERATORS),
        ("user", EQUALITY_OPERATORS),
    ],
)
def test_the_operators_of_each_type_are_those_docs_filters_md_lists(type_name, expected):
    """Operators name the capability they need; these sets are the table of docs/filters.md."""
    assert set(operators_for(TYPES.get(type_name), OPERATORS)) == expected


def test_the_row_id_takes_equality_operators_only():
    assert set(operators_for(FIELDS["id"].type, OPERATORS)) == {"eq", "neq", "in", "not_in"}
