"""Compiles a checked formula to a MongoDB aggregation expression (docs/computed.md "Blanks").

Only these operators are generated: `$add $subtract $multiply $divide $abs $round $min $max
$eq $ne $lt $lte $gt $gte $and $or $cond $ifNull $let $literal $concat $toUpper $toLower
$trim $strLenCP $substrCP $dateDiff $dateAdd $year $month $dayOfMonth $isoDayOfWeek`; never
`$where`, `$function` or `$accumulator` (tests/computed/test_language.py walks every compiled
expression). Client text only ever reaches MongoDB inside `$literal`; a column reference is a
field path made of a checked key (`^[a-z][a-z0-9_]*$`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from crm_core.tables.computed.checker import (
    MAX_ROUND_PLACES,
    MAX_TEXT_COUNT,
    literal_int,
    literal_unit,
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

Expr = Any  # a MongoDB aggregation expression
TRIMMED = " \t\n\r"  # TRIM removes these at both ends
# DATE_ADD's amount, in its unit, at most this far (about 10,000 years); beyond it is blank
DATE_ADD_LIMITS = {
    "year": 10_000,
    "month": 120_000,
    "week": 530_000,
    "day": 3_700_000,
    "hour": 88_000_000,
    "minute": 5_300_000_000,
}
# the dates an answer can carry (datetime's range); a DATE_ADD beyond them is blank
MIN_DATE = datetime(1, 1, 2, tzinfo=UTC)
MAX_DATE = datetime(9999, 12, 30, tzinfo=UTC)
# units whose boundaries are counted in the company's time zone; hours and minutes in UTC
ZONED_UNITS = ("year", "month", "week", "day")
ALLOWED_OPERATORS = frozenset(
    "$add $subtract $multiply $divide $abs $round $min $max $eq $ne $lt $lte $gt $gte $and $or "
    "$cond $ifNull $let $literal $concat $toUpper $toLower $trim $strLenCP $substrCP "
    "$dateDiff $dateAdd $year $month $dayOfMonth $isoDayOfWeek".split()
)


@dataclass(frozen=True)
class CompileEnv:
    timezone: str  # the company's IANA time zone
    today: datetime  # the company's today at its local midnight, in UTC (aware)


def null_safe(name: str, left: Expr, right: Expr, body: Callable[[Expr, Expr], Expr]) -> Expr:
    """`body` of the two values, blank when either is blank."""
    return {
        "$let": {
            "vars": {f"{name}a": left, f"{name}b": right},
            "in": {
                "$cond": [
                    {"$or": [{"$eq": [f"$${name}a", None]}, {"$eq": [f"$${name}b", None]}]},
                    None,
                    body(f"$${name}a", f"$${name}b"),
                ]
            },
        }
    }


def as_text(expr: Expr) -> Expr:
    return {"$ifNull": [expr, ""]}


class Compiler:
    def __init__(self, env: CompileEnv) -> None:
        self.env = env

    def compile(self, node: Node) -> Expr:
        if isinstance(node, Number):
            return {"$literal": node.value}
        if isinstance(node, Text):
            return {"$literal": node.value}
        if isinstance(node, Boolean):
            return {"$literal": node.value}
        if isinstance(node, ColumnRef):
            return {"$ifNull": [f"${node.key}", None]}
        if isinstance(node, Unary):
            operand = self.compile(node.operand)
            return operand if node.op == "+" else {"$subtract": [0, operand]}
        if isinstance(node, Binary):
            return self.binary(node)
        assert isinstance(node, Call)
        return CALLS[node.name](self, node)

    def binary(self, node: Binary) -> Expr:
        left, right = self.compile(node.left), self.compile(node.right)
        op = node.op
        if op == "+":
            return {"$add": [left, right]}
        if op == "-":
            return {"$subtract": [left, right]}
        if op == "*":
            return {"$multiply": [left, right]}
        if op == "/":  # by zero: blank
            return {
                "$let": {
                    "vars": {"d": right},
                    "in": {"$cond": [{"$eq": ["$$d", 0]}, None, {"$divide": [left, "$$d"]}]},
                }
            }
        if op == "&":
            return {"$concat": [as_text(left), as_text(right)]}
        if op == "=":
            return {"$eq": [left, right]}
        if op == "!=":
            return {"$ne": [left, right]}
        mongo = {"<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte"}[op]
        return null_safe("c", left, right, lambda a, b: {mongo: [a, b]})

    def args(self, node: Call) -> list[Expr]:
        return [self.compile(a) for a in node.args]


def _if(compiler: Compiler, node: Call) -> Expr:
    args = compiler.args(node)
    return {"$cond": [args[0], args[1], args[2] if len(args) > 2 else None]}


def _and_or(mongo: str) -> Callable[[Compiler, Call], Expr]:
    return lambda compiler, node: {mongo: compiler.args(node)}


def _not(compiler: Compiler, node: Call) -> Expr:
    # `$cond` rather than `$not`: the same on every engine (mongoeco has no `$not`)
    return {"$cond": [compiler.compile(node.args[0]), False, True]}


def _concat(compiler: Compiler, node: Call) -> Expr:
    return {"$concat": [as_text(a) for a in compiler.args(node)]}


def _text_unary(mongo: str) -> Callable[[Compiler, Call], Expr]:
    return lambda compiler, node: {mongo: as_text(compiler.compile(node.args[0]))}


def _trim(compiler: Compiler, node: Call) -> Expr:
    return {"$trim": {"input": as_text(compiler.compile(node.args[0])), "chars": TRIMMED}}


def _left(compiler: Compiler, node: Call) -> Expr:
    count = literal_int(node.args[1], 0, MAX_TEXT_COUNT, "LEFT's count")
    return {"$substrCP": [as_text(compiler.compile(node.args[0])), 0, count]}


def _right(compiler: Compiler, node: Call) -> Expr:
    count = literal_int(node.args[1], 0, MAX_TEXT_COUNT, "RIGHT's count")
    start = {"$max": [0, {"$subtract": [{"$strLenCP": "$$s"}, count]}]}
    return {
        "$let": {
            "vars": {"s": as_text(compiler.compile(node.args[0]))},
            "in": {"$substrCP": ["$$s", start, count]},
        }
    }


def _round(compiler: Compiler, node: Call) -> Expr:
    places = 0
    if len(node.args) > 1:
        places = literal_int(node.args[1], 0, MAX_ROUND_PLACES, "ROUND's places")
    return {"$round": [compiler.compile(node.args[0]), places]}


def _abs(compiler: Compiler, node: Call) -> Expr:
    return {"$abs": compiler.compile(node.args[0])}


def _min_max(mongo: str) -> Callable[[Compiler, Call], Expr]:
    return lambda compiler, node: {mongo: compiler.args(node)}


def _today(compiler: Compiler, node: Call) -> Expr:
    return {"$literal": compiler.env.today}


def _zone(compiler: Compiler, unit: str) -> dict[str, str]:
    return {"timezone": compiler.env.timezone} if unit in ZONED_UNITS else {}


def _date_diff(compiler: Compiler, node: Call) -> Expr:
    unit = literal_unit(node.args[2])
    start, end = compiler.compile(node.args[0]), compiler.compile(node.args[1])
    spec: dict[str, Expr] = {"startDate": start, "endDate": end, "unit": unit}
    spec.update(_zone(compiler, unit))
    if unit == "week":
        spec["startOfWeek"] = "monday"
    return {"$dateDiff": spec}


def _date_add(compiler: Compiler, node: Call) -> Expr:
    unit = literal_unit(node.args[2])
    limit = DATE_ADD_LIMITS[unit]
    date, amount = compiler.compile(node.args[0]), compiler.compile(node.args[1])
    added = {
        "$dateAdd": {
            "startDate": "$$t",
            "unit": unit,
            "amount": {"$round": ["$$n", 0]},
            **_zone(compiler, unit),
        }
    }
    in_range = {"$and": [{"$gte": ["$$r", MIN_DATE]}, {"$lte": ["$$r", MAX_DATE]}]}
    checked = {"$let": {"vars": {"r": added}, "in": {"$cond": [in_range, "$$r", None]}}}
    return {
        "$let": {
            "vars": {"t": date, "n": amount},
            "in": {
                "$cond": [
                    {
                        "$or": [
                            {"$eq": ["$$t", None]},
                            {"$eq": ["$$n", None]},
                            {"$lt": ["$$n", -limit]},
                            {"$gt": ["$$n", limit]},
                        ]
                    },
                    None,
                    checked,
                ]
            },
        }
    }


def _part(mongo: str) -> Callable[[Compiler, Call], Expr]:
    def compile_part(compiler: Compiler, node: Call) -> Expr:
        date = compiler.compile(node.args[0])
        return {mongo: {"date": date, "timezone": compiler.env.timezone}}

    return compile_part


def _blank(compiler: Compiler, node: Call) -> Expr:
    return {"$literal": None}


CALLS: dict[str, Callable[[Compiler, Call], Expr]] = {
    "IF": _if,
    "AND": _and_or("$and"),
    "OR": _and_or("$or"),
    "NOT": _not,
    "CONCAT": _concat,
    "UPPER": _text_unary("$toUpper"),
    "LOWER": _text_unary("$toLower"),
    "TRIM": _trim,
    "LEN": _text_unary("$strLenCP"),
    "LEFT": _left,
    "RIGHT": _right,
    "ROUND": _round,
    "ABS": _abs,
    "MIN": _min_max("$min"),
    "MAX": _min_max("$max"),
    "TODAY": _today,
    "DATE_DIFF": _date_diff,
    "DATE_ADD": _date_add,
    "YEAR": _part("$year"),
    "MONTH": _part("$month"),
    "DAY": _part("$dayOfMonth"),
    "WEEKDAY": _part("$isoDayOfWeek"),
    "BLANK": _blank,
}


def compile_formula(node: Node, env: CompileEnv) -> Expr:
    return Compiler(env).compile(node)


def operators(expr: Expr) -> set[str]:
    """Every operator an expression uses (`$literal`'s content is data, not walked)."""
    found: set[str] = set()
    if isinstance(expr, dict):
        for key, value in expr.items():
            if key.startswith("$"):
                found.add(key)
            if key != "$literal":
                found |= operators(value)
    elif isinstance(expr, list):
        for item in expr:
            found |= operators(item)
    return found
