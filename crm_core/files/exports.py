"""Export of a table's rows as CSV or XLSX (`GET /api/data/{table}/export`).

The rows are the list route's: the same filters, sort (or the caller's manual order) and, by
default, the caller's column view (order, hidden columns left out). They are read in batches
and written out as they come, so memory stays flat whatever the table's size: CSV goes to the
client batch by batch; XLSX is written by openpyxl's write-only workbook to a temporary file
(a zip cannot be sent before it is complete), which is then streamed.

Cells are what a spreadsheet user expects: select labels instead of option ids, dates and the
system timestamps in the company's timezone, booleans as true/false. CSV text that a
spreadsheet would run as a formula (starting with = + - @ tab or CR), or that starts with an
apostrophe, gets a leading apostrophe (the import takes one off again); XLSX text cells are
always typed as text, never formulas.

Every value comes back unchanged through the import (docs/integrations.md "Round trips"):
date-times carry their UTC offset where the local time alone would be ambiguous (or always, in
CSV without a locale), CSV fields holding anything a reader may take as a line end are quoted,
an empty text is `""` (an empty field is no value), and XLSX cells that would lose digits
(floats beyond 15 significant digits, -0.0, integers beyond 2^53) are written as text;
characters XML cannot hold are written as OOXML `_xHHHH_` escapes; what XLSX cannot carry at
all (an empty text) is listed on the workbook's `export report` sheet, and the import refuses
those cells.
"""

from __future__ import annotations

import asyncio
import decimal
import re
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import IO, Any, Protocol
from zoneinfo import ZoneInfo

from bson import ObjectId

from crm_core.accounts.audit import AuditSink
from crm_core.accounts.context import TenantContext
from crm_core.files.attachments import FileService
from crm_core.files.csvtext import csv_line, neutralise
from crm_core.files.readers import REPORT_SHEET
from crm_core.platform.errors import RateLimited, ValidationFailed
from crm_core.platform.storage import find_in_batches, query_purpose
from crm_core.tables.aliases import AliasService
from crm_core.tables.columns import Column, ColumnType
from crm_core.tables.computed import pipeline as computed
from crm_core.tables.definitions import SYSTEM_FIELDS, Table
from crm_core.tables.ordering import get_view, manual_rows
from crm_core.tables.rows import CLIENT_QUERY, RowService
from models.files import ExportQuery

DELIMITERS = {"comma": ",", "semicolon": ";", "tab": "\t"}
XML_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\r\ufffe\uffff]|_(?=x[0-9A-Fa-f]{4}_)")
EXCEL_DIGITS = 15
XLSX_MAX_ROWS = 1_048_575  # a sheet's 1,048,576 rows, one of them the header
EXACT_FLOAT_INT = 2**53
BATCH = 1000
CSV_TYPE = "text/csv"
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@dataclass(frozen=True)
class ExportColumn:
    key: str
    header: str
    column: Column | None  # None for `id` and the system fields
    column_type: ColumnType | None


@dataclass
class ExportPlan:
    table: Table
    format: str
    columns: list[ExportColumn]
    query: dict[str, Any]
    sort: list[tuple[str, int]] | None
    delimiter: str
    bom: bool
    locale: str = "en"

    @property
    def content_type(self) -> str:
        return CSV_TYPE if self.format == "csv" else XLSX_TYPE

    def filename(self, now: datetime) -> str:
        return f"{self.table.key}-{now:%Y%m%d-%H%M%S}.{self.format}"


async def _name_files(
    ctx: TenantContext, files: FileService, batch: list[dict[str, Any]], keys: list[str]
) -> None:
    """Attachment cells of a batch as text: `name [id]` per file, `; ` between (the import
    reads the ids back from the brackets)."""
    held = {
        v for doc in batch for key in keys for v in doc.get(key) or () if isinstance(v, ObjectId)
    }
    names = await files.names(ctx, held)
    for doc in batch:
        for key in keys:
            value = doc.get(key)
            if isinstance(value, list):
                doc[key] = "; ".join(f"{names.get(v, '')} [{v}]".lstrip() for v in value)


