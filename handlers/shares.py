"""`/api/shares`: share one table with a user or a role (docs/api.md "Roles, users, shares,
aliases")."""

from __future__ import annotations

from bson import ObjectId

from handlers.routing import Authenticated, Call, RouteTable
from models.access import ShareIn, ShareList, ShareOut

routes = RouteTable("shares")


@routes.get(
    "/api/shares", access=Authenticated(), summary="Shares granted and received", response=ShareList
)
async def list_shares(call: Call) -> ShareList:
    granted, received = await call.services.shares.list_shares(call.ctx)
    return ShareList(
        granted=[ShareOut.from_record(s) for s in granted],
        received=[ShareOut.from_record(s) for s in received],
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
async def create_share(call: Call, body: ShareIn) -> ShareOut:
    """`read` lists and reads rows, `write` also creates, edits and deletes them, `manage` also
    changes the columns. Needs manage access to the table (or `shares.manage`); the user or
    role must belong to the same company (400). Sharing again changes the level."""
    return ShareOut.from_record(await call.services.shares.grant(call.ctx, body))


@routes.delete(
    "/api/shares/{share_id}",
    access=Authenticated(),
    summary="Revoke a share",
    status=204,
    errors=(403, 404),
)
async def delete_share(call: Call, share_id: ObjectId) -> None:
    """Takes effect at the next request of the user or role holders. The granter, holders of
    `shares.manage` and managers of the table revoke; the granter's API token needs
    `table_access: manage` or `shares.manage` (403)."""
    await call.services.shares.revoke(call.ctx, share_id)
