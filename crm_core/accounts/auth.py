"""Registration, login, refresh-token rotation, logout and bearer authentication (docs/api.md
"Auth")."""

from __future__ import annotations

import base64
import hmac
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import bcrypt
from cachetools import LRUCache

from crm_core.accounts.audit import AuditSink, user_target
from crm_core.accounts.cache import DefinitionCache, ValidatedDocuments
from crm_core.accounts.context import TenantContext
from crm_core.accounts.grants import check_token_scope
from crm_core.accounts.ratelimit import LoginThrottle, login_limit_storage
from crm_core.accounts.roles import RoleService
from crm_core.accounts.security import (
    AccessClaims,
    TokenCodec,
    check_password_policy,
    hash_password,
    new_refresh_secret,
    secret_digest,
    verify_password,
)
from crm_core.accounts.sessions import end_access_tokens, end_all_sessions, revoke_family
from crm_core.accounts.tenancy import TenantService
from crm_core.accounts.users import UserService
from crm_core.platform import metrics
from crm_core.platform.clock import as_utc
from crm_core.platform.errors import (
    Conflict,
    Forbidden,
    RateLimited,
    Unauthorized,
    ValidationFailed,
)
from crm_core.platform.ids import object_id, parse_object_id
from crm_core.platform.settings import Settings
from crm_core.platform.storage import DuplicateKeyError, Storage, system_collection
from crm_core.platform.values import ValueContext
from models.accounts import (
    LoginIn,
    LogoutIn,
    PasswordChangeIn,
    RefreshIn,
    RefreshToken,
    RegisterIn,
    Tenant,
    TokenPair,
    User,
    normalise_email,
)

log = logging.getLogger(__name__)

INVALID_CREDENTIALS = "Invalid email or password"
INVALID_REFRESH = "The refresh token is not valid"
VERIFIED_TOKENS = 10_000  # access tokens whose checked claims a process keeps


