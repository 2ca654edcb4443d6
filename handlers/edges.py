"""The API's edges for clients that are not us (issue 28): CORS (handlers/cors.py), the API
limits (handlers/ratelimits.py) and traces (handlers/tracing.py), put on an app once its
routes are in (`handlers/app.py` `create_app`)."""

from __future__ import annotations

from aiohttp import web

from crm_core.platform.settings import Settings
from crm_core.platform.tracing import configure_tracing
from handlers import cors, ratelimits
from handlers.tracing import tracing_middleware


def setup(app: web.Application, settings: Settings) -> None:
    provider = configure_tracing(settings)
    if provider is not None:
        app.middlewares.insert(0, tracing_middleware(provider))  # outermost: the whole answer
    ratelimits.setup(app, settings)
    cors.setup(app, settings)
