"""`/api/users`: the company's users (SPEC §9)."""

from __future__ import annotations

from crm_core import users
from handlers.routing import Call, Permission, RouteTable
from models.access import UserCreateIn, UserList, UserPatch
from models.accounts import TemporaryPasswordOut, UserOut, user_out

routes = RouteTable("users")
USER = "/api/users/{user_id}"
READ, MANAGE = Permission(code="users.read"), Permission(code="users.manage")


@routes.get("/api/users", access=READ, summary="The company's users", response=UserList)
async def list_users(call: Call) -> UserList:
    return UserList(items=[user_out(u) for u in await users.list_users(call.ctx)])


@routes.post(
    "/api/users",
    access=MANAGE,
    summary="Create a user",
    body=UserCreateIn,
    response=UserOut,
    status=201,
    errors=(409,),
)
async def create_user(call: Call) -> UserOut:
    """`role_ids` must be roles of this company (400 names the bad one); the owner role is
    granted only by an owner (403); the email must be new on the platform (409)."""
    body: UserCreateIn = call.body
    user = await users.create_user(
        call.ctx,
        body.email,
        body.full_name,
        body.password,
        body.role_ids,
        call.services.settings.bcrypt_rounds,
    )
    return user_out(user)


@routes.get(USER, access=READ, summary="A user", response=UserOut, errors=(404,))
async def get_user(call: Call) -> UserOut:
    return user_out(await users.get_user(call.ctx, call.param("user_id")))


@routes.patch(
    USER,
    access=MANAGE,
    summary="Change a user's name, roles or activity",
    body=UserPatch,
    response=UserOut,
    errors=(404, 409),
)
async def update_user(call: Call) -> UserOut:
    """Deactivating (`is_active: false`) ends the user's tokens at their next request. Only
    owners manage owners; the company keeps at least one active owner (409)."""
    body: UserPatch = call.body
    user = await users.update_user(
        call.ctx, call.param("user_id"), body.full_name, body.role_ids, body.is_active
    )
    return user_out(user)


@routes.delete(
    USER, access=MANAGE, summary="Deactivate a user", response=UserOut, errors=(404, 409)
)
async def deactivate_user(call: Call) -> UserOut:
    """Users are deactivated, not erased: their rows keep their author."""
    user = await users.update_user(call.ctx, call.param("user_id"), None, None, False)
    return user_out(user)


@routes.post(
    USER + "/password",
    access=MANAGE,
    summary="Set a temporary password",
    response=TemporaryPasswordOut,
    errors=(404, 409),
)
async def set_temporary_password(call: Call) -> TemporaryPasswordOut:
    """Generates a temporary password, answered once. Every session of the user ends; after
    signing in with it, the user reaches only `POST /api/auth/password`, `GET /api/auth/me` and
    logout (403 `password_change_required` elsewhere) until they choose a new one. Only owners
    reset an owner; nobody resets a user who holds permissions the caller lacks (403); one's own
    password changes through `POST /api/auth/password` (409)."""
    temporary = await call.services.auth.set_temporary_password(call.ctx, call.param("user_id"))
    return TemporaryPasswordOut(temporary_password=temporary)
