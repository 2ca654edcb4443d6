"""The one place that builds MongoDB clients; nothing else in the project imports motor.

Without `MONGODB_URL` the client is an in-process mongomock-motor database (embedded mode:
data lives in memory and dies with the process). With it, a motor client with write concern
`majority` and journaling. A later move to PyMongo's async client changes this module only.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

from beanie import init_beanie

# the driver names the rest of the project uses: every other module imports them from here
# (ruff's banned-api rule keeps motor and pymongo out of every other module)
from pymongo import ASCENDING as ASCENDING
from pymongo import DESCENDING as DESCENDING
from pymongo import IndexModel as IndexModel
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError as BulkWriteError
from pymongo.errors import DuplicateKeyError as DuplicateKeyError
from pymongo.errors import OperationFailure as OperationFailure

from crm_core.errors import NotFound
from crm_core.settings import Settings

log = logging.getLogger(__name__)

TENANT_ID_RE = re.compile(r"^[0-9a-f]{24}$")

Database = Any  # motor's AsyncIOMotorDatabase or mongomock-motor's stand-in
Collection = Any


class Storage:
    """Hands out the system database and each tenant's database (SPEC §1)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client: Any = None

    @property
    def embedded(self) -> bool:
        return self.settings.embedded_database

    async def start(self, document_models: list[type]) -> None:
        if self.embedded:
            from mongomock_motor import AsyncMongoMockClient

            self.client = AsyncMongoMockClient(tz_aware=True)
            log.warning(
                "MONGODB_URL is not set: using the embedded in-memory database "
                "(data is lost when the process stops)"
            )
        else:
            from motor.motor_asyncio import AsyncIOMotorClient

            self.client = AsyncIOMotorClient(
                self.settings.mongodb_url,
                tz_aware=True,
                w="majority",
                journal=True,
                serverSelectionTimeoutMS=5000,
                appname="crm-backend",
            )
            log.info("using MongoDB at %s", _redact(self.settings.mongodb_url or ""))
        # beanie creates the declared indexes idempotently (unique email, refresh token hash...)
        await init_beanie(database=self.system_db, document_models=document_models)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    @property
    def system_db(self) -> Database:
        return self.client[self.settings.crm_db_prefix]

    def tenant_db_name(self, tenant_id: str) -> str:
        if not TENANT_ID_RE.match(tenant_id):
            raise NotFound("Tenant not found")
        return f"{self.settings.crm_db_prefix}_t_{tenant_id}"

    def tenant_db(self, tenant_id: str) -> Database:
        return self.client[self.tenant_db_name(tenant_id)]

    async def ping(self) -> bool:
        try:
            await self.system_db.command("ping")
        except Exception:  # any driver failure means "not ready"
            log.exception("database ping failed")
            return False
        return True

    @property
    def max_time_ms(self) -> int:
        """Server-side time limit passed on every list query (`maxTimeMS`)."""
        return self.settings.query_time_limit_ms


def _redact(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//***@", url)


def _is_embedded(collection: Collection) -> bool:
    return type(getattr(collection, "delegate", None)).__module__.startswith("mongomock")


def skip_missing_index_options(collection: Collection, key: str) -> dict[str, Any]:
    """Options of a unique index that ignores rows without the field (empty values never
    collide). A real server gets a partial index (`$exists: true`). mongomock applies partial
    filters to writes but not when the index is built over existing rows, so there the index is
    `sparse`, which skips exactly the same rows (nulls are never stored: null clears a cell)."""
    if _is_embedded(collection):
        return {"sparse": True}
    return {"partialFilterExpression": {key: {"$exists": True}}}


async def update_each(
    collection: Collection,
    updates: list[tuple[dict[str, Any], dict[str, Any]]],
    ordered: bool = True,
) -> None:
    """Apply many single-document updates: one `bulk_write` on a real server, one update at a
    time on the embedded database, whose `bulk_write` does not take current PyMongo's
    `UpdateOne`. Either way a duplicate key raises (BulkWriteError or DuplicateKeyError)."""
    if not updates:
        return
    if _is_embedded(collection):
        for query, update in updates:
            await collection.update_one(query, update)
        return
    await collection.bulk_write([UpdateOne(q, u) for q, u in updates], ordered=ordered)


async def find_in_batches(
    collection: Collection,
    query: dict[str, Any],
    sort: list[tuple[str, int]],
    batch_size: int,
    pipeline: list[dict[str, Any]] | None = None,
) -> AsyncIterator[list[dict[str, Any]]]:
    """Every matching document in `sort` order (or the aggregation `pipeline`'s), in lists of
    `batch_size`, holding one batch at a time (exports).

    A real server streams from the cursor (`allowDiskUse` for sorts on unindexed columns). The
    embedded database's cursor copies every matching document before it yields the first, so a
    find walks mongomock's own dataset generator instead, which sorts references and copies one
    document at a time. An aggregation on the embedded database (the manual row order) is
    computed whole by mongomock."""
    batch: list[dict[str, Any]] = []
    if pipeline is None and _is_embedded(collection):
        from mongomock.helpers import make_datetime_timezone_aware_in_document

        # mongomock-motor hands unknown attributes to the mongomock collection
        tz_aware = collection.codec_options.tz_aware
        for doc in collection._get_dataset(query, sort or None, None, dict):
            if tz_aware:
                doc = make_datetime_timezone_aware_in_document(doc)  # type: ignore[no-untyped-call]
            batch.append(doc)
            if len(batch) >= batch_size:
                yield batch
                batch = []
                await asyncio.sleep(0)  # let other requests run between batches
    else:
        if pipeline is None:
            cursor = collection.find(query, sort=sort, batch_size=batch_size, allow_disk_use=True)
        else:
            cursor = collection.aggregate(pipeline, allowDiskUse=True, batchSize=batch_size)
        async for doc in cursor:
            batch.append(doc)
            if len(batch) >= batch_size:
                yield batch
                batch = []
    if batch:
        yield batch
