"""Property (issue #24 §4): for random rows and random well-typed formulas, the value the
compiled MongoDB expression gives (run by the database the suite runs on: the embedded engine,
or mongoeco on scripts/test-mongoeco) is the value the Python reference evaluator gives
(crm_core/tables/computed/reference.py): blanks, zero division, time zones, Unicode."""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from bson import ObjectId
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from crm_core.platform.storage import Storage
from crm_core.tables.computed.checker import Kind, check
from crm_core.tables.computed.compiler import ALLOWED_OPERATORS, CompileEnv, compile_formula
from crm_core.tables.computed.compiler import operators as used_operators
from crm_core.tables.computed.reference import evaluate
from crm_core.tables.computed.syntax import FormulaError, parse
from tests.support.api import make_settings

# MongoDB defines `$toUpper`/`$toLower` for ASCII only (docs/computed.md "Blanks"): on a
# real-driver server (scripts/test-mongoeco) UPPER and LOWER are left out of random formulas
REAL_DRIVER = bool(os.environ.get("CRM_TEST_MONGODB_URL"))
CASE_FUNCTIONS = [] if REAL_DRIVER else ["UPPER", "LOWER"]
COLUMNS = {"n": Kind.NUMBER, "m": Kind.NUMBER, "s": Kind.TEXT, "d": Kind.DATE, "b": Kind.BOOLEAN}
ZONES = ["UTC", "Europe/Moscow", "America/New_York", "Asia/Kolkata", "Pacific/Chatham"]
BASE = datetime(2024, 3, 9, tzinfo=UTC)  # near the DST switches of March


# ---- random rows ------------------------------------------------------------------------------

numbers = st.one_of(
    st.integers(-1000, 1000),
    st.sampled_from([0, 0.0, -0.5, 0.5, 1.25, 2.5, 1e-3, 123.456]),
)
texts = st.text(alphabet="aZ é Ж\t😀.$x", max_size=6)
dates = st.integers(-60 * 24 * 90, 60 * 24 * 90).map(lambda m: BASE + timedelta(minutes=m))
VALUES = {"n": numbers, "m": numbers, "s": texts, "d": dates, "b": st.booleans()}


@st.composite
def rows(draw: st.DrawFn) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for key, strategy in VALUES.items():
        pick = draw(st.integers(0, 5))
        if pick == 0:
            continue  # missing
        row[key] = None if pick == 1 else draw(strategy)
    return row


# ---- random formulas, of a wanted kind -------------------------------------------------------


def literal(kind: Kind) -> st.SearchStrategy[str]:
    if kind is Kind.NUMBER:
        return st.sampled_from(["0", "1", "2.5", "3", "-1", "1000", "0.1"])
    if kind is Kind.TEXT:
        return st.sampled_from(['""', '"ab"', '" x "', '"Жук"', '"$n"', '"\\"q\\""'])
    if kind is Kind.BOOLEAN:
        return st.sampled_from(["TRUE", "FALSE"])
    return st.sampled_from(["TODAY()", 'DATE_ADD(TODAY(), -3, "days")'])


def refs(kind: Kind) -> st.SearchStrategy[str]:
    keys = [f"{{{k}}}" for k, v in COLUMNS.items() if v is kind]
    return st.sampled_from(keys)


def formula(kind: Kind, depth: int) -> st.SearchStrategy[str]:
    # column references most often, so the rows' values (blanks among them) decide
    leaves = st.one_of(refs(kind), refs(kind), literal(kind), refs(kind), st.just("BLANK()"))
    if depth <= 0:
        return leaves
    sub = {k: formula(k, depth - 1) for k in (Kind.NUMBER, Kind.TEXT, Kind.BOOLEAN, Kind.DATE)}
    n, t, b, d = sub[Kind.NUMBER], sub[Kind.TEXT], sub[Kind.BOOLEAN], sub[Kind.DATE]
    units = st.sampled_from(['"days"', '"weeks"', '"months"', '"years"', '"hours"', '"minutes"'])
    options: list[st.SearchStrategy[str]] = [leaves]
    if kind is Kind.NUMBER:
        options += [
            st.tuples(n, st.sampled_from("+-*/"), n).map(lambda p: f"({p[0]} {p[1]} {p[2]})"),
            n.map(lambda x: f"-{x}"),
            n.map(lambda x: f"ABS({x})"),
            st.tuples(n, st.integers(0, 3)).map(lambda p: f"ROUND({p[0]}, {p[1]})"),
            st.lists(n, min_size=1, max_size=3).map(lambda xs: f"MIN({', '.join(xs)})"),
            st.lists(n, min_size=1, max_size=3).map(lambda xs: f"MAX({', '.join(xs)})"),
            t.map(lambda x: f"LEN({x})"),
            st.tuples(d, d, units).map(lambda p: f"DATE_DIFF({p[0]}, {p[1]}, {p[2]})"),
            st.tuples(st.sampled_from(["YEAR", "MONTH", "DAY", "WEEKDAY"]), d).map(
                lambda p: f"{p[0]}({p[1]})"
            ),
            st.tuples(b, n, n).map(lambda p: f"IF({p[0]}, {p[1]}, {p[2]})"),
        ]
    elif kind is Kind.TEXT:
        options += [
            st.lists(t, min_size=1, max_size=3).map(lambda xs: f"CONCAT({', '.join(xs)})"),
            st.tuples(t, t).map(lambda p: f"({p[0]} & {p[1]})"),
            st.tuples(st.sampled_from([*CASE_FUNCTIONS, "TRIM"]), t).map(
                lambda p: f"{p[0]}({p[1]})"
            ),
            st.tuples(st.sampled_from(["LEFT", "RIGHT"]), t, st.integers(0, 4)).map(
                lambda p: f"{p[0]}({p[1]}, {p[2]})"
            ),
            st.tuples(b, t).map(lambda p: f"IF({p[0]}, {p[1]})"),
        ]
    elif kind is Kind.BOOLEAN:
        compared = st.one_of(st.tuples(n, n), st.tuples(t, t), st.tuples(d, d))
        options += [
            st.tuples(compared, st.sampled_from(["=", "!=", "<", "<=", ">", ">="])).map(
                lambda p: f"({p[0][0]} {p[1]} {p[0][1]})"
            ),
            st.lists(b, min_size=1, max_size=3).map(lambda xs: f"AND({', '.join(xs)})"),
            st.lists(b, min_size=1, max_size=3).map(lambda xs: f"OR({', '.join(xs)})"),
            b.map(lambda x: f"NOT({x})"),
        ]
    else:
        options += [
            st.tuples(d, n, units).map(lambda p: f"DATE_ADD({p[0]}, {p[1]}, {p[2]})"),
            st.lists(d, min_size=1, max_size=2).map(lambda xs: f"MAX({', '.join(xs)})"),
            st.tuples(b, d, d).map(lambda p: f"IF({p[0]}, {p[1]}, {p[2]})"),
        ]
    return st.one_of(*options)


