"""The real client and `Storage`, which hands out the system database and each tenant's.

Without `MONGODB_URL` the client is the embedded engine (crm_core/platform/storage/embedded.py:
the single-process trial engine). With it, a motor client with write concern `majority` and
journaling, whose command monitoring feeds the query recorder
(crm_core/platform/storage/recorder.py) and whose heartbeats open and close database outages.
A later move to PyMongo's async client changes this package only.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from beanie import Document as BeanieDocument
from beanie import init_beanie
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo import UpdateOne, monitoring
from pymongo.errors import ConnectionFailure, PyMongoError, WriteError

from crm_core.platform.errors import NotFound
from crm_core.platform.logs import Outages
from crm_core.platform.settings import Settings
from crm_core.platform.storage.embedded import (
    embedded_batches,
    embedded_client,
    freeze_start_up,
    is_embedded,
)
from crm_core.platform.storage.recorder import record_command
from crm_core.platform.storage.types import Client, Collection, Database, MongoDocument
from crm_core.platform.tracing import configure_tracing

log = logging.getLogger(__name__)

DATABASE = "database"  # the service's name in logs, /ready and the error details

TENANT_ID_RE = re.compile(r"^[0-9a-f]{24}$")


class _CommandListener(monitoring.CommandListener):
    """Each command the driver sends goes to the query recorder; each answer means the
    database is up (a bool check while all is well)."""

    def __init__(self, outages: Outages) -> None:
        self.outages = outages

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        record_command(event.command, event.database_name, event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self.outages.up(DATABASE)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


class _HeartbeatListener(monitoring.ServerHeartbeatListener):
    """The driver's monitor checks the server every `heartbeatFrequencyMS` (and at once while
    a request waits for a server): its verdicts open and close an outage even without traffic."""

    def __init__(self, outages: Outages) -> None:
        self.outages = outages

    def started(self, event: monitoring.ServerHeartbeatStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.ServerHeartbeatSucceededEvent) -> None:
        self.outages.up(DATABASE)

    def failed(self, event: monitoring.ServerHeartbeatFailedEvent) -> None:
        self.outages.down(DATABASE, event.reply)


class Storage:
    """Hands out the system database and each tenant's database (docs/storage.md,
    "Databases"); `client` is None until `start` and after `close`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client: Client | None = None
        self.outages = Outages()  # the database's, and the broker's as requests find it
        self._executor: ThreadPoolExecutor | None = None

    @property
    def embedded(self) -> bool:
        return self.settings.embedded_database

    async def start(self, document_models: list[type[BeanieDocument]]) -> None:
        if self.embedded:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedded-db")
            self.client = embedded_client(self._executor)
            log.warning(
                "MONGODB_URL is not set: using the embedded in-memory database "
                "(data is lost when the process stops, unless EMBEDDED_DATA_DIR keeps it)"
            )
        else:
            configure_tracing(self.settings)  # the driver's spans reach clients built after it
            self.client = AsyncIOMotorClient(
                self.settings.mongodb_url,
                tz_aware=True,
                w="majority",
                journal=True,
                # an unreachable server fails a request within these (docs/operations.md,
                # "Faults: the database"); the settings say why each is what it is
                serverSelectionTimeoutMS=self.settings.mongodb_server_selection_timeout_ms,
                connectTimeoutMS=self.settings.mongodb_connect_timeout_ms,
                socketTimeoutMS=self.settings.mongodb_socket_timeout_ms,
                appname="crm-backend",
                event_listeners=[_CommandListener(self.outages), _HeartbeatListener(self.outages)],
            )
            log.info("using MongoDB at %s", _redact(self.settings.mongodb_url or ""))
        # beanie creates the declared indexes idempotently (unique email, refresh token hash...)
        await init_beanie(database=self.system_db, document_models=document_models)
        if self.embedded:
            freeze_start_up()

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def _started(self) -> Client:
        if self.client is None:
            raise RuntimeError("the storage is not started (Storage.start)")
        return self.client

    @property
    def system_db(self) -> Database:
        return self._started()[self.settings.crm_db_prefix]

    def tenant_db_name(self, tenant_id: str) -> str:
        if not TENANT_ID_RE.match(tenant_id):
            raise NotFound("Tenant not found")
        return f"{self.settings.crm_db_prefix}_t_{tenant_id}"

    def tenant_db(self, tenant_id: str) -> Database:
        return self._started()[self.tenant_db_name(tenant_id)]

    async def drop_tenant_db(self, tenant_id: str) -> None:
        """Remove a tenant's database with everything in it (a company deleted)."""
        await self._started().drop_database(self.tenant_db_name(tenant_id))

    async def ping(self) -> bool:
        """The database answers a ping (within the server selection timeout). A failure is
        an outage (one WARNING per outage, crm_core/platform/logs.py `Outages`), not a traceback."""
        try:
            await self.system_db.command("ping")
        except Exception as exc:  # any driver failure means "not ready"
            if not is_database_unreachable(exc):
                log.exception("database ping failed")
            self.outages.down(DATABASE, exc)
            return False
        self.outages.up(DATABASE)
        return True

    @property
    def max_time_ms(self) -> int:
        """Server-side time limit passed on every list query (`maxTimeMS`)."""
        return self.settings.query_time_limit_ms


