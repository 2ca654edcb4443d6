"""File bytes (attachments, docs/storage.md "Files"): written and read as streams, never whole.

`BlobStore` is what the files domain sees. Two implementations: `GridFSBlobs` keeps the bytes in
GridFS beside the tenant's data on MongoDB (the bucket `_blobs`: `_blobs.files` and
`_blobs.chunks` of the tenant's database); `DirectoryBlobs` keeps them in files under
`FILES_DIR` on the embedded engine (one folder per tenant database; unset: a temporary
directory of the process, gone with it like the engine's data). `blob_store(storage)` picks the
one that fits the storage. Every GridFS import of the project stays in this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Protocol

from bson import ObjectId
from gridfs.errors import NoFile
from motor.motor_asyncio import AsyncIOMotorGridFSBucket, AsyncIOMotorGridIn

from crm_core.platform.storage.client import Storage
from crm_core.platform.storage.types import Database

BUCKET = "_blobs"
READ_BYTES = 256 * 1024


class BlobWriter(Protocol):
    """One blob being written. `write` in order, then `close` to keep it or `abort` to leave
    nothing behind (the partial bytes are removed)."""

    async def write(self, chunk: bytes) -> None: ...

    async def close(self) -> None: ...

    async def abort(self) -> None: ...


class BlobStore(Protocol):
    """Blobs by id, per tenant database (`db`: the tenant's, so one company never reaches
    another's bytes)."""

    async def writer(self, db: Database, blob_id: ObjectId, name: str) -> BlobWriter:
        """A new blob under `blob_id` (which must be new)."""
        ...

    def read(self, db: Database, blob_id: ObjectId) -> AsyncIterator[bytes]:
        """The blob's bytes in chunks of at most `READ_BYTES`; `FileNotFoundError` when there
        is none."""
        ...

    async def delete(self, db: Database, blob_id: ObjectId) -> None:
        """Remove the blob; a blob already gone is no error."""
        ...


# ---- GridFS (MongoDB) -----------------------------------------------------------------------


class _GridWriter:
    def __init__(self, stream: AsyncIOMotorGridIn) -> None:
        self.stream = stream

    async def write(self, chunk: bytes) -> None:
        await self.stream.write(chunk)

    async def close(self) -> None:
        await self.stream.close()

    async def abort(self) -> None:
        await self.stream.abort()  # removes the chunks written so far


class GridFSBlobs:
    """GridFS on the tenant's database; chunks of 255 KiB (GridFS's default)."""

    @staticmethod
    def _bucket(db: Database) -> AsyncIOMotorGridFSBucket:
        return AsyncIOMotorGridFSBucket(db, bucket_name=BUCKET)

    async def writer(self, db: Database, blob_id: ObjectId, name: str) -> BlobWriter:
        stream = self._bucket(db).open_upload_stream_with_id(blob_id, name)
        return _GridWriter(stream)

    async def read(self, db: Database, blob_id: ObjectId) -> AsyncIterator[bytes]:
        try:
            stream = await self._bucket(db).open_download_stream(blob_id)
        except NoFile:
            raise FileNotFoundError(str(blob_id)) from None
        while chunk := await stream.readchunk():
            yield chunk

    async def delete(self, db: Database, blob_id: ObjectId) -> None:
        with contextlib.suppress(NoFile):
            await self._bucket(db).delete(blob_id)


# ---- a directory (the embedded engine) ------------------------------------------------------


class _FileWriter:
    def __init__(self, part: Path, final: Path, handle: IO[bytes]) -> None:
        self.part, self.final, self.handle = part, final, handle

    async def write(self, chunk: bytes) -> None:
        await asyncio.to_thread(self.handle.write, chunk)

    async def close(self) -> None:
        def finish() -> None:
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()
            os.replace(self.part, self.final)  # whole or absent: never a half file by its name

        await asyncio.to_thread(finish)

    async def abort(self) -> None:
        def drop() -> None:
            self.handle.close()
            self.part.unlink(missing_ok=True)

        await asyncio.to_thread(drop)


class DirectoryBlobs:
    """`<root>/<tenant database>/<blob id>`; a blob being written is `<blob id>.part`.
    Without a root, a temporary directory made at the first write."""

    def __init__(self, root: Path | None) -> None:
        self._root = root

    @property
    def root(self) -> Path:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="crm-files-"))
        return self._root

    def _path(self, db: Database, blob_id: ObjectId) -> Path:
        return self.root / db.name / str(blob_id)

    async def writer(self, db: Database, blob_id: ObjectId, name: str) -> BlobWriter:
        final = self._path(db, blob_id)

        def start() -> _FileWriter:
            final.parent.mkdir(parents=True, exist_ok=True)
            part = final.with_suffix(".part")
            return _FileWriter(part, final, part.open("xb"))

        return await asyncio.to_thread(start)

    async def read(self, db: Database, blob_id: ObjectId) -> AsyncIterator[bytes]:
        path = self._path(db, blob_id)
        handle = await asyncio.to_thread(path.open, "rb")
        try:
            while chunk := await asyncio.to_thread(handle.read, READ_BYTES):
                yield chunk
        finally:
            handle.close()

    async def delete(self, db: Database, blob_id: ObjectId) -> None:
        await asyncio.to_thread(self._path(db, blob_id).unlink, missing_ok=True)

    def drop_all(self) -> None:
        """Remove the directory with every blob (tests; a temporary directory at the end)."""
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)


def blob_store(storage: Storage) -> BlobStore:
    """GridFS on MongoDB; on the embedded engine, `FILES_DIR` or a temporary directory."""
    if not storage.embedded:
        return GridFSBlobs()
    folder = storage.settings.files_dir
    return DirectoryBlobs(Path(folder) if folder else None)
