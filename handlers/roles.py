"""`/api/permissions` and `/api/roles` (docs/api.md "Roles, users, shares, aliases")."""

from __future__ import annotations

from bson import ObjectId

from handlers.routing import Authenticated, Call, Permission, RouteTable
from models.access import (
    PERMISSIONS,
    PermissionList,
    PermissionOut,
    RoleIn,
    RoleList,
    RoleOut,
    RolePatch,
)

routes = RouteTable("roles")
ROLE = "/api/roles/{role_id}"
MANAGE = Permission(code="roles.manage")


@routes.get(
    "/api/permissions",
    access=Authenticated(),
    summary="The permission catalogue",
    response=PermissionList,
    tag="permissions",
)
async def list_permissions(call: Call) -> PermissionList:
    return PermissionList(
        items=[PermissionOut(code=c, description=d) for c, d in sorted(PERMISSIONS.items())]
    )


@routes.get("/api/roles", access=Authenticated(), summary="The company's roles", response=RoleList)
async def list_roles(call: Call) -> RoleList:
    roles = await call.services.roles.list_roles(call.ctx)
    return RoleList(items=[RoleOut.from_record(role) for role in roles])


@routes.post(
    "/api/roles", access=MANAGE, summary="Create a role", body=RoleIn, response=RoleOut, status=201
)
async def create_role(call: Call, body: RoleIn) -> RoleOut:
    """Unknown permission codes are a 400; granting a permission the caller does not hold is
    a 403."""
    return RoleOut.from_record(await call.services.roles.create_role(call.ctx, body))


@routes.get(ROLE, access=Authenticated(), summary="A role", response=RoleOut, errors=(404,))
async def get_role(call: Call, role_id: ObjectId) -> RoleOut:
    return RoleOut.from_record(await call.services.roles.get_role(call.ctx, role_id))


@routes.patch(
    ROLE,
    access=MANAGE,
    summary="Rename a role or change its permissions",
    body=RolePatch,
    response=RoleOut,
    errors=(404, 409),
)
async def update_role(call: Call, body: RolePatch, role_id: ObjectId) -> RoleOut:
    """The owner role cannot change (409)."""
    return RoleOut.from_record(await call.services.roles.update_role(call.ctx, role_id, body))


@routes.delete(ROLE, access=MANAGE, summary="Delete a custom role", status=204, errors=(404, 409))
async def delete_role(call: Call, role_id: ObjectId) -> None:
    """Built-in roles and roles that users still hold answer 409."""
    await call.services.roles.delete_role(call.ctx, role_id)
