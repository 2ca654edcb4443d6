"""The ISO 4217 table behind the `currency` column type (crm_core/tables/currencies.py): its
shape, entries people use, and codes that are not currencies one can hold."""

from __future__ import annotations

import re

from crm_core.tables.currencies import MINOR_UNITS


def test_every_code_is_three_capitals_with_0_2_or_3_minor_digits():
    assert len(MINOR_UNITS) > 150
    assert all(re.fullmatch(r"[A-Z]{3}", code) for code in MINOR_UNITS)
    assert set(MINOR_UNITS.values()) == {0, 2, 3}


def test_known_currencies_and_their_minor_units():
    assert {code: MINOR_UNITS[code] for code in ("RUB", "USD", "EUR", "CNY", "KZT", "BYN")} == {
        "RUB": 2,
        "USD": 2,
        "EUR": 2,
        "CNY": 2,
        "KZT": 2,
        "BYN": 2,
    }
    assert (MINOR_UNITS["JPY"], MINOR_UNITS["KRW"], MINOR_UNITS["KWD"], MINOR_UNITS["BHD"]) == (
        0,
        0,
        3,
        3,
    )


def test_withdrawn_funds_metal_and_testing_codes_are_not_there():
    for code in ("RUR", "HRK", "BYR", "LTL", "XAU", "XDR", "XTS", "XXX", "BOV", "USN"):
        assert code not in MINOR_UNITS, code
