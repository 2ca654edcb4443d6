"""The API limits (crm_core/platform/apilimits.py, docs/api.md "Rate limits") on the HTTP side:
the routing takes the request's slot right after authentication (`reserve`), before any other
work; the RateLimit headers go on whatever answer the request gets."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from crm_core.accounts.context import TenantContext
from crm_core.platform.apilimits import ApiLimiter, limit_storage
from crm_core.platform.settings import Settings

API_LIMITER = web.AppKey("api_limiter", ApiLimiter)
LIMIT_HEADERS = web.RequestKey("rate_limit_headers", dict[str, str])


def setup(app: web.Application, settings: Settings) -> None:
    if not settings.api_rate_limits:
        return
    app[API_LIMITER] = ApiLimiter(
        limit_storage(settings.redis_url),
        per_token=settings.api_rate_limit_per_token,
        per_user=settings.api_rate_limit_per_user,
        per_company=settings.api_rate_limit_per_company,
    )
    app.on_response_prepare.append(_add_headers)
    app.cleanup_ctx.append(_limiter_ctx)


async def reserve(request: web.Request, context: TenantContext) -> None:
    """One slot in each budget of this authenticated request; RateLimited (429) past one."""
    limiter = request.app.get(API_LIMITER)
    if limiter is None:
        return
    request[LIMIT_HEADERS] = await limiter.reserve(
        context.tenant_id, context.user_id, context.api_token_id
    )


async def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
    headers = request.get(LIMIT_HEADERS)
    if headers:
        response.headers.update(headers)


async def _limiter_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[API_LIMITER].close()
