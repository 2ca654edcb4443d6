"""The app factory: `create_app(settings)` wires storage, services, middlewares and routes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from crm_core.auth import AuthService
from crm_core.builtin_tables import migrate_all
from crm_core.columns import default_column_types
from crm_core.filters import FilterBuilder, default_filter_operators
from crm_core.services import Services
from crm_core.settings import Settings
from crm_core.storage import Storage
from crm_core.tables.meta import MetaService
from crm_core.tables.rows import RowService
from crm_core.validators import default_validators
from handlers import (
    aliases,
    auth,
    data,
    docs,
    entities,
    roles,
    shares,
    sms,
    system,
    tables,
    users,
)
from handlers.middlewares import access_log_middleware, error_middleware
from handlers.routing import SERVICES, RouteSpec, RouteTable, build_view
from models.accounts import SYSTEM_DOCUMENTS
from tasks.broker import BrokerQueue, receiving, start_broker, stop_broker

log = logging.getLogger(__name__)

ROUTE_TABLES: list[RouteTable] = [
    system.routes,
    auth.routes,
    tables.routes,
    data.routes,
    entities.routes,
    roles.routes,
    users.routes,
    shares.routes,
    aliases.routes,
    sms.routes,
    docs.routes,
]


def all_routes() -> list[RouteSpec]:
    return [spec for table in ROUTE_TABLES for spec in table.routes]


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[
            # outermost first: the access log sees the final status of every answer,
            # including the errors that error_middleware renders
            access_log_middleware,
            error_middleware,
        ],
    )
    storage = Storage(settings)
    column_types = default_column_types()
    validators = default_validators()
    app[SERVICES] = Services(
        settings=settings,
        storage=storage,
        auth=AuthService(settings, storage),
        column_types=column_types,
        validators=validators,
        meta=MetaService(column_types, validators),
        rows=RowService(column_types, FilterBuilder(default_filter_operators()), validators),
    )
    app.cleanup_ctx.append(_storage_ctx)
    app.cleanup_ctx.append(_broker_ctx)

    specs = all_routes()
    for spec in specs:
        app.router.add_route(spec.method, spec.path, build_view(spec))
    docs.add_static(app)
    app[docs.OPENAPI] = docs.OpenApiDocument(specs)  # built on first request
    return app


async def _storage_ctx(app: web.Application) -> AsyncIterator[None]:
    storage = app[SERVICES].storage
    await storage.start(SYSTEM_DOCUMENTS)
    changed = await migrate_all(storage)  # built-in tables for tenants created before them
    if changed:
        log.info("migrated %d tenants", changed)
    yield
    storage.close()
    await app[SERVICES].auth.throttle.close()  # trust: the login limits' Redis client
    log.info("storage closed")


async def _broker_ctx(app: web.Application) -> AsyncIterator[None]:
    """The task broker. Embedded database (one process) or no Redis: the tasks run in this
    process. Real MongoDB with Redis: this process only queues; `crm worker` sends."""
    services = app[SERVICES]
    settings = services.settings
    broker = await start_broker(settings, services.storage)
    services.sms_queue = BrokerQueue(broker)
    receive = bool(settings.redis_url) and settings.api_receives_tasks
    if receive:
        log.warning("SMS tasks queued in Redis run in this process (embedded database)")
    try:
        if receive:
            async with receiving(broker, settings):
                yield
        else:
            if not settings.redis_url:
                log.warning("REDIS_URL is not set: SMS tasks run in this process")
            yield
    finally:
        await stop_broker(broker)
