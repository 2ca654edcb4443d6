"""File cells into the API's JSON values, one column type at a time (docs/integrations.md
"Conversion").

A cell is what the reader gives: text, an int, a float, a bool, a naive datetime (an XLSX date
cell, in the company's time zone) or None. What comes out is exactly the JSON value the row API
takes for that column type (an option id, an ISO date-time with its offset, a float), so the
row checker then runs strictly, as for any API call; what cannot be read is a per-cell error
that says what is accepted. Nothing is guessed from a cell's type: a select cell is always an
option label, a link cell always a row id.

Text columns keep the cell as it is, whitespace included; other columns read a blank cell as
not given.
"""

from __future__ import annotations

import decimal
import math
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import phonenumbers

from crm_core.tables.columns import DOTTED_DATE, Column, ColumnType, ColumnValueError, ValueContext

FLOAT_EXACT_INT = 2**53
NUMBER_HELP = (
    "accepted: 1234.56, 1234,56, 1 234,56 (space or no-break space groups), -5, (1 234,56) for "
    "a negative, 15% (0.15), a mark р. руб. ₽ or RUB"
)
BOOLEAN_HELP = "accepted: true/false, да/нет, истина/ложь, yes/no, 1/0"
DATE_HELP = (
    "accepted: YYYY-MM-DD, DD.MM.YYYY, DD.MM.YYYY HH:MM[:SS], an ISO 8601 date-time (with an "
    "offset or in the company's time zone) or a date cell"
)
GROUP_SPACES = re.compile(r"[ \u00a0\u202f\u2009]")
CURRENCY = re.compile(r"\s*(?:₽|руб\.?|р\.|RUB)\s*$|^\s*(?:₽|RUB)\s*", re.IGNORECASE)
NUMBER_TEXT = re.compile(r"^[+-]?(?:\d+(?:[.,]\d*)?|[.,]\d+)(?:[eE][+-]?\d+)?$")
BOOLEAN_WORDS = {
    "true": True,
    "false": False,
    "1": True,
    "0": False,
    "yes": True,
    "no": False,
    "да": True,
    "нет": False,
    "истина": True,
    "ложь": False,
}
EXTENSION = re.compile(r"(?:доб\.?|добавочный|ext\.?|extension|x|#)\s*\d+\s*$", re.IGNORECASE)


class CellError(ValueError):
    """A cell that cannot be read as its column's value; the message says what is accepted."""


def text_of(cell: object) -> str:
    """A non-text cell as text: numbers as written, dates in ISO form."""
    if isinstance(cell, str):
        return cell
    if isinstance(cell, bool):
        return "true" if cell else "false"
    if isinstance(cell, float) and cell.is_integer() and abs(cell) < FLOAT_EXACT_INT:
        return str(int(cell))
    if isinstance(cell, datetime):
        if cell.time() == time(0) and cell.tzinfo is None:
            return cell.date().isoformat()
        return cell.isoformat(timespec="milliseconds" if cell.microsecond else "seconds")
    if isinstance(cell, date):
        return cell.isoformat()
    return repr(cell) if isinstance(cell, float) else str(cell)


def parse_number(text: str) -> decimal.Decimal:
    """A number as people write it (Russian Excel included), exactly."""
    raw = text.strip()
    negative = False
    if raw.startswith("(") and raw.endswith(")"):
        negative, raw = True, raw[1:-1].strip()
    raw = CURRENCY.sub("", raw).strip()
    percent = raw.endswith("%")
    if percent:
        raw = raw[:-1].strip()
    if raw.startswith(("-", "+")):
        sign, body = raw[0], raw[1:].strip()
    else:
        sign, body = "", raw
    if re.search(r"\d[ \u00a0\u202f\u2009]\d", body):
        if not re.fullmatch(r"\d{1,3}(?:[ \u00a0\u202f\u2009]\d{3})+(?:[.,]\d*)?", body):
            raise CellError(f"is not a number ({NUMBER_HELP})")
        body = GROUP_SPACES.sub("", body)
    candidate = sign + body
    if not NUMBER_TEXT.match(candidate) or ("," in candidate and "." in candidate):
        raise CellError(f"is not a number ({NUMBER_HELP})")
    number = decimal.Decimal(candidate.replace(",", "."))
    if percent:
        number = number.scaleb(-2)
    if negative:
        if number < 0:
            raise CellError(f"is not a number ({NUMBER_HELP})")
        number = -number
    return number


