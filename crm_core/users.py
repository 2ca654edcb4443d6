"""The users of one tenant (SPEC §9): admins list, create, update and deactivate them.

Rules: the owner role is granted and the owner's account is managed only by holders of
`tenant.manage`; the last active owner keeps the role and stays active; nobody deactivates
themselves. A deactivated user's tokens stop working at their next request and stay dead
after a reactivation (crm_core/sessions.py). Nobody manages a user who holds permissions the
manager lacks (crm_core/grants.py).
"""

from __future__ import annotations

from datetime import UTC, datetime

from crm_core.context import TenantContext
from crm_core.errors import Conflict, Forbidden, NotFound
from crm_core.grants import check_grant
from crm_core.ids import object_id
from crm_core.roles import check_role_ids, owner_role_id
from crm_core.security import hash_password
from crm_core.sessions import end_all_sessions
from crm_core.storage import DuplicateKeyError
from crm_core.tenancy import resolve_permissions
from models.accounts import User


async def list_users(ctx: TenantContext) -> list[User]:
    return await User.find(User.tenant_id == ctx.tenant.id).sort("+email").to_list()


async def get_user(ctx: TenantContext, user_id: str) -> User:
    user = await User.get(object_id(user_id, "User"))
    if user is None or user.tenant_id != ctx.tenant.id:
        raise NotFound("User not found")
    return user


async def check_may_manage_user(ctx: TenantContext, user: User) -> None:
    """Only owners manage an owner's account; nobody manages a user holding permissions the
    caller lacks (resetting their password would hand those permissions over)."""
    if await owner_role_id(ctx) in user.role_ids and not ctx.has("tenant.manage"):
        raise Forbidden("Only an owner can change an owner's account")
    permissions = await resolve_permissions(ctx.db, user.role_ids)
    check_grant(ctx, permissions, what="manage a user with")


async def check_may_give_roles(ctx: TenantContext, role_ids: list[str]) -> None:
    """The owner role only from an owner; any role only with permissions the caller holds."""
    if role_ids and await owner_role_id(ctx) in role_ids and not ctx.has("tenant.manage"):
        raise Forbidden("Only an owner can grant the owner role")
    check_grant(ctx, await resolve_permissions(ctx.db, role_ids))


async def create_user(
    ctx: TenantContext,
    email: str,
    full_name: str,
    password: str,
    role_ids: list[str],
    bcrypt_rounds: int,
) -> User:
    role_ids = await check_role_ids(ctx, role_ids)
    await check_may_give_roles(ctx, role_ids)
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
    await check_may_manage_user(ctx, user)
    new_roles = user.role_ids if role_ids is None else await check_role_ids(ctx, role_ids)
    if role_ids is not None:
        await check_may_give_roles(ctx, [r for r in new_roles if r not in user.role_ids])
    active = user.is_active if is_active is None else is_active
    if is_active is False and str(user.id) == ctx.user_id:
        raise Conflict("You cannot deactivate yourself")
    stays_owner = owner_id in new_roles and active
    loses_owner = owner_id in user.role_ids and user.is_active and not stays_owner
    if loses_owner and await _active_owners(ctx, owner_id) <= 1:
        raise _last_owner()
    changes: dict[str, object] = {"role_ids": new_roles, "is_active": active}
    if full_name is not None:
        changes["full_name"] = full_name
    # $set only what changes: a whole-document save could write back stale token epochs
    if not active:
        stored = await end_all_sessions(user.id, changes)  # type: ignore[arg-type]
    else:
        stored = await User.get_motor_collection().find_one_and_update(
            {"_id": user.id},
            {"$set": {**changes, "updated_at": datetime.now(UTC)}},
            return_document=True,
        )
    if stored is None:
        raise NotFound("User not found")
    if loses_owner and await _active_owners(ctx, owner_id) == 0:
        # two owners stepping down at once both passed the check above: undo ours
        await User.get_motor_collection().update_one(
            {"_id": user.id}, {"$set": {"role_ids": user.role_ids, "is_active": True}}
        )
        raise _last_owner()
    updated: User = User.model_validate(stored)
    return updated


async def _active_owners(ctx: TenantContext, owner_id: str) -> int:
    return await User.find(
        User.tenant_id == ctx.tenant.id,
        User.role_ids == owner_id,  # type: ignore[comparison-overlap]  # array holds it
        User.is_active == True,  # noqa: E712 - a query, not a test
    ).count()


def _last_owner() -> Conflict:
    return Conflict("The company must keep at least one active owner")


def _email_taken() -> Conflict:
    return Conflict(
        "A user with this email already exists",
        [{"field": "email", "message": "already registered"}],
    )
