"""`/api/users`: the company's users (SPEC §9)."""

from __future__ import annotations

from crm_core import users
from handlers.routing import Call, Permission, RouteTable
from models.access import UserCreateIn, UserList, UserOutRef, UserPatch
from models.accounts import User

routes = RouteTable("users")
USER = "/api/users/{user_id}"
READ, MANAGE = Permission(code="users.read"), Permission(code="users.manage")


def user_ref(user: User) -> UserOutRef:
    return UserOutRef(
        id=str(user.id),
        email=user.email,
        full_name=user.full_name,
        role_ids=user.role_ids,
        is_active=user.is_active,
        created_at=user.created_at,
    )


@routes.get("/api/users", access=READ, summary="The company's users", response=UserList)
async def list_users(call: Call) -> UserList:
    return UserList(items=[user_ref(u) for u in await users.list_users(call.ctx)])


@routes.post(
    "/api/users",
    access=MANAGE,
    summary="Create a user",
    body=UserCreateIn,
    response=UserOutRef,
    status=201,
    errors=(409,),
)
async def create_user(call: Call) -> UserOutRef:
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
    return user_ref(user)


@routes.get(USER, access=READ, summary="A user", response=UserOutRef, errors=(404,))
async def get_user(call: Call) -> UserOutRef:
    return user_ref(await users.get_user(call.ctx, call.param("user_id")))


@routes.patch(
    USER,
    access=MANAGE,
    summary="Change a user's name, roles or activity",
    body=UserPatch,
    response=UserOutRef,
    errors=(404, 409),
)
async def update_user(call: Call) -> UserOutRef:
    """Deactivating (`is_active: false`) ends the user's tokens at their next request. Only
    owners manage owners; the company keeps at least one active owner (409)."""
    body: UserPatch = call.body
    user = await users.update_user(
        call.ctx, call.param("user_id"), body.full_name, body.role_ids, body.is_active
    )
    return user_ref(user)


@routes.delete(
    USER, access=MANAGE, summary="Deactivate a user", response=UserOutRef, errors=(404, 409)
)
async def deactivate_user(call: Call) -> UserOutRef:
    """Users are deactivated, not erased: their rows keep their author."""
    user = await users.update_user(call.ctx, call.param("user_id"), None, None, False)
    return user_ref(user)
