"""API tokens (docs/integrations.md): named, revocable, long-lived bearer tokens a user makes
for integrations.

- The secret (`crm_pat_` + 256 random bits) is shown once; the database keeps its SHA-256
  digest. A fast digest is enough because the secret is random, not chosen by a person: there
  is nothing to guess, and the digest can be looked up by an index on every request (a slow
  password hash would cost a bcrypt round per API call).
- A request made with a token acts as its user with the token's scope: the permissions are
  the token's codes that the user holds *now*, and table access (ownership, shares,
  `tables.all`) is capped by the token's `table_access`. Losing a permission or a share
  shrinks every token at the next request.
- A token dies when it is revoked or expires, when its user is deactivated, and when the
  user's sessions are ended (`session_epoch`: password change, temporary password,
  deactivation); logging out of one browser session does not end it.
- Tokens cannot make tokens (a leaked token must not mint longer-lived ones), revoke other
  tokens, end sessions or change the password (crm_core/accounts/grants.py `check_token_scope`): a
  token may revoke itself.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from crm_core.accounts.audit import AuditSink
from crm_core.accounts.auth import build_context
from crm_core.accounts.context import TenantContext
from crm_core.accounts.grants import check_grant, check_token_scope
from crm_core.accounts.permissions import LEVEL_NAMES, Level
from crm_core.accounts.security import secret_digest
from crm_core.platform.clock import as_utc
from crm_core.platform.errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationFailed
from crm_core.platform.ids import object_id
from crm_core.platform.storage import Storage, system_collection
from models.access import PERMISSIONS
from models.accounts import Tenant, User
from models.tokens import ApiToken, ApiTokenIn

PREFIX = "crm_pat_"
MAX_TOKENS_PER_USER = 100
LAST_USED_PRECISION = timedelta(minutes=1)
LEVELS = {"none": Level.NONE, **LEVEL_NAMES}


def is_api_token(bearer: str) -> bool:
    return bearer.startswith(PREFIX)


class ApiTokenService:
    def __init__(self, storage: Storage, audit: AuditSink) -> None:
        self.storage = storage
        self.audit = audit

    async def create(self, ctx: TenantContext, data: ApiTokenIn) -> tuple[ApiToken, str]:
        if ctx.api_token_id is not None:
            raise Forbidden("API tokens cannot create tokens; sign in to make one")
        unknown = [
            {"field": f"permissions.{i}", "message": "no such permission"}
            for i, code in enumerate(data.permissions)
            if code not in PERMISSIONS
        ]
        if unknown:
            raise ValidationFailed(f"{unknown[0]['field']}: {unknown[0]['message']}", unknown)
        check_grant(ctx, data.permissions, what="give a token")
        now = datetime.now(UTC)
        if data.expires_at is not None:
            if data.expires_at.tzinfo is None:
                raise ValidationFailed.field("expires_at", "needs a timezone (e.g. Z)")
            if data.expires_at <= now:
                raise ValidationFailed.field("expires_at", "must be in the future")
        secret = PREFIX + secrets.token_urlsafe(32)
        token = ApiToken(
            token_hash=secret_digest(secret),
            prefix=secret[: len(PREFIX) + 4],
            name=data.name,
            user_id=ctx.user.id,
            tenant_id=ctx.tenant.id,
            permissions=sorted(data.permissions),
            table_access=data.table_access,
            session_epoch=ctx.user.session_epoch,
            expires_at=data.expires_at,
        )
        await token.insert()
        # the slot is taken first, then counted: concurrent creations never pass the limit
        count = await system_collection(ApiToken).count_documents(
            {"user_id": ctx.user.id}, limit=MAX_TOKENS_PER_USER + 1
        )
        if count > MAX_TOKENS_PER_USER:
            await token.delete()
            raise Conflict(f"A user has at most {MAX_TOKENS_PER_USER} API tokens; revoke some")
        given = {
            "permissions": token.permissions,
            "table_access": token.table_access,
            "expires_at": token.expires_at.isoformat() if token.expires_at else None,
        }
        await self.audit.record(ctx, "token.created", _target(token), given)  # never the secret
        return token, secret

    async def list_tokens(self, ctx: TenantContext) -> list[ApiToken]:
        return await ApiToken.find(ApiToken.user_id == ctx.user.id).sort("+_id").to_list()

    async def get(self, ctx: TenantContext, token_id: str) -> ApiToken:
        token = await ApiToken.get(object_id(token_id, "Token"))
        if token is None or token.user_id != ctx.user.id:
            raise NotFound("Token not found")
        return token

    async def revoke(self, ctx: TenantContext, token_id: str) -> None:
        """A signed-in session revokes any of its user's tokens; a token revokes only itself
        (a leaked token cannot end the integrations that replace it)."""
        token = await self.get(ctx, token_id)
        if ctx.api_token_id != str(token.id):
            check_token_scope(ctx, "revoke another API token")
        await token.delete()
        await self.audit.record(ctx, "token.revoked", _target(token))

    async def authenticate(self, secret: str) -> tuple[TenantContext, str, datetime]:
        """The context of a request made with an API token; 401 for anything not current."""
        token = await ApiToken.find_one(ApiToken.token_hash == secret_digest(secret))
        if token is None:
            raise Unauthorized("The API token is not valid")
        now = datetime.now(UTC)
        if token.expires_at is not None and as_utc(token.expires_at) <= now:
            raise Unauthorized("The API token has expired")
        user = await User.get(token.user_id)
        if user is None or user.tenant_id != token.tenant_id:
            raise Unauthorized("The API token is not valid")
        if not user.is_active:
            raise Unauthorized("This user is deactivated")
        if token.session_epoch != user.session_epoch:
            raise Unauthorized("The API token ended with its user's sessions; make a new one")
        tenant = await Tenant.get(user.tenant_id)
        if tenant is None or not tenant.is_active:
            raise Unauthorized("The company is not active")
        context = await build_context(self.storage, user, tenant)
        context.permissions = context.permissions & frozenset(token.permissions)
        context.api_token_id = str(token.id)
        context.table_level_cap = int(LEVELS[token.table_access])
        await self._touch(token, now)
        expires = as_utc(token.expires_at) if token.expires_at else now + timedelta(days=1)
        return context, f"pat:{token.id}", expires

    async def _touch(self, token: ApiToken, now: datetime) -> None:
        """`last_used_at`, written at most once a minute per token (one conditional update)."""
        last = token.last_used_at
        if last is not None and now - as_utc(last) < LAST_USED_PRECISION:
            return
        query: dict[str, Any] = {"_id": token.id, "last_used_at": last}
        await system_collection(ApiToken).update_one(query, {"$set": {"last_used_at": now}})


def _target(token: ApiToken) -> dict[str, Any]:
    return {"type": "token", "id": str(token.id), "name": token.name, "prefix": token.prefix}
