"""A Python evaluator of the formula language, row by row: the reference the property test
compares the compiled MongoDB expression with (tests/computed/test_property.py). The list path
never uses it: formulas run inside the database. Its rules are the documented ones
(docs/computed.md "Blanks")."""

from __future__ import annotations

import calendar
import math
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from crm_core.tables.computed.checker import literal_int, literal_unit
from crm_core.tables.computed.compiler import (
    DATE_ADD_LIMITS,
    MAX_DATE,
    MIN_DATE,
    TRIMMED,
    ZONED_UNITS,
)
from crm_core.tables.computed.syntax import (
    Binary,
    Boolean,
    Call,
    ColumnRef,
    Node,
    Number,
    Text,
    Unary,
)


def ascii_upper(text: str) -> str:
    return "".join(chr(ord(c) - 32) if "a" <= c <= "z" else c for c in text)


def ascii_lower(text: str) -> str:
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in text)


def round_half_even(value: int | float, places: int) -> int | float:
    """MongoDB's `$round`: half to even, on the decimal form of the number."""
    if isinstance(value, int):
        return value
    if not math.isfinite(value):
        return value
    rounded = Decimal(repr(value)).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)
    return float(rounded)


def naive_utc(moment: datetime) -> datetime:
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def local(moment: datetime, zone: ZoneInfo) -> datetime:
    return moment.replace(tzinfo=UTC).astimezone(zone)


def date_diff(start: datetime, end: datetime, unit: str, zone: ZoneInfo) -> int:
    """MongoDB's `$dateDiff`: the number of `unit` boundaries crossed from start to end (in
    `zone` for days and longer; weeks start on Monday)."""
    start, end = naive_utc(start), naive_utc(end)
    if unit not in ZONED_UNITS:
        size = 3_600_000 if unit == "hour" else 60_000
        return _millis(end) // size - _millis(start) // size
    a, b = local(start, zone), local(end, zone)
    if unit == "year":
        return b.year - a.year
    if unit == "month":
        return (b.year * 12 + b.month) - (a.year * 12 + a.month)
    days = (b.date() - a.date()).days
    if unit == "day":
        return days
    monday_a = a.date() - timedelta(days=a.weekday())
    monday_b = b.date() - timedelta(days=b.weekday())
    return (monday_b - monday_a).days // 7


