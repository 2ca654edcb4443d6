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
import io
import re
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
# our CSV export puts an apostrophe before text a spreadsheet would run as a formula, and before
# text that starts with an apostrophe itself, so that one apostrophe less is always the value
FORMULA_QUOTED = ("'=", "'+", "'-", "'@", "'\t", "'\r", "''")
# OOXML writes characters XML cannot hold as `_xHHHH_` (and a literal `_x` sequence as `_x005F_`)
OOXML_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")
REPORT_SHEET = "export report"


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
    header_row: int | None = None  # the row holding the column names (default 1)


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


class _Lines:
    """The text's lines (split at CR and LF only), remembering those of the current record."""

    def __init__(self, text: IO[str]) -> None:
        self._text = text
        self.taken: list[str] = []

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = next(self._text)
        self.taken.append(line)
        return line


def quoted_fields(raw: str, delimiter: str) -> list[bool]:
    """Which fields of one raw CSV record were quoted (to tell `""`, an empty text, from an
    empty field)."""
    flags: list[bool] = []
    quoted = in_quotes = False
    at_start = True
    for char in raw:
        if in_quotes:
            in_quotes = char != '"'
        elif char == '"':
            quoted = quoted or at_start
            in_quotes, at_start = True, False
        elif char == delimiter:
            flags.append(quoted)
            quoted, at_start = False, True
        elif char not in "\r\n":
            at_start = False
    flags.append(quoted)
    return flags


def csv_rows(stream: IO[bytes], encoding: str, delimiter: str) -> Iterator[list[Any]]:
    """The records of a CSV: an empty field is None, a quoted empty one `""`. Lines end only
    at CR or LF (never at U+2028, form feed and the other characters `str.splitlines` takes as
    line ends)."""
    text = io.TextIOWrapper(stream, encoding=encoding, errors="strict", newline="")
    csv.field_size_limit(MAX_CELL_CHARS)
    lines = _Lines(text)
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        for record in reader:
            raw = "".join(lines.taken)
            lines.taken.clear()
            row: list[Any] = list(record)
            if "" in row:
                flags = quoted_fields(raw, delimiter) if '""' in raw else []
                for index, value in enumerate(row):
                    if value == "" and not (index < len(flags) and flags[index]):
                        row[index] = None
            yield row
    except csv.Error as exc:
        raise file_error(f"row {reader.line_num}: the CSV cannot be read ({exc})") from None
    except UnicodeDecodeError:
        raise file_error(f"row {reader.line_num}: bytes that are not {encoding}") from None
    finally:
        if not stream.closed:
            text.detach()  # the stream is its owner's to close


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


def csv_cell(value: str | None) -> object:
    """A CSV field as the cell value: our export's neutralising apostrophe taken off."""
    if value and value.startswith(FORMULA_QUOTED):
        return value[1:]
    return value


def xlsx_cell(value: object) -> object:
    """An XLSX cell as a plain value (None for empty): text (OOXML escapes decoded), int,
    float, bool, a naive datetime (a date cell) or `HH:MM:SS` text (a time cell)."""
    if value is None:
        return None
    if isinstance(value, str):
        if "_x" in value:
            return OOXML_ESCAPE.sub(lambda m: chr(int(m[1], 16)), value)
        return value
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if isinstance(value, time):
        return value.strftime("%H:%M:%S")
    if isinstance(value, int) and not isinstance(value, bool) and not INT64[0] <= value <= INT64[1]:
        return str(value)  # BSON holds 64-bit integers; the column type decides what it is
    if isinstance(value, bool | int | float):
        return value
    return str(value)


def blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def trim(row: list[Any]) -> list[Any]:
    """A row without its trailing empty cells."""
    end = len(row)
    while end and blank(row[end - 1]):
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


