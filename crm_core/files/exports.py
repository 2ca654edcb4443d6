"""Export of a table's rows as CSV or XLSX (`GET /api/data/{table}/export`).

The rows are the list route's: the same filters, sort (or the caller's manual order) and, by
default, the caller's column view (order, hidden columns left out). They are read in batches
and written out as they come, so memory stays flat whatever the table's size: CSV goes to the
client batch by batch; XLSX is written by openpyxl's write-only workbook to a temporary file
(a zip cannot be sent before it is complete), which is then streamed.

Cells are what a spreadsheet user expects: select labels instead of option ids, dates and the
system timestamps in the company's timezone, booleans as true/false. CSV text that a
spreadsheet would run as a formula (starting with = + - @ tab or CR) gets a leading apostrophe;
XLSX text cells are always typed as text, never formulas.
"""

from __future__ import annotations

import asyncio
import csv
import io
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import IO, Any, Protocol

from crm_core.platform.context import TenantContext
from crm_core.platform.errors import RateLimited, ValidationFailed
from crm_core.platform.storage import find_in_batches, query_purpose
from crm_core.tables.aliases import AliasService
from crm_core.tables.columns import Column, ColumnType
from crm_core.tables.definitions import SYSTEM_FIELDS, Table
from crm_core.tables.ordering import get_view, manual_rows
from crm_core.tables.rows import CLIENT_QUERY, RowService
from models.files import ExportQuery

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
DELIMITERS = {"comma": ",", "semicolon": ";", "tab": "\t"}
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

    @property
    def content_type(self) -> str:
        return CSV_TYPE if self.format == "csv" else XLSX_TYPE

    def filename(self, now: datetime) -> str:
        return f"{self.table.key}-{now:%Y%m%d-%H%M%S}.{self.format}"


def neutralise(text: str) -> str:
    """Text a spreadsheet would evaluate as a formula, made inert (OWASP CSV injection)."""
    return "'" + text if text.startswith(FORMULA_START) else text


class ExportService:
    def __init__(self, rows: RowService, max_concurrent: int, aliases: AliasService) -> None:
        self.rows = rows
        self.aliases = aliases
        self.max_concurrent = max_concurrent
        self._running: dict[str, int] = {}

    async def plan(self, ctx: TenantContext, table: Table, query: ExportQuery) -> ExportPlan:
        """Everything checked before the first byte leaves: a bad parameter is a clean 400."""
        sort = self.rows.sort_spec(table, query.sort_by, query.sort_order, query.sort)
        where = self.rows.query(ctx, table, self.rows.filters.parse_param(query.filters))
        columns = await self._columns(ctx, table, query)
        if query.format == "xlsx":
            with query_purpose(CLIENT_QUERY):  # the client's filter, as the list route's
                count = await table.collection(ctx).count_documents(where, limit=XLSX_MAX_ROWS + 1)
            if count > XLSX_MAX_ROWS:
                raise ValidationFailed.field(
                    "format", f"a sheet holds at most {XLSX_MAX_ROWS} rows: export as csv"
                )
        return ExportPlan(
            table, query.format, columns, where, sort, DELIMITERS[query.delimiter], query.bom
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
        result = []
        for key in keys:
            column = table.column(key)
            header = key
            if column is not None and query.headers == "names":
                header = names.get(key) or column.name or key
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
        collection = plan.table.collection(ctx)
        if plan.sort is None:  # the caller's manual order
            batch: list[dict[str, Any]] = []
            async for doc in manual_rows(ctx, plan.table, plan.query, BATCH):
                batch.append(doc)
                if len(batch) >= BATCH:
                    yield batch
                    batch = []
            if batch:
                yield batch
            return
        else:
            sort = list(plan.sort)
            if not any(key == "_id" for key, _ in sort):
                sort.append(("_id", sort[-1][1] if sort else 1))
            source = find_in_batches(collection, plan.query, sort, BATCH)
        async for batch in source:
            yield batch

    # ---- cells --------------------------------------------------------------------------------

    def cell(self, ctx: TenantContext, column: ExportColumn, doc: dict[str, Any]) -> Any:
        """The plain Python value of one cell (None for empty), before format-specific
        writing: text, int, float, bool, a naive local datetime or a time of day."""
        value = doc.get("_id") if column.key == "id" else doc.get(column.key)
        if value is None:
            return None
        if isinstance(value, datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=UTC)
            return value.astimezone(ctx.values.timezone).replace(tzinfo=None)
        if column.column is not None and column.column_type is not None:
            value = column.column_type.cell_value(column.column, value)  # labels, times of day
        if isinstance(value, bool | int | float | str | time):
            return value
        return str(value)

    async def csv_chunks(self, ctx: TenantContext, plan: ExportPlan) -> AsyncIterator[bytes]:
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter=plan.delimiter, lineterminator="\r\n")
        if plan.bom:
            buffer.write("\ufeff")
        writer.writerow([neutralise(c.header) for c in plan.columns])
        async for batch in self.batches(ctx, plan):
            for doc in batch:
                writer.writerow([_csv_text(self.cell(ctx, c, doc)) for c in plan.columns])
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
        rest = buffer.getvalue()
        if rest:
            yield rest.encode("utf-8")

    async def xlsx_file(self, ctx: TenantContext, plan: ExportPlan) -> IO[bytes]:
        """A temporary file holding the workbook, positioned at its start; close it after."""
        from openpyxl import Workbook

        workbook = Workbook(write_only=True)
        sheet = workbook.create_sheet(title=plan.table.key[:31])
        sheet.append([_xlsx_cell(sheet, c.header) for c in plan.columns])
        async for batch in self.batches(ctx, plan):
            rows = [[self.cell(ctx, c, doc) for c in plan.columns] for doc in batch]
            await asyncio.to_thread(_append_rows, sheet, rows)
        target = tempfile.TemporaryFile()
        try:
            await asyncio.to_thread(workbook.save, target)
        except BaseException:
            target.close()
            raise
        target.seek(0)
        return target


def _csv_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        if value.time() == time(0):
            return value.strftime("%Y-%m-%d")
        return value.strftime("%Y-%m-%d %H:%M:%S" if value.second else "%Y-%m-%d %H:%M")
    if isinstance(value, time):
        return value.strftime("%H:%M:%S")
    if isinstance(value, int | float):
        return repr(value)
    return neutralise(str(value))


class WriteOnlySheet(Protocol):
    """What the export uses of an openpyxl write-only worksheet (openpyxl ships no type
    hints)."""

    def append(self, row: list[object]) -> None: ...


def _append_rows(sheet: WriteOnlySheet, rows: list[list[Any]]) -> None:
    for row in rows:
        sheet.append([_xlsx_cell(sheet, value) for value in row])


def _xlsx_cell(sheet: WriteOnlySheet, value: object) -> object:
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > EXACT_FLOAT_INT:
        value = str(value)  # Excel keeps 15 significant digits of numbers
    if isinstance(value, str):
        cell = WriteOnlyCell(sheet, value=ILLEGAL_CHARACTERS_RE.sub("", value))
        cell.data_type = "s"  # never a formula, whatever the text starts with
        return cell
    if isinstance(value, datetime):
        cell = WriteOnlyCell(sheet, value=value)
        cell.number_format = "yyyy-mm-dd" if value.time() == time(0) else "yyyy-mm-dd hh:mm:ss"
        return cell
    return value