def _millis(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def date_add(start: datetime, unit: str, amount: int, zone: ZoneInfo) -> datetime | None:
    """MongoDB's `$dateAdd` (a month past a shorter month's end lands on its last day; days
    and longer in `zone`, keeping the local time of day); None beyond datetime's range."""
    start = naive_utc(start)
    try:
        if unit == "hour":
            return start + timedelta(hours=amount)
        if unit == "minute":
            return start + timedelta(minutes=amount)
        moment = local(start, zone)
        if unit in ("day", "week"):
            day = moment.date() + timedelta(days=amount * (7 if unit == "week" else 1))
        else:
            months = amount * (12 if unit == "year" else 1)
            index = moment.month - 1 + months
            year, month = moment.year + index // 12, index % 12 + 1
            day = date(year, month, min(moment.day, calendar.monthrange(year, month)[1]))
        wall = datetime.combine(day, moment.time().replace(tzinfo=None), tzinfo=zone)
        return naive_utc(wall)
    except (OverflowError, ValueError):
        return None


class Evaluator:
    def __init__(self, row: Mapping[str, Any], zone: ZoneInfo, today: datetime) -> None:
        self.row = row
        self.zone = zone
        self.today = today

    def eval(self, node: Node) -> Any:
        if isinstance(node, Number | Text | Boolean):
            return node.value
        if isinstance(node, ColumnRef):
            value = self.row.get(node.key)
            return naive_utc(value) if isinstance(value, datetime) else value
        if isinstance(node, Call) and node.name == "TODAY":
            return naive_utc(self.today)
        if isinstance(node, Unary):
            value = self.eval(node.operand)
            return value if node.op == "+" or value is None else 0 - value
        if isinstance(node, Binary):
            return self.binary(node)
        assert isinstance(node, Call)
        return FUNCTIONS[node.name](self, node)

    def binary(self, node: Binary) -> Any:
        a, b = self.eval(node.left), self.eval(node.right)
        op = node.op
        if op == "&":
            return (a or "") + (b or "")
        if op == "=":
            return a == b
        if op == "!=":
            return a != b
        if a is None or b is None:
            return None
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            return None if b == 0 else a / b
        compare: dict[str, Callable[[Any, Any], bool]] = {
            "<": lambda x, y: x < y,
            "<=": lambda x, y: x <= y,
            ">": lambda x, y: x > y,
            ">=": lambda x, y: x >= y,
        }
        return compare[op](a, b)

    def truth(self, node: Node) -> bool:
        return self.eval(node) is True

    def args(self, node: Call) -> list[Any]:
        return [self.eval(a) for a in node.args]


def _if(ev: Evaluator, node: Call) -> Any:
    if ev.truth(node.args[0]):
        return ev.eval(node.args[1])
    return ev.eval(node.args[2]) if len(node.args) > 2 else None


def _text(fn: Callable[[str], Any]) -> Callable[[Evaluator, Call], Any]:
    return lambda ev, node: fn(ev.eval(node.args[0]) or "")


def _left(ev: Evaluator, node: Call) -> Any:
    count = literal_int(node.args[1], 0, 10**9, "count")
    return (ev.eval(node.args[0]) or "")[:count]


def _right(ev: Evaluator, node: Call) -> Any:
    count = literal_int(node.args[1], 0, 10**9, "count")
    text = ev.eval(node.args[0]) or ""
    return text[max(0, len(text) - count) :][:count]


def _round(ev: Evaluator, node: Call) -> Any:
    value = ev.eval(node.args[0])
    places = literal_int(node.args[1], 0, 100, "places") if len(node.args) > 1 else 0
    return None if value is None else round_half_even(value, places)


def _abs(ev: Evaluator, node: Call) -> Any:
    value = ev.eval(node.args[0])
    return None if value is None else abs(value)


def _min_max(pick: Callable[[list[Any]], Any]) -> Callable[[Evaluator, Call], Any]:
    def evaluate(ev: Evaluator, node: Call) -> Any:
        values = [v for v in ev.args(node) if v is not None]
        return pick(values) if values else None

    return evaluate


def _date_diff(ev: Evaluator, node: Call) -> Any:
    start, end = ev.eval(node.args[0]), ev.eval(node.args[1])
    if start is None or end is None:
        return None
    return date_diff(start, end, literal_unit(node.args[2]), ev.zone)


def _date_add(ev: Evaluator, node: Call) -> Any:
    start, amount = ev.eval(node.args[0]), ev.eval(node.args[1])
    unit = literal_unit(node.args[2])
    if start is None or amount is None or abs(amount) > DATE_ADD_LIMITS[unit]:
        return None
    whole = int(round_half_even(float(amount), 0))
    result = date_add(start, unit, whole, ev.zone)
    if result is None or not naive_utc(MIN_DATE) <= result <= naive_utc(MAX_DATE):
        return None
    return result


def _part(read: Callable[[datetime], int]) -> Callable[[Evaluator, Call], Any]:
    def evaluate(ev: Evaluator, node: Call) -> Any:
        value = ev.eval(node.args[0])
        return None if value is None else read(local(naive_utc(value), ev.zone))

    return evaluate


FUNCTIONS: dict[str, Callable[[Evaluator, Call], Any]] = {
    "IF": _if,
    "AND": lambda ev, node: all(ev.truth(a) for a in node.args),
    "OR": lambda ev, node: any(ev.truth(a) for a in node.args),
    "NOT": lambda ev, node: not ev.truth(node.args[0]),
    "CONCAT": lambda ev, node: "".join(v or "" for v in ev.args(node)),
    "UPPER": _text(ascii_upper),
    "LOWER": _text(ascii_lower),
    "TRIM": _text(lambda t: t.strip(TRIMMED)),
    "LEN": _text(len),
    "LEFT": _left,
    "RIGHT": _right,
    "ROUND": _round,
    "ABS": _abs,
    "MIN": _min_max(min),
    "MAX": _min_max(max),
    "TODAY": lambda ev, node: ev.today,
    "DATE_DIFF": _date_diff,
    "DATE_ADD": _date_add,
    "YEAR": _part(lambda d: d.year),
    "MONTH": _part(lambda d: d.month),
    "DAY": _part(lambda d: d.day),
    "WEEKDAY": _part(lambda d: d.isoweekday()),
    "BLANK": lambda ev, node: None,
}


def evaluate(node: Node, row: Mapping[str, Any], zone: ZoneInfo, today: datetime) -> Any:
    """The value of a formula for one stored row (None: blank)."""
    return Evaluator(row, zone, today).eval(node)
