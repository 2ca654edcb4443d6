"""Decimal128 on the embedded engine: mongomock stores Decimal128 values but cannot compare,
sort, `$min`/`$max` or `$avg` them (it raises or answers null), and adds them at Python's
default 28 digits. MongoDB compares a Decimal128 with any number by value and computes with
IEEE 754 decimal128 (34 significant digits). The patches below make the embedded engine do
the same for the cases the decimal column types use (docs/storage.md "Decimal values"):
comparison and sort by value, `$sum`/`$avg`/`$min`/`$max` exact at 34 digits.

Equality stays mongomock's (Decimal128 by representation: `0.10` is not `0.1` there, while
MongoDB says they are equal); the column types store every value at its column's scale and
parse operands to it, so equal values always have one representation and the two engines
agree."""

from __future__ import annotations

import decimal
import numbers
from collections.abc import Callable, Iterable
from typing import Any

from bson.decimal128 import Decimal128
from mongomock import aggregate as _mongomock_aggregate
from mongomock import filtering as _mongomock_filtering

# what MongoDB's decimal128 arithmetic keeps
DECIMAL128_CONTEXT = decimal.Context(prec=34, rounding=decimal.ROUND_HALF_EVEN)

_original_compare_type: Callable[[object], int] = _mongomock_filtering._get_compare_type
_original_bson_compare: Callable[..., bool] = _mongomock_filtering.bson_compare


def _plain(value: object) -> object:
    return value.to_decimal() if isinstance(value, Decimal128) else value


def _compare_type(value: object) -> int:
    if isinstance(value, Decimal128):
        return 10  # a number, like int and double
    return _original_compare_type(value)


def _bson_compare(op: Callable[[Any, Any], bool], a: object, b: object, **kwargs: Any) -> bool:
    return _original_bson_compare(op, _plain(a), _plain(b), **kwargs)


def _numbers(values: Iterable[object]) -> list[Any]:
    found: list[Any] = []
    for value in values:
        if isinstance(value, Decimal128):
            found.append(value.to_decimal())
        elif isinstance(value, numbers.Number) and not isinstance(value, bool):
            found.append(value)
    return found


def _decimal_total(values: list[Any]) -> decimal.Decimal:
    total = decimal.Decimal(0)
    for value in values:
        operand = value if isinstance(value, decimal.Decimal) else decimal.Decimal(repr(value))
        total = DECIMAL128_CONTEXT.add(total, operand)
    return total


def _sum(values: Iterable[object]) -> object:
    values = list(values)
    if not any(isinstance(v, Decimal128) for v in values):
        return _original_sum(values)
    return Decimal128(_decimal_total(_numbers(values)))


def _avg(values: Iterable[object]) -> object:
    values = list(values)
    if not any(isinstance(v, Decimal128) for v in values):
        return _original_avg(values)
    found = _numbers(values)
    return Decimal128(DECIMAL128_CONTEXT.divide(_decimal_total(found), len(found)))


def _extreme(pick: Callable[..., Any]) -> Callable[[Iterable[object]], object]:
    def run(values: Iterable[object]) -> object:
        present = [v for v in values if v is not None]
        if not present:
            return None
        if not any(isinstance(v, Decimal128) for v in present):
            return pick(present)
        return pick(present, key=_mongomock_filtering.BsonComparable)

    return run


_original_sum: Callable[[Iterable[object]], object] = _mongomock_aggregate._sum_operation
_original_avg: Callable[[Iterable[object]], object] = _mongomock_aggregate._avg_operation

setattr(_mongomock_filtering, "_get_compare_type", _compare_type)  # noqa: B010
setattr(_mongomock_filtering, "bson_compare", _bson_compare)  # noqa: B010
_GROUPING: dict[str, Callable[[Iterable[object]], object]] = (
    _mongomock_aggregate._GROUPING_OPERATOR_MAP
)
_GROUPING.update({"$sum": _sum, "$avg": _avg, "$min": _extreme(min), "$max": _extreme(max)})
