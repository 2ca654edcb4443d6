"""CSV/XLSX import jobs and exports (docs/integrations.md), and the mapper of a stored import
job document (`_jobs`) to its answer."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from models.base import SORT_ORDER, FiltersParam, InputModel, OutputModel, QueryModel

ImportState = Literal[
    "uploading",
    "uploaded",
    "queued",
    "validating",
    "importing",
    "completed",
    "failed",
    "cancelled",
]
ImportMode = Literal["all_or_nothing", "skip_invalid"]
Mapping = dict[str, str | None]
CSV_CONTENT_TYPE = "text/csv"
XLSX_CONTENT_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

# Declared as generators understand them (docs/api.md "Generating a client"): a multipart form
# with a binary `file`, or the raw bytes as `application/octet-stream`; a raw body sent as
# `text/csv` or the XLSX type is accepted as well (the format is read from the bytes).
UPLOAD_CONTENT: dict[str, Any] = {
    "multipart/form-data": {
        "schema": {
            "type": "object",
            "properties": {"file": {"type": "string", "format": "binary"}},
            "required": ["file"],
        }
    },
    "application/octet-stream": {
        "schema": {
            "type": "string",
            "format": "binary",
            "description": f"The file's bytes; `{CSV_CONTENT_TYPE}` and `{XLSX_CONTENT_TYPE}` "
            "are accepted as this body's type too",
        }
    },
}
# XLSX bytes are binary; CSV is UTF-8 text (a generated client reads it as a string)
EXPORT_CONTENT: dict[str, Any] = {
    XLSX_CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}},
    CSV_CONTENT_TYPE: {"schema": {"type": "string", "description": "UTF-8 CSV, with a BOM"}},
}


class ExportQuery(QueryModel):
    format: Literal["csv", "xlsx"] = "csv"
    filters: FiltersParam = Field(
        default=None, max_length=20_000, description="As in the list route (docs/filters.md)"
    )
    sort_by: str | None = Field(
        default=None, max_length=64, description="As in the list route; `manual`: your order"
    )
    sort_order: SORT_ORDER = "asc"
    sort: str | None = Field(default=None, max_length=400, description="`-doc_date,name`")
    columns: str | None = Field(
        default=None,
        max_length=20_000,
        description="Comma-separated keys (columns, `id`, system fields) in this order; "
        "default: your column view (its order, hidden columns left out)",
    )
    include_id: bool = Field(default=False, description="Without `columns`: an `id` column first")
    headers: Literal["keys", "names"] = Field(
        default="keys", description="`names`: display names (aliases) as the header row"
    )
    delimiter: Literal["comma", "semicolon", "tab"] | None = Field(
        default=None, description="CSV; default: `comma`, with `locale=ru` `semicolon`"
    )
    bom: bool = Field(default=True, description="CSV: start with a UTF-8 BOM (Excel reads it)")
    locale: Literal["en", "ru"] = Field(
        default="en",
        description="CSV cells: `en` ISO dates with offsets, `1234.5`, true/false; `ru` as Russian "
        "Excel reads them: `;`, `1234,5`, Да/Нет, DD.MM.YYYY HH:MM:SS (UTF-8 with a BOM)",
    )


class ErrorReportQuery(QueryModel):
    format: Literal["csv", "json"] = Field(
        default="csv",
        description="`csv`: the file's columns, `error_row`, `error_reason` (fix and import "
        "again); `json`: `[{row, cells, errors}]`",
    )


ERROR_REPORT_CONTENT: dict[str, Any] = {
    CSV_CONTENT_TYPE: {"schema": {"type": "string", "description": "UTF-8 CSV, with a BOM"}},
    "application/json": {
        "schema": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "row": {"type": "integer", "description": "The row in the file"},
                    "cells": {"type": "object", "description": "File column name to cell"},
                    "errors": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "field": {"type": "string"},
                                "column": {"type": ["string", "null"]},
                                "message": {"type": "string"},
                            },
                        },
                    },
                },
            },
        }
    },
}


class UploadQuery(QueryModel):
    format: Literal["csv", "xlsx"] | None = Field(
        default=None, description="Default: detected from the content"
    )
    encoding: Literal["utf-8", "cp1251"] | None = Field(
        default=None, description="CSV; default: detected (UTF-8, else Windows-1251)"
    )
    delimiter: Literal["comma", "semicolon", "tab", "pipe"] | None = Field(
        default=None, description="CSV; default: sniffed"
    )
    sheet: str | None = Field(
        default=None, max_length=31, description="XLSX; default: the first sheet"
    )
    header_row: int = Field(
        default=1,
        ge=1,
        le=1000,
        description="The row holding the column names (rows above it are titles, skipped)",
    )
    filename: str | None = Field(
        default=None, max_length=255, description="For a raw body: the file's name"
    )


class PreviewIn(InputModel):
    mapping: Mapping | None = Field(
        default=None,
        description="File column name to table column key (null: not imported); default: the "
        "proposed mapping",
    )
    upsert_on: str | None = Field(default=None, max_length=63)


class ConfirmIn(PreviewIn):
    mode: ImportMode = Field(
        default="all_or_nothing",
        description="`all_or_nothing`: one bad row and nothing is stored; `skip_invalid`: good "
        "rows are stored, bad ones reported",
    )


class ImportFileOut(OutputModel):
    name: str
    format: str
    size: int
    encoding: str | None = None
    delimiter: str | None = None
    sheet: str | None = None
    header_row: int | None = None


class CellError(OutputModel):
    field: str
    message: str


class PreviewRow(OutputModel):
    row: int = Field(description="Row number in the file; the header is row 1")
    action: Literal["create", "update"]
    values: dict[str, Any]
    errors: list[CellError]


class RowError(OutputModel):
    row: int
    field: str
    column: str | None = Field(default=None, description="The file's column name")
    message: str


class PreviewOut(OutputModel):
    columns: list[str]
    mapping: Mapping
    unmapped: list[str] = Field(description="File columns that go nowhere")
    rows: list[PreviewRow]
    failing_rows: int | None = Field(
        default=None,
        description="How many rows of the whole file would fail with this mapping (what "
        "all_or_nothing would refuse, skip_invalid leave out); null for a file of more than "
        "5000 rows, which the import's own validation pass counts",
    )


class ImportOut(OutputModel):
    id: str
    table: str
    state: ImportState
    file: ImportFileOut
    columns: list[str] = Field(description="The file's column names, from its header row")
    mapping: Mapping
    mode: ImportMode | None = None
    upsert_on: str | None = None
    preview: PreviewOut | None = None
    rows_total: int | None = Field(default=None, description="Data rows; null until known")
    rows_done: int
    created: int
    updated: int
    skipped: int
    errors: list[RowError]
    errors_total: int
    message: str | None = None
    created_by: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None


class ImportList(OutputModel):
    items: list[ImportOut]


def import_out(job: dict[str, Any], preview: PreviewOut | None = None) -> ImportOut:
    mapping = {m["header"]: m["column"] for m in job.get("mapping") or []}
    return ImportOut(
        id=str(job["_id"]),
        table=job["table"],
        state=job["state"],
        file=ImportFileOut(**job["file"]),
        columns=job.get("columns") or [],
        mapping=mapping,
        mode=job.get("mode"),
        upsert_on=job.get("upsert_on"),
        preview=preview,
        rows_total=job.get("rows_total"),
        rows_done=job.get("rows_done", 0),
        created=job.get("created", 0),
        updated=job.get("updated", 0),
        skipped=job.get("skipped", 0),
        errors=[RowError(**e) for e in job.get("errors") or []],
        errors_total=job.get("errors_total", 0),
        message=job.get("message"),
        created_by=job["created_by"],
        created_at=job["created_at"],
        updated_at=job["updated_at"],
        finished_at=job.get("finished_at"),
    )


# ---- attachments (POST /api/files, docs/api.md "Files") -------------------------------------

FILE_UPLOAD_CONTENT: dict[str, Any] = {
    "multipart/form-data": {
        "schema": {
            "type": "object",
            "properties": {"file": {"type": "string", "format": "binary"}},
            "required": ["file"],
        }
    }
}
# The Content-Type is the one sniffed at upload (image/png, text/plain, ...; bytes without a
# known signature are application/octet-stream), so the answer's media range is any type;
# application/octet-stream comes first for the client generators that read only known types
_FILE_BYTES: dict[str, Any] = {
    "schema": {
        "type": "string",
        "format": "binary",
        "description": "The file's bytes; Content-Type is the type sniffed at upload "
        "(application/octet-stream when none is recognised)",
    }
}
FILE_DOWNLOAD_CONTENT: dict[str, Any] = {
    "application/octet-stream": _FILE_BYTES,
    "*/*": _FILE_BYTES,
}


class FileOut(OutputModel):
    id: str = Field(description="Put it in an attachment column's list to attach the file")
    name: str = Field(description="The uploaded file's name, without path parts or controls")
    size: int = Field(description="Bytes")
    content_type: str = Field(description="Read from the file's bytes, not from the client")
    sha256: str = Field(description="Hex SHA-256 of the bytes")
    created_at: datetime

    @classmethod
    def from_record(cls, record: Any) -> FileOut:
        return cls(
            id=str(record.id),
            name=record.name,
            size=record.size,
            content_type=record.content_type,
            sha256=record.sha256,
            created_at=record.created_at,
        )
