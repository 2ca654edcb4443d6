"""Checks that are not types: validators attached to a column by name (`"validators":
["inn"]`), so a tenant can pick them for its own columns too. Each raises ColumnValueError."""

from __future__ import annotations

import re
from typing import ClassVar

from crm_core.platform.registry import Named, Registry
from crm_core.tables.columns import ColumnValueError


class ColumnValidator:
    """Checks a coerced value; `types` lists the column types it can be attached to."""

    name: ClassVar[str]
    description: ClassVar[str]
    types: ClassVar[frozenset[str]] = frozenset({"string"})

    def check(self, value: object) -> None:
        raise NotImplementedError

    def accepts(self, column_type: Named) -> bool:
        """Whether it can be attached to columns of this type."""
        return column_type.name in self.types


def _digits(value: object, lengths: tuple[int, int], what: str) -> list[int]:
    if (
        not isinstance(value, str)
        or not value.isdigit()
        or not value.isascii()
        or len(value) not in lengths
    ):
        short, long = lengths  # the "or" in the template, to be translated with it
        raise ColumnValueError(f"{what} must be {short} or {long} digits")
    return [int(ch) for ch in value]


def _weighted(digits: list[int], weights: list[int]) -> int:
    return sum(d * w for d, w in zip(digits, weights, strict=False)) % 11 % 10


class InnValidator(ColumnValidator):
    """Russian taxpayer number: 10 digits (organisations) or 12 (individuals), checksummed."""

    name = "inn"
    description = "Russian INN: 10 or 12 digits with the official check digits"
    W10 = [2, 4, 10, 3, 5, 9, 4, 6, 8]
    W11 = [7, 2, 4, 10, 3, 5, 9, 4, 6, 8]
    W12 = [3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8]

    def check(self, value: object) -> None:
        digits = _digits(value, (10, 12), "INN")
        if len(digits) == 10:
            ok = _weighted(digits, self.W10) == digits[9]
        else:
            ok = (
                _weighted(digits, self.W11) == digits[10]
                and _weighted(digits, self.W12) == digits[11]
            )
        if not ok:
            raise ColumnValueError("is not a valid INN (check digit mismatch)")


class KppValidator(ColumnValidator):
    """Tax registration reason code: 9 characters, NNNNPPNNN (P a digit or a capital letter)."""

    name = "kpp"
    description = "Russian KPP: 9 characters, 4 digits, 2 digits or capital letters, 3 digits"
    PATTERN = re.compile(r"^\d{4}[0-9A-Z]{2}\d{3}$")

    def check(self, value: object) -> None:
        if not isinstance(value, str) or not self.PATTERN.fullmatch(value):
            raise ColumnValueError("is not a valid KPP (9 characters: NNNNPPNNN)")


class OgrnValidator(ColumnValidator):
    """State registration number: 13 digits (OGRN) or 15 (OGRNIP), checksummed."""

    name = "ogrn"
    description = "Russian OGRN (13 digits) or OGRNIP (15 digits) with the check digit"

    def check(self, value: object) -> None:
        digits = _digits(value, (13, 15), "OGRN")
        body = int("".join(str(d) for d in digits[:-1]))
        modulus = 11 if len(digits) == 13 else 13
        if body % modulus % 10 != digits[-1]:
            raise ColumnValueError("is not a valid OGRN (check digit mismatch)")


def default_validators() -> Registry[ColumnValidator]:
    registry: Registry[ColumnValidator] = Registry("column validator")
    for validator in (InnValidator(), KppValidator(), OgrnValidator()):
        registry.register(validator)
    return registry
