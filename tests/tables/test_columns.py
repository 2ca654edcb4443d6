"""Column types, table-driven: accepted inputs with their stored and rendered forms, and
rejected inputs."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from crm_core.platform.registry import DuplicateEntry, Registry, UnknownEntry
from crm_core.tables.columns import Column, ColumnValueError, ValueContext, default_column_types

TYPES = default_column_types()
UTC_CTX = ValueContext(ZoneInfo("UTC"), "RU", 10_000)
MSK_CTX = ValueContext(ZoneInfo("Europe/Moscow"), "RU", 10_000)
SELECT = Column.from_doc(
    {
        "key": "status",
        "type": "select",
        "options": [{"id": 1, "label": "Active"}, {"id": 11, "label": "Signed"}],
    }
)

ACCEPTED = [
    # type, input, stored, rendered, context
    ("string", "ООО Ромашка", "ООО Ромашка", "ООО Ромашка", UTC_CTX),
    ("string", "", "", "", UTC_CTX),
    ("integer", 42, 42, 42, UTC_CTX),
    ("integer", -7, -7, -7, UTC_CTX),
    ("integer", 5.0, 5, 5, UTC_CTX),
    ("integer", 2**63 - 1, 2**63 - 1, 2**63 - 1, UTC_CTX),
    ("float", 150000.5, 150000.5, 150000.5, UTC_CTX),
    ("float", 3, 3.0, 3.0, UTC_CTX),
    ("boolean", False, False, False, UTC_CTX),
    ("date", "2025-08-15", datetime(2025, 8, 15, tzinfo=UTC), "2025-08-15T00:00:00Z", UTC_CTX),
    ("date", "2025-08-15", datetime(2025, 8, 14, 21, tzinfo=UTC), "2025-08-14T21:00:00Z", MSK_CTX),
    (
        "date",
        "2025-08-15T10:00:00",
        datetime(2025, 8, 15, 10, tzinfo=UTC),
        "2025-08-15T10:00:00Z",
        UTC_CTX,
    ),
    (
        "date",
        "2025-08-15T10:00:00+03:00",
        datetime(2025, 8, 15, 7, tzinfo=UTC),
        "2025-08-15T07:00:00Z",
        UTC_CTX,
    ),
    (
        "date",
        "2025-08-15T10:00:00Z",
        datetime(2025, 8, 15, 10, tzinfo=UTC),
        "2025-08-15T10:00:00Z",
        MSK_CTX,
    ),
    (
        "date",
        "2025-08-15T10:00:00.123456Z",
        datetime(2025, 8, 15, 10, 0, 0, 123000, tzinfo=UTC),
        "2025-08-15T10:00:00.123Z",
        UTC_CTX,
    ),
    ("time", "9:05", "09:05:00", "09:05:00", UTC_CTX),
    ("time", "23:59:59", "23:59:59", "23:59:59", UTC_CTX),
    ("email", "Ann.Lee@Example.COM", "Ann.Lee@example.com", "Ann.Lee@example.com", UTC_CTX),
    ("phone", "8 (916) 123-45-67", "+79161234567", "+79161234567", UTC_CTX),
    ("phone", "+1 650 253 0000", "+16502530000", "+16502530000", UTC_CTX),
    (
        "url",
        "https://example.com/a?b=1",
        "https://example.com/a?b=1",
        "https://example.com/a?b=1",
        UTC_CTX,
    ),
    ("url", "http://localhost:8080", "http://localhost:8080", "http://localhost:8080", UTC_CTX),
]

REJECTED = [
    ("string", 5, "expected a string"),
    ("string", "x" * 10_001, "longer than 10000"),
    ("string", {"$gt": ""}, "expected a string"),
    ("integer", 1.5, "whole number"),
    ("integer", "5", "expected a whole number"),
    ("integer", True, "expected a whole number"),
    ("integer", 2**63, "64-bit"),
    ("float", "1.5", "expected a number"),
    ("float", [1.5], "expected a number"),
    ("boolean", "true", "true or false"),
    ("boolean", 1, "true or false"),
    ("date", "2025-02-30", "not a valid date"),
    ("date", "2025-13-01", "not a valid date"),
    ("date", "15.08.2025", "not a valid date"),
    ("date", "2025-08-15T25:00:00", "not a valid date"),
    ("date", 20250815, "expected a date string"),
    ("time", "24:00", "valid time"),
    ("time", "12:60", "valid time"),
    ("time", "noon", "HH:MM"),
    ("email", "not-an-email", "not a valid email"),
    ("email", "a@b", "not a valid email"),
    ("phone", "12345", "phone"),
    ("phone", "+7 999", "phone"),
    ("url", "ftp://example.com", "http(s)"),
    ("url", "/relative/path", "http(s)"),
    ("url", "https://", "http(s)"),
    ("url", "javascript:alert(1)", "http(s)"),
    ("select", 99, "not an option"),
    ("select", "Active", "option id"),
    ("select", True, "option id"),
]


def _column(type_name):
    return SELECT if type_name == "select" else Column.from_doc({"key": "c", "type": type_name})


@pytest.mark.parametrize(("type_name", "value", "stored", "rendered", "ctx"), ACCEPTED)
def test_accepted(type_name, value, stored, rendered, ctx):
    column_type = TYPES.get(type_name)
    column = _column(type_name)
    result = column_type.coerce(column, value, ctx)
    assert result == stored and type(result) is type(stored)
    assert column_type.render(column, result) == rendered


@pytest.mark.parametrize(("type_name", "value", "reason"), REJECTED)
def test_rejected(type_name, value, reason):
    with pytest.raises(ColumnValueError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        TYPES.get(type_name).coerce(_column(type_name), value, UTC_CTX)


def test_select_accepts_option_ids():
    assert TYPES.get("select").coerce(SELECT, 11, UTC_CTX) == 11


def test_string_max_length_of_column():
    column = Column.from_doc({"key": "c", "type": "string", "max_length": 3})
    with pytest.raises(ColumnValueError, match="longer than 3"):
        TYPES.get("string").coerce(column, "abcd", UTC_CTX)


@pytest.mark.parametrize(
    ("old", "new", "value", "converted"),
    [
        ("integer", "string", 42, "42"),
        ("string", "integer", "42", 42),
        ("string", "float", "1,5", 1.5),
        ("float", "integer", 3.0, 3),
        ("string", "boolean", "yes", True),
        ("date", "string", datetime(2025, 8, 15, tzinfo=UTC), "2025-08-15T00:00:00Z"),
        ("string", "date", "2025-08-15", datetime(2025, 8, 15, tzinfo=UTC)),
        ("select", "string", 11, "Signed"),
        ("string", "select", "signed", 11),
        ("string", "phone", "8 916 123 45 67", "+79161234567"),
    ],
)
def test_lenient_conversion(old, new, value, converted):
    old_column = _column(old)
    new_column = _column(new)
    exported = TYPES.get(old).export_value(old_column, value)
    assert TYPES.get(new).coerce(new_column, exported, UTC_CTX, lenient=True) == converted


@pytest.mark.parametrize(
    "type_name",
    [t.name for t in TYPES if not t.references and not t.numbered and not t.computed],
)
def test_random_values_are_valid(type_name):
    rng = random.Random(1)
    column_type = TYPES.get(type_name)
    column = _column(type_name)
    for _ in range(20):
        column_type.coerce(column, column_type.random_value(column, rng), UTC_CTX)


def test_registry_errors():
    registry: Registry = Registry("column type")
    registry.register(TYPES.get("string"))
    with pytest.raises(DuplicateEntry):
        registry.register(TYPES.get("string"))
    with pytest.raises(UnknownEntry):
        registry.get("money")