class ExportService:
    def __init__(
        self,
        rows: RowService,
        max_concurrent: int,
        aliases: AliasService,
        audit: AuditSink | None = None,  # the company's audit trail (docs/history.md)
        files: FileService | None = None,
    ) -> None:
        self.rows = rows
        self.audit = audit
        self.aliases = aliases
        self.files = files  # names of attached files
        self.max_concurrent = max_concurrent
        self._running: dict[str, int] = {}

    async def plan(self, ctx: TenantContext, table: Table, query: ExportQuery) -> ExportPlan:
        """Everything checked before the first byte leaves: a bad parameter is a clean 400."""
        sort = self.rows.sort_spec(table, query.sort_by, query.sort_order, query.sort)
        where = self.rows.query(ctx, table, self.rows.filters.parse_param(query.filters))
        columns = await self._columns(ctx, table, query)
        if query.format == "xlsx":
            with query_purpose(CLIENT_QUERY):  # the client's filter, as the list route's
                count = await computed.count_rows(
                    ctx, table, self.rows.types, where, limit=XLSX_MAX_ROWS + 1
                )
            if count > XLSX_MAX_ROWS:
                raise ValidationFailed.field(
                    "format", f"a sheet holds at most {XLSX_MAX_ROWS} rows: export as csv"
                )
        delimiter = query.delimiter or ("semicolon" if query.locale == "ru" else "comma")
        if self.audit is not None:
            target = {"type": "export", "table": table.key}
            asked = {"format": query.format, "filters": query.filters}
            await self.audit.record(ctx, "export.created", target, asked)
        return ExportPlan(
            table,
            query.format,
            columns,
            where,
            sort,
            DELIMITERS[delimiter],
            query.bom,
            query.locale,
        )

    async def _columns(
        self, ctx: TenantContext, table: Table, query: ExportQuery
    ) -> list[ExportColumn]:
        if query.columns is not None:
            keys = [k.strip() for k in query.columns.split(",")]
            errors = []
            known = {c.key for c in table.columns} | set(SYSTEM_FIELDS) | {"id"}
            for index, key in enumerate(keys):
                if key not in known:
                    errors.append({"field": "columns", "message": f"unknown column '{key[:64]}'"})
                elif key in keys[:index]:
                    errors.append({"field": "columns", "message": f"'{key}' is repeated"})
            if errors or not keys:
                errors = errors or [{"field": "columns", "message": "name at least one column"}]
                raise ValidationFailed(f"columns: {errors[0]['message']}", errors)
        else:
            view = await get_view(ctx, table)
            hidden = set(view["hidden"])
            keys = [k for k in view["column_order"] if k not in hidden]
            if query.include_id:
                keys.insert(0, "id")
        names: dict[str, str] = {}
        if query.headers == "names":
            alias = (await self.aliases.find(ctx, [table.key])).get(table.key)
            names = alias.columns if alias else {}
        headers = {}
        for key in keys:
            column = table.column(key)
            header = key
            if column is not None and query.headers == "names":
                header = names.get(key) or column.name or key
            headers[key] = header
        # a display name two columns share is written `name (key)`, which the import maps back
        taken = [h.strip().casefold() for h in headers.values()]
        result = []
        for key, header in headers.items():
            if key != header and taken.count(header.strip().casefold()) > 1:
                header = f"{header} ({key})"
            column = table.column(key)
            column_type = None if column is None else table.column_type(column)
            result.append(ExportColumn(key, header, column, column_type))
        return result

    # ---- reading ------------------------------------------------------------------------------

    def reserve(self, ctx: TenantContext) -> None:
        """Take one of the company's export slots (429 when all are taken); `release` after."""
        running = self._running.get(ctx.tenant_id, 0)
        if running >= self.max_concurrent:
            raise RateLimited(
                f"At most {self.max_concurrent} exports run at once per company; try again "
                "when one has finished",
                headers={"Retry-After": "5"},
            )
        self._running[ctx.tenant_id] = running + 1

    def release(self, ctx: TenantContext) -> None:
        left = self._running.get(ctx.tenant_id, 1) - 1
        if left > 0:
            self._running[ctx.tenant_id] = left
        else:
            self._running.pop(ctx.tenant_id, None)

    async def batches(
        self, ctx: TenantContext, plan: ExportPlan
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """The plan's rows a batch at a time; attachment cells as `name [id]; name [id]`."""
        file_keys = [
            c.key for c in plan.columns if c.column_type is not None and c.column_type.holds_files
        ]
        async for batch in self._rows(ctx, plan):
            if file_keys and self.files is not None:
                await _name_files(ctx, self.files, batch, file_keys)
            yield batch

    async def _rows(
        self, ctx: TenantContext, plan: ExportPlan
    ) -> AsyncIterator[list[dict[str, Any]]]:
        collection = plan.table.collection(ctx)
        if plan.sort is None:  # the caller's manual order
            batch: list[dict[str, Any]] = []
            computed.refuse_computed(plan.table, plan.query, "sort")
            async for doc in manual_rows(ctx, plan.table, plan.query, BATCH):
                batch.append(doc)
                if len(batch) >= BATCH:  # with the computed values, by the database
                    yield await computed.add_values(ctx, plan.table, self.rows.types, batch)
                    batch = []
            if batch:
                yield await computed.add_values(ctx, plan.table, self.rows.types, batch)
            return
        else:
            sort = list(plan.sort)
            if not any(key == "_id" for key, _ in sort):
                sort.append(("_id", sort[-1][1] if sort else 1))
            if computed.has_computed(plan.table):  # one pipeline computes their values
                types = self.rows.types
                source = computed.sorted_batches(
                    ctx, plan.table, types, plan.query, sort, BATCH, CLIENT_QUERY
                )
            else:
                source = find_in_batches(collection, plan.query, sort, BATCH)
        async for batch in source:
            yield batch

    # ---- cells --------------------------------------------------------------------------------

    def cell(self, ctx: TenantContext, column: ExportColumn, doc: dict[str, Any]) -> Any:
        """The plain Python value of one cell (None for empty), before format-specific
        writing: text, int, float, bool, an aware datetime (in the company's time zone, or in
        UTC when that zone cannot show it: `9999-12-31T23:00:00Z` in Moscow) or a time of
        day."""
        value = doc.get("_id") if column.key == "id" else doc.get(column.key)
        if value is None:
            return None
        if isinstance(value, datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=UTC)
            try:
                return value.astimezone(ctx.values.timezone)
            except OverflowError:
                return value.astimezone(UTC)
        if column.column is not None and column.column_type is not None:
            value = column.column_type.cell_value(column.column, value)  # labels, times of day
        if isinstance(value, bool | int | float | str | time | decimal.Decimal):
            return value
        return str(value)

    async def csv_chunks(self, ctx: TenantContext, plan: ExportPlan) -> AsyncIterator[bytes]:
        text = _ru_csv_text if plan.locale == "ru" else _csv_text
        delimiter = plan.delimiter
        parts: list[str] = ["\ufeff"] if plan.bom else []
        parts.append(csv_line([neutralise(c.header) for c in plan.columns], delimiter))
        async for batch in self.batches(ctx, plan):
            for doc in batch:
                cells = [text(self.cell(ctx, c, doc)) for c in plan.columns]
                parts.append(csv_line(cells, delimiter))
            yield "".join(parts).encode("utf-8")
            parts = []
        if parts:
            yield "".join(parts).encode("utf-8")

    async def xlsx_file(self, ctx: TenantContext, plan: ExportPlan) -> IO[bytes]:
        """A temporary file holding the workbook, positioned at its start; close it after."""
        from openpyxl import Workbook

        workbook = Workbook(write_only=True)
        title = plan.table.key[:31]
        sheet = workbook.create_sheet(title=title)
        sheet.append([_xlsx_cell(sheet, c.header) for c in plan.columns])
        report: list[list[object]] = []
        number = 1
        async for batch in self.batches(ctx, plan):
            rows = []
            for doc in batch:
                number += 1
                row = [self.cell(ctx, c, doc) for c in plan.columns]
                for value, column in zip(row, plan.columns, strict=True):
                    if value == "":
                        report.append([title, number, column.header, "an empty text"])
                rows.append(row)
            await asyncio.to_thread(_append_rows, sheet, rows)
        if report:  # what the workbook cannot hold; the import refuses these cells
            listing = workbook.create_sheet(title=REPORT_SHEET)
            listing.append(["sheet", "row", "column", "problem"])
            for line in report:
                listing.append([_xlsx_cell(listing, v) for v in line])
        target = tempfile.TemporaryFile()
        try:
            await asyncio.to_thread(workbook.save, target)
        except BaseException:
            target.close()
            raise
        target.seek(0)
        return target


def unambiguous(moment: datetime) -> bool:
    """Whether the local wall time of `moment` alone names it (not in a DST change)."""
    naive = moment.replace(tzinfo=None)
    tz = moment.tzinfo
    first, second = naive.replace(tzinfo=tz, fold=0), naive.replace(tzinfo=tz, fold=1)
    return first.utcoffset() == second.utcoffset() == moment.utcoffset()


def _iso(moment: datetime) -> str:
    text = moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds")
    return (
        text[:-6] + "Z" if moment.utcoffset() == timedelta(0) and text.endswith("+00:00") else text
    )


def _csv_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        if value.time() == time(0) and unambiguous(value):
            return value.strftime("%Y-%m-%d")  # midnight in the company's time zone
        return _iso(value)
    if isinstance(value, time):
        return value.strftime("%H:%M:%S")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    return neutralise(str(value))


def _ru_csv_text(value: object) -> str | None:
    """Cells as Russian Excel reads them: 1234,5, Да/Нет, DD.MM.YYYY HH:MM:SS (an ISO
    date-time with its offset where the local time would be ambiguous or has milliseconds)."""
    if isinstance(value, bool):
        return "Да" if value else "Нет"
    if isinstance(value, float):
        return repr(value).replace(".", ",")
    if isinstance(value, decimal.Decimal):
        return format(value, "f").replace(".", ",")
    if isinstance(value, datetime):
        local = isinstance(value.tzinfo, ZoneInfo)  # not the UTC of a date beyond the zone
        if not local or not unambiguous(value) or value.microsecond:
            return _iso(value)
        if value.time() == time(0):
            return f"{value.day:02d}.{value.month:02d}.{value.year:04d}"
        return f"{value.day:02d}.{value.month:02d}.{value.year:04d} {value:%H:%M:%S}"
    return _csv_text(value)


class WriteOnlySheet(Protocol):
    """What the export uses of an openpyxl write-only worksheet (openpyxl ships no type
    hints)."""

    def append(self, row: list[object]) -> None: ...


def _append_rows(sheet: WriteOnlySheet, rows: list[list[Any]]) -> None:
    for row in rows:
        sheet.append([_xlsx_cell(sheet, value) for value in row])


def _xlsx_text(sheet: WriteOnlySheet, text: str) -> object:
    from openpyxl.cell import WriteOnlyCell

    if XML_ILLEGAL.search(text):  # OOXML escapes, which Excel and the import decode
        text = XML_ILLEGAL.sub(lambda m: f"_x{ord(m[0]):04X}_", text)
    cell = WriteOnlyCell(sheet, value=text)
    cell.data_type = "s"  # never a formula, whatever the text starts with
    return cell


def _xlsx_cell(sheet: WriteOnlySheet, value: object) -> object:
    from openpyxl.cell import WriteOnlyCell

    if value is None or value == "":
        return None
    if isinstance(value, decimal.Decimal):  # a number where Excel keeps every digit
        exact = len(value.as_tuple().digits) <= EXCEL_DIGITS
        value = float(value) if exact else format(value, "f")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > EXACT_FLOAT_INT:
        value = str(value)  # Excel keeps 15 significant digits of numbers
    if isinstance(value, float) and (
        float(f"{value:.{EXCEL_DIGITS}g}") != value or (value == 0 and str(value)[0] == "-")
    ):
        value = repr(value)  # kept exactly as text (-0.0 too)
    if isinstance(value, str):
        return _xlsx_text(sheet, value)
    if isinstance(value, datetime):
        if not unambiguous(value) or not 1900 <= value.year <= 9998:
            return _xlsx_text(sheet, _iso(value))  # the offset says which of the two it is
        cell = WriteOnlyCell(sheet, value=value.replace(tzinfo=None))
        if value.time() == time(0):
            cell.number_format = "yyyy-mm-dd"
        elif value.microsecond:
            cell.number_format = "yyyy-mm-dd hh:mm:ss.000"
        else:
            cell.number_format = "yyyy-mm-dd hh:mm:ss"
        return cell
    return value
