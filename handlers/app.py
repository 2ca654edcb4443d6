"""The app factory: `create_app(settings)` puts the services (crm_core/services.py
`build_services`), middlewares and routes together."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable

from aiohttp import web

from crm_core.platform.settings import Settings
from crm_core.platform.snapshots import open_snapshots
from crm_core.services import TENANT_MIGRATIONS, build_services
from crm_core.tables.builtin import migrate_all
from crm_core.tables.columns import ColumnType
from handlers import (
    admin,
    aggregate,
    aliases,
    attachments,
    audit,
    auth,
    data,
    docs,
    edges,
    entities,
    events,
    files,
    history,
    metrics,
    roles,
    shares,
    sms,
    system,
    tables,
    tenant,
    tokens,
    trash,
    users,
    webhooks,
)
from handlers.middlewares import access_log_middleware, error_middleware
from handlers.routing import SERVICES, RouteSpec, RouteTable, build_view
from models.accounts import SYSTEM_DOCUMENTS
from models.admin import ADMIN_DOCUMENTS
from tasks.broker import receiving, start_broker, stop_broker, sweeping

log = logging.getLogger(__name__)

ROUTE_TABLES: list[RouteTable] = [
    system.routes,
    auth.routes,
    tables.routes,
    data.routes,
    entities.routes,
    aggregate.routes,  # issue #23: /api/data/{table}/aggregate and the built-in copies
    roles.routes,
    users.routes,
    shares.routes,
    aliases.routes,
    sms.routes,
    files.routes,
    attachments.routes,  # issue #23: /api/files
    webhooks.routes,
    tokens.routes,
    history.routes,  # row history (its entity copies: entities.routes)
    trash.routes,
    audit.routes,
    events.routes,  # issue #25: live events (WebSocket, SSE)
    tenant.routes,  # company settings
    metrics.routes,  # /metrics with METRICS_TOKEN
    docs.routes,
    admin.routes,
]


def all_routes() -> list[RouteSpec]:
    return [spec for table in ROUTE_TABLES for spec in table.routes]


def create_app(
    settings: Settings, extra_column_types: Iterable[ColumnType] = ()
) -> web.Application:
    """The API app over the services of `build_services` (crm_core/services.py), which
    registers `extra_column_types` besides the built-in column types."""
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[
            # outermost first: the access log sees the final status of every answer,
            # including the errors that error_middleware renders
            access_log_middleware,
            error_middleware,
        ],
    )
    services = app[SERVICES] = build_services(settings, extra_column_types=extra_column_types)
    app.cleanup_ctx.append(_storage_ctx)
    app.cleanup_ctx.append(_broker_ctx)
    app.cleanup_ctx.append(_metrics_listener_ctx)  # METRICS_PORT
    app.cleanup_ctx.append(_live_ctx)  # live events: the bus and the access re-checks
    app.on_shutdown.append(events.shutdown)  # open live connections close first

    specs = [spec.for_app(services) for spec in all_routes()]  # columns: per-app body models
    for spec in specs:
        app.router.add_route(spec.method, spec.path, build_view(spec))
    docs.add_static(app)
    admin.setup(app)  # the operator's panel: templates and its stylesheet
    app[docs.OPENAPI] = docs.OpenApiDocument(specs)  # built on first request
    edges.setup(app, settings)  # issue 28: traces, API limits, CORS on /api (after the routes)
    return app


async def _storage_ctx(app: web.Application) -> AsyncIterator[None]:
    storage = app[SERVICES].storage
    await storage.start(SYSTEM_DOCUMENTS + ADMIN_DOCUMENTS)
    snapshots = await open_snapshots(storage)  # EMBEDDED_DATA_DIR: load, then save periodically
    settings = storage.settings
    if settings.crm_superuser_email and settings.crm_superuser_password:
        await app[SERVICES].admin.ensure_superuser(
            settings.crm_superuser_email,
            settings.crm_superuser_password,
            settings.crm_superuser_name,
        )
    # built-in tables for tenants created before them, and the domains' own steps
    changed = await migrate_all(storage, steps=TENANT_MIGRATIONS)
    if changed:
        log.info("migrated %d tenants", changed)
    yield
    if snapshots is not None:
        await snapshots.close()  # the last snapshot, after the broker stopped
    storage.close()
    await app[SERVICES].auth.throttle.close()  # the login limits' Redis client
    log.info("storage closed")


async def _broker_ctx(app: web.Application) -> AsyncIterator[None]:
    """The task broker. Embedded database (one process) or no Redis: the tasks run in this
    process. Real MongoDB with Redis: this process only queues; `crm worker` sends."""
    services = app[SERVICES]
    settings = services.settings
    broker = await start_broker(services)  # the services' queue hands work to it from now on
    receive = bool(settings.redis_url) and settings.api_receives_tasks
    if receive:
        log.warning("SMS tasks queued in Redis run in this process (embedded database)")
    try:
        if receive:
            async with receiving(broker, settings):
                yield
        elif not settings.redis_url:
            log.warning("REDIS_URL is not set: SMS tasks run in this process")
            async with sweeping(broker, settings):  # webhook retries
                yield
        else:
            yield
    finally:
        await stop_broker(broker)


async def _live_ctx(app: web.Application) -> AsyncIterator[None]:
    """Live events (docs/api.md "Live events"): read the bus (Redis with REDIS_URL) and
    re-check the viewers' access while the app runs."""
    live = app[SERVICES].live
    await live.start()
    try:
        yield
    finally:
        await live.stop()


async def _metrics_listener_ctx(app: web.Application) -> AsyncIterator[None]:
    """With METRICS_PORT: `/metrics` without a token on its own listener."""
    services = app[SERVICES]
    settings = services.settings
    if settings.metrics_port is None:
        yield
        return
    runner = web.AppRunner(metrics.metrics_app(services), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.metrics_host, settings.metrics_port)
    await site.start()
    log.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
    try:
        yield
    finally:
        await runner.cleanup()
