"""The formula type checker (docs/computed.md "Types"): every node gets one of four kinds
(number, text, boolean, date) or blank, checked against the table's columns when a column is
defined; a mistake is a FormulaError at the position of the part at fault."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from crm_core.tables.computed.syntax import (
    Binary,
    Boolean,
    Call,
    ColumnRef,
    FormulaError,
    Node,
    Number,
    Text,
    Unary,
)


class Kind(enum.Enum):
    NUMBER = "number"
    TEXT = "text"
    BOOLEAN = "boolean"
    DATE = "date"
    BLANK = "blank"  # BLANK(): fits any kind


# the units of DATE_DIFF and DATE_ADD: the unit MongoDB names; plural or singular
UNITS = {
    "years": "year",
    "months": "month",
    "weeks": "week",
    "days": "day",
    "hours": "hour",
    "minutes": "minute",
}
PLURAL_UNITS = tuple(UNITS)
UNITS.update({v: v for v in list(UNITS.values())})
MAX_TEXT_COUNT = 10_000
MAX_ROUND_PLACES = 10
ARITHMETIC = ("+", "-", "*", "/")
ORDERING = ("<", "<=", ">", ">=")
EQUALITY = ("=", "!=")


def literal_int(node: Node, low: int, high: int, what: str) -> int:
    """A whole-number literal argument (LEFT's count, ROUND's places)."""
    value = node
    negative = False
    if isinstance(node, Unary) and node.op == "-":
        value, negative = node.operand, True
    if not isinstance(value, Number) or not isinstance(value.value, int):
        raise FormulaError(node.pos, f"{what} must be a whole number written in the formula")
    number = -value.value if negative else value.value
    if not low <= number <= high:
        raise FormulaError(node.pos, f"{what} must be from {low} to {high}")
    return number


def literal_unit(node: Node) -> str:
    if not isinstance(node, Text) or node.value.lower() not in UNITS:
        raise FormulaError(
            node.pos,
            f"the unit must be one of {', '.join(sorted(PLURAL_UNITS))} (as text)",
        )
    return UNITS[node.value.lower()]


class Checker:
    """Types a formula against `columns` (key to kind; a key mapped to None is a column a
    formula cannot read, the string says why)."""

    def __init__(self, columns: Mapping[str, Kind | str]) -> None:
        self.columns = columns

    def check(self, node: Node) -> Kind:
        method: Callable[[Node], Kind] = getattr(self, f"_{type(node).__name__.lower()}")
        return method(node)

    def _number(self, node: Node) -> Kind:
        return Kind.NUMBER

    def _text(self, node: Node) -> Kind:
        return Kind.TEXT

    def _boolean(self, node: Node) -> Kind:
        return Kind.BOOLEAN

    def _columnref(self, node: Node) -> Kind:
        assert isinstance(node, ColumnRef)
        found = self.columns.get(node.key)
        if found is None:
            raise FormulaError(node.pos, f"unknown column '{node.key}'")
        if isinstance(found, str):
            raise FormulaError(
                node.pos, f"column '{node.key}' cannot be used in a formula: {found}"
            )
        return found

    def _unary(self, node: Node) -> Kind:
        assert isinstance(node, Unary)
        self.expect(node.operand, Kind.NUMBER, f"'{node.op}' needs a number")
        return Kind.NUMBER

    def _binary(self, node: Node) -> Kind:
        assert isinstance(node, Binary)
        left, right = self.check(node.left), self.check(node.right)
        if node.op in ARITHMETIC:
            for side, kind in ((node.left, left), (node.right, right)):
                if kind not in (Kind.NUMBER, Kind.BLANK):
                    raise FormulaError(
                        side.pos,
                        f"'{node.op}' needs numbers, this is {kind.value}"
                        + (" (use DATE_ADD or DATE_DIFF for dates)" if kind is Kind.DATE else ""),
                    )
            return Kind.NUMBER
        if node.op == "&":
            for side, kind in ((node.left, left), (node.right, right)):
                if kind not in (Kind.TEXT, Kind.BLANK):
                    raise FormulaError(side.pos, f"'&' joins text, this is {kind.value}")
            return Kind.TEXT
        self.same_kind(node, left, right)
        if node.op in ORDERING and Kind.BOOLEAN in (left, right):
            raise FormulaError(
                node.pos, f"'{node.op}' compares numbers, text or dates, not booleans"
            )
        return Kind.BOOLEAN

    @staticmethod
    def same_kind(node: Node, left: Kind, right: Kind) -> None:
        if Kind.BLANK not in (left, right) and left is not right:
            raise FormulaError(node.pos, f"cannot compare {left.value} with {right.value}")

    def expect(self, node: Node, kind: Kind, message: str) -> Kind:
        found = self.check(node)
        if found not in (kind, Kind.BLANK):
            raise FormulaError(node.pos, f"{message}, this is {found.value}")
        return found

    def _call(self, node: Node) -> Kind:
        assert isinstance(node, Call)
        spec = FUNCTIONS.get(node.name)
        if spec is None:
            raise FormulaError(node.pos, f"unknown function {node.name[:32]}")
        low, high = spec.arity
        count = len(node.args)
        if count < low or (high is not None and count > high):
            wanted = f"{low}" if low == high else f"{low} to {high}" if high else f"at least {low}"
            raise FormulaError(node.pos, f"{node.name} takes {wanted} arguments, given {count}")
        return spec.check(self, node)


@dataclass(frozen=True)
class Function:
    arity: tuple[int, int | None]
    check: Callable[[Checker, Call], Kind]


def _all(kind: Kind, result: Kind) -> Callable[[Checker, Call], Kind]:
    def check(checker: Checker, node: Call) -> Kind:
        for arg in node.args:
            checker.expect(arg, kind, f"{node.name} takes {kind.value}")
        return result

    return check


def _if(checker: Checker, node: Call) -> Kind:
    checker.expect(node.args[0], Kind.BOOLEAN, "IF's condition must be a boolean")
    kinds = [checker.check(a) for a in node.args[1:]]
    known = [k for k in kinds if k is not Kind.BLANK]
    if known and any(k is not known[0] for k in known):
        raise FormulaError(
            node.pos,
            f"IF's two results must be of one kind, given {known[0].value} and {known[1].value}",
        )
    return known[0] if known else Kind.BLANK


def _counted_text(checker: Checker, node: Call) -> Kind:
    checker.expect(node.args[0], Kind.TEXT, f"{node.name} takes text")
    literal_int(node.args[1], 0, MAX_TEXT_COUNT, f"{node.name}'s count")
    return Kind.TEXT


def _round(checker: Checker, node: Call) -> Kind:
    checker.expect(node.args[0], Kind.NUMBER, "ROUND takes a number")
    if len(node.args) > 1:
        literal_int(node.args[1], 0, MAX_ROUND_PLACES, "ROUND's places")
    return Kind.NUMBER


def _min_max(checker: Checker, node: Call) -> Kind:
    kinds = [checker.check(a) for a in node.args]
    known = [(a, k) for a, k in zip(node.args, kinds, strict=True) if k is not Kind.BLANK]
    for arg, kind in known:
        if kind not in (Kind.NUMBER, Kind.DATE):
            raise FormulaError(arg.pos, f"{node.name} takes numbers or dates, this is {kind.value}")
        if kind is not known[0][1]:
            raise FormulaError(arg.pos, f"{node.name} takes arguments of one kind")
    return known[0][1] if known else Kind.BLANK


def _date_diff(checker: Checker, node: Call) -> Kind:
    checker.expect(node.args[0], Kind.DATE, "DATE_DIFF's start must be a date")
    checker.expect(node.args[1], Kind.DATE, "DATE_DIFF's end must be a date")
    literal_unit(node.args[2])
    return Kind.NUMBER


def _date_add(checker: Checker, node: Call) -> Kind:
    checker.expect(node.args[0], Kind.DATE, "DATE_ADD's date must be a date")
    checker.expect(node.args[1], Kind.NUMBER, "DATE_ADD's amount must be a number")
    literal_unit(node.args[2])
    return Kind.DATE


def _constant(kind: Kind) -> Callable[[Checker, Call], Kind]:
    return lambda checker, node: kind


FUNCTIONS: dict[str, Function] = {
    "IF": Function((2, 3), _if),
    "AND": Function((1, 20), _all(Kind.BOOLEAN, Kind.BOOLEAN)),
    "OR": Function((1, 20), _all(Kind.BOOLEAN, Kind.BOOLEAN)),
    "NOT": Function((1, 1), _all(Kind.BOOLEAN, Kind.BOOLEAN)),
    "CONCAT": Function((1, 20), _all(Kind.TEXT, Kind.TEXT)),
    "UPPER": Function((1, 1), _all(Kind.TEXT, Kind.TEXT)),
    "LOWER": Function((1, 1), _all(Kind.TEXT, Kind.TEXT)),
    "TRIM": Function((1, 1), _all(Kind.TEXT, Kind.TEXT)),
    "LEN": Function((1, 1), _all(Kind.TEXT, Kind.NUMBER)),
    "LEFT": Function((2, 2), _counted_text),
    "RIGHT": Function((2, 2), _counted_text),
    "ROUND": Function((1, 2), _round),
    "ABS": Function((1, 1), _all(Kind.NUMBER, Kind.NUMBER)),
    "MIN": Function((1, 20), _min_max),
    "MAX": Function((1, 20), _min_max),
    "TODAY": Function((0, 0), _constant(Kind.DATE)),
    "DATE_DIFF": Function((3, 3), _date_diff),
    "DATE_ADD": Function((3, 3), _date_add),
    "YEAR": Function((1, 1), _all(Kind.DATE, Kind.NUMBER)),
    "MONTH": Function((1, 1), _all(Kind.DATE, Kind.NUMBER)),
    "DAY": Function((1, 1), _all(Kind.DATE, Kind.NUMBER)),
    "WEEKDAY": Function((1, 1), _all(Kind.DATE, Kind.NUMBER)),
    "BLANK": Function((0, 0), _constant(Kind.BLANK)),
}


def check(node: Node, columns: Mapping[str, Kind | str]) -> Kind:
    """The kind of a formula's result; FormulaError with the position of the first mistake. A
    formula that is always blank is refused (it has no kind to filter or sort by)."""
    kind = Checker(columns).check(node)
    if kind is Kind.BLANK:
        raise FormulaError(node.pos, "the formula is always blank")
    return kind


_ = (Boolean, Number, Text)  # node classes the checker dispatches to by name
