"""The app factory: `create_app(settings)` wires storage, services, middlewares and routes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable

from aiohttp import web

from crm_core.admin import AdminService
from crm_core.aliases import AliasService
from crm_core.auth import AuthService
from crm_core.builtin_tables import migrate_all
from crm_core.columns import ColumnType, default_column_types
from crm_core.files.exports import ExportService
from crm_core.files.imports import ImportService
from crm_core.filters import FilterBuilder, default_filter_operators
from crm_core.roles import RoleService
from crm_core.services import Services
from crm_core.settings import Settings
from crm_core.shares import ShareService
from crm_core.sms import CampaignService  # sms
from crm_core.storage import Storage
from crm_core.tables.meta import MetaService
from crm_core.tables.rows import RowService
from crm_core.tenancy import TenantService
from crm_core.tokens import ApiTokenService
from crm_core.users import UserService
from crm_core.validators import default_validators
from crm_core.webhooks import WebhookService
from handlers import (
    admin,
    aliases,
    auth,
    data,
    docs,
    entities,
    files,
    metrics,
    roles,
    shares,
    sms,
    system,
    tables,
    tenant,
    tokens,
    users,
    webhooks,
)
from handlers.middlewares import access_log_middleware, error_middleware
from handlers.routing import SERVICES, RouteSpec, RouteTable, build_view
from models.accounts import SYSTEM_DOCUMENTS
from models.admin import ADMIN_DOCUMENTS
from tasks.broker import BrokerQueue, receiving, start_broker, stop_broker, sweeping

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
    files.routes,
    webhooks.routes,
    tokens.routes,
    tenant.routes,  # ops: company settings
    metrics.routes,  # ops: /metrics with METRICS_TOKEN
    docs.routes,
    admin.routes,
]


def all_routes() -> list[RouteSpec]:
    return [spec for table in ROUTE_TABLES for spec in table.routes]


def create_app(
    settings: Settings, extra_column_types: Iterable[ColumnType] = ()
) -> web.Application:
    """The API app. `extra_column_types`: column types registered besides the built-in ones
    (docs/architecture.md, how to add a column type)."""
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
    for column_type in extra_column_types:  # columns: types an embedding app adds
        column_types.register(column_type)
    validators = default_validators()
    rows = RowService(column_types, FilterBuilder(default_filter_operators()), validators)
    # services: the account domains
    shares = ShareService(column_types)
    roles_service = RoleService(shares)
    users_service = UserService(roles_service, settings.bcrypt_rounds)
    tenants = TenantService()
    auth_service = AuthService(settings, storage, users_service, tenants)
    services = app[SERVICES] = Services(
        settings=settings,
        storage=storage,
        auth=auth_service,
        column_types=column_types,
        validators=validators,
        meta=MetaService(column_types, validators),
        rows=rows,
        imports=ImportService(rows, settings),
        exports=ExportService(rows, settings.export_max_concurrent),
        admin=AdminService(settings, storage, auth_service),
        tenants=tenants,  # ops: company settings
        # services: the account domains
        roles=roles_service,
        users=users_service,
        shares=shares,
        aliases=AliasService(),
        sms=CampaignService(settings, rows),  # sms
    )
    # integrations: webhooks hear row events from the row service
    services.webhooks = WebhookService(settings, storage, column_types)
    services.rows.events = services.webhooks
    services.tokens = ApiTokenService(storage)
    services.sms.events = services.webhooks  # sms: `campaign.finished` events
    services.sms.queue = lambda: services.sms_queue  # sms: the running broker's queue
    app.cleanup_ctx.append(_storage_ctx)
    app.cleanup_ctx.append(_broker_ctx)
    app.cleanup_ctx.append(_metrics_listener_ctx)  # ops: METRICS_PORT

    specs = [spec.for_app(services) for spec in all_routes()]  # columns: per-app body models
    for spec in specs:
        app.router.add_route(spec.method, spec.path, build_view(spec))
    docs.add_static(app)
    admin.setup(app)  # the operator's panel: templates and its stylesheet
    app[docs.OPENAPI] = docs.OpenApiDocument(specs)  # built on first request
    return app


async def _storage_ctx(app: web.Application) -> AsyncIterator[None]:
    storage = app[SERVICES].storage
    await storage.start(SYSTEM_DOCUMENTS + ADMIN_DOCUMENTS)
    settings = storage.settings
    if settings.crm_superuser_email and settings.crm_superuser_password:
        await app[SERVICES].admin.ensure_superuser(
            settings.crm_superuser_email,
            settings.crm_superuser_password,
            settings.crm_superuser_name,
        )
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
    broker = await start_broker(settings, services.storage, webhooks=services.webhooks)
    services.sms_queue = BrokerQueue(broker)
    services.imports.queue = services.sms_queue  # files: import jobs go to the same broker
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
