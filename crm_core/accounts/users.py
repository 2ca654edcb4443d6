"""The users of one tenant (docs/api.md "Roles, users, shares, aliases"): admins list, create,
update and deactivate them.

Rules: the owner role is granted and the owner's account is managed only by holders of
`tenant.manage`; the last active owner keeps the role and stays active; nobody deactivates
themselves. A deactivated user's tokens stop working at their next request and stay dead
after a reactivation (crm_core/accounts/sessions.py). Nobody manages a user who holds permissions
the manager lacks (crm_core/accounts/grants.py).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from bson import ObjectId

from crm_core.accounts.audit import AuditSink, diff, user_target
from crm_core.accounts.context import TenantContext
from crm_core.accounts.grants import check_grant
from crm_core.accounts.roles import RoleService
from crm_core.accounts.security import hash_password, new_temporary_password
from crm_core.accounts.sessions import end_all_sessions
from crm_core.platform.cursors import PageCursors, PageScope, after, next_cursor
from crm_core.platform.errors import Conflict, Forbidden, NotFound
from crm_core.platform.storage import DuplicateKeyError, system_collection
from models.access import UserCreateIn, UserPatch
from models.accounts import User

log = logging.getLogger(__name__)


class UserService:
    def __init__(
        self,
        roles: RoleService,
        bcrypt_rounds: int,
        audit: AuditSink,
        cursors: PageCursors | None = None,
    ) -> None:
        self.roles = roles
        self.audit = audit
        self.bcrypt_rounds = bcrypt_rounds
        self.cursors = cursors or PageCursors.ephemeral()

    async def list_users(
        self, ctx: TenantContext, limit: int = 1000, cursor: str | None = None
    ) -> tuple[list[User], str | None]:
        """By email (unique: the order is total), `limit` at a time after `cursor`, and the
        next page's cursor (crm_core/platform/cursors.py); served by `tenant_email`."""
        scope = PageScope("users", (("email", 1),))
        query: dict[str, object] = {"tenant_id": ctx.tenant.id}
        if cursor is not None:
            keys = self.cursors.read(scope, ctx.tenant_id, ctx.user_id, cursor)
            query.update(after(scope.sort, keys))
        users = await User.find(query).sort("+email").limit(limit + 1).to_list()
        docs = [{"email": u.email} for u in users]
        following = next_cursor(self.cursors, scope, ctx.tenant_id, ctx.user_id, docs, limit)
        return users[:limit], following

    async def get_user(self, ctx: TenantContext, user_id: ObjectId) -> User:
        user = await User.get(user_id)
        if user is None or user.tenant_id != ctx.tenant.id:
            raise NotFound("User not found")
        return user

    async def check_may_manage_user(self, ctx: TenantContext, user: User) -> None:
        """Only owners manage an owner's account; nobody manages a user holding permissions the
        caller lacks (resetting their password would hand those permissions over)."""
        if await self.roles.owner_role_id(ctx) in user.role_ids and not ctx.has("tenant.manage"):
            raise Forbidden("Only an owner can change an owner's account")
        permissions = await self.roles.permissions_of(ctx.db, user.role_ids)
        check_grant(ctx, permissions, what="manage a user with")

    async def check_may_give_roles(self, ctx: TenantContext, role_ids: list[str]) -> None:
        """The owner role only from an owner; any role only with permissions the caller holds."""
        owner = role_ids and await self.roles.owner_role_id(ctx) in role_ids
        if owner and not ctx.has("tenant.manage"):
            raise Forbidden("Only an owner can grant the owner role")
        check_grant(ctx, await self.roles.permissions_of(ctx.db, role_ids))

    async def create_user(self, ctx: TenantContext, data: UserCreateIn) -> User:
        """`role_ids` must be roles of this company (400 names the bad one); the owner role
        only from an owner (403); the email must be new on the platform (409)."""
        role_ids = await self.roles.check_role_ids(ctx, data.role_ids)
        await self.check_may_give_roles(ctx, role_ids)
        if await User.find_one(User.email == data.email):
            raise _email_taken()
        user = User(
            tenant_id=ctx.tenant.id,
            email=data.email,
            full_name=data.full_name,
            password_hash=await hash_password(data.password, self.bcrypt_rounds),
            role_ids=role_ids,
        )
        try:
            await user.insert()
        except DuplicateKeyError:
            raise _email_taken() from None
        created = {"full_name": user.full_name, "role_ids": role_ids}
        await self.audit.record(ctx, "user.created", user_target(user.id, user.email), created)
        return user

    async def update_user(self, ctx: TenantContext, user_id: ObjectId, patch: UserPatch) -> User:
        """Name, roles and activity; deactivating ends every session of the user. The company
        keeps one active owner, also against two owners stepping down at once (409)."""
        user = await self.get_user(ctx, user_id)
        owner_id = await self.roles.owner_role_id(ctx)
        await self.check_may_manage_user(ctx, user)
        new_roles = (
            user.role_ids
            if patch.role_ids is None
            else await self.roles.check_role_ids(ctx, patch.role_ids)
        )
        if patch.role_ids is not None:
            await self.check_may_give_roles(ctx, [r for r in new_roles if r not in user.role_ids])
        active = user.is_active if patch.is_active is None else patch.is_active
        if patch.is_active is False and str(user.id) == ctx.user_id:
            raise Conflict("You cannot deactivate yourself")
        stays_owner = owner_id in new_roles and active
        loses_owner = owner_id in user.role_ids and user.is_active and not stays_owner
        if loses_owner and await self._active_owners(ctx, owner_id) <= 1:
            raise _last_owner()
        changes: dict[str, object] = {"role_ids": new_roles, "is_active": active}
        if patch.full_name is not None:
            changes["full_name"] = patch.full_name
        # $set only what changes: a whole-document save could write back stale token epochs
        if not active:
            stored = await end_all_sessions(user.id, changes)  # type: ignore[arg-type]
        else:
            stored = await system_collection(User).find_one_and_update(
                {"_id": user.id},
                {"$set": {**changes, "updated_at": datetime.now(UTC)}},
                return_document=True,
            )
        if stored is None:
            raise NotFound("User not found")
        if loses_owner and await self._active_owners(ctx, owner_id) == 0:
            # two owners stepping down at once both passed the check above: undo ours
            await system_collection(User).update_one(
                {"_id": user.id}, {"$set": {"role_ids": user.role_ids, "is_active": True}}
            )
            raise _last_owner()
        updated: User = User.model_validate(stored)
        await self._audit_change(ctx, user, updated)
        return updated

    async def _audit_change(self, ctx: TenantContext, before: User, after: User) -> None:
        """`user.changed`, or `user.deactivated`/`user.reactivated` when the activity changed;
        nothing for a no-op."""
        fields = ("full_name", "role_ids", "is_active")
        changes = diff(
            {f: getattr(before, f) for f in fields}, {f: getattr(after, f) for f in fields}
        )
        if not changes:
            return
        action = "user.changed"
        if "is_active" in changes:
            action = "user.reactivated" if after.is_active else "user.deactivated"
        await self.audit.record(ctx, action, user_target(after.id, after.email), changes)

    async def deactivate_user(self, ctx: TenantContext, user_id: ObjectId) -> User:
        """Users are deactivated, not erased: their rows keep their author."""
        return await self.update_user(ctx, user_id, UserPatch(is_active=False))

    async def set_temporary_password(self, ctx: TenantContext, user_id: ObjectId) -> str:
        """An admin resets another user's password to a generated one, returned once. The user
        must change it at the next sign-in; every session of theirs ends now."""
        user = await self.get_user(ctx, user_id)
        if str(user.id) == ctx.user_id:
            raise Conflict("Change your own password with POST /api/auth/password")
        await self.check_may_manage_user(ctx, user)
        temporary = new_temporary_password()
        password_hash = await hash_password(temporary, self.bcrypt_rounds)
        stored = await end_all_sessions(
            user.id,  # type: ignore[arg-type]
            {"password_hash": password_hash, "must_change_password": True},
        )
        if stored is None:
            raise Conflict("The user changed meanwhile; try again")
        log.info("user %s set a temporary password for user %s", ctx.user_id, user.id)
        await self.audit.record(ctx, "user.password_reset", user_target(user.id, user.email))
        return temporary

    @staticmethod
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
