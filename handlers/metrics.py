"""`/metrics` in Prometheus' text format, never public: on the API port it needs
`Authorization: Bearer <METRICS_TOKEN>` (no token set: the route answers 404 as if absent);
`METRICS_PORT` serves it without a token on a separate listener (METRICS_HOST, default
loopback) for a scraper on the host or a private network."""

from __future__ import annotations

import hmac

from aiohttp import web

from crm_core.platform import metrics
from crm_core.platform.errors import NotFound, Unauthorized
from crm_core.services import Services
from handlers.routing import Call, Public, RouteTable

routes = RouteTable("metrics")


async def scrape(services: Services) -> web.Response:
    stats = None
    queue = services.queue.probe
    if queue is not None:
        try:
            stats = await queue.metrics_stats(services.settings.worker_heartbeat_seconds)
        except Exception:  # Redis away: counters still answer, the broker error is counted
            metrics.BACKEND_ERRORS.labels("broker").inc()
    body = metrics.exposition(metrics.scrape_gauges(stats))
    return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE_LATEST})


@routes.get(
    "/metrics",
    access=Public(),  # the token is checked here: it is not a user's
    summary="Prometheus metrics (METRICS_TOKEN)",
    in_schema=False,
)
async def metrics_route(call: Call) -> web.Response:
    token = call.services.settings.metrics_token
    if not token:
        raise NotFound(f"No route for GET {call.request.path}")
    scheme, _, given = call.request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), token):
        raise Unauthorized("Send 'Authorization: Bearer <METRICS_TOKEN>'")
    return await scrape(call.services)


def metrics_app(services: Services) -> web.Application:
    """The separate listener of METRICS_PORT: only `/metrics`, no token."""

    async def view(request: web.Request) -> web.Response:
        return await scrape(services)

    app = web.Application()
    app.router.add_get("/metrics", view)
    return app
