"""Phone numbers: one parser for phone columns and SMS recipients.

An extension (`8 (916) 123-45-67 доб. 123`, `ext. 5`, `x12`, `#12`) is refused, never dropped:
a phone value is one dialable E.164 number (an SMS cannot reach an extension), so the API, the
import and SMS recipients answer the same 400 (docs/api.md "Tables", the `phone` type). Keep an
extension in a column of its own.
"""

from __future__ import annotations

import phonenumbers

EXTENSION_REFUSED = (
    "has an extension ({extension}), which a phone value does not keep: give the number alone "
    "(e.g. +7 916 123-45-67) and the extension in a column of its own"
)


class InvalidPhone(ValueError):
    """The text is not a valid phone number; the message says which way."""


def normalise_phone(text: str, region: str) -> str:
    """`text` as E.164 (`+79161234567`); numbers without a country code are read in `region`
    (ISO 3166 code, e.g. `RU`). Raises InvalidPhone, also for a number with an extension."""
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        raise InvalidPhone("is not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhone("is not a valid phone number")
    if number.extension:
        raise InvalidPhone(EXTENSION_REFUSED.format(extension=number.extension))
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
