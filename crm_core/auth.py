"""Registration, login, refresh-token rotation, logout and bearer authentication (SPEC §3)."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import bcrypt
from beanie import PydanticObjectId
from pymongo.errors import DuplicateKeyError

from crm_core import metrics
from crm_core.columns import ValueContext
from crm_core.context import TenantContext
from crm_core.errors import Conflict, Forbidden, RateLimited, Unauthorized
from crm_core.ratelimit import FailureWindow
from crm_core.security import (
    TokenCodec,
    check_password_policy,
    hash_password,
    hash_refresh_secret,
    new_refresh_secret,
    verify_password,
)
from crm_core.settings import Settings
from crm_core.storage import Storage
from crm_core.tenancy import create_tenant, drop_tenant, resolve_permissions
from models.accounts import (
    RefreshToken,
    RegisterIn,
    RevokedAccessToken,
    Tenant,
    TokenPair,
    User,
    normalise_email,
)

log = logging.getLogger(__name__)

INVALID_CREDENTIALS = "Invalid email or password"
INVALID_REFRESH = "The refresh token is not valid"


class AuthService:
    def __init__(self, settings: Settings, storage: Storage) -> None:
        self.settings = settings
        self.storage = storage
        self.codec = TokenCodec(settings.secret_key, settings.access_token_ttl_seconds)
        self.email_failures = FailureWindow(
            settings.login_max_failures, settings.login_lockout_seconds
        )
        self.address_failures = FailureWindow(
            settings.login_max_failures_per_ip, settings.login_lockout_seconds
        )
        # Checked when the email is unknown, so both failures cost one bcrypt verification.
        salt = bcrypt.gensalt(settings.bcrypt_rounds)
        self._dummy_hash = bcrypt.hashpw(b"not-a-real-password", salt).decode()

    async def register(self, data: RegisterIn) -> TokenPair:
        if not self.settings.registration_enabled:
            raise Forbidden("Registration is switched off on this server")
        check_password_policy(data.password)
        password_hash = await hash_password(data.password, self.settings.bcrypt_rounds)
        if await User.find_one(User.email == data.email):
            raise Conflict(
                "A user with this email already exists",
                [{"field": "email", "message": "already registered"}],
            )
        tenant, owner_role_id = await create_tenant(self.storage, data.company_name)
        user = User(
            tenant_id=tenant.id,  # type: ignore[arg-type]
            email=data.email,
            full_name=data.full_name,
            password_hash=password_hash,
            role_ids=[owner_role_id],
        )
        try:
            await user.insert()
        except DuplicateKeyError:
            await drop_tenant(self.storage, tenant)
            raise Conflict(
                "A user with this email already exists",
                [{"field": "email", "message": "already registered"}],
            ) from None
        log.info("registered tenant %s with owner %s", tenant.id, user.id)
        return await self._issue(user, family_id=uuid.uuid4().hex)

    async def login(self, email: str, password: str, client_address: str) -> TokenPair:
        email = normalise_email(email)
        for scope, window, key in (
            ("email", self.email_failures, email),
            ("address", self.address_failures, client_address),
        ):
            try:
                window.check(key)
            except RateLimited:
                metrics.LOGIN_LOCKOUTS.labels(scope).inc()
                raise
        user = await User.find_one(User.email == email)
        if user is None:
            await verify_password(password, self._dummy_hash)
            ok = False
        else:
            ok = await verify_password(password, user.password_hash) and user.is_active
            if ok:
                tenant = await Tenant.get(user.tenant_id)
                ok = tenant is not None and tenant.is_active
        if not ok or user is None:
            metrics.LOGIN_FAILURES.inc()
            self.email_failures.record_failure(email)
            self.address_failures.record_failure(client_address)
            raise Unauthorized(INVALID_CREDENTIALS)
        self.email_failures.reset(email)
        return await self._issue(user, family_id=uuid.uuid4().hex)

    async def refresh(self, secret: str) -> TokenPair:
        now = datetime.now(UTC)
        token_hash = hash_refresh_secret(secret)
        # Mark the token used atomically: of two concurrent refreshes only one wins.
        collection = RefreshToken.get_motor_collection()
        claimed = await collection.find_one_and_update(
            {"token_hash": token_hash, "used_at": None, "revoked_at": None},
            {"$set": {"used_at": now}},
        )
        if claimed is None:
            known = await RefreshToken.find_one(RefreshToken.token_hash == token_hash)
            if known is not None and known.used_at is not None:
                log.warning("refresh token reuse detected; revoking family %s", known.family_id)
                await self.revoke_family(known.family_id)
            raise Unauthorized(INVALID_REFRESH)
        if _aware(claimed["expires_at"]) <= now:
            raise Unauthorized("The refresh token has expired")
        user = await User.get(claimed["user_id"])
        if user is None or not user.is_active:
            await self.revoke_family(claimed["family_id"])
            raise Unauthorized(INVALID_REFRESH)
        return await self._issue(user, family_id=claimed["family_id"])

    async def logout(
        self, context: TenantContext, jti: str, expires_at: datetime, refresh_secret: str | None
    ) -> None:
        try:
            await RevokedAccessToken(jti=jti, expires_at=expires_at).insert()
        except DuplicateKeyError:
            pass
        if refresh_secret:
            token = await RefreshToken.find_one(
                RefreshToken.token_hash == hash_refresh_secret(refresh_secret),
                RefreshToken.user_id == context.user.id,
            )
            if token is not None:
                await self.revoke_family(token.family_id)

    async def revoke_family(self, family_id: str) -> None:
        await RefreshToken.get_motor_collection().update_many(
            {"family_id": family_id, "revoked_at": None},
            {"$set": {"revoked_at": datetime.now(UTC)}},
        )

    async def authenticate(self, bearer: str) -> tuple[TenantContext, str, datetime]:
        """Resolve an access token into a tenant context; 401 for anything not current."""
        claims = self.codec.decode(bearer)
        if not PydanticObjectId.is_valid(claims.user_id) or not PydanticObjectId.is_valid(
            claims.tenant_id
        ):
            raise Unauthorized("The access token is not valid")
        user = await User.get(PydanticObjectId(claims.user_id))
        if user is None or str(user.tenant_id) != claims.tenant_id:
            raise Unauthorized("The access token is not valid")
        if not user.is_active:
            raise Unauthorized("This user is deactivated")
        if await RevokedAccessToken.find_one(RevokedAccessToken.jti == claims.jti):
            raise Unauthorized("The access token was revoked")
        tenant = await Tenant.get(user.tenant_id)
        if tenant is None or not tenant.is_active:
            raise Unauthorized("The company is not active")
        db = self.storage.tenant_db(str(tenant.id))
        permissions = await resolve_permissions(db, user.role_ids)
        values = ValueContext(
            timezone=_zone(tenant.timezone),
            phone_region=tenant.phone_region,
            string_max_length=self.settings.string_max_length,
        )
        context = TenantContext(
            tenant=tenant,
            user=user,
            db=db,
            permissions=permissions,
            values=values,
            max_time_ms=self.settings.query_time_limit_ms,
        )
        return context, claims.jti, claims.expires_at

    async def _issue(self, user: User, family_id: str) -> TokenPair:
        secret = new_refresh_secret()
        await RefreshToken(
            token_hash=hash_refresh_secret(secret),
            family_id=family_id,
            user_id=user.id,  # type: ignore[arg-type]
            tenant_id=user.tenant_id,
            expires_at=datetime.now(UTC)
            + timedelta(seconds=self.settings.refresh_token_ttl_seconds),
        ).insert()
        return TokenPair(
            access_token=self.codec.issue(str(user.id), str(user.tenant_id)),
            refresh_token=secret,
            expires_in=self.codec.ttl_seconds,
        )


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        log.error("unknown timezone %r, using UTC", name)
        return ZoneInfo("UTC")


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
