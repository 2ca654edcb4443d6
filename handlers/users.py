"""`/api/users`: the company's users (docs/api.md "Roles, users, shares, aliases")."""

from __future__ import annotations

from bson import ObjectId

from handlers.routing import Call, Permission, RouteTable
from models.access import UserCreateIn, UserList, UserListQuery, UserPatch
from models.accounts import TemporaryPasswordOut, UserOut, user_out

routes = RouteTable("users")
USER = "/api/users/{user_id}"
READ, MANAGE = Permission(code="users.read"), Permission(code="users.manage")


@routes.get(
    "/api/users",
    access=READ,
    summary="The company's users",
    query=UserListQuery,
    response=UserList,
)
async def list_users(call: Call, query: UserListQuery) -> UserList:
    """By email, `limit` at a time (1000); the next page by `cursor` (`next_cursor`)."""
    users, following = await call.services.users.list_users(call.ctx, query.limit, query.cursor)
    return UserList(items=[user_out(u) for u in users], next_cursor=following)


@routes.post(
    "/api/users",
    access=MANAGE,
    summary="Create a user",
    body=UserCreateIn,
    response=UserOut,
    status=201,
    errors=(409,),
)
async def create_user(call: Call, body: UserCreateIn) -> UserOut:
    """`role_ids` must be roles of this company (400 names the bad one); the owner role is
    granted only by an owner (403); the email must be new on the platform (409)."""
    return user_out(await call.services.users.create_user(call.ctx, body))


@routes.get(USER, access=READ, summary="A user", response=UserOut, errors=(404,))
async def get_user(call: Call, user_id: ObjectId) -> UserOut:
    return user_out(await call.services.users.get_user(call.ctx, user_id))


@routes.patch(
    USER,
    access=MANAGE,
    summary="Change a user's name, roles or activity",
    body=UserPatch,
    response=UserOut,
    errors=(404, 409),
)
async def update_user(call: Call, body: UserPatch, user_id: ObjectId) -> UserOut:
    """Deactivating (`is_active: false`) ends the user's tokens at their next request. Only
    owners manage owners; the company keeps at least one active owner (409)."""
    return user_out(await call.services.users.update_user(call.ctx, user_id, body))


@routes.delete(
    USER, access=MANAGE, summary="Deactivate a user", response=UserOut, errors=(404, 409)
)
async def deactivate_user(call: Call, user_id: ObjectId) -> UserOut:
    """Users are deactivated, not erased: their rows keep their author."""
    return user_out(await call.services.users.deactivate_user(call.ctx, user_id))


@routes.post(
    USER + "/password",
    access=MANAGE,
    summary="Set a temporary password",
    response=TemporaryPasswordOut,
    errors=(404, 409),
)
async def set_temporary_password(call: Call, user_id: ObjectId) -> TemporaryPasswordOut:
    """Generates a temporary password, answered once. Every session of the user ends; after
    signing in with it, the user reaches only `POST /api/auth/password`, `GET /api/auth/me` and
    logout (403 `password_change_required` elsewhere) until they choose a new one. Only owners
    reset an owner; nobody resets a user who holds permissions the caller lacks (403); one's own
    password changes through `POST /api/auth/password` (409)."""
    temporary = await call.services.users.set_temporary_password(call.ctx, user_id)
    return TemporaryPasswordOut(temporary_password=temporary)
