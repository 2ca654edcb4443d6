"""Attachments (issue #23, docs/api.md "Files", docs/storage.md "Files"): uploaded files and the
`attachment` column type whose cells hold them.

An upload is streamed to the blob store (GridFS on MongoDB, `FILES_DIR` on the embedded engine:
crm_core/platform/storage/blobs.py) while its size, SHA-256 and first bytes are taken; its
content type is sniffed from those bytes (`filetype`), never taken from the client. Its record
is a document of the tenant's `_attachments`: `{_id, name, size, content_type, sha256,
state: uploading|stored, attached, created_by, created_at}`, so a file belongs to one company.

Who may download: whoever may read a table with a row holding the file, or, while no row (nor
trash item) holds it, the uploader. Anyone else gets 404, as for a file that does not exist.
Files follow their rows: a deleted row's files stay while it is in the trash (a restore brings
them back), a purge removes those no other row or trash item holds, and files never attached
are removed by the sweeper `FILE_ORPHAN_GRACE_SECONDS` after their upload; attached files are
checked again every grace period and removed once nothing holds them (a trash item expired by
its TTL, a table or column deleted).

A file is never removed under a row write that is attaching it (docs/operations.md "Faults: a
file removed while being attached"): the write's existence check marks the file (`attached`,
`checked_at` now) in the same conditional update that finds it stored, and removal claims the
file (`state: removing`) only if no write has marked it for `WRITE_LEASE_SECONDS` (nor, for the
sweeper, for the grace period). A claimed file fails the check of any later write; a purge
that finds a file marked within the lease leaves it to the sweeper, which takes it once the
lease has passed and nothing holds it.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import time
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

import filetype
from bson import ObjectId

from crm_core.accounts.context import TenantContext
from crm_core.accounts.grants import check_token_scope
from crm_core.platform.clock import utcnow
from crm_core.platform.errors import NotFound, PayloadTooLarge, ValidationFailed
from crm_core.platform.ids import parse_object_id
from crm_core.platform.registry import Registry
from crm_core.platform.settings import Settings
from crm_core.platform.storage import Database, Storage, system_collection
from crm_core.platform.storage.blobs import BlobStore
from crm_core.platform.values import ValueContext
from crm_core.tables.access import Level, access_level, visible_filter
from crm_core.tables.columns import (
    BLANK,
    SET,
    Column,
    ColumnType,
    ColumnValueError,
    References,
)
from crm_core.tables.definitions import TABLES, Table
from crm_core.tables.trash import TRASH
from models.accounts import Tenant

log = logging.getLogger(__name__)

FILES = "_attachments"
SNIFF_BYTES = 8192  # what the type is read from (filetype needs 262)
NAME_MAX = 200
MAX_FILES_PER_CELL = 100
SWEEP_BATCH = 500
SWEEP_START_DELAY = 60.0
WRITE_LEASE_SECONDS = 60.0  # a write's check to its insert takes far less (a bound, not a wait)
FALLBACK_TYPE = "application/octet-stream"
ID_IN_BRACKETS = re.compile(r"\[([0-9a-fA-F]{24})\]")
ID_TOKEN = re.compile(r"[\s,;]+")


@dataclass(frozen=True)
class StoredFile:
    id: ObjectId
    name: str
    size: int
    content_type: str
    sha256: str
    created_at: datetime

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> StoredFile:
        return cls(
            doc["_id"],
            doc["name"],
            int(doc["size"]),
            doc["content_type"],
            doc["sha256"],
            doc["created_at"],
        )


def safe_name(raw: str) -> str:
    """A file name fit to store and to send back: the last path part, without control or
    format characters, at most `NAME_MAX` characters (the extension kept)."""
    name = re.split(r"[/\\]", raw or "")[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = " ".join(name.split()).strip(" .")
    if len(name) > NAME_MAX:
        _stem, dot, ext = name.rpartition(".")
        ext = ext if dot and len(ext) <= 16 else ""
        name = name[: NAME_MAX - len(ext) - 1] + "." + ext if ext else name[:NAME_MAX]
    return name or "file"


def sniff(head: bytes) -> str:
    """The content type read from a file's first bytes: a known signature, else UTF-8 text
    without NULs as `text/plain`, else `application/octet-stream`."""
    kind = filetype.guess_mime(head) if head else None
    if kind:
        return str(kind)
    if head and b"\x00" not in head:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as exc:
            if exc.start < len(head) - 4:  # a character cut at the sniff window's end is fine
                return FALLBACK_TYPE
        return "text/plain"
    return FALLBACK_TYPE


def holds_files(column_type: ColumnType) -> bool:
    return column_type.holds_files


def file_columns(table: Table) -> list[Column]:
    return [c for c in table.columns if holds_files(table.column_type(c))]


class FileService:
    """`/api/files`: upload and download; the column type's existence check; the trash's
    purge hook (`release`) and the orphan sweeper (`sweep_orphans`)."""

    def __init__(self, settings: Settings, blobs: BlobStore, types: Registry[ColumnType]) -> None:
        self.settings = settings
        self.blobs = blobs
        self.types = types
        # the first sweep waits a minute: a process that starts has recovery work to do first
        self._next_sweep = time.monotonic() + SWEEP_START_DELAY
        self.clock: Callable[[], datetime] = utcnow
        # tests hold a row write here, between its check of the files and its insert
        self.after_check: Callable[[list[ObjectId]], Awaitable[None]] | None = None

    # ---- upload and download ------------------------------------------------------------------

    @staticmethod
    def check_upload(ctx: TenantContext) -> None:
        """Anyone signed in may upload; an API token needs a scope that writes tables."""
        check_token_scope(ctx, "upload files", level=Level.WRITE)

    async def upload(
        self, ctx: TenantContext, chunks: AsyncIterator[bytes], name: str
    ) -> StoredFile:
        """Store a file streamed in `chunks`; 413 above `FILE_MAX_BYTES` (nothing kept), 400
        naming `file` for an empty one."""
        self.check_upload(ctx)
        limit = self.settings.file_max_bytes
        file_id = ObjectId()
        doc: dict[str, Any] = {
            "_id": file_id,
            "name": safe_name(name),
            "state": "uploading",
            "attached": False,
            "created_by": ctx.user_id,
            "created_at": utcnow(),
        }
        # the record first: a process that dies mid-upload leaves one the sweeper finds
        await ctx.db[FILES].insert_one(doc)
        writer = await self.blobs.writer(ctx.db, file_id, doc["name"])
        digest, head, size = hashlib.sha256(), bytearray(), 0
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(
                        f"The file is larger than {limit} bytes",
                        [{"field": "file", "message": f"at most {limit} bytes (FILE_MAX_BYTES)"}],
                    )
                if len(head) < SNIFF_BYTES:
                    head += chunk[: SNIFF_BYTES - len(head)]
                digest.update(chunk)
                await writer.write(chunk)
            if size == 0:
                raise ValidationFailed.field("file", "the file is empty")
            stored = {
                "state": "stored",
                "size": size,
                "content_type": sniff(bytes(head)),
                "sha256": digest.hexdigest(),
            }
            await writer.close()
        except BaseException:
            await writer.abort()
            await ctx.db[FILES].delete_one({"_id": file_id})
            raise
        await ctx.db[FILES].update_one({"_id": file_id}, {"$set": stored})
        return StoredFile.from_doc({**doc, **stored})

    async def open(
        self, ctx: TenantContext, file_id: ObjectId
    ) -> tuple[StoredFile, AsyncIterator[bytes]]:
        """The file and its bytes, for a caller who may see it; else 404 (never 403: whether
        the file exists is not told)."""
        doc = await ctx.db[FILES].find_one({"_id": file_id})
        if doc is None or doc.get("state") != "stored":
            raise NotFound("File not found")
        if not await self._readable_row_holds(ctx, file_id):
            mine = doc.get("created_by") == ctx.user_id
            if not mine or await self._held_anywhere(ctx.db, file_id):
                raise NotFound("File not found")
        stream = self.blobs.read(ctx.db, file_id)
        try:  # the first chunk before any byte is sent: a missing blob is a clean answer
            first = await anext(stream, b"")
        except FileNotFoundError:
            log.error("file %s has a record but no bytes", file_id)
            raise NotFound("File not found") from None
        return StoredFile.from_doc(doc), _chain(first, stream)

    # ---- who holds a file ---------------------------------------------------------------------

    def _type_names(self) -> list[str]:
        return sorted(t.name for t in self.types if holds_files(t))

    async def _file_tables(self, db: Database, query: dict[str, Any]) -> list[Table]:
        names = self._type_names()
        where = {**query, "columns.type": {"$in": names}}
        return [Table(doc, self.types) async for doc in db[TABLES].find(where)]

    @staticmethod
    def _holding(table: Table, file_ids: list[ObjectId]) -> dict[str, Any]:
        return {"$or": [{c.key: {"$in": file_ids}} for c in file_columns(table)]}

    async def _readable_row_holds(self, ctx: TenantContext, file_id: ObjectId) -> bool:
        for table in await self._file_tables(ctx.db, await visible_filter(ctx)):
            if await access_level(ctx, table) < Level.READ:
                continue
            found = await table.collection(ctx).find_one(
                self._holding(table, [file_id]), {"_id": 1}
            )
            if found is not None:
                return True
        return False

    async def _held_anywhere(self, db: Database, file_id: ObjectId) -> bool:
        """Does any row of any table, any row in the trash, or any row of a table in the trash
        (its rows stay in its own collection) hold the file?"""
        tables = await self._file_tables(db, {})
        names = self._type_names()
        async for item in db[TRASH].find({"kind": "table"}, {"doc": 1, "collection": 1}):
            definition = item.get("doc") or {}
            if any(c.get("type") in names for c in definition.get("columns") or ()):
                tables.append(Table({**definition, "collection": item["collection"]}, self.types))
        for table in tables:
            holder = await db[table.collection_name].find_one(
                self._holding(table, [file_id]), {"_id": 1}
            )
            if holder is not None:
                return True
        return await db[TRASH].find_one({"files": file_id}, {"_id": 1}) is not None

    # ---- the column type's questions ----------------------------------------------------------

    async def existing(self, ctx: TenantContext, ids: Iterable[ObjectId]) -> set[ObjectId]:
        """Those of `ids` that are stored files of the caller's company, each marked as being
        attached now (the module docstring: no removal claims it within the lease)."""
        wanted = list(set(ids))
        if not wanted:
            return set()
        stored = {"_id": {"$in": wanted}, "state": "stored"}
        mark = {"$set": {"attached": True, "checked_at": self.clock()}}
        await ctx.db[FILES].update_many(stored, mark)
        found = {doc["_id"] async for doc in ctx.db[FILES].find(stored, {"_id": 1})}
        if self.after_check is not None:
            await self.after_check(sorted(found))
        return found

    async def names(self, ctx: TenantContext, ids: Iterable[ObjectId]) -> dict[ObjectId, str]:
        wanted = list(set(ids))
        if not wanted:
            return {}
        cursor = ctx.db[FILES].find({"_id": {"$in": wanted}}, {"name": 1})
        return {doc["_id"]: doc["name"] async for doc in cursor}

    # ---- removal ------------------------------------------------------------------------------

    async def release(self, ctx: TenantContext, file_ids: Iterable[ObjectId]) -> int:
        """Trash purge: remove those of the files no row or trash item holds any longer."""
        removed = 0
        now = self.clock()
        for file_id in set(file_ids):
            if await self._held_anywhere(ctx.db, file_id):
                continue
            if await self._claimed(ctx.db, file_id, now, {}):
                await self._remove(ctx.db, file_id)
                removed += 1
            else:  # a write marked it within the lease: the sweeper decides once it has passed
                grace = timedelta(seconds=self.settings.file_orphan_grace_seconds)
                due = now - grace + timedelta(seconds=WRITE_LEASE_SECONDS)
                await ctx.db[FILES].update_one(
                    {"_id": file_id, "checked_at": {"$gt": due}}, {"$set": {"checked_at": due}}
                )
        return removed

    async def _claimed(
        self, db: Database, file_id: ObjectId, now: datetime, query: dict[str, Any]
    ) -> bool:
        """Claim a file nothing held a moment ago for removal (`state: removing`), unless a
        write marked it within the lease (`query`: the sweeper's own condition as well); True
        once claimed and still held by nothing."""
        lease = now - timedelta(seconds=WRITE_LEASE_SECONDS)
        unmarked = {"$or": [{"checked_at": {"$exists": False}}, {"checked_at": {"$lt": lease}}]}
        claim = await db[FILES].update_one(
            {**query, "_id": file_id, **unmarked}, {"$set": {"state": "removing"}}
        )
        if claim.modified_count != 1:
            return False
        if await self._held_anywhere(db, file_id):  # a row written before the lease began
            await db[FILES].update_one(
                {"_id": file_id, "state": "removing"},
                {"$set": {"state": "stored", "attached": True, "checked_at": now}},
            )
            return False
        return True

    async def _remove(self, db: Database, file_id: ObjectId) -> None:
        await self.blobs.delete(db, file_id)
        await db[FILES].delete_one({"_id": file_id})

    async def sweep_orphans(self, db: Database, now: datetime | None = None) -> int:
        """One tenant's files that nothing holds, removed; returns how many went.

        - Files never attached (uploading or stored) older than the grace period: one a row or
          trash item holds is marked `attached` (with `checked_at`); the others go.
        - Attached files last checked more than a grace period ago are checked again: one that
          no row or trash item holds any longer goes (its rows' trash items expired, its table
          or column was deleted, or its rows no longer name it)."""
        now = now or utcnow()
        cutoff = now - timedelta(seconds=self.settings.file_orphan_grace_seconds)
        removed = 0
        for query in (
            {"attached": False, "created_at": {"$lt": cutoff}},
            {"attached": True, "checked_at": {"$lt": cutoff}},
        ):
            candidates = db[FILES].find(query, {"_id": 1}).limit(SWEEP_BATCH)
            for doc in await candidates.to_list(length=SWEEP_BATCH):
                if await self._held_anywhere(db, doc["_id"]):
                    await db[FILES].update_one(
                        {"_id": doc["_id"]}, {"$set": {"attached": True, "checked_at": now}}
                    )
                elif await self._claimed(db, doc["_id"], now, query):
                    await self._remove(db, doc["_id"])
                    removed += 1
        return removed

    async def sweep(self, storage: Storage, every_seconds: float = 300.0, now: bool = False) -> int:
        """The sweeper's round (tasks/broker.py): every company's orphans, at most once per
        `every_seconds` and not in the first minute of the process (`now`: at once)."""
        if time.monotonic() < self._next_sweep and not now:
            return 0
        self._next_sweep = time.monotonic() + every_seconds
        removed = 0
        async for tenant in system_collection(Tenant).find({}, {"_id": 1}):
            removed += await self.sweep_orphans(storage.tenant_db(str(tenant["_id"])))
        if removed:
            log.info("removed %d unattached files", removed)
        return removed


async def _chain(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for chunk in rest:
        yield chunk


# ---- the column type ------------------------------------------------------------------------


class AttachmentType(ColumnType):
    """A list of files uploaded with `POST /api/files` (ids of this company's files); stored
    as a list of ObjectIds, rendered as id strings. Imports take ids (and the `name [id]`
    form exports write); filters: blank, not_blank, has_any_of, has_all_of, has_none_of (ids)."""

    name = "attachment"
    capabilities = frozenset({BLANK, SET})  # blank, not_blank; has_any_of/all_of/none_of by id
    sortable = False  # MongoDB would order the lists by their least element
    unique_values = False
    value_annotation = list[str]
    value_schema: ClassVar[dict[str, Any]] = {
        "type": "array",
        "items": {"type": "string", "pattern": "^[0-9a-fA-F]{24}$"},
        "minItems": 1,
        "maxItems": MAX_FILES_PER_CELL,
        "description": "Ids of files uploaded with POST /api/files; null removes every file",
    }
    references = True
    holds_files = True

    def __init__(self, files: FileService) -> None:
        self.files = files

    def coerce(
        self, column: Column, value: object, vctx: ValueContext, lenient: bool = False
    ) -> list[ObjectId]:
        if lenient and isinstance(value, str):
            value = self._ids_in_text(value)
        if not isinstance(value, list):
            raise ColumnValueError("expected an array of file ids")
        if not value:
            raise ColumnValueError("give at least one file id (null removes every file)")
        if len(value) > MAX_FILES_PER_CELL:
            raise ColumnValueError(f"holds at most {MAX_FILES_PER_CELL} files")
        ids: list[ObjectId] = []
        for index, item in enumerate(value):
            parsed = parse_object_id(item)
            if parsed is None:
                raise ColumnValueError(f"item {index} is not a file id")
            if parsed not in ids:
                ids.append(parsed)
        return ids

    @staticmethod
    def _ids_in_text(text: str) -> list[str]:
        """A spreadsheet cell: `name [id]; name [id]` (what exports write) or bare ids."""
        bracketed = ID_IN_BRACKETS.findall(text)
        if bracketed:
            return list(bracketed)
        return [token for token in ID_TOKEN.split(text.strip()) if token]

    def render(self, column: Column, stored: object) -> object:
        if isinstance(stored, list):
            return [str(item) for item in stored]
        return stored

    def cell_value(self, column: Column, stored: object) -> object:
        if isinstance(stored, list):
            return "; ".join(f"[{item}]" for item in stored)
        return stored

    def parse_filter_value(self, column: Column, value: object, vctx: ValueContext) -> object:
        """One file id of a has_any_of (has_all_of, has_none_of) list."""
        parsed = parse_object_id(value)
        if parsed is None:
            raise ColumnValueError("is not a file id")
        return parsed

    async def missing_references(
        self, refs: References, column: Column, values: list[Any]
    ) -> set[Any]:
        # the row service's references carry the caller's context (crm_core/tables/
        # references.py `VisibleReferences.ctx`); files are looked up in that company only
        ctx = getattr(refs, "ctx", None)
        if not isinstance(ctx, TenantContext):
            raise TypeError("attachment references need the caller's context")
        return set(values) - await self.files.existing(ctx, values)

    def missing_reference_message(self, column: Column) -> str:
        return "no such file in this company (upload it with POST /api/files)"

    def plain_index(self, column: Column) -> bool:
        return True  # who may download a file is decided by the rows holding it

    def needs_conversion(self, old: Column, new: Column) -> bool:
        return old.type != new.type

    def random_value(self, column: Column, rng: random.Random) -> None:
        return None
