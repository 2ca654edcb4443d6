"""`/api/shares`: share one table with a user or a role (SPEC §9)."""

from __future__ import annotations

from typing import Any

from crm_core import shares
from handlers.routing import Authenticated, Call, RouteTable
from models.access import ShareIn, ShareList, ShareOut

routes = RouteTable("shares")


def share_out(share: dict[str, Any]) -> ShareOut:
    return ShareOut(
        id=str(share["_id"]),
        table=share["table"],
        user_id=share.get("user_id"),
        role_id=share.get("role_id"),
        access=share["access"],
        granted_by=share["granted_by"],
        created_at=share["created_at"],
    )


@routes.get(
    "/api/shares", access=Authenticated(), summary="Shares granted and received", response=ShareList
)
async def list_shares(call: Call) -> ShareList:
    granted, received = await shares.list_shares(call.ctx)
    return ShareList(
        granted=[share_out(s) for s in granted], received=[share_out(s) for s in received]
    )


@routes.post(
    "/api/shares",
    access=Authenticated(),
    summary="Share a table",
    body=ShareIn,
    response=ShareOut,
    status=201,
    errors=(403, 404),
)
async def create_share(call: Call) -> ShareOut:
    """`read` lists and reads rows, `write` also creates, edits and deletes them, `manage` also
    changes the columns. Needs manage access to the table (or `shares.manage`); the user or
    role must belong to the same company (400). Sharing again changes the level."""
    body: ShareIn = call.body
    share = await shares.grant(
        call.ctx, call.services.column_types, body.table, body.user_id, body.role_id, body.access
    )
    return share_out(share)


@routes.delete(
    "/api/shares/{share_id}",
    access=Authenticated(),
    summary="Revoke a share",
    status=204,
    errors=(404,),
)
async def delete_share(call: Call) -> None:
    """Takes effect at the next request of the user or role holders."""
    await shares.revoke(call.ctx, call.services.column_types, call.param("share_id"))
