"""The server span of each request (docs/operations.md "Traces"), when traces are on
(crm_core/platform/tracing.py).

Outermost middleware: the span covers the whole answer, and every log line of the request (the
access line included) carries its trace id. A caller's W3C `traceparent` continues its trace.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, StatusCode

from crm_core.platform.logs import REQUEST_ID
from handlers.routing import CONTEXT_KEY


def tracing_middleware(provider: trace.TracerProvider) -> Middleware:
    tracer = provider.get_tracer("crm.http")

    @web.middleware
    async def trace_request(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else None
        attributes: dict[str, str] = {
            "http.request.method": request.method,
            "url.path": request.path,
            "url.scheme": request.scheme,
        }
        if route is not None:
            attributes["http.route"] = route
        name = f"{request.method} {route}" if route is not None else request.method
        parent = propagate.extract(request.headers)
        with tracer.start_as_current_span(
            name, context=parent, kind=SpanKind.SERVER, attributes=attributes
        ) as span:
            status = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as exc:  # redirects are raised
                status = exc.status
                raise
            finally:
                span.set_attribute("http.response.status_code", status)
                span.set_attribute("crm.request_id", REQUEST_ID.get())
                context = request.get(CONTEXT_KEY)
                if context is not None:
                    span.set_attribute("crm.tenant_id", context.tenant_id)
                    span.set_attribute("crm.user_id", context.user_id)
                if status >= 500:
                    span.set_status(StatusCode.ERROR)

    return trace_request
