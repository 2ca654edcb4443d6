"""The long-lived objects one running service holds, built by the app factory."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from crm_core.admin import AdminService
from crm_core.aliases import AliasService
from crm_core.auth import AuthService
from crm_core.columns import ColumnType
from crm_core.files.exports import ExportService
from crm_core.files.imports import ImportService
from crm_core.registry import Registry
from crm_core.roles import RoleService
from crm_core.settings import Settings
from crm_core.shares import ShareService
from crm_core.sms import CampaignService  # sms: campaigns and messages
from crm_core.storage import Storage
from crm_core.tables.meta import MetaService
from crm_core.tables.rows import RowService
from crm_core.tenancy import TenantService  # ops: company settings
from crm_core.tokens import ApiTokenService
from crm_core.users import UserService
from crm_core.validators import ColumnValidator
from crm_core.webhooks import WebhookService


@dataclass
class Services:
    settings: Settings
    storage: Storage
    auth: AuthService
    column_types: Registry[ColumnType]
    validators: Registry[ColumnValidator]
    meta: MetaService
    rows: RowService
    admin: AdminService  # the operator's panel (/admin)
    imports: ImportService  # files: CSV/XLSX import and export
    exports: ExportService
    # services: the account domains
    roles: RoleService
    users: UserService
    shares: ShareService
    aliases: AliasService
    sms: CampaignService  # sms: campaigns and messages (its queue is set when the broker starts)
    sms_queue: Any = None  # crm_core.sms.SmsQueue, set when the broker starts
    # ops: company settings (/api/tenant)
    tenants: TenantService = field(default_factory=TenantService)
    # integrations
    webhooks: WebhookService | None = None
    tokens: ApiTokenService | None = None
