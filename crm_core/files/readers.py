"""Reading uploaded CSV and XLSX files row by row, with what it takes to read them right:
format by content (a zip is XLSX), encoding (UTF-8, with or without BOM, or Windows-1251, told
apart from other single-byte encodings by charset-normalizer), the CSV delimiter (sniffed among
`,` `;` tab `|`), and one error per problem in the shape of docs/api.md "Errors", naming the field
`file`.

Everything here is synchronous and works on a local temporary file; callers run it in a thread.
"""

from __future__ import annotations

import codecs
import csv
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import IO, Any, Protocol

from crm_core.platform.errors import ValidationFailed

CSV_DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
DELIMITER_NAMES = {name: char for char, name in CSV_DELIMITERS.items()}
OTHER_CYRILLIC = frozenset({"koi8_r", "koi8_u", "cp866", "iso8859_5", "cp855"})
SAMPLE_BYTES = 256 * 1024
XLSX_MAGIC = b"PK\x03\x04"
XLS_MAGIC = b"\xd0\xcf\x11\xe0"
MAX_CELL_CHARS = 1_000_000
XLSX_MAX_UNPACKED = 512 * 1024 * 1024
INT64 = (-(2**63), 2**63 - 1)
FORMULA_QUOTED = ("'=", "'+", "'-", "'@", "'\t", "'\r")


def file_error(message: str) -> ValidationFailed:
    return ValidationFailed.field("file", message)


@dataclass
class FileInfo:
    name: str
    format: str  # csv | xlsx
    size: int
    encoding: str | None = None  # csv
    delimiter: str | None = None  # csv: comma | semicolon | tab | pipe
    sheet: str | None = None  # xlsx


def detect_format(head: bytes, name: str, content_type: str, given: str | None) -> str:
    if head.startswith(XLS_MAGIC):
        raise file_error("Excel 97-2003 (.xls) files are not supported: save it as XLSX or CSV")
    detected = "xlsx" if head.startswith(XLSX_MAGIC) else "csv"
    if given is not None and given != detected:
        what = "an XLSX workbook" if detected == "xlsx" else "not an XLSX workbook"
        raise file_error(f"format is {given}, but the file is {what}")
    if detected == "csv" and (name.lower().endswith(".xlsx") or "spreadsheetml" in content_type):
        raise file_error("the file is named as XLSX but is not a readable XLSX workbook")
    return detected


