"""`/api/auth`: register, login, refresh, logout, me (docs/api.md "Auth")."""

from __future__ import annotations

from handlers.routing import Authenticated, Call, Public, RouteTable
from models.accounts import (
    LoginIn,
    LogoutIn,
    MeOut,
    PasswordChangeIn,
    RefreshIn,
    RegisterIn,
    TokenPair,
)

routes = RouteTable("auth")


@routes.post(
    "/api/auth/register",
    access=Public(),
    summary="Register a company and its owner",
    body=RegisterIn,
    response=TokenPair,
    status=201,
    errors=(403, 409),
)
async def register(call: Call, body: RegisterIn) -> TokenPair:
    """Creates the tenant, its database and its owner user, and signs the owner in.
    403 when registration is switched off by `REGISTRATION_ENABLED=false`."""
    return await call.services.auth.register(body)


@routes.post(
    "/api/auth/login",
    access=Public(),
    summary="Sign in with email and password",
    body=LoginIn,
    response=TokenPair,
    errors=(401, 429),
)
async def login(call: Call, body: LoginIn) -> TokenPair:
    """Unknown email and wrong password answer the same 401. Repeated failures for one email
    from one client address, from one address, or (slowed, never locked) for one email from
    addresses it has not signed in from answer 429 with `Retry-After`."""
    return await call.services.auth.login(body, call.request.remote or "unknown")


@routes.post(
    "/api/auth/refresh",
    access=Public(),
    summary="Rotate a refresh token",
    body=RefreshIn,
    response=TokenPair,
    errors=(401,),
)
async def refresh(call: Call, body: RefreshIn) -> TokenPair:
    """Each refresh token works once; presenting a used one again revokes its whole family."""
    return await call.services.auth.refresh(body)


@routes.post(
    "/api/auth/logout",
    access=Authenticated(),
    summary="Sign out",
    body=LogoutIn,
    status=204,
    errors=(403,),
    allow_pending_password=True,
)
async def logout(call: Call, body: LogoutIn) -> None:
    """Revokes the access token used for this call and, when given, the refresh token's family
    (then the user's other access tokens end too; their refresh tokens still work). A signed-in
    session only: an API token answers 403 (revoke the token instead)."""
    await call.services.auth.logout(call.ctx, body)


@routes.post(
    "/api/auth/password",
    access=Authenticated(),
    summary="Change one's own password",
    body=PasswordChangeIn,
    response=TokenPair,
    errors=(403, 409, 429),
    allow_pending_password=True,
)
async def change_password(call: Call, body: PasswordChangeIn) -> TokenPair:
    """Needs the current password (400 naming `current_password` when wrong; repeated wrong
    guesses end in 429, counted apart from sign-ins). Every session of the user ends, this one
    included: the answer is a fresh token pair for the caller. Also clears a temporary
    password. A signed-in session only: an API token answers 403."""
    return await call.services.auth.change_password(call.ctx, body)


@routes.get(
    "/api/auth/me",
    access=Authenticated(),
    summary="The signed-in user",
    response=MeOut,
    allow_pending_password=True,
)
async def me(call: Call) -> MeOut:
    return MeOut.build(call.ctx.user, call.ctx.tenant, call.ctx.permissions)
