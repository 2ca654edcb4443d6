"""A second API process on the first one's database, for what must cross processes through
the database (cache invalidation by the tenant's version counters, crm_core/accounts/cache.py).

On a real server (`CRM_TEST_MONGODB_URL`) two apps share the database by their settings.
The embedded database lives in its app, so the second app is pointed at the first's client;
beanie's documents are bound per Python process, to the first app's database again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp.test_utils import TestClient
from beanie import init_beanie

from handlers.app import create_app
from handlers.routing import SERVICES
from models.accounts import SYSTEM_DOCUMENTS
from models.admin import ADMIN_DOCUMENTS


@asynccontextmanager
async def second_process(aiohttp_client: Any, first: TestClient) -> AsyncIterator[TestClient]:
    storage = first.app[SERVICES].storage
    second = await aiohttp_client(create_app(storage.settings))
    own = second.app[SERVICES].storage
    if not storage.embedded:
        yield second
        return
    kept = own.client
    own.client = storage.client
    await init_beanie(
        database=storage.system_db, document_models=SYSTEM_DOCUMENTS + ADMIN_DOCUMENTS
    )
    try:
        yield second
    finally:
        own.client = kept  # each app closes its own client