formulas = st.sampled_from(list(COLUMNS.values())).flatmap(lambda k: formula(k, 2))


# ---- the database the suite runs on ----------------------------------------------------------


@pytest.fixture(scope="module")
def database() -> Iterator[tuple[asyncio.AbstractEventLoop, Any]]:
    loop = asyncio.new_event_loop()
    storage = Storage(make_settings())
    loop.run_until_complete(storage.start([]))
    db = storage.tenant_db(str(ObjectId()))
    try:
        yield loop, db["property_rows"]
    finally:
        loop.run_until_complete(storage.client.drop_database(db.name))  # type: ignore[union-attr]
        storage.close()
        loop.close()


def same(got: object, want: object) -> bool:
    if isinstance(got, datetime) and isinstance(want, datetime):
        return got.astimezone(UTC).replace(tzinfo=None) == want.replace(tzinfo=None)
    if isinstance(got, float) or isinstance(want, float):
        if not isinstance(got, int | float) or not isinstance(want, int | float):
            return False
        return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)
    return type(got) is type(want) and got == want


async def compiled_values(collection: Any, expr: Any, docs: list[dict[str, Any]]) -> list[object]:
    await collection.delete_many({})
    await collection.insert_many([dict(d) for d in docs])
    found = await collection.aggregate(
        [{"$addFields": {"__x": expr}}, {"$sort": {"_id": 1}}]
    ).to_list(None)
    return [d.get("__x") for d in found]


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@example(source="{n} / {m}", docs=[{"n": 1, "m": 0}, {"n": 1}], zone="UTC", now=BASE)
@example(
    source='UPPER({s}) & LOWER("ÉЖ")' if not REAL_DRIVER else 'TRIM({s}) & "ÉЖ"',
    docs=[{"s": "é x"}],
    zone="UTC",
    now=BASE,
)
@example(
    source='DATE_DIFF({d}, TODAY(), "days") + DAY({d}) * 100',
    docs=[{"d": datetime(2024, 3, 9, 21, 30, tzinfo=UTC)}],
    zone="Europe/Moscow",
    now=datetime(2024, 3, 10, 22, 0, tzinfo=UTC),
)
@given(
    source=formulas,
    docs=st.lists(rows(), min_size=1, max_size=6),
    zone=st.sampled_from(ZONES),
    now=dates,
)
def test_compiled_formulas_agree_with_the_reference(database, source, docs, zone, now):
    loop, collection = database
    try:
        node = parse(source)
        check(node, COLUMNS)
    except FormulaError:
        return  # an always-blank formula: refused at definition
    tz = ZoneInfo(zone)
    midnight = datetime.combine(now.astimezone(tz).date(), datetime.min.time(), tzinfo=tz)
    env = CompileEnv(zone, midnight.astimezone(UTC))
    expr = compile_formula(node, env)
    assert used_operators(expr) <= ALLOWED_OPERATORS
    docs = [{"_id": ObjectId(), **d} for d in docs]
    docs.sort(key=lambda d: d["_id"])
    got = loop.run_until_complete(compiled_values(collection, expr, docs))
    want = [evaluate(node, d, tz, env.today) for d in docs]
    for doc, g, w in zip(docs, got, want, strict=True):
        assert same(g, w), f"{source} on {doc} in {zone}: database {g!r}, reference {w!r}"