def _blank(cell: object) -> bool:
    return cell is None or (isinstance(cell, str) and not cell.strip())


def _text(column: Column, cell: object, tz: ZoneInfo) -> object:
    return text_of(cell)


def _trimmed_text(column: Column, cell: object, tz: ZoneInfo) -> object:
    return text_of(cell).strip()


def _phone(column: Column, cell: object, tz: ZoneInfo) -> object:
    text = text_of(cell).strip()
    match = EXTENSION.search(text)
    has_extension = False
    if match and re.search(r"\d", text[: match.start()]):
        has_extension = True
    else:
        try:
            has_extension = bool(phonenumbers.parse(text, "RU").extension)
        except phonenumbers.NumberParseException:
            pass
    if has_extension:
        raise CellError(
            "has an extension, which a phone column does not keep: put the extension in a "
            "column of its own (the number alone is accepted, e.g. +7 916 123-45-67)"
        )
    return text


def _integer(column: Column, cell: object, tz: ZoneInfo) -> object:
    if isinstance(cell, bool):
        raise CellError("is not a whole number (a true/false cell)")
    if isinstance(cell, int):
        return cell
    if isinstance(cell, float):
        if cell.is_integer() and abs(cell) <= FLOAT_EXACT_INT:
            return int(cell)
        raise CellError(f"must be a whole number (the cell holds {cell!r})")
    if not isinstance(cell, str):
        raise CellError("is not a whole number")
    number = parse_number(cell)
    if number != number.to_integral_value():
        raise CellError("must be a whole number")
    if number.adjusted() > 19:
        raise CellError("is out of the 64-bit integer range")
    return int(number)


def _float(column: Column, cell: object, tz: ZoneInfo) -> object:
    if isinstance(cell, bool):
        raise CellError("is not a number (a true/false cell)")
    if isinstance(cell, int | float):
        return float(cell)
    if not isinstance(cell, str):
        raise CellError(f"is not a number ({NUMBER_HELP})")
    text = cell.strip()
    try:  # the shortest form of a double (our export's) is read exactly, -0.0 included
        exact = float(text)
        if math.isfinite(exact) and NUMBER_TEXT.match(text):
            return exact
    except ValueError:
        pass
    return float(parse_number(text))


def _boolean(column: Column, cell: object, tz: ZoneInfo) -> object:
    if isinstance(cell, bool):
        return cell
    if isinstance(cell, int | float) and cell in (0, 1):
        return bool(cell)
    word = text_of(cell).strip().casefold()
    if word in BOOLEAN_WORDS:
        return BOOLEAN_WORDS[word]
    raise CellError(f"is not true or false ({BOOLEAN_HELP})")


def local_moment(naive: datetime, tz: ZoneInfo) -> datetime:
    """A local time in `tz` by the documented rule: a time that does not exist (clocks moved
    forward) is refused; one that occurs twice (clocks moved back) is the first of the two.
    Our exports write an offset with every such time, so they never reach this rule."""
    first = naive.replace(tzinfo=tz, fold=0)
    there_and_back = first.astimezone(UTC).astimezone(tz).replace(tzinfo=None)
    if there_and_back != naive:
        raise CellError(
            f"{naive:%Y-%m-%d %H:%M} does not exist in {tz.key} (the clocks moved forward "
            "then): write the time with its UTC offset, e.g. 2025-03-30T03:30:00+02:00"
        )
    return first


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def _date(column: Column, cell: object, tz: ZoneInfo) -> object:
    if isinstance(cell, datetime):
        return _iso(local_moment(cell, tz))
    if isinstance(cell, date):
        return cell.isoformat()
    if not isinstance(cell, str):
        raise CellError(f"is not a date ({DATE_HELP})")
    text = cell.strip()
    dotted = DOTTED_DATE.match(text)
    if dotted:
        day, month, year, clock = dotted.groups()
        text = f"{year}-{int(month):02d}-{int(day):02d}"
        if clock:
            hours, _, rest = clock.partition(":")
            text += f"T{int(hours):02d}:{rest}"
    if len(text) == 10:
        try:
            date.fromisoformat(text)
        except ValueError:
            raise CellError(f"is not a date ({DATE_HELP})") from None
        return text  # midnight in the company's time zone (the API's rule)
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise CellError(f"is not a date ({DATE_HELP})") from None
    if len(text) < 16 or text[10] not in "Tt ":
        raise CellError(f"is not a date ({DATE_HELP})")
    if moment.tzinfo is None:
        moment = local_moment(moment, tz)
    try:
        moment.astimezone(UTC)
    except OverflowError:
        raise CellError(f"is out of the date range ({DATE_HELP})") from None
    return _iso(moment)