def _redact(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//***@", url)


def skip_missing_index_options(collection: Collection, key: str) -> dict[str, Any]:
    """Options of a unique index that ignores rows without the field (empty values never
    collide). A real server gets a partial index (`$exists: true`). mongomock applies partial
    filters to writes but not when the index is built over existing rows, so there the index is
    `sparse`, which skips exactly the same rows (nulls are never stored: null clears a cell)."""
    if is_embedded(collection):
        return {"sparse": True}
    return {"partialFilterExpression": {key: {"$exists": True}}}


async def update_each(
    collection: Collection,
    updates: list[tuple[dict[str, Any], dict[str, Any]]],
    ordered: bool = True,
) -> int:
    """Apply many single-document updates: one `bulk_write` on a real server, one update at a
    time on the embedded database, whose `bulk_write` does not take current PyMongo's
    `UpdateOne`. Either way a duplicate key raises (BulkWriteError or DuplicateKeyError).
    Answers how many of the updates matched a document."""
    if not updates:
        return 0
    if is_embedded(collection):
        matched = 0
        for query, update in updates:
            matched += (await collection.update_one(query, update)).matched_count
        return matched
    result = await collection.bulk_write([UpdateOne(q, u) for q, u in updates], ordered=ordered)
    return int(result.matched_count)


async def find_in_batches(
    collection: Collection,
    query: MongoDocument,
    sort: list[tuple[str, int]],
    batch_size: int,
) -> AsyncIterator[list[MongoDocument]]:
    """Every matching document in `sort` order, in lists of `batch_size`, holding one batch at
    a time (exports). A real server streams from the cursor (`allowDiskUse` for sorts on
    unindexed columns); the embedded engine walks its dataset a batch at a time
    (crm_core/platform/storage/embedded.py `embedded_batches`)."""
    if is_embedded(collection):
        async for chunk in embedded_batches(collection, query, sort, batch_size):
            yield chunk
        return
    batch: list[MongoDocument] = []
    cursor = collection.find(query, sort=sort, batch_size=batch_size, allow_disk_use=True)
    async for doc in cursor:
        batch.append(doc)
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def is_database_unreachable(exc: BaseException) -> bool:
    """The database could not be reached or stopped answering: no server to select, a
    connection refused, reset or timed out (pymongo's `ConnectionFailure` family:
    `ServerSelectionTimeoutError`, `AutoReconnect`, `NetworkTimeout`...). The request was not
    at fault; it may succeed when retried later. A query that ran past its `maxTimeMS`
    (`ExecutionTimeout`) is not one: the server answered."""
    return isinstance(exc, ConnectionFailure)


def is_database_error(exc: BaseException) -> bool:
    """Did the database (driver, connection, server) fail, as opposed to the request? Write
    errors such as duplicate keys are the request's and not counted."""
    return isinstance(exc, PyMongoError) and not isinstance(exc, WriteError)
