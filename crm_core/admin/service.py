"""The platform operator's domain (`/admin`): superadmin sign-in sessions, a read-only view of
every company, the few operator actions (deactivate a company or a user, cancel a campaign) and
the audit log that records each of them.

Superadmins are `User` documents with `is_superadmin`; they sign in with their usual password,
under the same failed-login throttle as the API. A session is a random secret in an HttpOnly
cookie; the database keeps only its SHA-256 digest, its CSRF token and its expiry. Each request
reloads the user, so a superadmin who is deactivated or demoted loses the panel at once.
"""

from __future__ import annotations

import asyncio
import hmac
import importlib.metadata
import logging
import platform
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from crm_core.accounts.auth import AuthService
from crm_core.accounts.context import TenantContext
from crm_core.accounts.roles import ROLES
from crm_core.accounts.security import (
    check_password_policy,
    hash_password,
    secret_digest,
)
from crm_core.accounts.sessions import end_all_sessions
from crm_core.platform.clock import as_utc
from crm_core.platform.errors import Conflict, Forbidden, NotFound, Unauthorized
from crm_core.platform.ids import parse_object_id
from crm_core.platform.settings import Settings
from crm_core.platform.storage import Database, Storage, system_collection
from crm_core.tables.definitions import TABLES
from models.access import PERMISSIONS
from models.accounts import Tenant, User, normalise_email
from models.admin import (
    AdminAction,
    AdminSession,
    AuditPage,
    CampaignCountsView,
    CampaignPage,
    CompanyDetail,
    CompanyPage,
    CompanyStats,
    CompanyTable,
    CompanyUser,
    DailyCount,
    DisabledWebhook,
    PlatformCampaign,
    SystemCheck,
    SystemStatus,
    TableColumn,
    WorkerSeen,
    audit_entry,
    pages_for,
)

log = logging.getLogger(__name__)

PAGE_SIZE = 25
SMS_WINDOW_DAYS = 30
NOT_AN_ADMIN = "This account is not a platform administrator"
MUST_CHANGE = (
    "This account has a temporary password: choose a new one first "
    "(POST /api/auth/password, see docs/api.md), then sign in here"
)
PLATFORM_COMPANY = "Platform"
VERSIONED_PACKAGES = (
    "crm-backend",
    "aiohttp",
    "pymongo",
    "motor",
    "beanie",
    "pydantic",
    "taskiq",
    "taskiq-redis",
    "swagger-ui-py",
)


@dataclass
class Operator:
    """The signed-in superadmin of one request."""

    user: User
    session: AdminSession
    address: str

    @property
    def email(self) -> str:
        return self.user.email

    @property
    def csrf_token(self) -> str:
        return self.session.csrf_token

    def csrf_matches(self, token: str) -> bool:
        return hmac.compare_digest(self.session.csrf_token.encode(), token.encode())