def _time(column: Column, cell: object, tz: ZoneInfo) -> object:
    if isinstance(cell, datetime):
        cell = cell.time()
    if isinstance(cell, time):
        return cell.strftime("%H:%M:%S")
    if isinstance(cell, str):
        return cell.strip()
    raise CellError("is not a time (accepted: HH:MM, HH:MM:SS or a time cell)")


def _select(column: Column, cell: object, tz: ZoneInfo) -> object:
    label = text_of(cell)
    options = column.options or ()
    exact = [o.id for o in options if o.label == label]
    if len(exact) == 1:
        return exact[0]
    wanted = label.strip().casefold()
    loose = [o for o in options if o.label.strip().casefold() == wanted]
    if len(loose) == 1 and not exact:
        return loose[0].id
    if len(exact) > 1 or len(loose) > 1:
        names = ", ".join(f"'{o.label}'" for o in loose)
        raise CellError(
            f"'{label[:64]}' matches several options ({names}) that differ only in case or "
            "spaces: write the label exactly as one of them"
        )
    known = ", ".join(f"'{o.label}'" for o in list(options)[:20])
    more = " …" if len(options) > 20 else ""
    raise CellError(f"'{label[:64]}' is not an option of this column (options: {known}{more})")


def _decimal(column: Column, cell: object, tz: ZoneInfo) -> object:
    """decimal, currency: the number exactly, as the API's decimal string."""
    if isinstance(cell, bool):
        raise CellError("is not a number (a true/false cell)")
    if isinstance(cell, int):
        return str(cell)
    if isinstance(cell, float):
        return repr(cell) if math.isfinite(cell) else "nan"
    if not isinstance(cell, str):
        raise CellError(f"is not a number ({NUMBER_HELP})")
    return format(parse_number(cell), "f")


def _percent(column: Column, cell: object, tz: ZoneInfo) -> object:
    """Percentage points: 15, 15% and 15,5 % are all read as points (15% is 15, not 0.15)."""
    if isinstance(cell, str) and cell.strip().endswith("%"):
        cell = cell.strip()[:-1]
    return _float(column, cell, tz)


def _server_given(column: Column, cell: object, tz: ZoneInfo) -> object:
    """autonumber: the server numbers imported rows; the file's numbers (an export's) are
    not given, so an export imports back."""
    return None


def _reference(column: Column, cell: object, tz: ZoneInfo) -> object:
    if not isinstance(cell, str):
        raise CellError("must be an id (24 hexadecimal characters) written as text")
    return cell.strip()


TEXT_TYPES = frozenset({"string", "long_text"})
READERS: dict[str, Callable[[Column, object, ZoneInfo], object]] = {
    "string": _text,
    "email": _trimmed_text,
    "url": _trimmed_text,
    "phone": _phone,
    "integer": _integer,
    "float": _float,
    "boolean": _boolean,
    "date": _date,
    "time": _time,
    "select": _select,
    "link": _reference,
    "user": _reference,
    "long_text": _text,
    "decimal": _decimal,
    "currency": _decimal,
    "percent": _percent,
    "rating": _integer,
    "autonumber": _server_given,
}


def read_cell(column: Column, column_type: ColumnType, cell: object, vctx: ValueContext) -> Any:
    """The API value of one cell, None for not given; raises CellError."""
    if column_type.name in TEXT_TYPES:
        return None if cell is None else text_of(cell)
    if _blank(cell):
        return None
    reader = READERS.get(column_type.name)
    if reader is None:  # a type this module does not know: its own typecast, as JSON
        try:
            stored = column_type.coerce(column, cell, vctx, lenient=True)
        except ColumnValueError as exc:
            raise CellError(str(exc)) from None
        return column_type.render(column, stored)
    return reader(column, cell, vctx.timezone)


def utc_offset_text(moment: datetime) -> str:
    offset = moment.utcoffset() or timedelta(0)
    return "Z" if not offset else moment.strftime("%z")