class AuthService:
    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        users: UserService,
        tenants: TenantService,
        audit: AuditSink,
    ) -> None:
        self.settings = settings
        self.audit = audit
        self.storage = storage
        self.users = users
        self.tenants = tenants
        self.codec = TokenCodec(settings.secret_key, settings.access_token_ttl_seconds)
        self.throttle = LoginThrottle(
            login_limit_storage(settings.redis_url),
            per_email=settings.login_max_failures,
            per_address=settings.login_max_failures_per_ip,
            window_seconds=settings.login_lockout_seconds,
            account_free=settings.login_account_free_failures,
            account_max_delay_seconds=settings.login_account_max_delay_seconds,
            known_address_seconds=settings.login_known_address_days * 24 * 3600,
        )
        # Checked when the email is unknown, so both failures cost one bcrypt verification.
        salt = bcrypt.gensalt(settings.bcrypt_rounds)
        self._dummy_hash = bcrypt.hashpw(b"not-a-real-password", salt).decode()
        self.cache = DefinitionCache()  # roles and table definitions of this process
        # access tokens whose signature this process has checked (request path, issue #12 §3)
        self.verified: LRUCache[str, AccessClaims] = LRUCache(VERIFIED_TOKENS)
        self.user_models, self.tenant_models = ValidatedDocuments(User), ValidatedDocuments(Tenant)

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
        tenant, owner_role_id = await self.tenants.create_tenant(self.storage, data.company_name)
        user = User(
            tenant_id=tenant.id,
            email=data.email,
            full_name=data.full_name,
            password_hash=password_hash,
            role_ids=[owner_role_id],
        )
        try:
            await user.insert()
        except DuplicateKeyError:
            await self.tenants.drop_tenant(self.storage, tenant)
            raise Conflict(
                "A user with this email already exists",
                [{"field": "email", "message": "already registered"}],
            ) from None
        log.info("registered tenant %s with owner %s", tenant.id, user.id)
        return await self._issue(user, family_id=uuid.uuid4().hex)

    async def password_matches(self, user: User | None, password: str) -> bool:
        """Whether `password` is `user`'s. A missing user costs the same bcrypt work (against a
        dummy hash), so the answer's timing does not tell which emails exist."""
        if user is None:
            await verify_password(password, self._dummy_hash)
            return False
        return await verify_password(password, user.password_hash)

    async def login(self, data: LoginIn, client_address: str) -> TokenPair:
        email, password = normalise_email(data.email), data.password
        # the slot is taken before the bcrypt await: concurrent guesses cannot all get through
        try:
            await self.throttle.reserve(email, client_address)
        except RateLimited:
            metrics.LOGIN_LOCKOUTS.inc()
            raise
        user = await User.find_one(User.email == email)
        refusal = None if await self.password_matches(user, password) else "wrong password"
        if user is not None and refusal is None:
            if not user.is_active:
                refusal = "the user is deactivated"
            else:
                tenant = await Tenant.get(user.tenant_id)
                if tenant is None or not tenant.is_active:
                    refusal = "the company is deactivated"
        if refusal is not None or user is None:
            metrics.LOGIN_FAILURES.inc()
            if user is not None:  # an unknown email has no company to tell
                await self._audit_sign_in(user, "auth.sign_in_failed", client_address, refusal)
            raise Unauthorized(INVALID_CREDENTIALS)
        await self.throttle.succeeded(email, client_address)
        await self._audit_sign_in(user, "auth.signed_in", client_address)
        return await self._issue(user, family_id=uuid.uuid4().hex)

    async def _audit_sign_in(
        self, user: User, action: str, address: str, refusal: str | None = None
    ) -> None:
        """A sign-in (or a failed one) in the user's company's trail: never the password;
        a failure's actor is anonymous (whoever typed the email), its target the user."""
        actor: dict[str, str | None]
        if refusal is None:
            actor = {"type": "user", "id": str(user.id), "name": user.full_name or user.email}
        else:
            actor = {"type": "anonymous", "id": None, "name": None}
        await self.audit.record_in(
            self.storage.tenant_db(str(user.tenant_id)),
            actor,
            action,
            user_target(user.id, user.email),
            {"reason": refusal} if refusal else None,
            address,
        )

    async def refresh(self, data: RefreshIn) -> TokenPair:
        """Rotate a refresh token. The successor's secret is derived from the presented one
        (an HMAC under the secret key), so the same token presented again within
        `refresh_reuse_grace_seconds` of its rotation answers the same successor (two tabs, a
        client retrying after a timeout); later reuse revokes the family, as theft."""
        now = datetime.now(UTC)
        token_hash = secret_digest(data.refresh_token)
        # Mark the token used atomically: of two concurrent refreshes only one wins.
        collection = system_collection(RefreshToken)
        claimed = await collection.find_one_and_update(
            {"token_hash": token_hash, "used_at": None, "revoked_at": None},
            {"$set": {"used_at": now}},
        )
        if claimed is None:
            known = await collection.find_one({"token_hash": token_hash})
            if known is None or known.get("used_at") is None:
                raise Unauthorized(INVALID_REFRESH)
            if known.get("revoked_at") is None and self._within_grace(known, now):
                claimed = known
            else:
                log.warning("refresh token reuse detected; revoking family %s", known["family_id"])
                await revoke_family(known["family_id"], known["user_id"])
                raise Unauthorized(INVALID_REFRESH)
        if as_utc(claimed["expires_at"]) <= now:
            raise Unauthorized("The refresh token has expired")
        user = await User.get(claimed["user_id"])
        stale = user is not None and claimed.get("session_epoch", 0) != user.session_epoch
        if user is None or not user.is_active or stale:
            await revoke_family(claimed["family_id"], claimed["user_id"])
            raise Unauthorized(INVALID_REFRESH)
        return await self._issue(
            user, family_id=claimed["family_id"], secret=self._successor(data.refresh_token)
        )

    def _within_grace(self, token: dict[str, Any], now: datetime) -> bool:
        grace = timedelta(seconds=self.settings.refresh_reuse_grace_seconds)
        return bool(grace) and now - as_utc(token["used_at"]) <= grace

    def _successor(self, secret: str) -> str:
        """The refresh secret that replaces `secret`: the same for every presentation of it,
        unguessable without the secret key."""
        mac = hmac.new(self.settings.secret_key.encode(), b"refresh:" + secret.encode(), "sha256")
        return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()

    async def logout(self, context: TenantContext, data: LogoutIn) -> None:
        """Every access token of the user ends (the token epoch: no per-request revocation
        lookup; the user's other devices refresh once), and the refresh token's family when
        one is given. Only a signed-in session signs out: an API token is refused (403)."""
        check_token_scope(context, "end the user's sessions")
        await end_access_tokens(context.user.id)  # type: ignore[arg-type]
        if data.refresh_token:
            token = await RefreshToken.find_one(
                RefreshToken.token_hash == secret_digest(data.refresh_token),
                RefreshToken.user_id == context.user.id,
            )
            if token is not None:
                await revoke_family(token.family_id, token.user_id)

    async def change_password(self, ctx: TenantContext, data: PasswordChangeIn) -> TokenPair:
        """The signed-in user's own password. Every other session ends (all access and refresh
        tokens); the caller gets a fresh token pair. Wrong current passwords are limited per
        user (so a stolen access token cannot guess it), apart from sign-in failures (so they
        never lock the user's sign-in)."""
        check_token_scope(ctx, "change the password")
        current_password, new_password = data.current_password, data.new_password
        check_password_policy(new_password, "new_password")
        user = ctx.user
        await self.throttle.reserve_password_check(user.email)
        if not await verify_password(current_password, user.password_hash):
            raise ValidationFailed.field("current_password", "is not the current password")
        if new_password == current_password:
            raise ValidationFailed.field("new_password", "must differ from the current password")
        password_hash = await hash_password(new_password, self.settings.bcrypt_rounds)
        stored = await end_all_sessions(
            user.id,  # type: ignore[arg-type]
            {"password_hash": password_hash, "must_change_password": False},
            expect={"password_hash": user.password_hash, "is_active": True},
        )
        if stored is None:
            raise Conflict("The password or the account changed meanwhile; sign in again")
        await self.throttle.password_check_succeeded(user.email)
        log.info("user %s changed their password; other sessions ended", user.id)
        await self.audit.record(ctx, "auth.password_changed", user_target(user.id, user.email))
        return await self._issue(User.model_validate(stored), family_id=uuid.uuid4().hex)

    async def set_temporary_password(self, ctx: TenantContext, user_id: str) -> str:
        """`UserService.set_temporary_password`, under the name crm_core/admin/service.py calls."""
        return await self.users.set_temporary_password(ctx, object_id(user_id, "User"))

    async def authenticate(self, bearer: str) -> tuple[TenantContext, str, datetime]:
        """Resolve an access token into a tenant context; 401 for anything not current."""
        claims = self.claims(bearer)
        user_id = parse_object_id(claims.user_id)
        if user_id is None or parse_object_id(claims.tenant_id) is None:
            raise Unauthorized("The access token is not valid")
        # plain driver reads (beanie's query layer costs more than the read on a warm path)
        user_doc = await system_collection(User).find_one({"_id": user_id})
        user = self.user_models.validate(user_doc) if user_doc is not None else None
        if user is None or str(user.tenant_id) != claims.tenant_id:
            raise Unauthorized("The access token is not valid")
        if not user.is_active:
            raise Unauthorized("This user is deactivated")
        if claims.epoch != user.token_epoch:
            raise Unauthorized("This session has ended; sign in again")
        tenant_doc = await system_collection(Tenant).find_one({"_id": user.tenant_id})
        tenant = self.tenant_models.validate(tenant_doc) if tenant_doc is not None else None
        if tenant is None or not tenant.is_active:
            raise Unauthorized("The company is not active")
        # two round trips (user, tenant); roles and tables come from the process cache
        context = await build_context(self.storage, user, tenant, self.cache)
        return context, claims.jti, claims.expires_at

    async def context_of(self, user: User, tenant: Tenant) -> TenantContext:
        """What `user` may do now in `tenant`, its roles read afresh (not from the process
        cache): for work done later on a user's behalf (webhook deliveries)."""
        return await build_context(self.storage, user, tenant)

    def claims(self, bearer: str) -> AccessClaims:
        """The token's claims. Its signature is checked once per process (the same bytes verify
        the same way every time), its expiry at every request; only tokens that verified are
        kept, so made-up tokens cannot fill the cache. Whether the token is still alive (the
        user's epoch, active flags) is decided by `authenticate` from the documents it reads."""
        claims: AccessClaims | None = self.verified.get(bearer)
        if claims is None:
            claims = self.codec.decode(bearer)
            self.verified[bearer] = claims
        elif claims.expires_at <= datetime.now(UTC):
            raise Unauthorized("The access token has expired")
        return claims

    async def _issue(self, user: User, family_id: str, secret: str | None = None) -> TokenPair:
        """A new pair; given `secret` (a rotation), its stored token is made once however many
        times the same rotation is answered (an upsert on the unique digest)."""
        rotation = secret is not None
        secret = secret or new_refresh_secret()
        record = RefreshToken(
            token_hash=secret_digest(secret),
            family_id=family_id,
            user_id=user.id,
            tenant_id=user.tenant_id,
            session_epoch=user.session_epoch,
            expires_at=datetime.now(UTC)
            + timedelta(seconds=self.settings.refresh_token_ttl_seconds),
        )
        if not rotation:
            await record.insert()
        else:
            stored = record.model_dump(by_alias=True, exclude={"id"})
            try:
                await system_collection(RefreshToken).update_one(
                    {"token_hash": record.token_hash}, {"$setOnInsert": stored}, upsert=True
                )
            except DuplicateKeyError:
                pass  # a concurrent presentation of the same token stored it first
        return TokenPair(
            access_token=self.codec.issue(
                str(user.id), str(user.tenant_id), epoch=user.token_epoch
            ),
            refresh_token=secret,
            expires_in=self.codec.ttl_seconds,
            must_change_password=user.must_change_password,
        )


