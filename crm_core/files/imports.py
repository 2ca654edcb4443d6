"""Import of CSV/XLSX files into a table (`/api/data/{table}/imports`).

1. Upload: the file is streamed into the tenant's database in 1 MiB chunks (`_import_files`,
   so that a worker process can read it) and through a temporary file, which is inspected:
   format, encoding, delimiter, header row, the first rows and, for CSV, the row count. A job
   document (`_jobs`, state `uploaded`) keeps what was found and a proposed mapping of the
   file's columns to the table's (by key, display name or alias).
2. Preview: the first rows converted with a mapping, each cell through the column types'
   typecast (the API's validation, reading text such as "42", "1,5", "да" or an option label),
   with the errors of each cell and whether the row would create or update.
3. Confirm: a taskiq task reads the file in batches and writes with the upsert planner
   (crm_core/tables/upsert.py). `all_or_nothing` first validates every row in a streaming pass
   and writes only when no row has an error; the writes then go batch by batch, each batch
   recorded first in an undo journal (`_import_journal`: the ids it inserts, the rows it
   updates as they were), so a failure half-way (a unique value taken by a concurrent writer,
   a lost access, a worker that died) is undone from the journal. `skip_invalid` writes the
   valid rows of each batch and reports the others. Memory stays flat: one batch at a time,
   plus, for unique columns only, one 64-bit hash per row to find repeats across batches.
"""

from __future__ import annotations

import asyncio
import logging
import re
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from datetime import time as time_of_day
from typing import IO, Any, Protocol

import orjson
from bson import ObjectId

from crm_core.accounts.audit import AuditSink
from crm_core.accounts.context import TenantContext
from crm_core.files.cells import CellError as BadCell
from crm_core.files.cells import read_cell
from crm_core.files.csvtext import csv_line, neutralise
from crm_core.files.readers import (
    CSV_DELIMITERS,
    SAMPLE_BYTES,
    FileInfo,
    RowSource,
    Utf8Check,
    detect_encoding,
    detect_format,
    file_error,
    sniff_delimiter,
)
from crm_core.platform.clock import as_utc
from crm_core.platform.errors import (
    Conflict,
    CrmError,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ValidationFailed,
)
from crm_core.platform.outbox import Lease, Outbox, Work, work_key
from crm_core.platform.settings import Settings
from crm_core.platform.storage import Database
from crm_core.tables.access import Level, require
from crm_core.tables.aliases import AliasService
from crm_core.tables.definitions import TABLES, Table, load_table, utcnow
from crm_core.tables.history import ACTOR_TYPE, put_back
from crm_core.tables.rows import RowService
from crm_core.tables.upsert import Plan, apply_plan, check_upsert_column, plan_batch
from models.files import CellError, ConfirmIn, PreviewOut, PreviewRow, UploadQuery

log = logging.getLogger(__name__)

JOBS = "_jobs"
FILES = "_import_files"
JOURNAL = "_import_journal"
# skip_invalid: the rows left out, with their cells and reasons (the error report)
REJECTS = "_import_rejects"
# the preview counts the failing rows of files up to this size (PreviewOut.failing_rows)
CHECK_MAX_ROWS = 5000
CHUNK_BYTES = 1024 * 1024
PREVIEW_ROWS = 10
MAX_STORED_ERRORS = 1000
SAMPLE_MAX_CHARS = 2_000_000  # the preview rows kept in the job document (16 MB BSON limit)
OPEN_STATES = ("uploading", "uploaded", "queued", "validating", "importing")
RUNNING_STATES = ("queued", "validating", "importing")
# outbox kinds (crm_core/platform/outbox.py): a confirmed import to run, an upload in progress to
# watch
IMPORT_RUN = "import.run"
IMPORT_UPLOAD = "import.upload"
INTERRUPTED_UPLOAD = "The upload was interrupted (the server stopped); upload the file again"
STALLED_UPLOAD = "no data came for longer than IMPORT_STALE_SECONDS; upload the file again"


class ImportQueue(Protocol):
    async def run_import(self, tenant_id: str, job_id: str, user_id: str) -> None: ...


def _normal(text: str) -> str:
    return re.sub(r"[\s_\-]+", " ", text.casefold()).strip()


class ImportFailed(CrmError):
    """Stops a job: the rows written so far are undone and the job fails with this message."""

    code = "import_failed"
    status = 400