class WorkerView(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def idle_seconds(self) -> float: ...
    @property
    def pending(self) -> int: ...


class QueueView(Protocol):
    """The task broker as the system page shows it (tasks/broker.py `QueueStats`)."""

    @property
    def kind(self) -> str: ...
    @property
    def reachable(self) -> bool: ...
    @property
    def queue_depth(self) -> int | None: ...
    @property
    def in_flight(self) -> int | None: ...
    @property
    def workers(self) -> Sequence[WorkerView]: ...


class BrokerStats(Protocol):
    async def stats(self) -> QueueView: ...


class CompanySms(Protocol):
    """What the operator's panel reads and does of a company's SMS, `db` being the company's
    database (crm_core.sms.service `CampaignService`, passed in by crm_core/services.py)."""

    async def sent_since(self, db: Database, since: datetime) -> int: ...

    async def sent_per_day(self, db: Database, since: datetime) -> dict[str, int]:
        """Messages sent since `since` by UTC day (`YYYY-MM-DD`)."""
        ...

    async def count_campaigns(self, db: Database, status: str) -> int: ...

    async def newest_campaigns(
        self, db: Database, status: str, limit: int
    ) -> list[dict[str, Any]]: ...

    async def counts(self, db: Database, campaign: dict[str, Any]) -> dict[str, int]:
        """A stored campaign's counters by status, with `total`."""
        ...

    async def cancel_for_company(self, ctx: TenantContext, campaign_id: str) -> dict[str, Any]:
        """Cancel the campaign as its company would; the stored document after."""
        ...


class CompanyWebhooks(Protocol):
    """What the panel shows of a company's webhooks (crm_core.webhooks.service
    `WebhookService`, passed in by crm_core/services.py)."""

    async def auto_disabled(self, db: Database) -> list[dict[str, Any]]:
        """The webhooks of company database `db` disabled after failed deliveries."""
        ...


class AdminService:
    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        auth: AuthService,
        sms: CompanySms,
        webhooks: CompanyWebhooks,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.auth = auth  # its failed-login throttle and password check are shared
        self.sms = sms
        self.webhooks = webhooks

    # ---- superadmins ------------------------------------------------------------------------

    async def create_superuser(self, email: str, password: str, full_name: str) -> User:
        """A superadmin in its own company ("Platform"), where it is the owner. Registration
        being switched off does not matter here."""
        email = normalise_email(email)
        check_password_policy(password)
        password_hash = await hash_password(password, self.settings.bcrypt_rounds)
        if await User.find_one(User.email == email):
            raise Conflict(
                "A user with this email already exists",
                [{"field": "email", "message": "already registered"}],
            )
        tenants = self.auth.tenants
        tenant, owner_role_id = await tenants.create_tenant(self.storage, PLATFORM_COMPANY)
        user = User(
            tenant_id=tenant.id,
            email=email,
            full_name=full_name,
            password_hash=password_hash,
            role_ids=[owner_role_id],
            is_superadmin=True,
        )
        await user.insert()
        await self.record(None, "superuser_created", "user", str(user.id), email)
        return user

    async def ensure_superuser(self, email: str, password: str, full_name: str) -> None:
        """At start (`CRM_SUPERUSER_EMAIL`): create the superadmin unless the email exists.
        An existing account is left as it is (its password may have been changed since)."""
        existing = await User.find_one(User.email == normalise_email(email))
        if existing is None:
            user = await self.create_superuser(email, password, full_name)
            log.info("superadmin %s created from CRM_SUPERUSER_EMAIL", user.email)
        elif existing.is_superadmin:
            log.info("superadmin %s exists; CRM_SUPERUSER_PASSWORD is not applied", email)
        else:
            log.error(
                "CRM_SUPERUSER_EMAIL %s belongs to a company user, who is not made a superadmin",
                email,
            )

    # ---- sessions ---------------------------------------------------------------------------

    async def sign_in(self, email: str, password: str, address: str) -> tuple[str, Operator]:
        """Unauthorized for a wrong email or password, Forbidden for a valid account that is
        not a superadmin; RateLimited under the API's failed-login throttle. The attempt
        reserves its slot in the throttle before the password is checked."""
        email = normalise_email(email)
        # the slot is taken before the bcrypt await, as for the API's login
        await self.auth.throttle.reserve(email, address)
        user = await User.find_one(User.email == email)
        ok = await self.auth.password_matches(user, password)
        ok = ok and user is not None and user.is_active
        if not ok or user is None:
            await self.record(None, "sign_in_failed", "user", "", email, address=address)
            raise Unauthorized("Invalid email or password")
        await self.auth.throttle.succeeded(email, address)
        if not user.is_superadmin:
            await self.record(
                None, "sign_in_failed", "user", str(user.id), email, NOT_AN_ADMIN, address
            )
            raise Forbidden(NOT_AN_ADMIN)
        if user.must_change_password:
            await self.record(
                None, "sign_in_failed", "user", str(user.id), email, MUST_CHANGE, address
            )
            raise Forbidden(MUST_CHANGE)
        secret = secrets.token_urlsafe(32)
        ttl = timedelta(seconds=self.settings.admin_session_ttl_seconds)
        session = AdminSession(
            token_hash=secret_digest(secret),
            user_id=user.id,
            csrf_token=secrets.token_urlsafe(32),
            session_epoch=user.session_epoch,
            address=address,
            expires_at=datetime.now(UTC) + ttl,
        )
        await session.insert()
        operator = Operator(user, session, address)
        await self.record(operator, "sign_in", "user", str(user.id), email)
        return secret, operator

    async def operator(self, secret: str, address: str) -> Operator | None:
        """The superadmin behind a session cookie, or None (unknown, expired, demoted)."""
        if not secret or len(secret) > 200:
            return None
        session = await AdminSession.find_one(AdminSession.token_hash == secret_digest(secret))
        if session is None:
            return None
        if as_utc(session.expires_at) <= datetime.now(UTC):
            await session.delete()
            return None
        user = await User.get(session.user_id)
        # the user's session epoch moves on deactivation and every password change or reset
        current = user is not None and session.session_epoch == user.session_epoch
        if user is None or not current or not user.is_active or not user.is_superadmin:
            await session.delete()
            return None
        return Operator(user, session, address)

    async def sign_out(self, operator: Operator) -> None:
        await operator.session.delete()
        await self.record(operator, "sign_out", "user", str(operator.user.id), operator.email)

    # ---- the audit log ----------------------------------------------------------------------

    async def record(
        self,
        operator: Operator | None,
        action: str,
        target_type: str = "",
        target_id: str = "",
        target_label: str = "",
        detail: str = "",
        address: str | None = None,
    ) -> None:
        await AdminAction(
            actor_id=str(operator.user.id) if operator else None,
            actor_email=operator.email if operator else (target_label or "-"),
            action=action,
            target_type=target_type,
            target_id=target_id,
            target_label=target_label,
            detail=detail,
            address=address if address is not None else (operator.address if operator else ""),
        ).insert()

    async def audit(self, page: int) -> AuditPage:
        total = await AdminAction.find_all().count()
        actions = (
            await AdminAction.find_all()
            .sort("-at", "-_id")
            .skip((page - 1) * PAGE_SIZE)
            .limit(PAGE_SIZE)
            .to_list()
        )
        return AuditPage(
            items=[audit_entry(a) for a in actions],
            page=page,
            pages=pages_for(total, PAGE_SIZE),
            total=total,
        )

    # ---- companies --------------------------------------------------------------------------

    async def list_companies(self, q: str, page: int) -> CompanyPage:
        """Companies whose name contains `q` (any case), or that have a user whose email
        contains it, or whose id it is; by name."""
        query: dict[str, Any] = {}
        q = q.strip()
        if q:
            pattern = {"$regex": re.escape(q), "$options": "i"}
            users = system_collection(User).find({"email": pattern}, {"tenant_id": 1})
            tenant_ids = {doc["tenant_id"] async for doc in users.limit(1000)}
            named = parse_object_id(q)
            if named is not None:
                tenant_ids.add(named)
            query = {"$or": [{"name": pattern}, {"_id": {"$in": list(tenant_ids)}}]}
        collection = system_collection(Tenant)
        total = await collection.count_documents(query)
        docs = (
            await collection.find(query)
            .sort([("name", 1), ("_id", 1)])
            .skip((page - 1) * PAGE_SIZE)
            .limit(PAGE_SIZE)
            .to_list(None)
        )
        tenants = [Tenant.model_validate(doc) for doc in docs]
        items = await self._stats(tenants)
        return CompanyPage(
            items=items, page=page, pages=pages_for(total, PAGE_SIZE), total=total, q=q
        )

    async def _stats(self, tenants: list[Tenant]) -> list[CompanyStats]:
        ids = [t.id for t in tenants]
        user_counts: dict[Any, int] = {}
        pipeline: list[dict[str, Any]] = [
            {"$match": {"tenant_id": {"$in": ids}}},
            {"$group": {"_id": "$tenant_id", "n": {"$sum": 1}}},
        ]
        async for row in system_collection(User).aggregate(pipeline):
            user_counts[row["_id"]] = row["n"]
        since = datetime.now(UTC) - timedelta(days=SMS_WINDOW_DAYS)

        async def one(tenant: Tenant) -> CompanyStats:
            db = self.storage.tenant_db(str(tenant.id))
            tables = await self._table_rows(db)
            sent = await self.sms.sent_since(db, since)
            return CompanyStats(
                id=str(tenant.id),
                name=tenant.name,
                is_active=tenant.is_active,
                created_at=tenant.created_at,
                users=user_counts.get(tenant.id, 0),
                tables=len(tables),
                rows=sum(tables.values()),
                sms_sent_30d=sent,
            )

        return list(await asyncio.gather(*(one(t) for t in tenants)))

    async def _table_rows(self, db: Database) -> dict[str, int]:
        docs = await db[TABLES].find({}, {"key": 1, "collection": 1}).sort("key", 1).to_list(None)
        keys = [doc["key"] for doc in docs]
        # rows live in `rows.<table id>` (docs/storage.md); older tables under their key
        counts = await asyncio.gather(
            *(db[doc.get("collection") or doc["key"]].estimated_document_count() for doc in docs)
        )
        return dict(zip(keys, counts, strict=True))

    async def _tenant(self, tenant_id: str) -> Tenant:
        parsed = parse_object_id(tenant_id)
        tenant = None if parsed is None else await Tenant.get(parsed)
        if tenant is None:
            raise NotFound("Company not found")
        return tenant

    async def company(self, tenant_id: str) -> CompanyDetail:
        tenant = await self._tenant(tenant_id)
        db = self.storage.tenant_db(str(tenant.id))
        (stats,) = await self._stats([tenant])
        role_names = {str(r["_id"]): r["name"] async for r in db[ROLES].find({}, {"name": 1})}
        users = await User.find(User.tenant_id == tenant.id).sort("+email").to_list()
        rows = await self._table_rows(db)
        tables = []
        async for doc in db[TABLES].find().sort("key", 1):
            tables.append(
                CompanyTable(
                    key=doc["key"],
                    builtin=bool(doc.get("builtin")),
                    columns=[
                        TableColumn(
                            key=c["key"],
                            type=c["type"],
                            required=bool(c.get("required")),
                            unique=bool(c.get("unique")),
                        )
                        for c in doc.get("columns", [])
                    ],
                    rows=rows.get(doc["key"], 0),
                )
            )
        campaigns = await self.sms.newest_campaigns(db, "", 50)
        return CompanyDetail(
            company=stats,
            users=[
                CompanyUser(
                    id=str(u.id),
                    email=u.email,
                    full_name=u.full_name,
                    roles=[role_names.get(r, "?") for r in u.role_ids],
                    is_active=u.is_active,
                    is_superadmin=u.is_superadmin,
                    must_change_password=u.must_change_password,
                    created_at=u.created_at,
                )
                for u in users
            ],
            tables=tables,
            campaigns=[await self._campaign(tenant, db, c) for c in campaigns],
            disabled_webhooks=[
                DisabledWebhook(
                    id=str(h["_id"]),
                    name=h.get("name") or "",
                    url=h["url"],
                    disabled_at=h.get("disabled_at"),
                    reason=h["disabled_reason"],
                )
                for h in await self.webhooks.auto_disabled(db)
            ],
        )

    async def set_company_active(self, operator: Operator, tenant_id: str, active: bool) -> Tenant:
        """A deactivated company's users are refused at their next request and cannot sign
        in or refresh; reactivating lets them sign in again."""
        tenant = await self._tenant(tenant_id)
        if not active and tenant.id == operator.user.tenant_id:
            raise Conflict("This is your own company: deactivating it would lock you out")
        tenant.is_active = active
        await tenant.save()
        if not active:  # and they stay ended when the company comes back
            async for user in User.find(User.tenant_id == tenant.id):
                await end_all_sessions(user.id)
        action = "company_reactivated" if active else "company_deactivated"
        await self.record(operator, action, "company", str(tenant.id), tenant.name)
        return tenant

    async def _user(self, user_id: str) -> User:
        parsed = parse_object_id(user_id)
        user = None if parsed is None else await User.get(parsed)
        if user is None:
            raise NotFound("User not found")
        return user

    async def set_user_active(self, operator: Operator, user_id: str, active: bool) -> User:
        """A deactivated user's access and refresh tokens and panel sessions end at once and
        stay ended after a reactivation. The operator may not deactivate itself."""
        user = await self._user(user_id)
        if not active and user.id == operator.user.id:
            raise Conflict("You cannot deactivate yourself")
        if active:
            await system_collection(User).update_one(
                {"_id": user.id}, {"$set": {"is_active": True, "updated_at": datetime.now(UTC)}}
            )
        else:  # its tokens stay dead after a reactivation (token epochs)
            await end_all_sessions(user.id, {"is_active": False})  # type: ignore[arg-type]
        user.is_active = active
        action = "user_reactivated" if active else "user_deactivated"
        await self.record(operator, action, "user", str(user.id), user.email)
        return user

    async def set_temporary_password(self, operator: Operator, user_id: str) -> tuple[User, str]:
        """The API's own reset (`AuthService.set_temporary_password`), done by the operator:
        a generated password, returned once; every session of the user ends, and the user must
        choose a new password before anything else. The operator acts with every permission
        in the user's company."""
        user = await self._user(user_id)
        tenant = await self._tenant(str(user.tenant_id))
        ctx = TenantContext(
            tenant=tenant,
            user=operator.user,
            db=self.storage.tenant_db(str(tenant.id)),
            permissions=frozenset(PERMISSIONS),
        )
        if user.id == operator.user.id:
            raise Conflict("Change your own password through the API (POST /api/auth/password)")
        temporary = await self.auth.set_temporary_password(ctx, str(user.id))
        await self.record(operator, "user_temporary_password", "user", str(user.id), user.email)
        return user, temporary

    # ---- SMS --------------------------------------------------------------------------------

    async def _campaign(
        self, tenant: Tenant, db: Database, doc: dict[str, Any]
    ) -> PlatformCampaign:
        counts = await self.sms.counts(db, doc)
        return PlatformCampaign(
            id=str(doc["_id"]),
            tenant_id=str(tenant.id),
            tenant_name=tenant.name,
            name=doc["name"],
            status=doc["status"],
            counts=CampaignCountsView(**counts),
            created_at=doc["created_at"],
        )

    async def list_campaigns(self, status: str, page: int) -> CampaignPage:
        """Campaigns of every company, newest first. Reads each company's campaigns (one
        query per company): fine for an operator's page, not for thousands of companies."""
        wanted = page * PAGE_SIZE
        found: list[tuple[datetime, Tenant, dict[str, Any]]] = []
        total = 0
        async for tenant in Tenant.find_all():
            db = self.storage.tenant_db(str(tenant.id))
            total += await self.sms.count_campaigns(db, status)
            docs = await self.sms.newest_campaigns(db, status, wanted)
            found.extend((as_utc(d["created_at"]), tenant, d) for d in docs)
        found.sort(key=lambda item: (item[0], str(item[2]["_id"])), reverse=True)
        chosen = found[(page - 1) * PAGE_SIZE : wanted]
        items = [
            await self._campaign(tenant, self.storage.tenant_db(str(tenant.id)), doc)
            for _, tenant, doc in chosen
        ]
        return CampaignPage(
            items=items,
            page=page,
            pages=pages_for(total, PAGE_SIZE),
            total=total,
            status=status,
        )

    async def cancel_campaign(
        self, operator: Operator, tenant_id: str, campaign_id: str
    ) -> PlatformCampaign:
        """The tenant's own cancel operation, run for the company by the operator."""
        tenant = await self._tenant(tenant_id)
        db = self.storage.tenant_db(str(tenant.id))
        ctx = TenantContext(tenant=tenant, user=operator.user, db=db)
        doc = await self.sms.cancel_for_company(ctx, campaign_id)
        await self.record(
            operator, "campaign_cancelled", "campaign", campaign_id, doc["name"], tenant.name
        )
        return await self._campaign(tenant, db, doc)

    # ---- charts -----------------------------------------------------------------------------

    async def messages_per_day(self, days: int = SMS_WINDOW_DAYS) -> list[DailyCount]:
        """SMS sent per day (UTC) over the last `days` days, all companies; days without any
        are zero."""
        today = datetime.now(UTC).date()
        first = today - timedelta(days=days - 1)
        since = datetime(first.year, first.month, first.day, tzinfo=UTC)
        per_day = {(first + timedelta(days=i)).isoformat(): 0 for i in range(days)}
        async for tenant in Tenant.find_all():
            db = self.storage.tenant_db(str(tenant.id))
            for day, n in (await self.sms.sent_per_day(db, since)).items():
                if day in per_day:
                    per_day[day] += n
        return [DailyCount(day=day, count=n) for day, n in per_day.items()]

    async def rows_per_company(self, limit: int = 10) -> list[CompanyStats]:
        """The companies with the most rows, most first."""
        tenants = await Tenant.find_all().to_list()
        stats = await self._stats(tenants)
        stats.sort(key=lambda s: (-s.rows, s.name))
        return stats[:limit]

    # ---- system -----------------------------------------------------------------------------

    async def system_status(self, queue: BrokerStats | None) -> SystemStatus:
        checks = []
        database_ok = await self.storage.ping()
        kind = "embedded (mongomock-motor, in memory)" if self.storage.embedded else "MongoDB"
        version = ""
        if database_ok and not self.storage.embedded:
            try:
                info = await self.storage.system_db.command("buildInfo")
                version = f" {info.get('version', '')}"
            except Exception:  # buildInfo may be refused to a restricted account
                log.warning("buildInfo failed", exc_info=True)
        checks.append(
            SystemCheck(
                name="database",
                ok=database_ok,
                detail=kind + version if database_ok else f"{kind}: not reachable",
            )
        )
        stats = await queue.stats() if queue is not None else None
        broker_ok = stats.reachable if stats is not None else False
        broker = stats.kind if stats is not None else "not started"
        checks.append(
            SystemCheck(
                name="task broker",
                ok=broker_ok,
                detail=broker if broker_ok else f"{broker}: not reachable",
            )
        )
        versions = {"python": platform.python_version()}
        for package in VERSIONED_PACKAGES:
            try:
                versions[package] = importlib.metadata.version(package)
            except importlib.metadata.PackageNotFoundError:
                versions[package] = "not installed"
        return SystemStatus(
            checks=checks,
            broker=broker,
            queue_depth=stats.queue_depth if stats is not None else None,
            tasks_in_flight=stats.in_flight if stats is not None else None,
            workers=[
                WorkerSeen(name=w.name, idle_seconds=w.idle_seconds, pending=w.pending)
                for w in (stats.workers if stats is not None else [])
            ],
            versions=versions,
        )
