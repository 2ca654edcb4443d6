"""The long-lived objects one running process holds, and the one function that builds them.

`build_services` is where the registries (column types, filter operators, validators) are made
and every domain service gets its collaborators: the API app (`handlers/app.py` `create_app`)
and a task worker (`crm worker`, `tasks/broker.py`) both call it, so a column type registered
once is known to the routes and to the tasks alike."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from crm_core.accounts.auth import AuthService
from crm_core.accounts.roles import RoleService
from crm_core.accounts.tenancy import TenantService  # ops: company settings
from crm_core.accounts.tokens import ApiTokenService
from crm_core.accounts.users import UserService
from crm_core.admin.service import AdminService
from crm_core.files.exports import ExportService
from crm_core.files.imports import ImportService
from crm_core.platform.outbox import Outbox
from crm_core.platform.registry import Registry
from crm_core.platform.settings import Settings
from crm_core.platform.storage import Storage
from crm_core.sms.service import CampaignService  # sms: campaigns and messages
from crm_core.tables.aggregate import AggregateService
from crm_core.tables.aliases import AliasService
from crm_core.tables.columns import ColumnType, default_column_types
from crm_core.tables.filters import FilterBuilder, default_filter_operators
from crm_core.tables.meta import MetaService
from crm_core.tables.rows import RowService
from crm_core.tables.shares import ShareService
from crm_core.tables.validators import ColumnValidator, default_validators
from crm_core.webhooks.service import WebhookService


@dataclass
class Services:
    settings: Settings
    storage: Storage
    auth: AuthService
    column_types: Registry[ColumnType]
    validators: Registry[ColumnValidator]
    meta: MetaService
    rows: RowService
    aggregates: AggregateService  # issue #23: totals and groups of rows
    admin: AdminService  # the operator's panel (/admin)
    imports: ImportService  # files: CSV/XLSX import and export
    exports: ExportService
    # services: the account domains
    roles: RoleService
    users: UserService
    shares: ShareService
    aliases: AliasService
    sms: CampaignService  # campaigns and messages (its queue is set when the broker starts)
    tenants: TenantService  # company settings (/api/tenant)
    webhooks: WebhookService
    tokens: ApiTokenService
    outbox: Outbox  # background work recorded before it is queued (swept where tasks run)
    sms_queue: Any = None  # crm_core.sms.service.SmsQueue, set when the broker starts
    # the embedded mode's turn-taking for authenticated requests
    # (Settings.embedded_max_active_requests)
    request_slots: asyncio.Semaphore | None = None


def build_services(
    settings: Settings,
    storage: Storage | None = None,
    extra_column_types: Iterable[ColumnType] = (),
) -> Services:
    """Every service of one process, wired. `storage`: an existing one to share (a worker in
    the same process as the API, in tests and the embedded mode), else a new one (not yet
    started). `extra_column_types`: column types registered besides the built-in ones
    (docs/architecture.md, how to add a column type)."""
    storage = storage or Storage(settings)
    column_types = default_column_types()
    for column_type in extra_column_types:
        column_types.register(column_type)
    validators = default_validators()
    rows = RowService(column_types, FilterBuilder(default_filter_operators()), validators)
    shares = ShareService(column_types)
    roles = RoleService(shares)
    users = UserService(roles, settings.bcrypt_rounds)
    tenants = TenantService()
    aliases = AliasService()
    auth = AuthService(settings, storage, users, tenants)
    outbox = Outbox(storage, retry_seconds=settings.webhook_sweep_seconds)
    services = Services(
        settings=settings,
        storage=storage,
        auth=auth,
        column_types=column_types,
        validators=validators,
        meta=MetaService(column_types, validators, dependents=(shares, aliases)),
        rows=rows,
        aggregates=AggregateService(rows),
        imports=ImportService(rows, settings, aliases, outbox),
        exports=ExportService(rows, settings.export_max_concurrent, aliases),
        admin=AdminService(settings, storage, auth),
        tenants=tenants,
        roles=roles,
        users=users,
        shares=shares,
        aliases=aliases,
        sms=CampaignService(settings, rows, outbox),
        webhooks=WebhookService(settings, storage, column_types),
        tokens=ApiTokenService(storage),
        outbox=outbox,
    )
    # webhooks hear row events from the row service and campaign events from the SMS domain
    services.rows.events = services.webhooks
    services.sms.events = services.webhooks
    services.sms.queue = lambda: services.sms_queue  # the running broker's queue
    if settings.embedded_database and settings.embedded_max_active_requests:
        services.request_slots = asyncio.Semaphore(settings.embedded_max_active_requests)
    return services
