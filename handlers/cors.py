"""CORS for browser apps served from other origins (docs/api.md "CORS"), through aiohttp-cors.

Only the origins of `CORS_ORIGINS` get CORS headers, on the `/api` routes: the operator's panel
(/admin, cookies and forms) and the documentation pages stay same-origin. A preflight from a
listed origin is answered (and may be cached `CORS_MAX_AGE_SECONDS`); from any other origin it
is refused (403, and the browser blocks the call). Answers expose the headers a client reads:
the request id, the rate limit headers, `Retry-After` and `ETag`.
"""

from __future__ import annotations

import aiohttp_cors
from aiohttp import web

from crm_core.platform.settings import Settings

API_PREFIX = "/api/"
ALLOWED_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
ALLOWED_HEADERS = ("Authorization", "Content-Type", "X-Request-ID", "If-Match", "If-None-Match")
EXPOSED_HEADERS = (
    "X-Request-ID",
    "RateLimit-Policy",
    "RateLimit",
    "Retry-After",
    "ETag",
    "Location",
    "Content-Disposition",
)


def setup(app: web.Application, settings: Settings) -> None:
    """Call after every route is added: each `/api` resource answers preflights."""
    origins = settings.cors_origin_list
    if not origins:
        return
    options = aiohttp_cors.ResourceOptions(  # type: ignore[no-untyped-call]
        allow_credentials=settings.cors_allow_credentials,
        expose_headers=EXPOSED_HEADERS,
        allow_headers=ALLOWED_HEADERS,
        allow_methods=ALLOWED_METHODS,
        max_age=settings.cors_max_age_seconds,
    )
    cors = aiohttp_cors.setup(app, defaults={origin: options for origin in origins})
    for resource in list(app.router.resources()):
        if resource.canonical.startswith(API_PREFIX):
            cors.add(resource)
