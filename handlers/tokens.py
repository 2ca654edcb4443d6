"""`/api/tokens`: the caller's API tokens (docs/integrations.md)."""

from __future__ import annotations

from bson import ObjectId

from crm_core.accounts.tokens import ApiTokenService
from handlers.routing import Authenticated, Call, RouteTable
from models.tokens import (
    ApiTokenCreated,
    ApiTokenIn,
    ApiTokenList,
    ApiTokenOut,
    api_token_created,
    api_token_out,
)

routes = RouteTable("tokens")
TOKEN = "/api/tokens/{token_id}"
OWN = Authenticated()  # every user manages their own tokens, within their own access


def _service(call: Call) -> ApiTokenService:
    return call.services.tokens


@routes.get("/api/tokens", access=OWN, summary="The caller's API tokens", response=ApiTokenList)
async def list_tokens(call: Call) -> ApiTokenList:
    """Never the secrets: only their first characters (`prefix`)."""
    return ApiTokenList(
        items=[api_token_out(t) for t in await _service(call).list_tokens(call.ctx)]
    )


@routes.post(
    "/api/tokens",
    access=OWN,
    summary="Make an API token",
    body=ApiTokenIn,
    response=ApiTokenCreated,
    status=201,
    errors=(403, 409),
)
async def create_token(call: Call, body: ApiTokenIn) -> ApiTokenCreated:
    """The answer carries the `token`, shown only here. `permissions` must be codes the caller
    holds (403 names the others); a request made with the token never exceeds what its user
    holds at that moment. Only a signed-in session makes tokens (403 with a token); at most
    100 per user (409)."""
    token, secret = await _service(call).create(call.ctx, body)
    return api_token_created(token, secret)


@routes.get(
    TOKEN, access=OWN, summary="One of the caller's API tokens", response=ApiTokenOut, errors=(404,)
)
async def get_token(call: Call, token_id: ObjectId) -> ApiTokenOut:
    return api_token_out(await _service(call).get(call.ctx, str(token_id)))


@routes.delete(TOKEN, access=OWN, summary="Revoke an API token", status=204, errors=(403, 404))
async def revoke_token(call: Call, token_id: ObjectId) -> None:
    """The token stops working at once. With an API token, only that token itself (403 for
    another)."""
    await _service(call).revoke(call.ctx, str(token_id))