class Utf8Check:
    """Feeds the upload through a strict incremental UTF-8 decoder as it arrives."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self.valid = True

    def feed(self, chunk: bytes, final: bool = False) -> None:
        if not self.valid:
            return
        try:
            self._decoder.decode(chunk, final)
        except UnicodeDecodeError:
            self.valid = False


def detect_encoding(sample: bytes, utf8_valid: bool, given: str | None) -> str:
    if given is not None:
        if given == "utf-8" and not utf8_valid:
            raise file_error("encoding is utf-8, but the file is not valid UTF-8")
        return "utf-8-sig" if given == "utf-8" else given
    if b"\x00" in sample:
        raise file_error(
            "the file is not text in UTF-8 or Windows-1251 (it holds NUL bytes: binary, or "
            "UTF-16; save it as CSV UTF-8)"
        )
    if utf8_valid:
        return "utf-8-sig"  # reads a BOM when there is one
    from charset_normalizer import from_bytes

    # short Russian texts fit several single-byte code pages about equally well: Windows-1251
    # is taken when it fits at all and no other Cyrillic code page fits better
    matches = list(from_bytes(sample))
    ours = next((m for m in matches if m.encoding == "cp1251"), None)
    if ours is not None and not any(
        m.encoding in OTHER_CYRILLIC and (m.chaos, -m.coherence) < (ours.chaos, -ours.coherence)
        for m in matches
    ):
        return "cp1251"
    guess = matches[0].encoding if matches else None
    raise file_error(
        "the file is neither UTF-8 nor Windows-1251 text"
        + (f" (it looks like {guess})" if guess else "")
        + "; save it as CSV UTF-8, or pass encoding=cp1251 if it is Windows-1251"
    )


def sniff_delimiter(text: str) -> str:
    lines = [line for line in text.splitlines()[:50] if line.strip()]
    if not lines:
        return ","
    try:
        dialect = csv.Sniffer().sniff("\n".join(lines), delimiters="".join(CSV_DELIMITERS))
        return str(dialect.delimiter)
    except csv.Error:
        counts = {d: lines[0].count(d) for d in CSV_DELIMITERS}
        best = max(counts, key=lambda d: counts[d])
        return best if counts[best] else ","


def csv_rows(stream: IO[bytes], encoding: str, delimiter: str) -> Iterator[list[Any]]:
    text = codecs.getreader(encoding)(stream, "strict")
    csv.field_size_limit(MAX_CELL_CHARS)
    reader = csv.reader(text, delimiter=delimiter)
    try:
        yield from reader
    except csv.Error as exc:
        raise file_error(f"row {reader.line_num}: the CSV cannot be read ({exc})") from None
    except UnicodeDecodeError:
        raise file_error(f"row {reader.line_num}: bytes that are not {encoding}") from None


def open_xlsx(stream: IO[bytes], sheet: str | None) -> tuple[Any, Any]:
    """(workbook, worksheet) in read-only mode; openpyxl parses through defusedxml."""
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    try:  # a zip bomb is refused by the sizes its directory declares (reads stop there)
        with zipfile.ZipFile(stream) as archive:
            unpacked = sum(entry.file_size for entry in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        raise file_error("not a readable XLSX workbook (BadZipFile)") from None
    if unpacked > XLSX_MAX_UNPACKED:
        raise file_error(f"the workbook unpacks to more than {XLSX_MAX_UNPACKED} bytes")
    stream.seek(0)
    try:
        # a file object: openpyxl would refuse a path without the .xlsx extension
        workbook = load_workbook(stream, read_only=True, data_only=True)
    except (zipfile.BadZipFile, InvalidFileException, KeyError, OSError, ValueError) as exc:
        raise file_error(f"not a readable XLSX workbook ({type(exc).__name__})") from None
    except Exception as exc:  # openpyxl raises many kinds on damaged workbooks
        raise file_error(f"not a readable XLSX workbook ({type(exc).__name__})") from None
    if sheet is not None:
        if sheet not in workbook.sheetnames:
            workbook.close()
            raise ValidationFailed.field("sheet", f"no sheet named '{sheet[:64]}'")
        return workbook, workbook[sheet]
    if not workbook.worksheets:
        workbook.close()
        raise file_error("the workbook has no sheets")
    return workbook, workbook.worksheets[0]


class Worksheet(Protocol):
    """What the reader uses of an openpyxl worksheet (openpyxl ships no type hints)."""

    @property
    def max_row(self) -> int | None: ...

    def iter_rows(self, *, values_only: bool) -> Iterable[tuple[object, ...]]: ...


def xlsx_rows(worksheet: Worksheet) -> Iterator[list[Any]]:
    try:
        for row in worksheet.iter_rows(values_only=True):
            yield list(row)
    except Exception as exc:  # a damaged sheet part
        raise file_error(f"the XLSX sheet cannot be read ({type(exc).__name__})") from None


def declared_rows(worksheet: Worksheet) -> int | None:
    """The rows the sheet declares (its dimension), header included, when it does."""
    try:
        value = worksheet.max_row
    except Exception:  # no or malformed dimension
        return None
    return int(value) if isinstance(value, int) else None


def cell_value(value: object) -> object:
    """A raw cell as a JSON-like value for the typecast; None for empty."""
    if value is None:
        return None
    if isinstance(value, str):
        if not value.strip():
            return None
        if value.startswith(FORMULA_QUOTED):
            return value[1:]  # our own export's neutralised text, read back as it was
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, time):
        return value.strftime("%H:%M:%S")
    if isinstance(value, int) and not isinstance(value, bool) and not INT64[0] <= value <= INT64[1]:
        return str(value)  # BSON holds 64-bit integers; the column type decides what it is
    if isinstance(value, bool | int | float):
        return value
    return str(value)


def trim(row: list[Any]) -> list[Any]:
    """A row without its trailing empty cells."""
    end = len(row)
    while end and (row[end - 1] is None or (isinstance(row[end - 1], str) and not row[end - 1])):
        end -= 1
    return row[:end]


def header_names(row: list[Any]) -> list[str]:
    """Column names from the header row: blanks become `Column N`, repeats get ` (2)`."""
    names: list[str] = []
    seen: set[str] = set()
    for index, value in enumerate(row, 1):
        name = str(value).strip() if value is not None else ""
        name = name[:255] or f"Column {index}"
        candidate, n = name, 2
        while candidate.casefold() in seen:
            candidate = f"{name} ({n})"
            n += 1
        seen.add(candidate.casefold())
        names.append(candidate)
    return names


class RowSource:
    """The rows of a stored upload: `header` then numbered data rows (the header is row 1, as
    in a spreadsheet; blank rows are skipped but keep their numbers)."""

    def __init__(self, path: str, info: FileInfo) -> None:
        self.path = path
        self.info = info
        self._stream: IO[bytes] | None = None
        self._workbook: Any = None
        self._rows: Iterator[list[Any]] = iter(())
        self.header: list[str] = []
        self.declared: int | None = None

    def __enter__(self) -> RowSource:
        self._stream = open(self.path, "rb")
        if self.info.format == "xlsx":
            self._workbook, sheet = open_xlsx(self._stream, self.info.sheet)
            self.info.sheet = sheet.title
            self.declared = declared_rows(sheet)
            self._rows = xlsx_rows(sheet)
        else:
            assert self.info.encoding and self.info.delimiter
            self._rows = csv_rows(
                self._stream, self.info.encoding, DELIMITER_NAMES[self.info.delimiter]
            )
        first = trim(next(self._rows, []))
        if not first:
            raise file_error("the first row must hold the column names")
        self.header = header_names(first)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._workbook is not None:
            self._workbook.close()
        if self._stream is not None:
            self._stream.close()

    def numbered(self) -> Iterator[tuple[int, list[Any]]]:
        for number, row in enumerate(self._rows, 2):
            values = [cell_value(v) for v in row]
            if any(v is not None for v in values):
                yield number, values

    def take(self, rows: Iterator[tuple[int, list[Any]]], count: int) -> list[tuple[int, Any]]:
        batch = []
        for item in rows:
            batch.append(item)
            if len(batch) >= count:
                break
        return batch
