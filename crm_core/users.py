"""The users of one tenant (SPEC §9): admins list, create, update and deactivate them.

Rules: the owner role is granted and the owner's account is managed only by holders of
`tenant.manage`; the last active owner keeps the role and stays active; nobody deactivates
themselves. A deactivated user's tokens stop working at their next request.
"""

from __future__ import annotations

from datetime import UTC, datetime

from crm_core.context import TenantContext
from crm_core.errors import Conflict, Forbidden, NotFound
from crm_core.ids import object_id
from crm_core.roles import check_role_ids, owner_role_id
from crm_core.security import hash_password
from crm_core.storage import DuplicateKeyError
from models.accounts import RefreshToken, User


async def list_users(ctx: TenantContext) -> list[User]:
    return await User.find(User.tenant_id == ctx.tenant.id).sort("+email").to_list()


async def get_user(ctx: TenantContext, user_id: str) -> User:
    user = await User.get(object_id(user_id, "User"))
    if user is None or user.tenant_id != ctx.tenant.id:
        raise NotFound("User not found")
    return user


def _guard_owner_role(ctx: TenantContext, owner_id: str, role_ids: list[str]) -> None:
    if owner_id in role_ids and not ctx.has("tenant.manage"):
        raise Forbidden("Only an owner can grant the owner role")


async def create_user(
    ctx: TenantContext,
    email: str,
    full_name: str,
    password: str,
    role_ids: list[str],
    bcrypt_rounds: int,
) -> User:
    role_ids = await check_role_ids(ctx, role_ids)
    _guard_owner_role(ctx, await owner_role_id(ctx), role_ids)
    if await User.find_one(User.email == email):
        raise _email_taken()
    user = User(
        tenant_id=ctx.tenant.id,
        email=email,
        full_name=full_name,
        password_hash=await hash_password(password, bcrypt_rounds),
        role_ids=role_ids,
    )
    try:
        await user.insert()
    except DuplicateKeyError:
        raise _email_taken() from None
    return user


async def update_user(
    ctx: TenantContext,
    user_id: str,
    full_name: str | None,
    role_ids: list[str] | None,
    is_active: bool | None,
) -> User:
    user = await get_user(ctx, user_id)
    owner_id = await owner_role_id(ctx)
    if owner_id in user.role_ids and not ctx.has("tenant.manage"):
        raise Forbidden("Only an owner can change an owner's account")
    new_roles = user.role_ids if role_ids is None else await check_role_ids(ctx, role_ids)
    if role_ids is not None:
        added = set(new_roles) - set(user.role_ids)
        _guard_owner_role(ctx, owner_id, list(added))
    active = user.is_active if is_active is None else is_active
    if is_active is False and str(user.id) == ctx.user_id:
        raise Conflict("You cannot deactivate yourself")
    stays_owner = owner_id in new_roles and active
    if owner_id in user.role_ids and user.is_active and not stays_owner:
        others = await User.find(
            User.tenant_id == ctx.tenant.id,
            User.role_ids == owner_id,  # type: ignore[comparison-overlap]  # array holds it
            User.is_active == True,  # noqa: E712 - a query, not a test
        ).count()
        if others <= 1:
            raise Conflict("The company must keep at least one active owner")
    if full_name is not None:
        user.full_name = full_name
    user.role_ids = new_roles
    user.is_active = active
    user.updated_at = datetime.now(UTC)
    await user.save()
    if not active:
        await RefreshToken.get_motor_collection().update_many(
            {"user_id": user.id, "revoked_at": None}, {"$set": {"revoked_at": datetime.now(UTC)}}
        )
    return user


def _email_taken() -> Conflict:
    return Conflict(
        "A user with this email already exists",
        [{"field": "email", "message": "already registered"}],
    )
