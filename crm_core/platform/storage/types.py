"""The typed handles of the database: motor's own generic classes with documents as dicts.

motor 3.x ships type stubs (`py.typed`), so mypy checks every call made through these handles
(method names, argument types, what a read returns). The embedded engine's classes stand in
for motor's at run time (crm_core/platform/storage/embedded.py) and are handed out under these
types.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from beanie import Document
from motor.motor_asyncio import (
    AsyncIOMotorClient,
    AsyncIOMotorCollection,
    AsyncIOMotorCursor,
    AsyncIOMotorDatabase,
)

# one stored document, as the driver reads and writes it (a BSON document decoded to a dict)
MongoDocument: TypeAlias = dict[str, Any]
Client: TypeAlias = AsyncIOMotorClient[MongoDocument]
Database: TypeAlias = AsyncIOMotorDatabase[MongoDocument]
Collection: TypeAlias = AsyncIOMotorCollection[MongoDocument]
Cursor: TypeAlias = AsyncIOMotorCursor[MongoDocument]


def system_collection(document: type[Document]) -> Collection:
    """The system-database collection a beanie document is stored in, typed, for the queries
    beanie's own API does not express (atomic updates, projections, aggregations). The one
    place that reaches beanie's handle (`get_motor_collection`, renamed in beanie 2)."""
    return document.get_motor_collection()
