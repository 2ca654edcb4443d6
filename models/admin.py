"""The platform operator's panel (`/admin`): its sessions and audit log (system database), the
forms it reads and the views it renders."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from beanie import Document, PydanticObjectId
from pydantic import Field

from crm_core.platform.clock import utcnow
from crm_core.platform.storage import ASCENDING, DESCENDING, IndexModel
from models.base import OutputModel, QueryModel

CampaignStatus = Literal["queued", "sending", "completed", "cancelled"]


class AdminSession(Document):
    """A signed-in superadmin. The cookie holds a random secret; only its digest is stored."""

    token_hash: str
    user_id: PydanticObjectId
    csrf_token: str
    session_epoch: int = 0  # the user's; a newer one (password change, deactivation) ends it
    address: str = ""
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime

    class Settings:
        name = "admin_sessions"
        indexes = [
            IndexModel([("token_hash", ASCENDING)], unique=True, name="token_hash_unique"),
            IndexModel([("user_id", ASCENDING)], name="user"),
            IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0, name="expiry_ttl"),
        ]


class AdminAction(Document):
    """One line of the audit log: who did what to which object, when, from where."""

    at: datetime = Field(default_factory=utcnow)
    actor_id: str | None = None
    actor_email: str
    action: str
    target_type: str = ""
    target_id: str = ""
    target_label: str = ""
    detail: str = ""
    address: str = ""

    class Settings:
        name = "admin_actions"
        indexes = [IndexModel([("at", DESCENDING)], name="at")]


ADMIN_DOCUMENTS: list[type] = [AdminSession, AdminAction]

ACTIONS = {
    "sign_in": "signed in",
    "sign_in_failed": "failed to sign in",
    "sign_out": "signed out",
    "company_deactivated": "deactivated a company",
    "company_reactivated": "reactivated a company",
    "user_deactivated": "deactivated a user",
    "user_reactivated": "reactivated a user",
    "user_temporary_password": "set a temporary password",
    "user_sessions_ended": "ended a user's sessions",
    "campaign_cancelled": "cancelled a campaign",
    "superuser_created": "created a superadmin",
}


# ---- what the pages read from forms and query strings -------------------------------------


class SignInForm(QueryModel):
    email: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=1024)
    next: str = Field(default="/admin", max_length=2000)


class ActiveForm(QueryModel):
    active: bool


class CompanyQuery(QueryModel):
    q: str = Field(default="", max_length=200)
    page: int = Field(default=1, ge=1, le=100_000)


class CampaignQuery(QueryModel):
    status: CampaignStatus | Literal[""] = ""
    page: int = Field(default=1, ge=1, le=100_000)


class AuditQuery(QueryModel):
    page: int = Field(default=1, ge=1, le=100_000)


# ---- what the pages show ------------------------------------------------------------------


class CompanyStats(OutputModel):
    id: str
    name: str
    is_active: bool
    created_at: datetime
    users: int
    tables: int
    rows: int
    sms_sent_30d: int


class Page(OutputModel):
    page: int
    pages: int
    total: int


class CompanyPage(Page):
    items: list[CompanyStats]
    q: str


class CompanyUser(OutputModel):
    id: str
    email: str
    full_name: str
    roles: list[str]
    is_active: bool
    is_superadmin: bool
    must_change_password: bool
    created_at: datetime


class TableColumn(OutputModel):
    key: str
    type: str
    required: bool
    unique: bool


class CompanyTable(OutputModel):
    key: str
    builtin: bool
    columns: list[TableColumn]
    rows: int


class CampaignCountsView(OutputModel):
    total: int = 0
    pending: int = 0
    sending: int = 0
    sent: int = 0
    failed: int = 0
    invalid: int = 0
    cancelled: int = 0
    unknown: int = 0
    delivered: int = 0
    undelivered: int = 0
    expired: int = 0
    blocked: int = 0
    limited: int = 0
    delivery_rate: float | None = None


class PlatformCampaign(OutputModel):
    id: str
    tenant_id: str
    tenant_name: str
    name: str
    status: CampaignStatus
    counts: CampaignCountsView
    created_at: datetime

    @property
    def cancellable(self) -> bool:
        return self.status in ("queued", "sending")


class CampaignPage(Page):
    items: list[PlatformCampaign]
    status: str


class DisabledWebhook(OutputModel):
    """A webhook the deliveries disabled by themselves (docs/history.md "Audit trail")."""

    id: str
    name: str
    url: str
    disabled_at: datetime | None
    reason: str


class CompanyDetail(OutputModel):
    company: CompanyStats
    users: list[CompanyUser]
    tables: list[CompanyTable]
    campaigns: list[PlatformCampaign]
    disabled_webhooks: list[DisabledWebhook] = []


class WorkerSeen(OutputModel):
    name: str
    idle_seconds: float
    pending: int


class SystemCheck(OutputModel):
    name: str
    ok: bool
    detail: str


class SystemStatus(OutputModel):
    checks: list[SystemCheck]
    broker: str
    queue_depth: int | None = Field(description="Tasks waiting in the Redis stream")
    tasks_in_flight: int | None = Field(description="Delivered, not yet acknowledged")
    workers: list[WorkerSeen]
    versions: dict[str, str]


class DailyCount(OutputModel):
    day: str
    count: int


class AuditEntry(OutputModel):
    at: datetime
    actor_email: str
    action: str
    what: str
    target_type: str
    target_id: str
    target_label: str
    detail: str
    address: str


class AuditPage(Page):
    items: list[AuditEntry]


def audit_entry(action: AdminAction) -> AuditEntry:
    return AuditEntry(
        at=action.at,
        actor_email=action.actor_email,
        action=action.action,
        what=ACTIONS.get(action.action, action.action),
        target_type=action.target_type,
        target_id=action.target_id,
        target_label=action.target_label,
        detail=action.detail,
        address=action.address,
    )


def pages_for(total: int, size: int) -> int:
    return max(1, -(-total // size))
