"""How many SMS parts a text takes (docs/sms.md, "Preview"): GSM-7 texts take 160 characters
in one part and 153 per part when split (the extension characters `^{}\\[~]|€` count twice);
any other character makes the text UCS-2: 70 in one part, 67 per part (UTF-16 units, so an
emoji counts twice). Cyrillic is UCS-2."""

from __future__ import annotations

import math

GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = set("^{}\\[~]|€\f")


def encoding(text: str) -> str:
    return "GSM-7" if all(c in GSM7_BASIC or c in GSM7_EXTENDED for c in text) else "UCS-2"


def parts(text: str) -> int:
    """The number of SMS parts `text` is sent as (at least 1)."""
    if encoding(text) == "GSM-7":
        length = sum(2 if c in GSM7_EXTENDED else 1 for c in text)
        single, each = 160, 153
    else:
        length = len(text.encode("utf-16-le")) // 2
        single, each = 70, 67
    if length <= single:
        return 1
    return math.ceil(length / each)