def report_cells(workbook: Any, sheet_title: str) -> dict[tuple[int, str], str]:
    """The cells our XLSX export could not carry, from its report sheet, by (row, column):
    the import refuses them rather than read a changed value."""
    if REPORT_SHEET not in workbook.sheetnames or sheet_title == REPORT_SHEET:
        return {}
    found: dict[tuple[int, str], str] = {}
    rows = workbook[REPORT_SHEET].iter_rows(values_only=True)
    next(rows, None)  # its header: sheet, row, column, problem
    for row in rows:
        if len(row) >= 4 and row[0] == sheet_title and isinstance(row[1], int):
            found[(row[1], str(row[2]))] = str(row[3])
    return found


SHEET_NS = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"


REL_NS = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
PKG_REL_NS = "{http://schemas.openxmlformats.org/package/2006/relationships}"


def _sheet_part(archive: zipfile.ZipFile, title: str) -> str | None:
    """The zip member holding the sheet named `title` (workbook.xml and its relationships)."""
    from defusedxml.ElementTree import fromstring

    workbook = fromstring(archive.read("xl/workbook.xml"))
    rels = fromstring(archive.read("xl/_rels/workbook.xml.rels"))
    targets = {r.get("Id"): r.get("Target", "") for r in rels.iter(f"{PKG_REL_NS}Relationship")}
    for sheet in workbook.iter(f"{SHEET_NS}sheet"):
        if sheet.get("name") == title:
            target = targets.get(sheet.get(f"{REL_NS}id"), "")
            return target.lstrip("/") if target.startswith("/") else f"xl/{target}"
    return None


def formulas_without_values(stream: IO[bytes], title: str) -> dict[tuple[int, int], str]:
    """Formula cells saved without their computed value (written by a program, never opened in
    Excel), by (row, column index): they would read as empty, so the import refuses them."""
    from defusedxml.ElementTree import iterparse
    from openpyxl.utils.cell import column_index_from_string, coordinate_from_string

    found: dict[tuple[int, int], str] = {}
    try:
        stream.seek(0)
        with zipfile.ZipFile(stream) as archive:
            path = _sheet_part(archive, title)
            if path is None:
                return {}
            with archive.open(path) as part:
                for _, element in iterparse(part):
                    if element.tag != f"{SHEET_NS}c":
                        continue
                    formula = element.find(f"{SHEET_NS}f")
                    value = element.find(f"{SHEET_NS}v")
                    if formula is not None and (value is None or value.text is None):
                        letters, row = coordinate_from_string(element.get("r", ""))
                        found[(row, column_index_from_string(letters) - 1)] = (
                            f"{letters}{row} holds the formula ={(formula.text or '')[:64]} "
                            "without a saved value: open and save the file in Excel, or paste "
                            "it as values"
                        )
                    element.clear()
    except Exception:  # a damaged part: the rows' reader names it
        return {}
    return found


@dataclass(frozen=True)
class MergedRange:
    """A merged range of a sheet (1-based rows, 0-based columns, bounds included)."""

    first_row: int
    first_column: int
    last_row: int
    last_column: int


def merged_ranges(stream: IO[bytes], title: str) -> list[MergedRange]:
    """The sheet's merged ranges (`<mergeCells>`, written after the rows: read from the zip
    before the rows are)."""
    from defusedxml.ElementTree import iterparse
    from openpyxl.utils.cell import range_boundaries

    found: list[MergedRange] = []
    try:
        stream.seek(0)
        with zipfile.ZipFile(stream) as archive:
            path = _sheet_part(archive, title)
            if path is None:
                return []
            with archive.open(path) as part:
                for _, element in iterparse(part):
                    if element.tag == f"{SHEET_NS}mergeCell":
                        bounds = range_boundaries(element.get("ref", ""))
                        low_col, low_row, high_col, high_row = (int(b or 0) for b in bounds)
                        if low_col and low_row and high_col and high_row:
                            found.append(MergedRange(low_row, low_col - 1, high_row, high_col - 1))
                    element.clear()
    except Exception:  # a damaged part: the rows' reader names it
        return []
    return found


