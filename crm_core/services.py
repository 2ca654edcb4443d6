"""The long-lived objects one running service holds, built by the app factory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from crm_core.admin import AdminService
from crm_core.auth import AuthService
from crm_core.columns import ColumnType
from crm_core.registry import Registry
from crm_core.settings import Settings
from crm_core.storage import Storage
from crm_core.tables.meta import MetaService
from crm_core.tables.rows import RowService
from crm_core.tokens import ApiTokenService
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
    sms_queue: Any = None  # crm_core.sms.SmsQueue, set when the broker starts
    # integrations
    webhooks: WebhookService | None = None
    tokens: ApiTokenService | None = None