class Progress:
    """The counters and the first errors of a running job."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers  # column key -> the file's column name
        self.rows_done = 0
        self.created = 0
        self.updated = 0
        self.skipped = 0
        self.errors: list[dict[str, Any]] = []
        self.errors_total = 0

    def add_errors(self, errors: list[dict[str, Any]]) -> None:
        self.errors_total += len(errors)
        for error in sorted(errors, key=lambda e: e["position"]):
            if len(self.errors) >= MAX_STORED_ERRORS:
                break
            self.errors.append(
                {
                    "row": error["position"],
                    "field": error["field"],
                    "column": self.headers.get(error["field"]),
                    "message": error["message"],
                }
            )

    def fields(self) -> dict[str, Any]:
        return {
            "rows_done": self.rows_done,
            "created": self.created,
            "updated": self.updated,
            "skipped": self.skipped,
            "errors": self.errors,
            "errors_total": self.errors_total,
        }


class ImportService:
    def __init__(
        self,
        rows: RowService,
        settings: Settings,
        aliases: AliasService,
        outbox: Outbox,
        queue: ImportQueue,
        audit: AuditSink | None = None,  # the company's audit trail (docs/history.md)
    ) -> None:
        self.rows = rows
        self.audit = audit
        self.aliases = aliases
        self.settings = settings
        self.outbox = outbox
        self.queue = queue  # refuses work until the broker runs (crm_core/services.py)

    @property
    def stale_after(self) -> timedelta:
        """A job (uploading or running) without a heartbeat for this long lost its process."""
        return timedelta(seconds=self.settings.import_stale_seconds)

    def _work(self, kind: str, tenant_id: str, *args: object) -> Work:
        return Work(kind, tenant_id, args, self.settings.import_stale_seconds)

    def _lease(self, tenant_id: str, job_id: str, user_id: str) -> Lease:
        key = work_key(IMPORT_RUN, tenant_id, job_id, user_id)
        return Lease(self.outbox, key, self.settings.import_stale_seconds)

    async def _send(self, work: Work) -> None:
        """Hand a recorded import to the queue (the outbox's dispatch)."""
        job_id, user_id = work.args
        await self.queue.run_import(work.tenant_id, str(job_id), str(user_id))

    # ---- upload -------------------------------------------------------------------------------

    async def upload(
        self,
        ctx: TenantContext,
        table: Table,
        chunks: AsyncIterator[bytes],
        name: str,
        content_type: str,
        query: UploadQuery,
    ) -> dict[str, Any]:
        """Store and inspect an uploaded file; the job answers with the detected columns."""
        now = utcnow()
        job: dict[str, Any] = {
            "_id": ObjectId(),
            "kind": "import",
            "table": table.key,
            "table_id": table.id,  # a table re-created with the same key is another table
            "state": "uploading",
            "file": {"name": name, "format": query.format or "csv", "size": 0},
            "columns": [],
            "mapping": [],
            "sample": [],
            "errors": [],
            "errors_total": 0,
            "created_by": ctx.user_id,
            "created_at": now,
            "updated_at": now,
        }
        jobs = ctx.db[JOBS]
        await self._ensure_indexes(ctx)
        # watched by the outbox: a process that dies mid-upload leaves no job `uploading`
        watch = self._work(IMPORT_UPLOAD, ctx.tenant_id, str(job["_id"]))
        await self.outbox.record([watch])
        # the slot is reserved (the job inserted) before the slow upload, then counted
        await jobs.insert_one(job)
        try:
            unfinished = await jobs.count_documents(
                {"kind": "import", "created_by": ctx.user_id, "state": {"$in": OPEN_STATES}},
                limit=self.settings.import_max_pending + 1,
            )
            if unfinished > self.settings.import_max_pending:
                raise RateLimited(
                    f"You have {unfinished - 1} unfinished imports; confirm or delete some "
                    f"(at most {self.settings.import_max_pending})"
                )
            with tempfile.NamedTemporaryFile(prefix="crm-upload-") as local:
                size, utf8 = await self._store(ctx, job["_id"], chunks, local)
                if size == 0:
                    raise file_error("the file is empty")
                info, header, sample, total = await asyncio.to_thread(
                    self._inspect,
                    local.name,
                    FileInfo(name, "csv", size),
                    content_type,
                    query,
                    utf8,
                )
            mapping = await self.propose_mapping(ctx, table, header)
            changes = {
                "state": "uploaded",
                "file": {k: v for k, v in vars(info).items() if v is not None},
                "columns": header,
                "mapping": mapping,
                "sample": [{"row": n, "cells": cells} for n, cells in sample],
                "rows_total": total,
                "updated_at": utcnow(),
            }
            done = await jobs.update_one(
                {"_id": job["_id"], "state": "uploading"}, {"$set": changes}
            )
            if not done.matched_count:  # the outbox's watch expired it meanwhile
                raise file_error(STALLED_UPLOAD)
        except BaseException:
            await self._discard(ctx, job["_id"])
            await self.outbox.done(watch.key)
            raise
        await self.outbox.done(watch.key)
        return {**job, **changes}

    async def expire_upload(self, db: Database, tenant_id: str, job_id: str) -> None:
        """The outbox's check of an upload in progress (`db`: the tenant's database): an
        upload whose process stopped (no chunk stored for `import_stale_seconds`) fails with
        the reason and its chunks go; the entry stays while the upload is alive."""
        key = work_key(IMPORT_UPLOAD, tenant_id, job_id)
        job = await db[JOBS].find_one({"_id": ObjectId(job_id)}, {"state": 1, "updated_at": 1})
        if job is None or job["state"] != "uploading":
            await self.outbox.done(key)
            return
        if as_utc(job["updated_at"]) > utcnow() - self.stale_after:
            return
        now = utcnow()
        failed = await db[JOBS].update_one(
            {"_id": job["_id"], "state": "uploading", "updated_at": job["updated_at"]},
            {
                "$set": {
                    "state": "failed",
                    "message": INTERRUPTED_UPLOAD,
                    "finished_at": now,
                    "updated_at": now,
                }
            },
        )
        if failed.modified_count:
            log.warning("import %s: its upload stopped; marked failed", job_id)
            await db[FILES].delete_many({"job_id": job["_id"]})
            await self.outbox.done(key)

    @staticmethod
    async def _ensure_indexes(ctx: TenantContext) -> None:
        """Idempotent: the queries on jobs, file chunks and the journal are index-served."""
        await ctx.db[JOBS].create_index(
            [("table", 1), ("kind", 1), ("_id", -1)], name="table_kind_id"
        )
        await ctx.db[JOBS].create_index(
            [("created_by", 1), ("kind", 1), ("state", 1)], name="creator_kind_state"
        )
        await ctx.db[FILES].create_index([("job_id", 1), ("n", 1)], name="job_chunk")
        await ctx.db[JOURNAL].create_index([("job_id", 1), ("batch", 1)], name="job_batch")
        await ctx.db[REJECTS].create_index([("job_id", 1), ("row", 1)], name="job_row")

    async def _store(
        self, ctx: TenantContext, job_id: ObjectId, chunks: AsyncIterator[bytes], local: IO[bytes]
    ) -> tuple[int, bool]:
        limit = self.settings.import_max_bytes
        utf8 = Utf8Check()
        size, number = 0, 0
        pending = bytearray()
        beat_every = self.settings.import_stale_seconds / 4
        next_beat = time.monotonic() + beat_every
        async for chunk in chunks:
            if time.monotonic() >= next_beat:  # the upload's heartbeat (`expire_upload`)
                await self._upload_beat(ctx, job_id)
                next_beat = time.monotonic() + beat_every
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(
                    f"The file is larger than {limit} bytes",
                    [{"field": "file", "message": f"at most {limit} bytes"}],
                )
            utf8.feed(chunk)
            local.write(chunk)
            pending += chunk
            if len(pending) >= CHUNK_BYTES:
                await ctx.db[FILES].insert_one(
                    {"job_id": job_id, "n": number, "data": bytes(pending)}
                )
                number += 1
                pending.clear()
        if pending:
            await ctx.db[FILES].insert_one({"job_id": job_id, "n": number, "data": bytes(pending)})
        utf8.feed(b"", final=True)
        local.flush()
        return size, utf8.valid

    async def _upload_beat(self, ctx: TenantContext, job_id: ObjectId) -> None:
        beat = await ctx.db[JOBS].update_one(
            {"_id": job_id, "state": "uploading"}, {"$set": {"updated_at": utcnow()}}
        )
        if not beat.matched_count:
            raise file_error(STALLED_UPLOAD)

    def _inspect(
        self, path: str, info: FileInfo, content_type: str, query: UploadQuery, utf8_valid: bool
    ) -> tuple[FileInfo, list[str], list[tuple[int, list[Any]]], int | None]:
        with open(path, "rb") as stream:
            head = stream.read(SAMPLE_BYTES)
        info.format = detect_format(head, info.name, content_type, query.format)
        if info.format == "csv":
            info.encoding = detect_encoding(head, utf8_valid, query.encoding)
            text = head.decode(info.encoding, errors="ignore")
            info.delimiter = query.delimiter or CSV_DELIMITERS[sniff_delimiter(text)]
        else:
            info.sheet = query.sheet
        info.header_row = query.header_row if query.header_row != 1 else None
        max_rows = self.settings.import_max_rows
        with RowSource(path, info) as source:
            if len(source.header) > self.settings.import_max_columns:
                raise file_error(
                    f"the file has {len(source.header)} columns; at most "
                    f"{self.settings.import_max_columns}"
                )
            if source.declared is not None and source.declared - 1 > max_rows:
                raise file_error(f"the sheet has more than {max_rows} rows")
            rows = source.numbered()
            sample = _within(source.take(rows, PREVIEW_ROWS), SAMPLE_MAX_CHARS)
            total: int | None = None
            if info.format == "csv":
                total = len(sample)
                for _ in rows:
                    total += 1
                    if total > max_rows:
                        break
                if total > max_rows:
                    raise file_error(f"the file has more than {max_rows} rows")
            return info, source.header, sample, total

    # ---- mapping and preview --------------------------------------------------------------

    async def propose_mapping(
        self, ctx: TenantContext, table: Table, header: list[str]
    ) -> list[dict[str, Any]]:
        """Each file column to the table column whose key, name or alias it spells (case,
        spaces, `_` and `-` aside); a table column is taken once."""
        alias = (await self.aliases.find(ctx, [table.key])).get(table.key)
        alias_names = alias.columns if alias else {}
        candidates: dict[str, str] = {}
        for source in ("key", "name", "alias"):
            for column in table.columns:
                if table.column_type(column).computed:
                    continue  # computed on read, never imported (docs/computed.md)
                text = alias_names.get(column.key) if source == "alias" else getattr(column, source)
                if text:
                    candidates.setdefault(_normal(text), column.key)
                    # how an export by names tells apart two columns of one display name
                    candidates.setdefault(_normal(f"{text} ({column.key})"), column.key)
        used: set[str] = set()
        mapping = []
        for name in header:
            key = candidates.get(_normal(name))
            if key in used:
                key = None
            if key is not None:
                used.add(key)
            mapping.append({"header": name, "column": key})
        return mapping

    def check_mapping(
        self, table: Table, job: dict[str, Any], given: dict[str, str | None] | None
    ) -> list[dict[str, Any]]:
        if given is None:
            mapping = job["mapping"]
        else:
            headers = job["columns"]
            errors = [
                {"field": f"mapping.{h[:64]}", "message": "not a column of the file"}
                for h in given
                if h not in headers
            ]
            used: dict[str, str] = {}
            for header, key in given.items():
                if key is None:
                    continue
                if table.column(key) is None:
                    errors.append(
                        {
                            "field": f"mapping.{header[:64]}",
                            "message": f"unknown column '{key[:64]}'",
                        }
                    )
                elif table.column_type(table.column(key)).computed:  # type: ignore[arg-type]
                    errors.append(
                        {
                            "field": f"mapping.{header[:64]}",
                            "message": f"'{key[:64]}' is a computed column: it is not imported",
                        }
                    )
                elif key in used:
                    errors.append(
                        {
                            "field": f"mapping.{header[:64]}",
                            "message": f"'{key}' is already mapped from '{used[key]}'",
                        }
                    )
                else:
                    used[key] = header
            if errors:
                raise ValidationFailed(f"{errors[0]['field']}: {errors[0]['message']}", errors)
            mapping = [{"header": h, "column": given.get(h)} for h in headers]
        if not any(m["column"] for m in mapping):
            raise ValidationFailed.field("mapping", "map at least one column of the file")
        return list(mapping)

    async def upload_for_review(
        self,
        ctx: TenantContext,
        table: Table,
        chunks: AsyncIterator[bytes],
        name: str,
        content_type: str,
        query: UploadQuery,
    ) -> tuple[dict[str, Any], PreviewOut]:
        """`upload`, and the preview of the first rows with the proposed mapping (what the
        upload route answers)."""
        job = await self.upload(ctx, table, chunks, name, content_type, query)
        return job, await self.preview(ctx, table, job)

    async def get_for_review(
        self, ctx: TenantContext, table: Table, job_id: str
    ) -> tuple[dict[str, Any], PreviewOut | None]:
        """The import, with its preview while it waits to be confirmed (state `uploaded`)."""
        job = await self.get(ctx, table, job_id)
        preview = await self.preview(ctx, table, job) if job["state"] == "uploaded" else None
        return job, preview

    async def preview_with(
        self,
        ctx: TenantContext,
        table: Table,
        job_id: str,
        given: dict[str, str | None] | None,
        upsert_on: str | None,
    ) -> PreviewOut:
        """The uploaded file's first rows converted with the mapping `given` (file column to
        column key; None: the stored one) and, with `upsert_on`, create or update for each."""
        job = await self.get(ctx, table, job_id)
        mapping = self.check_mapping(table, job, given)
        return await self.preview(ctx, table, job, mapping, upsert_on)

    async def preview(
        self,
        ctx: TenantContext,
        table: Table,
        job: dict[str, Any],
        mapping: list[dict[str, Any]] | None = None,
        upsert_on: str | None = None,
    ) -> PreviewOut:
        mapping = mapping if mapping is not None else job["mapping"]
        if upsert_on is not None:
            self._check_upsert(table, mapping, upsert_on)
        keys = [m["column"] for m in mapping]
        parsed = [
            (s["row"], *_parse_row(ctx, table, keys, s["cells"])) for s in job.get("sample") or []
        ]
        plan = await _plan(self.rows, ctx, table, parsed, upsert_on)
        updates = {u.position: u for u in plan.updates}
        creates = dict(plan.creates)
        rows = []
        for number, body, _ in parsed:
            if number in updates:
                values = _render(table, updates[number].set_values)
            elif number in creates:
                values = _render(table, creates[number])
            else:  # the cells that were read, as the API would take them
                values = dict(body)
            rows.append(
                PreviewRow(
                    row=number,
                    action="update" if number in updates else "create",
                    values=values,
                    errors=[
                        CellError(field=e["field"], message=e["message"])
                        for e in plan.errors
                        if e["position"] == number
                    ],
                )
            )
        return PreviewOut(
            columns=job["columns"],
            mapping={m["header"]: m["column"] for m in mapping},
            unmapped=[m["header"] for m in mapping if not m["column"]],
            rows=rows,
            failing_rows=await self.failing_rows(ctx, table, job, mapping, upsert_on),
        )

    async def failing_rows(
        self,
        ctx: TenantContext,
        table: Table,
        job: dict[str, Any],
        mapping: list[dict[str, Any]],
        upsert_on: str | None,
    ) -> int | None:
        """How many rows of an uploaded file would fail with `mapping`: every row read and
        checked as the import's validation pass does (nothing written), for a file of at most
        `CHECK_MAX_ROWS` rows; remembered in the job for that mapping."""
        total = job.get("rows_total")
        if job.get("state") != "uploaded" or total is None or total > CHECK_MAX_ROWS:
            return None
        checked = job.get("check") or {}
        if checked.get("mapping") == mapping and checked.get("upsert_on") == upsert_on:
            return int(checked["failing_rows"])
        keys = [m["column"] for m in mapping]
        unique = [c.key for c in table.columns if c.unique]
        seen: dict[str, dict[int, int]] = {key: {} for key in unique}
        failing: set[int] = set()
        with tempfile.NamedTemporaryFile(prefix="crm-check-") as local:
            await self._copy_upload(ctx, job, local)
            source = RowSource(local.name, FileInfo(**job["file"]))
            await asyncio.to_thread(source.__enter__)
            try:
                rows = source.numbered()
                size = self.settings.import_batch_size
                while batch := await asyncio.to_thread(source.take, rows, size):
                    parsed = [(n, *_parse_row(ctx, table, keys, cells)) for n, cells in batch]
                    plan = await _plan(self.rows, ctx, table, parsed, upsert_on)
                    _repeats_across_batches(plan, seen)
                    failing |= {e["position"] for e in plan.errors}
            finally:
                await asyncio.to_thread(source.__exit__, None, None, None)
        check = {"mapping": mapping, "upsert_on": upsert_on, "failing_rows": len(failing)}
        await ctx.db[JOBS].update_one(
            {"_id": job["_id"], "state": "uploaded"}, {"$set": {"check": check}}
        )
        return len(failing)

    @staticmethod
    async def _copy_upload(ctx: TenantContext, job: dict[str, Any], local: IO[bytes]) -> None:
        """The stored upload's chunks into `local`, in order."""
        async for doc in ctx.db[FILES].find({"job_id": job["_id"]}, {"n": 1}).sort("n", 1):
            chunk = await ctx.db[FILES].find_one({"_id": doc["_id"]})
            if chunk is None:  # the upload was removed under the job
                raise ImportFailed("the uploaded file is gone")
            local.write(chunk["data"])
        local.flush()

    def _check_upsert(self, table: Table, mapping: list[dict[str, Any]], upsert_on: str) -> None:
        check_upsert_column(table, upsert_on)
        if upsert_on not in {m["column"] for m in mapping}:
            raise ValidationFailed.field(
                "upsert_on", f"'{upsert_on}' must be mapped from a column of the file"
            )

    # ---- jobs ---------------------------------------------------------------------------------

    async def get(self, ctx: TenantContext, table: Table, job_id: str) -> dict[str, Any]:
        job = await ctx.db[JOBS].find_one(
            {"_id": ObjectId(job_id), "kind": "import", "table": table.key, **_of(table)}
        )
        if job is None:
            raise NotFound("Import not found")
        return dict(job)

    async def list_jobs(self, ctx: TenantContext, table: Table) -> list[dict[str, Any]]:
        cursor = ctx.db[JOBS].find(
            {"kind": "import", "table": table.key, **_of(table)}, {"sample": 0}
        )
        return [dict(job) async for job in cursor.sort("_id", -1).limit(100)]

    async def confirm(
        self, ctx: TenantContext, table: Table, job_id: str, data: ConfirmIn
    ) -> dict[str, Any]:
        job = await self.get(ctx, table, job_id)
        if job["state"] != "uploaded":
            raise Conflict(f"The import is {job['state']}; only an uploaded file is confirmed")
        mapping = self.check_mapping(table, job, data.mapping)
        if data.upsert_on is not None:
            self._check_upsert(table, mapping, data.upsert_on)
        else:
            mapped = {m["column"] for m in mapping}
            missing = [
                c.key
                for c in table.columns
                if c.required and c.default is None and c.key not in mapped
            ]
            if missing:
                raise ValidationFailed(
                    f"mapping: required column '{missing[0]}' is not mapped",
                    [
                        {"field": "mapping", "message": f"required column '{k}' is not mapped"}
                        for k in missing
                    ],
                )
        # recorded before it is queued: with the broker down it starts when the broker is back
        work = self._work(IMPORT_RUN, ctx.tenant_id, str(job["_id"]), ctx.user_id)
        await self.outbox.record([work])
        claimed = await ctx.db[JOBS].find_one_and_update(
            {"_id": job["_id"], "state": "uploaded"},
            {
                "$set": {
                    "state": "queued",
                    "mode": data.mode,
                    "mapping": mapping,
                    "upsert_on": data.upsert_on,
                    "confirmed_by": ctx.user_id,
                    "rows_done": 0,
                    "updated_at": utcnow(),
                }
            },
            return_document=True,
        )
        if claimed is None:
            await self.outbox.done(work.key)
            raise Conflict("The import was confirmed or deleted by someone else")
        await self.outbox.hand_off([work], self._send)
        if self.audit is not None:
            target = {"type": "import", "id": str(job["_id"]), "table": table.key}
            await self.audit.record(ctx, "import.started", target, {"mode": data.mode})
        return dict(claimed)

    async def delete(self, ctx: TenantContext, table: Table, job_id: str) -> None:
        job = await self.get(ctx, table, job_id)
        if job["state"] in RUNNING_STATES:
            raise Conflict(f"The import is {job['state']}; wait until it has finished")
        result = await ctx.db[JOBS].delete_one(
            {"_id": job["_id"], "state": {"$nin": list(RUNNING_STATES)}}
        )
        if not result.deleted_count:
            raise Conflict("The import has just started; wait until it has finished")
        await self._discard(ctx, job["_id"], keep_job=True)

    async def _discard(self, ctx: TenantContext, job_id: ObjectId, keep_job: bool = False) -> None:
        if not keep_job:
            await ctx.db[JOBS].delete_one({"_id": job_id})
        await ctx.db[FILES].delete_many({"job_id": job_id})
        await ctx.db[JOURNAL].delete_many({"job_id": job_id})
        await ctx.db[REJECTS].delete_many({"job_id": job_id})

    async def error_report(
        self, ctx: TenantContext, table: Table, job_id: str, fmt: str
    ) -> tuple[AsyncIterator[bytes], str]:
        """The rows a `skip_invalid` import left out (empty for any other import): as CSV, the
        file's own columns with the cells as read, then `error_row` (its row in the file) and
        `error_reason` (`column: reason; ...`), to fix and import again; as JSON, a list of
        `{row, cells: {column: value}, errors: [{field, column, message}]}`."""
        job = await self.get(ctx, table, job_id)
        columns = list(job.get("columns") or [])
        cursor = ctx.db[REJECTS].find({"job_id": job["_id"]}).sort("row", 1)

        async def as_csv() -> AsyncIterator[bytes]:
            parts = ["\ufeff", csv_line([neutralise(c) for c in [*columns, *REPORT_COLUMNS]], ",")]
            async for reject in cursor:
                cells = [_report_text(c) for c in reject["cells"][: len(columns)]]
                cells += [None] * (len(columns) - len(cells))
                reason = "; ".join(
                    f"{e.get('column') or e['field'] or 'row'}: {e['message']}"
                    for e in reject["errors"]
                )
                parts.append(csv_line([*cells, str(reject["row"]), neutralise(reason)], ","))
                if len(parts) >= 500:
                    yield "".join(parts).encode("utf-8")
                    parts = []
            yield "".join(parts).encode("utf-8")

        async def as_json() -> AsyncIterator[bytes]:
            yield b"["
            first = True
            async for reject in cursor:
                item = {
                    "row": reject["row"],
                    "cells": dict(zip(columns, reject["cells"], strict=False)),
                    "errors": reject["errors"],
                }
                yield (b"" if first else b",") + orjson.dumps(item)
                first = False
            yield b"]"

        return (as_csv() if fmt == "csv" else as_json()), f"{table.key}-import-errors.{fmt}"

    # ---- the background task ------------------------------------------------------------------

    async def refuse(
        self, db: Database, tenant_id: str, job_id: str, user_id: str, message: str
    ) -> None:
        """A queued import whose user can no longer run it (deactivated meanwhile) fails with
        the reason, without starting; `db` is the tenant's database."""
        await self._lease(tenant_id, job_id, user_id).done()
        now = utcnow()
        await db[JOBS].update_one(
            {"_id": ObjectId(job_id), "state": "queued"},
            {
                "$set": {
                    "state": "failed",
                    "message": message,
                    "finished_at": now,
                    "updated_at": now,
                }
            },
        )

    async def run(self, ctx: TenantContext, job_id: str, task_id: str) -> None:
        """Run a confirmed import (the taskiq task's body). Any delivery (the task's own,
        delivered again by Redis, or one the outbox's sweeper queued) that finds the job's
        runner gone (no heartbeat for `import_stale_seconds`) undoes what it wrote and starts
        again; one that finds a live runner leaves the job, and its outbox entry, to it."""
        lease = self._lease(ctx.tenant_id, job_id, ctx.user_id)
        jobs = ctx.db[JOBS]
        oid = ObjectId(job_id)
        now = utcnow()
        start = {
            "state": "validating",
            "claimed_by": task_id,
            "heartbeat_at": now,
            "started_at": now,
            "updated_at": now,
        }
        job = await jobs.find_one_and_update(
            {"_id": oid, "state": "queued"}, {"$set": start}, return_document=True
        )
        if job is None:
            job = await jobs.find_one({"_id": oid})
            if job is None or job["state"] not in ("validating", "importing"):
                await lease.done()  # done (or deleted): nothing left to run
                return
            if as_utc(job["heartbeat_at"]) > now - self.stale_after:
                return  # another delivery is at work on it
            # taken over with one conditional update (two deliveries may find it at once),
            # then undone: the journal is the dead runner's until then
            job = await jobs.find_one_and_update(
                {"_id": oid, "state": job["state"], "heartbeat_at": job["heartbeat_at"]},
                {"$set": start},
                return_document=True,
            )
            if job is None:
                return
            log.warning("import %s: its worker stopped; undoing its writes and starting over", oid)
            await self._rollback(ctx, job)
        try:
            await lease.keep()
            table = await load_table(ctx, self.rows.types, job["table"])
            if job.get("table_id", table.id) != table.id:
                raise NotFound(f"Table '{job['table']}' not found")
            await require(ctx, table, Level.WRITE)
            await self._run(ctx, table, job, lease)
        except NotFound as exc:
            await self._rollback(ctx, job)
            gone = not await ctx.db[TABLES].count_documents({"_id": job.get("table_id")})
            if gone:  # the table was deleted: its import stops (issue #29 §5)
                await self._finish(
                    ctx, job, "cancelled", message="The table was deleted; the import stopped"
                )
            else:
                await self._finish(ctx, job, "failed", message=exc.message)
        except CrmError as exc:
            await self._rollback(ctx, job)
            await self._finish(ctx, job, "failed", message=exc.message)
        except Exception:
            log.exception("import %s failed", oid)
            await self._rollback(ctx, job)
            await self._finish(
                ctx,
                job,
                "failed",
                message="An unexpected error stopped the import; nothing was kept",
            )
        # not reached when the task is cancelled (its worker stops): the job keeps its file
        # and its outbox entry, and the next delivery takes over once its heartbeat is stale
        await ctx.db[FILES].delete_many({"job_id": oid})
        await lease.done()

    async def _run(
        self, ctx: TenantContext, table: Table, job: dict[str, Any], lease: Lease
    ) -> None:
        keys = [m["column"] for m in job["mapping"]]
        progress = Progress({m["column"]: m["header"] for m in job["mapping"] if m["column"]})
        with tempfile.NamedTemporaryFile(prefix="crm-import-") as local:
            await self._copy_upload(ctx, job, local)
            info = FileInfo(**job["file"])
            if job["mode"] == "all_or_nothing":
                await self._pass(
                    ctx, table, job, local.name, info, keys, progress, lease, write=False
                )
                if progress.errors_total:
                    await self._finish(
                        ctx,
                        job,
                        "failed",
                        message=f"{progress.errors_total} errors; nothing was imported",
                        rows_total=progress.rows_done,
                        **progress.fields(),
                    )
                    return
                total = progress.rows_done
                progress = Progress(progress.headers)
                await ctx.db[JOBS].update_one(
                    {"_id": job["_id"]},
                    {"$set": {"state": "importing", "rows_total": total, **progress.fields()}},
                )
            else:
                await ctx.db[JOBS].update_one({"_id": job["_id"]}, {"$set": {"state": "importing"}})
            await self._pass(ctx, table, job, local.name, info, keys, progress, lease, write=True)
        await ctx.db[JOURNAL].delete_many({"job_id": job["_id"]})
        await self._finish(
            ctx, job, "completed", rows_total=progress.rows_done, **progress.fields()
        )

    async def _pass(
        self,
        ctx: TenantContext,
        table: Table,
        job: dict[str, Any],
        path: str,
        info: FileInfo,
        keys: list[str | None],
        progress: Progress,
        lease: Lease,
        write: bool,
    ) -> None:
        """One streaming pass over the file: validate every batch, and write it when `write`
        (all-or-nothing: any error stops the job and undoes it; skip-invalid: valid rows)."""
        strict = job["mode"] == "all_or_nothing"
        ACTOR_TYPE.set("import")  # the revisions this pass writes are the import's
        upsert_on = job.get("upsert_on")
        unique = [c.key for c in table.columns if c.unique]
        seen: dict[str, dict[int, int]] = {key: {} for key in unique}
        source = RowSource(path, info)
        await asyncio.to_thread(source.__enter__)
        try:
            rows = source.numbered()
            batch_number = 0
            while True:
                batch = await asyncio.to_thread(source.take, rows, self.settings.import_batch_size)
                if not batch:
                    break
                if progress.rows_done + len(batch) > self.settings.import_max_rows:
                    raise ImportFailed(
                        f"The file has more than {self.settings.import_max_rows} rows"
                    )
                parsed = [(number, *_parse_row(ctx, table, keys, cells)) for number, cells in batch]
                plan = await _plan(self.rows, ctx, table, parsed, upsert_on)
                _repeats_across_batches(plan, seen)
                progress.add_errors(plan.errors)
                if write:
                    if strict and plan.errors:
                        first = plan.errors[0]
                        raise ImportFailed(
                            f"Row {first['position']}: {first['field']} {first['message']} "
                            "(the data changed since it was validated); nothing was kept"
                        )
                    late = await self._write(ctx, table, job, batch_number, plan, strict, progress)
                    if not strict:
                        await _record_rejects(ctx, job, batch, [*plan.errors, *late], progress)
                progress.rows_done += len(batch)
                batch_number += 1
                await lease.keep()
                await ctx.db[JOBS].update_one(
                    {"_id": job["_id"]},
                    {
                        "$set": {
                            **progress.fields(),
                            "heartbeat_at": utcnow(),
                            "updated_at": utcnow(),
                        }
                    },
                )
        finally:
            await asyncio.to_thread(source.__exit__, None, None, None)

    async def _write(
        self,
        ctx: TenantContext,
        table: Table,
        job: dict[str, Any],
        batch_number: int,
        plan: Plan,
        strict: bool,
        progress: Progress,
    ) -> list[dict[str, Any]]:
        """Write the batch's valid rows; answers the errors found while writing (skip-invalid:
        a unique value a concurrent writer took)."""
        invalid = plan.invalid_positions
        valid = plan.without(invalid)
        progress.skipped += len(invalid)
        late: list[dict[str, Any]] = []
        if not valid.creates and not valid.updates:
            return late
        await ctx.db[JOURNAL].insert_one(
            {
                "job_id": job["_id"],
                "batch": batch_number,
                "inserted": valid.inserted_ids,
                "originals": [u.original for u in valid.updates],
            }
        )
        try:
            await apply_plan(ctx, table, valid, self.rows)
            progress.created += len(valid.creates)
            progress.updated += len(valid.updates)
            return late
        except Conflict:
            if strict:
                raise
        # skip-invalid: a concurrent writer took a unique value; find the rows it concerns
        for single in _singles(valid):
            try:
                await apply_plan(ctx, table, single, self.rows)
            except Conflict as exc:
                progress.skipped += 1
                position = (single.creates or [(single.updates[0].position, {})])[0][0]
                field = exc.details[0]["field"] if exc.details else ""
                error = {
                    "position": position,
                    "field": field,
                    "message": "already used by another row",
                }
                progress.add_errors([error])
                late.append(error)
                continue
            progress.created += len(single.creates)
            progress.updated += len(single.updates)
        return late

    async def _rollback(self, ctx: TenantContext, job: dict[str, Any]) -> None:
        table_key = job["table"]
        journal = ctx.db[JOURNAL]
        async for entry in journal.find({"job_id": job["_id"]}).sort("batch", -1):
            try:
                table = await load_table(ctx, self.rows.types, table_key)
            except NotFound:
                break  # the table is gone, and its rows with it
            if job.get("table_id", table.id) != table.id:
                break  # another table of the same key: the job's rows went with its own
            # a write of the server's: versions up, system revisions (docs/history.md)
            await put_back(ctx, table, entry["inserted"], entry["originals"], self.rows.changes)
            await self.rows.clear_references(ctx, table, entry["inserted"])
        await journal.delete_many({"job_id": job["_id"]})
        await ctx.db[REJECTS].delete_many({"job_id": job["_id"]})

    async def _finish(
        self, ctx: TenantContext, job: dict[str, Any], state: str, **fields: Any
    ) -> None:
        now = utcnow()
        await ctx.db[JOBS].update_one(
            {"_id": job["_id"]},
            {"$set": {"state": state, "finished_at": now, "updated_at": now, **fields}},
        )


REPORT_COLUMNS = ("error_row", "error_reason")
TAKEN = "already used by another row"


def _report_text(cell: object) -> str | None:
    """A rejected cell as the CSV report writes it (booleans as the import reads them)."""
    if cell is None:
        return None
    if isinstance(cell, bool):
        return "true" if cell else "false"
    if isinstance(cell, float):
        return repr(cell)
    return neutralise(str(cell))


def _plain(cell: object) -> object:
    """A cell as stored in the error report: JSON's own types, anything else as text."""
    if cell is None or isinstance(cell, bool | int | float | str):
        return cell
    if isinstance(cell, dict):  # a cell the reader refused
        return None
    if isinstance(cell, datetime | date | time_of_day):
        return cell.isoformat()
    return str(cell)


async def _record_rejects(
    ctx: TenantContext,
    job: dict[str, Any],
    batch: list[tuple[int, Any]],
    errors: list[dict[str, Any]],
    progress: Progress,
) -> None:
    """skip_invalid: each row left out, with its cells as read and every reason."""
    if not errors:
        return
    reasons: dict[int, list[dict[str, Any]]] = {}
    for error in errors:
        reasons.setdefault(error["position"], []).append(
            {
                "field": error["field"],
                "column": progress.headers.get(error["field"]),
                "message": error["message"],
            }
        )
    cells = dict(batch)
    await ctx.db[REJECTS].insert_many(
        [
            {
                "job_id": job["_id"],
                "row": number,
                "cells": [_plain(c) for c in cells.get(number) or []],
                "errors": found,
            }
            for number, found in sorted(reasons.items())
        ]
    )


ENDED = ("completed", "failed", "cancelled")


async def bind_legacy_jobs(db: Database) -> list[str]:
    """`crm migrate` and `crm serve` at start (docs/operations.md "Schema changes"): import
    jobs made before issue #29 carry no `table_id`. Each is bound to the table of its key when
    that table is older than the job; otherwise the table it was made for was deleted (and its
    key perhaps used again), so the job is bound to no table and, if it had not ended,
    cancelled: it never writes into another table of the same key."""
    bound = cancelled = 0
    legacy = db[JOBS].find({"table_id": None}, {"table": 1, "state": 1})  # none or missing
    async for job in legacy:
        table = await db[TABLES].find_one({"key": job.get("table")}, {"_id": 1})
        if table is not None and table["_id"].generation_time <= job["_id"].generation_time:
            changes: dict[str, Any] = {"table_id": table["_id"]}
            bound += 1
        else:
            changes = {"table_id": ObjectId()}  # the id of no table
            if job.get("state") not in ENDED:
                now = utcnow()
                message = "The table was deleted; the import stopped"
                changes |= {"state": "cancelled", "message": message, "finished_at": now}
                cancelled += 1
        await db[JOBS].update_one({"_id": job["_id"], "table_id": None}, {"$set": changes})
    if not bound and not cancelled:
        return []
    return [f"import jobs bound to their tables: {bound}, cancelled: {cancelled}"]


def _of(table: Table) -> dict[str, Any]:
    """The jobs of this table, not of an earlier one with the same key (jobs made before
    issue #29 have no `table_id`)."""
    return {"table_id": {"$in": [table.id, None]}}


def _parse_row(
    ctx: TenantContext, table: Table, keys: list[str | None], cells: list[Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """A row body of API values from the mapped cells (a blank cell is not given), and the
    cells that could not be read, by column key (crm_core/files/cells.py)."""
    body: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for index, key in enumerate(keys):
        if key is None or index >= len(cells):
            continue
        column = table.column(key)
        if column is None:
            continue
        cell = cells[index]
        try:
            if isinstance(cell, dict):  # refused by the reader (crm_core/files/readers.py)
                raise BadCell(str(cell.get("error")))
            value = read_cell(column, table.column_type(column), cell, ctx.values)
        except BadCell as exc:
            errors[key] = str(exc)
            continue
        if value is not None:
            body[key] = value
    return body, errors


async def _plan(
    rows: RowService,
    ctx: TenantContext,
    table: Table,
    parsed: list[tuple[int, dict[str, Any], dict[str, str]]],
    upsert_on: str | None,
) -> Plan:
    """The upsert plan of read rows (checked as API values), with the cells that could not be
    read as errors of their rows (a row with any error is not written)."""
    items = [(number, body) for number, body, _ in parsed]
    plan = await plan_batch(rows, ctx, table, items, upsert_on)
    bad = {(number, key) for number, _, errors in parsed for key in errors}
    if bad:
        plan.errors = [e for e in plan.errors if (e["position"], e["field"]) not in bad]
        plan.errors += [
            {"position": number, "field": key, "message": message}
            for number, _, errors in parsed
            for key, message in errors.items()
        ]
        invalid = plan.invalid_positions
        kept = plan.without(invalid)
        plan.creates, plan.updates = kept.creates, kept.updates
    return plan


def _within(sample: list[tuple[int, list[Any]]], max_chars: int) -> list[tuple[int, list[Any]]]:
    """The first rows whose cells add up to at most `max_chars` characters."""
    kept, total = [], 0
    for number, cells in sample:
        total += sum(len(str(cell)) for cell in cells)
        if total > max_chars:
            break
        kept.append((number, cells))
    return kept


def _render(table: Table, values: dict[str, Any]) -> dict[str, Any]:
    result = {}
    for key, value in values.items():
        column = table.column(key)
        if column is not None:
            result[key] = table.column_type(column).render(column, value)
    return result


def _repeats_across_batches(plan: Plan, seen: dict[str, dict[int, int]]) -> None:
    """A unique value (the upsert key included) that an earlier row of the file holds."""
    invalid = plan.invalid_positions
    writes = [(p, d) for p, d in plan.creates] + [(u.position, u.set_values) for u in plan.updates]
    for position, values in sorted(writes, key=lambda item: item[0]):
        if position in invalid:
            continue
        for key, hashes in seen.items():
            if key not in values:
                continue
            digest = hash((type(values[key]).__name__, values[key]))
            earlier = hashes.get(digest)
            if earlier is not None and earlier != position:
                plan.errors.append(
                    {"position": position, "field": key, "message": f"repeats row {earlier}"}
                )
            else:
                hashes[digest] = position


def _singles(plan: Plan) -> list[Plan]:
    return [Plan(creates=[c]) for c in plan.creates] + [Plan(updates=[u]) for u in plan.updates]