def fill_merged(rows: Iterator[list[Any]], ranges: list[MergedRange]) -> Iterator[list[Any]]:
    """Rows (numbered from 1) with every cell of a merged range holding the value of the
    range's top-left cell, which is where Excel keeps it (docs/integrations.md "Merged cells");
    rows that start a range are read before the rows below it."""
    if not ranges:
        yield from rows
        return
    values: dict[MergedRange, object] = {}
    for number, row in enumerate(rows, 1):
        for merged in ranges:
            if not merged.first_row <= number <= merged.last_row:
                continue
            if number == merged.first_row:
                top_left = row[merged.first_column] if merged.first_column < len(row) else None
                values[merged] = top_left
            value = values.get(merged)
            if value is None:
                continue
            if len(row) <= merged.last_column:
                row += [None] * (merged.last_column + 1 - len(row))
            for column in range(merged.first_column, merged.last_column + 1):
                row[column] = value
        yield row


class RowSource:
    """The rows of a stored upload: `header` then numbered data rows (numbered as in a
    spreadsheet: the header is row `header_row`, 1 by default; rows above it are titles and
    skipped; blank rows are skipped but keep their numbers)."""

    def __init__(self, path: str, info: FileInfo) -> None:
        self.path = path
        self.info = info
        self._stream: IO[bytes] | None = None
        self._workbook: Any = None
        self._rows: Iterator[list[Any]] = iter(())
        self._uncarried: dict[tuple[int, str], str] = {}
        self._formulas: dict[tuple[int, int], str] = {}
        self.header: list[str] = []
        self.declared: int | None = None

    def __enter__(self) -> RowSource:
        self._stream = open(self.path, "rb")
        header_row = self.info.header_row or 1
        if self.info.format == "xlsx":
            self._workbook, sheet = open_xlsx(self._stream, self.info.sheet)
            self.info.sheet = sheet.title
            self.declared = declared_rows(sheet)
            self._uncarried = report_cells(self._workbook, sheet.title)
            self._formulas = formulas_without_values(self._stream, sheet.title)
            cells = ([xlsx_cell(v) for v in row] for row in xlsx_rows(sheet))
            self._rows = fill_merged(cells, merged_ranges(self._stream, sheet.title))
        else:
            assert self.info.encoding and self.info.delimiter
            rows = csv_rows(self._stream, self.info.encoding, DELIMITER_NAMES[self.info.delimiter])
            self._rows = ([csv_cell(v) for v in row] for row in rows)
        for _ in range(header_row - 1):
            if next(self._rows, None) is None:
                break
        first = trim(next(self._rows, []))
        if not first:
            where = "the first row" if header_row == 1 else f"row {header_row} (header_row)"
            raise file_error(f"{where} must hold the column names")
        self.header = header_names(first)
        if self.declared is not None:
            self.declared -= header_row - 1
        return self

    def __exit__(self, *exc: object) -> None:
        if self._workbook is not None:
            self._workbook.close()
        if self._stream is not None:
            self._stream.close()

    def numbered(self) -> Iterator[tuple[int, list[Any]]]:
        first = (self.info.header_row or 1) + 1
        for number, values in enumerate(self._rows, first):
            if self._uncarried or self._formulas:
                self._refuse(number, values)
            if not all(blank(v) for v in values):
                yield number, values

    def _refuse(self, number: int, values: list[Any]) -> None:
        """Cells the import must refuse rather than read changed: what our export's report
        lists, and formulas saved without their value."""
        for index, name in enumerate(self.header):
            problem = self._uncarried.get((number, name))
            if problem is not None:
                problem = (
                    f"{problem}: the XLSX could not hold this value, so it is not imported "
                    "changed; export as CSV to move it"
                )
            problem = self._formulas.get((number, index), problem)
            if problem is not None:
                values += [None] * (index + 1 - len(values))
                values[index] = {"error": problem}

    def take(self, rows: Iterator[tuple[int, list[Any]]], count: int) -> list[tuple[int, Any]]:
        batch = []
        for item in rows:
            batch.append(item)
            if len(batch) >= count:
                break
        return batch
