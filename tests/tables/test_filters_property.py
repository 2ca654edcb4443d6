"""Property: for random rows and random valid filters, the rows the service selects (the
translated query run by the database) are the rows a small reference evaluator selects."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from bson import ObjectId
from bson.decimal128 import Decimal128
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mongomock_motor import AsyncMongoMockClient

import crm_core.platform.storage  # noqa: F401 - the embedded engine's Decimal128 comparisons
from crm_core.tables.columns import Column, ValueContext, default_column_types
from crm_core.tables.filters import (
    FilterBuilder,
    FilterEnv,
    default_filter_operators,
    operators_for,
    table_fields,
)

TYPES = default_column_types()
COLUMNS = [
    {"key": "s", "type": "string"},
    {"key": "i", "type": "integer"},
    {"key": "f", "type": "float"},
    {"key": "d", "type": "date"},
    {"key": "b", "type": "boolean"},
    {"key": "sel", "type": "select", "options": [{"id": 1, "label": "a"}, {"id": 2, "label": "b"}]},
    {
        "key": "ms",
        "type": "multi_select",
        "options": [{"id": 1, "label": "a"}, {"id": 2, "label": "b"}, {"id": 3, "label": "c"}],
    },
    {"key": "dec", "type": "decimal", "scale": 2},
]
FIELDS = table_fields([Column.from_doc(c) for c in COLUMNS], TYPES)
NOW = datetime(2025, 8, 15, 12, tzinfo=UTC)
ENV = FilterEnv(ValueContext(ZoneInfo("UTC"), "RU", 10_000), NOW)
BUILDER = FilterBuilder(default_filter_operators())
MISSING = object()

texts = st.text(alphabet="abAB.*$^(аБ ", max_size=4)
days = st.integers(min_value=-10, max_value=10).map(
    lambda n: NOW.replace(hour=0) + timedelta(days=n)
)
moments = st.builds(lambda d, h: d + timedelta(hours=h), days, st.integers(0, 23))
values = {
    "s": texts,
    "i": st.integers(-3, 3),
    "f": st.sampled_from([-1.5, 0.0, 0.5, 2.0]),
    "d": moments,
    "b": st.booleans(),
    "sel": st.sampled_from([1, 2]),
    "ms": st.lists(st.sampled_from([1, 2, 3]), max_size=3, unique=True),
    "dec": st.sampled_from(["-1.50", "0.00", "0.10", "2.00", "0.5"]),
}
option_ids = st.lists(st.sampled_from([1, 2, 3]), min_size=1, max_size=3)


@st.composite
def rows(draw):
    row = {}
    for key, strategy in values.items():
        choice = draw(st.integers(0, 4))
        if choice == 0:
            continue  # missing
        row[key] = draw(strategy)
    return row


def day_text(moment):
    return moment.strftime("%Y-%m-%d")


@st.composite
def conditions(draw):
    key = draw(st.sampled_from(list(values)))
    ops = sorted(set(operators_for(FIELDS[key].type, BUILDER.operators)) - {"is_within"})
    op = draw(st.sampled_from(ops))
    strategy = values[key]
    if key == "d":
        strategy = st.one_of(days.map(day_text), moments.map(lambda m: m.isoformat()))
    if op in ("blank", "not_blank"):
        return {"field": key, "op": op}
    if op in ("in", "not_in"):
        return {"field": key, "op": op, "value": draw(st.lists(strategy, min_size=1, max_size=3))}
    if op == "between":
        low, high = sorted([draw(st.integers(-3, 3)), draw(st.integers(-3, 3))])
        if key == "d":
            base = NOW.replace(hour=0)
            return {
                "field": key,
                "op": op,
                "value": [
                    day_text(base + timedelta(days=low)),
                    day_text(base + timedelta(days=high)),
                ],
            }
        if key == "f":
            return {"field": key, "op": op, "value": [low / 2, high / 2]}
        return {"field": key, "op": op, "value": [low, high]}
    if op in ("contains", "not_contains", "starts_with", "ends_with"):
        return {"field": key, "op": op, "value": draw(texts.filter(bool))}
    if op in ("has_any_of", "has_all_of", "has_none_of"):
        return {"field": key, "op": op, "value": draw(option_ids)}
    if key == "dec":  # operands as strings and as numbers
        strategy = st.one_of(strategy, st.sampled_from([0.1, 2, -1.5, 0.25]))
    return {"field": key, "op": op, "value": draw(strategy)}


def filters():
    leaf = conditions()
    group = st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.builds(lambda xs: {"or": xs}, st.lists(inner, min_size=1, max_size=3)),
            st.builds(lambda xs: {"and": xs}, st.lists(inner, min_size=1, max_size=3)),
        ),
        max_leaves=6,
    )
    return st.lists(group, max_size=3)


# ---- the reference evaluator: plain Python over the drawn values ----------------------------


def _day(text):
    start = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    return start, start + timedelta(days=1)


def _parse(key, value):
    if key == "d":
        return datetime.fromisoformat(value)
    if key == "f":
        return float(value)
    if key == "dec":
        return Decimal(str(value))
    return value


def _eq(key, stored, value):
    if stored is MISSING:
        return False
    if key == "d" and len(value) == 10:
        start, end = _day(value)
        return start <= stored < end
    return stored == _parse(key, value) and type(stored) is type(_parse(key, value))


def holds(row, node):
    if "or" in node:
        return any(holds(row, c) for c in node["or"])
    if "and" in node:
        return all(holds(row, c) for c in node["and"])
    key, op, value = node["field"], node.get("op", "eq"), node.get("value")
    stored = row.get(key, MISSING)
    if isinstance(stored, Decimal128):
        stored = stored.to_decimal()
    blank = stored is MISSING or stored is None or stored == "" or stored == []
    present = not blank or stored == ""
    if op == "eq":
        return _eq(key, stored, value)
    if op == "neq":
        return not _eq(key, stored, value)
    if op == "in":
        return any(_eq(key, stored, v) for v in value)
    if op == "not_in":
        return not any(_eq(key, stored, v) for v in value)
    if op in ("has_any_of", "has_all_of", "has_none_of"):
        listed = stored if isinstance(stored, list) else []
        if op == "has_any_of":
            return any(v in listed for v in value)
        if op == "has_all_of":
            return all(v in listed for v in value)
        return not any(v in listed for v in value)
    if op == "blank":
        return blank
    if op == "not_blank":
        return not blank
    if op in ("contains", "not_contains", "starts_with", "ends_with"):
        text = stored if isinstance(stored, str) else None
        if op == "contains":
            return text is not None and value.lower() in text.lower()
        if op == "not_contains":
            return not (text is not None and value.lower() in text.lower())
        if op == "starts_with":
            return text is not None and text.lower().startswith(value.lower())
        return text is not None and text.lower().endswith(value.lower())
    if not present:
        return False
    if op == "between":
        low, high = value
        if key == "d":
            return _day(low)[0] <= stored < _day(high)[1]
        return low <= stored <= high
    if key == "d" and len(value) == 10:
        start, end = _day(value)
        return {
            "gt": stored >= end,
            "gte": stored >= start,
            "lt": stored < start,
            "lte": stored < end,
        }[op]
    operand = _parse(key, value)
    return {
        "gt": stored > operand,
        "gte": stored >= operand,
        "lt": stored < operand,
        "lte": stored <= operand,
    }[op]


def _stored(row):
    doc = dict(row)
    if "f" in doc:
        doc["f"] = float(doc["f"])
    if "dec" in doc:  # stored at the column's scale, as the column type writes it
        doc["dec"] = Decimal128(Decimal(doc["dec"]).quantize(Decimal("0.01")))
    return doc


async def _service_selects(docs, query):
    client = AsyncMongoMockClient(tz_aware=True)
    collection = client["prop"]["rows"]
    if docs:
        await collection.insert_many([dict(d) for d in docs])
    return {d["_id"] async for d in collection.find(query, {"_id": 1})}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(rows(), max_size=12), filters())
def test_service_matches_reference(drawn_rows, drawn_filters):
    docs = [{**_stored(r), "_id": ObjectId()} for r in drawn_rows]
    query = BUILDER.translate(drawn_filters, FIELDS, ENV)
    selected = asyncio.run(_service_selects(docs, query))
    expected = {d["_id"] for d in docs if all(holds(d, c) for c in drawn_filters)}
    assert selected == expected, (drawn_filters, query)