async def build_context(
    storage: Storage, user: User, tenant: Tenant, cache: DefinitionCache | None = None
) -> TenantContext:
    """What `user` may do now in `tenant`: its roles' permissions, from the process cache
    (invalidated by the tenant's version counters) when there is one, else read afresh."""
    db = storage.tenant_db(str(tenant.id))
    if cache is not None:
        permissions = await cache.permissions(db, tenant, user.role_ids)
    else:
        permissions = await RoleService.permissions_of(db, user.role_ids)
    settings = storage.settings
    values = ValueContext(
        timezone=_zone(tenant.timezone),
        phone_region=tenant.phone_region,
        string_max_length=settings.string_max_length,
    )
    return TenantContext(
        tenant=tenant,
        user=user,
        db=db,
        permissions=permissions,
        values=values,
        max_time_ms=settings.query_time_limit_ms,
        cache=cache,
    )


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        log.error("unknown timezone %r, using UTC", name)
        return ZoneInfo("UTC")


async def context_for_user(storage: Storage, tenant_id: str, user_id: str) -> TenantContext:
    """The context of a user for background work (imports) started on their behalf: checked
    when the work runs, so a user deactivated or moved to another company in the meantime gets
    no further (401)."""
    parsed = parse_object_id(user_id)
    if parsed is None or parse_object_id(tenant_id) is None:
        raise Unauthorized("Unknown user")
    user = await User.get(parsed)
    if user is None or str(user.tenant_id) != tenant_id or not user.is_active:
        raise Unauthorized("The user is no longer active in this company")
    tenant = await Tenant.get(user.tenant_id)
    if tenant is None or not tenant.is_active:
        raise Unauthorized("The company is not active")
    return await build_context(storage, user, tenant)
