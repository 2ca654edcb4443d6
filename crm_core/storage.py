"""The one place that builds MongoDB clients; nothing else in the project imports motor.

Without `MONGODB_URL` the client is an in-process mongomock-motor database (embedded mode:
data lives in memory and dies with the process). With it, a motor client with write concern
`majority` and journaling. A later move to PyMongo's async client changes this module only.
"""

from __future__ import annotations

import logging
import re
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
