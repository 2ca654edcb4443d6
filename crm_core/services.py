"""The long-lived objects one running process holds, and the one function that builds them.

`build_services` is where the registries (column types, filter operators, validators) are made
and every domain service gets its collaborators: the API app (`handlers/app.py` `create_app`)
and a task worker (`crm worker`, `tasks/broker.py`) both call it, so a column type registered
once is known to the routes and to the tasks alike."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from bson import ObjectId

from crm_core.accounts.auth import AuthService
from crm_core.accounts.roles import RoleService
from crm_core.accounts.tenancy import TenantService  # company settings
from crm_core.accounts.tokens import ApiTokenService
from crm_core.accounts.users import UserService
from crm_core.admin.service import AdminService, BrokerStats
from crm_core.audit.service import AuditTrail
from crm_core.files.attachments import AttachmentType, FileService
from crm_core.files.exports import ExportService
from crm_core.files.imports import ImportQueue, ImportService, bind_legacy_jobs
from crm_core.live.events import LiveAudit, LiveCampaignEvents
from crm_core.live.service import LiveService
from crm_core.platform.cursors import PageCursors
from crm_core.platform.eventbus import make_event_bus
from crm_core.platform.outbox import Outbox
from crm_core.platform.registry import Registry
from crm_core.platform.settings import Settings
from crm_core.platform.storage import Database, Storage
from crm_core.platform.storage.blobs import blob_store
from crm_core.sms.names import CAMPAIGNS
from crm_core.sms.providers import make_provider
from crm_core.sms.service import CampaignService, SmsQueue, counts
from crm_core.tables.aggregate import AggregateService
from crm_core.tables.aliases import AliasService
from crm_core.tables.builtin import TenantStep, ensure_builtin_tables
from crm_core.tables.columns import ColumnType, default_column_types
from crm_core.tables.filters import FilterBuilder, default_filter_operators
from crm_core.tables.meta import MetaService
from crm_core.tables.rows import RowService
from crm_core.tables.shares import ShareService
from crm_core.tables.trash import TRASH_PURGE as TRASH_PURGE  # the outbox kind tasks handle
from crm_core.tables.trash import RowTrash, SchemaTrash, TrashService, TrashSettings
from crm_core.tables.validators import ColumnValidator, default_validators
from crm_core.webhooks.service import WebhookQueue, WebhookService


class QueueNotRunning(RuntimeError):
    """Work handed to the background queue before the broker runs. The work is already
    recorded (the outbox, the webhook deliveries): the sweeper queues it once the broker runs."""


class BrokerProbe(BrokerStats, Protocol):
    """What the readiness check, /metrics and the operator's system page ask the running
    broker (tasks/broker.py `BrokerQueue`)."""

    async def ping(self) -> bool: ...

    async def metrics_stats(self, heartbeat_seconds: float) -> dict[str, Any] | None: ...


class TaskQueue:
    """The background queue every service is built with (`SmsQueue`, `ImportQueue`,
    `WebhookQueue`, each declared by the domain that sends work). It exists before the broker
    starts and hands work to the broker's queues once they are connected
    (tasks/broker.py `start_broker`); before that, a hand-off raises `QueueNotRunning`."""

    def __init__(self) -> None:
        self.sms: SmsQueue | None = None
        self.imports: ImportQueue | None = None
        self.webhooks: WebhookQueue | None = None
        self.probe: BrokerProbe | None = None  # the broker's health and backlog

    def connect(
        self, sms: SmsQueue, imports: ImportQueue, webhooks: WebhookQueue, probe: BrokerProbe
    ) -> None:
        self.sms, self.imports, self.webhooks, self.probe = sms, imports, webhooks, probe

    def _sms(self) -> SmsQueue:
        if self.sms is None:
            raise QueueNotRunning("the SMS queue is not running")
        return self.sms

    async def send_batch(self, tenant_id: str, campaign_id: str, batch: int) -> None:
        await self._sms().send_batch(tenant_id, campaign_id, batch)

    async def send_one(self, tenant_id: str, message_id: str) -> None:
        await self._sms().send_one(tenant_id, message_id)

    async def run_import(self, tenant_id: str, job_id: str, user_id: str) -> None:
        if self.imports is None:
            raise QueueNotRunning("the task broker is not running")
        await self.imports.run_import(tenant_id, job_id, user_id)

    async def deliver(self, tenant_id: str, delivery_id: str) -> None:
        if self.webhooks is None:
            raise QueueNotRunning("the task broker is not running")
        await self.webhooks.deliver(tenant_id, delivery_id)


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
    imports: ImportService  # CSV/XLSX import and export
    exports: ExportService
    files: FileService  # issue #23: uploaded files, the attachment column type's values
    # services: the account domains
    roles: RoleService
    users: UserService
    shares: ShareService
    aliases: AliasService
    sms: CampaignService  # campaigns and messages
    tenants: TenantService  # company settings (/api/tenant)
    webhooks: WebhookService
    tokens: ApiTokenService
    outbox: Outbox  # background work recorded before it is queued (swept where tasks run)
    trash: TrashService  # deleted rows, restored or purged (/api/trash)
    audit_trail: AuditTrail  # the company's audit trail (/api/audit)
    queue: TaskQueue  # connected to the broker's queues when it starts
    live: LiveService  # live events: the process's connections and the bus (docs/api.md)
    # the embedded mode's turn-taking for authenticated requests
    # (Settings.embedded_max_active_requests)
    request_slots: asyncio.Semaphore | None = None

    @property
    def sms_queue(self) -> SmsQueue | None:
        """The SMS queue the services' queue hands campaign work to (None before the broker
        starts); a test may put its own in its place."""
        return self.queue.sms

    @sms_queue.setter
    def sms_queue(self, queue: SmsQueue | None) -> None:
        self.queue.sms = queue


async def campaign_progress(
    db: Database, campaign_id: ObjectId
) -> tuple[dict[str, Any], dict[str, int]] | None:
    """A campaign and its counters, for `campaign.progress` (crm_core/live/events.py)."""
    campaign = await db[CAMPAIGNS].find_one({"_id": campaign_id})
    return None if campaign is None else (campaign, await counts(db, campaign))


# each domain's own migration of a tenant's database, run by `crm migrate` and at `crm serve`'s
# start after the tables' own (crm_core/tables/builtin.py `migrate_all`)
TENANT_MIGRATIONS: tuple[TenantStep, ...] = (bind_legacy_jobs,)


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
    queue = TaskQueue()
    column_types = default_column_types()
    # uploaded files and the column type whose cells hold them (crm_core/files/attachments.py)
    files = FileService(settings, blob_store(storage), column_types)
    column_types.register(AttachmentType(files))
    for column_type in extra_column_types:
        column_types.register(column_type)
    validators = default_validators()
    # the company's audit trail: the domains that change things tell it (docs/history.md)
    # list cursors are signed with a key of SECRET_KEY (crm_core/platform/cursors.py)
    cursors = PageCursors(settings.secret_key)
    trail = AuditTrail(settings.audit_retention_days, cursors)
    shares = ShareService(column_types, trail)  # its audit sink becomes `told` below
    roles = RoleService(shares, trail)
    users = UserService(roles, settings.bcrypt_rounds, trail, cursors)
    tenants = TenantService(ensure_builtin_tables, trail)
    aliases = AliasService()
    auth = AuthService(settings, storage, users, tenants, trail)
    outbox = Outbox(storage, retry_seconds=settings.webhook_sweep_seconds)
    # webhooks hear row events from the row service and campaign events from the SMS domain
    webhooks = WebhookService(
        settings, storage, column_types, queue, owners=auth, campaign_counts=counts, audit=trail
    )
    # every row change is recorded (history) and told (webhooks) by the row service's
    # ChangeLog (crm_core/tables/history.py); deleted rows go to the trash
    rows = RowService(
        column_types,
        FilterBuilder(default_filter_operators()),
        validators,
        events=webhooks,
        trash=RowTrash(TrashSettings(settings.trash_retention_days)),
        cursors=cursors,
    )
    if settings.crm_env == "test":  # the crash test's barrier (tests/history/test_crash.py)
        rows.changes.pause_table = settings.history_pause_before_revision
    # live events (docs/api.md "Live events"): row changes from the ChangeLog, schema changes
    # and share changes from the audit records, campaign progress from the SMS domain
    live = LiveService(settings, make_event_bus(settings.redis_url), rows)
    rows.changes.live = live.publisher
    told = LiveAudit(trail, live.publisher)
    campaign_events = LiveCampaignEvents(webhooks, live.publisher, campaign_progress)
    sms = CampaignService(
        settings,
        rows,
        outbox,
        queue,
        events=campaign_events,
        audit=trail,
        providers=lambda: make_provider(settings),
    )
    # deleted columns and tables go to the trash; a trashed table's rows are dropped by the
    # outbox's `trash.purge` work once it expires (tasks/broker.py)
    trash_settings = TrashSettings(settings.trash_retention_days)
    meta = MetaService(
        column_types,
        validators,
        aliases,
        dependents=(shares, aliases),
        audit=told,
        trash=SchemaTrash(trash_settings, outbox),
    )
    services = Services(
        settings=settings,
        storage=storage,
        auth=auth,
        column_types=column_types,
        validators=validators,
        meta=meta,
        rows=rows,
        aggregates=AggregateService(rows),
        imports=ImportService(rows, settings, aliases, outbox, queue, audit=trail),
        exports=ExportService(
            rows, settings.export_max_concurrent, aliases, audit=trail, files=files
        ),
        files=files,
        admin=AdminService(settings, storage, auth, sms, webhooks),
        tenants=tenants,
        roles=roles,
        users=users,
        shares=shares,
        aliases=aliases,
        sms=sms,
        webhooks=webhooks,
        tokens=ApiTokenService(storage, trail),
        outbox=outbox,
        trash=TrashService(
            column_types,
            rows.changes,
            trail,
            schema=meta,
            purges=outbox,
            cursors=cursors,
            files=files,
        ),
        audit_trail=trail,
        queue=queue,
        live=live,
    )
    shares.audit = told  # a share granted or revoked: subscribers are re-checked at once
    if settings.embedded_database and settings.embedded_max_active_requests:
        services.request_slots = asyncio.Semaphore(settings.embedded_max_active_requests)
    return services
