"""`/api/data/{table}/imports` and `/api/data/{table}/export`: CSV/XLSX files in and out of a
table (docs/integrations.md). Mirrored on the built-in tables (`/api/leads/imports`...)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from bson import ObjectId

from crm_core.platform.errors import ValidationFailed
from crm_core.tables.access import Level
from handlers.routing import Call, RouteTable, TableAccess
from models.files import (
    ERROR_REPORT_CONTENT,
    EXPORT_CONTENT,
    UPLOAD_CONTENT,
    ConfirmIn,
    ErrorReportQuery,
    ExportQuery,
    ImportList,
    ImportOut,
    PreviewIn,
    PreviewOut,
    UploadQuery,
    import_out,
)

routes = RouteTable("files")
log = logging.getLogger(__name__)

ROWS = "/api/data/{table}"
IMPORTS = f"{ROWS}/imports"
IMPORT = f"{IMPORTS}/{{import_id:[0-9a-fA-F]{{24}}}}"
READ, WRITE = TableAccess(level=Level.READ), TableAccess(level=Level.WRITE)
READ_BYTES = 64 * 1024
# what aiohttp's multipart reader raises on a malformed form
MULTIPART_ERRORS = (ValueError, AssertionError, KeyError, web.HTTPException, HttpProcessingError)


async def _file_chunks(request: web.Request) -> tuple[AsyncIterator[bytes], str, str]:
    """The uploaded file as a stream: the `file` part of a multipart form, or the raw body."""
    if request.content_type.startswith("multipart/"):
        return await multipart_file(request)

    async def from_body() -> AsyncIterator[bytes]:
        async for chunk in request.content.iter_chunked(READ_BYTES):
            yield chunk

    return from_body(), "", request.content_type


async def multipart_file(request: web.Request) -> tuple[AsyncIterator[bytes], str, str]:
    """The `file` part of a multipart form as a stream, its file name and declared type; 400
    naming `file` when the form cannot be read or has no such part."""
    if not request.content_type.startswith("multipart/"):
        raise ValidationFailed.field("file", "send the file as a multipart form field 'file'")
    try:
        reader = await request.multipart()
        part: Any = await reader.next()
        while part is not None and getattr(part, "name", None) != "file":
            await part.release()
            part = await reader.next()
    except MULTIPART_ERRORS:
        raise ValidationFailed.field("file", "the multipart form cannot be read") from None
    if part is None or not isinstance(part, BodyPartReader):
        raise ValidationFailed.field("file", "send the file in a form field named 'file'")

    async def from_part() -> AsyncIterator[bytes]:
        while True:
            try:
                chunk = await part.read_chunk(READ_BYTES)
            except MULTIPART_ERRORS:
                raise ValidationFailed.field(
                    "file", "the multipart form ends before the file does"
                ) from None
            if not chunk:
                return
            yield chunk

    return from_part(), part.filename or "upload", part.headers.get("Content-Type", "")


@routes.post(
    IMPORTS,
    access=WRITE,
    summary="Upload a CSV or XLSX file to import",
    query=UploadQuery,
    request_content=UPLOAD_CONTENT,
    response=ImportOut,
    status=201,
    errors=(413, 429),
)
async def upload_import(call: Call, query: UploadQuery) -> ImportOut:
    """The file goes as a multipart form field `file` or as the raw body (`Content-Type:
    text/csv` or the XLSX type; `?filename=` names it). CSV: UTF-8 (BOM or not) or
    Windows-1251, delimiter sniffed; XLSX: the first sheet (`?sheet=`). The first row names the
    columns. Answers the import (state `uploaded`) with the detected columns, a proposed
    mapping and a preview of the first rows; nothing is imported until it is confirmed. 400
    names `file` for unreadable files (wrong encoding, broken XLSX, no header, too many rows
    or columns); 413 above `IMPORT_MAX_BYTES`; 429 when you have too many unfinished
    imports."""
    chunks, name, content_type = await _file_chunks(call.request)
    name = query.filename or name or f"{call.tbl.key}-upload"
    job, preview = await call.services.imports.upload_for_review(
        call.ctx, call.tbl, chunks, name, content_type, query
    )
    return import_out(job, preview)


@routes.get(IMPORTS, access=WRITE, summary="Imports into the table", response=ImportList)
async def list_imports(call: Call) -> ImportList:
    """Newest first, the last 100, whoever started them."""
    jobs = await call.services.imports.list_jobs(call.ctx, call.tbl)
    return ImportList(items=[import_out(job) for job in jobs])


@routes.get(IMPORT, access=WRITE, summary="An import and its progress", response=ImportOut)
async def get_import(call: Call, import_id: ObjectId) -> ImportOut:
    """`state` (uploaded, queued, validating, importing, completed, failed), `rows_done` of
    `rows_total`, the counts created/updated/skipped, and the first 1000 `errors` with their
    row numbers (the header is row 1) and fields; an uploaded file also shows its preview."""
    job, preview = await call.services.imports.get_for_review(call.ctx, call.tbl, str(import_id))
    return import_out(job, preview)


@routes.post(
    f"{IMPORT}/preview",
    access=WRITE,
    summary="Preview an uploaded file with another mapping",
    body=PreviewIn,
    response=PreviewOut,
)
async def preview_import(call: Call, body: PreviewIn, import_id: ObjectId) -> PreviewOut:
    """The first rows converted with `mapping` (file column name to column key, null to leave
    it out) and, with `upsert_on`, whether each would create or update a row."""
    return await call.services.imports.preview_with(
        call.ctx, call.tbl, str(import_id), body.mapping, body.upsert_on
    )


@routes.post(
    f"{IMPORT}/confirm",
    access=WRITE,
    summary="Start an uploaded import",
    body=ConfirmIn,
    response=ImportOut,
    status=202,
    errors=(409,),
)
async def confirm_import(call: Call, body: ConfirmIn, import_id: ObjectId) -> ImportOut:
    """Runs in the background; follow it with `GET /api/data/{table}/imports/{id}`. `mode`:
    `all_or_nothing` (default: every row is validated first, and one bad row stores nothing)
    or `skip_invalid`. `upsert_on`: a unique, mapped column; rows whose value matches update
    that row (their empty cells leave values unchanged), the others are created. 409 when the
    import is not in state `uploaded`."""
    job = await call.services.imports.confirm(call.ctx, call.tbl, str(import_id), body)
    return import_out(job)


@routes.get(
    f"{IMPORT}/errors",
    access=WRITE,
    summary="The rows an import left out, to fix and import again",
    query=ErrorReportQuery,
    response_content=ERROR_REPORT_CONTENT,
)
async def import_error_report(
    call: Call, query: ErrorReportQuery, import_id: ObjectId
) -> web.StreamResponse:
    """For a `skip_invalid` import: every row it left out (not only the first 1000 of
    `errors`), with the cells as read from the file and each reason. `format=csv` (default)
    writes the file's own columns, then `error_row` (the row in the file, the header being
    row 1) and `error_reason` (`column: reason; ...`): fix the cells and upload it again (the
    two extra columns map to nothing). `format=json`: `[{row, cells, errors: [{field, column,
    message}]}]`. Empty for any other import, and until a skip_invalid import has run."""
    chunks, filename = await call.services.imports.error_report(
        call.ctx, call.tbl, str(import_id), query.format
    )
    content_type = "text/csv; charset=utf-8" if query.format == "csv" else "application/json"
    response = web.StreamResponse(
        headers={
            "Content-Type": content_type,
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        }
    )
    response.enable_chunked_encoding()
    await response.prepare(call.request)
    async for chunk in chunks:
        await response.write(chunk)
    await response.write_eof()
    return response


@routes.delete(IMPORT, access=WRITE, summary="Discard an import", status=204, errors=(409,))
async def delete_import(call: Call, import_id: ObjectId) -> None:
    """Deletes the job and its stored file (the rows an import stored stay). 409 while it
    runs."""
    await call.services.imports.delete(call.ctx, call.tbl, str(import_id))


@routes.get(
    f"{ROWS}/export",
    access=READ,
    summary="Export rows as CSV or XLSX",
    query=ExportQuery,
    response_content=EXPORT_CONTENT,
    errors=(429,),
)
async def export_rows(call: Call, query: ExportQuery) -> web.StreamResponse:
    """The rows the list route would answer for the same `filters` and sort (`sort_by`,
    `sort_order`, `sort`, or `sort_by=manual`), all of them, streamed. Columns: `columns`, or
    your column view; `headers=names` writes display names. Select labels, dates in the
    company's timezone; text that a spreadsheet would run as a formula is neutralised. 429 when
    the company already runs `EXPORT_MAX_CONCURRENT` exports."""
    exports = call.services.exports
    plan = await exports.plan(call.ctx, call.tbl, query)
    exports.reserve(call.ctx)
    try:
        response = web.StreamResponse(
            headers={
                "Content-Type": plan.content_type,
                "Content-Disposition": f'attachment; filename="{plan.filename(datetime.now(UTC))}"',
                "Cache-Control": "no-store",
            }
        )
        # the headers go at once (a large XLSX takes a while to build before its bytes can)
        response.enable_chunked_encoding()
        await response.prepare(call.request)
        if plan.format == "csv":
            async for chunk in exports.csv_chunks(call.ctx, plan):
                await response.write(chunk)
        else:
            workbook = await exports.xlsx_file(call.ctx, plan)
            try:
                while chunk := workbook.read(READ_BYTES):
                    await response.write(chunk)
            finally:
                workbook.close()
        await response.write_eof()
        return response
    except ConnectionResetError:  # the client went away mid-download: nothing to answer
        log.info("export of %s stopped: the client closed the connection", call.tbl.key)
        return response
    finally:
        exports.release(call.ctx)
