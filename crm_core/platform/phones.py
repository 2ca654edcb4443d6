"""Phone numbers: one parser for phone columns and SMS recipients."""

from __future__ import annotations

import phonenumbers


class InvalidPhone(ValueError):
    """The text is not a valid phone number; the message says which way."""


def normalise_phone(text: str, region: str) -> str:
    """`text` as E.164 (`+79161234567`); numbers without a country code are read in `region`
    (ISO 3166 code, e.g. `RU`). Raises InvalidPhone."""
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        raise InvalidPhone("is not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhone("is not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
