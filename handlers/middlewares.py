"""Request middlewares: request id, access log line and metrics; the one error renderer
(docs/api.md "Errors")."""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler

from crm_core.platform import i18n, metrics
from crm_core.platform.errors import HTTP_STATUS_ERRORS, CrmError, ServiceUnavailable
from crm_core.platform.logs import (
    ACCESS,
    CLIENT_ADDRESS,
    REQUEST_ID,
    REQUEST_ID_HEADER,
    request_id_from,
)
from crm_core.platform.storage import DATABASE, is_database_error, is_database_unreachable
from crm_core.platform.tracing import current_trace_id
from handlers.routing import CONTEXT_KEY, ERROR_PAGES, SERVICES, ErrorPage, error_response

access_log = ACCESS
log = logging.getLogger(__name__)


@web.middleware
async def access_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The request id (the client's `X-Request-ID` or a new one) for every log line of the
    request, echoed in the answer; then one access line (method, path, status, duration,
    tenant, user, request id) and the request metrics (per route template and status)."""
    request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))
    REQUEST_ID.set(request_id)  # the request's own task: no other request sees it
    CLIENT_ADDRESS.set(request.remote)  # the address the login throttle trusts
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        if not response.prepared:
            response.headers[REQUEST_ID_HEADER] = request_id
        return response
    except web.HTTPException as exc:  # redirects are raised too
        status = exc.status
        exc.headers[REQUEST_ID_HEADER] = request_id
        raise
    finally:
        elapsed = time.perf_counter() - started
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else metrics.UNMATCHED_ROUTE
        metrics.observe_request(request.method, route, status, elapsed)
        context = request.get(CONTEXT_KEY)
        access_log.write(
            request.method,
            request.rel_url.raw_path,  # as sent: a decoded %0A would split the line
            status,
            elapsed * 1000,
            context.tenant_id if context else "-",
            context.user_id if context else "-",
            request_id,
            current_trace_id(),
        )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every error, aiohttp's own included, as `{"error": {code, message, details}}`,
    its message in the client's language (`Accept-Language`, crm_core/platform/i18n.py)."""
    default = request.app[SERVICES].settings.default_language if SERVICES in request.app else "en"
    i18n.LANGUAGE.set(i18n.negotiate(request.headers.get("Accept-Language"), default))
    page = _error_page(request)
    render = error_response if page is None else partial(page, request)
    try:
        response = await handler(request)
    except CrmError as exc:
        if exc.status == 503 and "Retry-After" not in exc.headers:
            exc.headers = {**exc.headers, "Retry-After": str(_retry_after(request))}
        return render(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return render(_from_http(exc, request))
    except HttpProcessingError as exc:  # a malformed body (bad chunk sizes...): the client's
        log.warning("malformed request body in %s %s: %s", request.method, request.path, exc)
        return render(_for_status(400, f"Malformed HTTP request: {_first_line(exc)}"))
    except ConnectionResetError:  # the client went away mid-request (e.g. after a bad chunk)
        log.warning("client closed the connection during %s %s", request.method, request.path)
        return render(_for_status(400, "The connection was closed mid-request"))
    except Exception as exc:
        return render(_unexpected(request, exc))
    if response.status >= 400 and not isinstance(response, web.Response | web.FileResponse):
        return response
    if page is not None and response.status >= 400 and response.content_type == "text/html":
        return response  # a page that drew its own error
    if response.status >= 400 and response.content_type != "application/json":
        # aiohttp answers some errors (static files...) with plain responses
        return render(_for_status(response.status))
    return response


BROKER = "broker"
DEFAULT_RETRY_AFTER_SECONDS = 5


def unreachable_service(exc: BaseException) -> str | None:
    """ "database" or "broker" when `exc`, or an exception it was raised from (taskiq wraps a
    failed send in its own `SendTaskError`), says that service could not be reached; None for
    any other failure."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if is_database_unreachable(current):
            return DATABASE
        if isinstance(current, RedisConnectionError | RedisTimeoutError):
            return BROKER
        current = current.__cause__ or current.__context__
    return None


def _unexpected(request: web.Request, exc: Exception) -> CrmError:
    """An exception no layer turned into a client error: an unreachable backing service is
    a 503 (one WARNING per outage, no traceback per request), anything else a logged 500."""
    service = unreachable_service(exc)
    if service is not None:
        if SERVICES in request.app:
            request.app[SERVICES].storage.outages.down(service, exc)
        metrics.BACKEND_ERRORS.labels(service).inc()
        return ServiceUnavailable.unreachable(service, _retry_after(request))
    log.exception("unhandled error in %s %s", request.method, request.path)
    if is_database_error(exc):
        metrics.BACKEND_ERRORS.labels(DATABASE).inc()
    elif metrics.is_broker_error(exc):
        metrics.BACKEND_ERRORS.labels(BROKER).inc()
    return CrmError()


def _retry_after(request: web.Request) -> int:
    if SERVICES in request.app:
        return request.app[SERVICES].settings.unavailable_retry_after_seconds
    return DEFAULT_RETRY_AFTER_SECONDS


def _error_page(request: web.Request) -> ErrorPage | None:
    """The HTML error renderer of the page area this request is in, if any (`/admin`)."""
    for prefix, page in request.app.get(ERROR_PAGES, {}).items():
        if request.path == prefix or request.path.startswith(prefix + "/"):
            return page
    return None


def _for_status(status: int, message: str | None = None) -> CrmError:
    error_class = HTTP_STATUS_ERRORS.get(status, CrmError)
    error = error_class(message)
    if error_class is CrmError:
        error.status = status
    return error


def _from_http(exc: web.HTTPException, request: web.Request) -> CrmError:
    message = None
    if exc.status == 404:
        message = f"No route for {request.method} {request.path}"
    elif exc.status == 413:
        message = "The request body is larger than the server accepts"
    error = _for_status(exc.status, message)
    if exc.status == 405:
        allowed = _allowed_here(request, getattr(exc, "allowed_methods", None) or set())
        if allowed:
            error.headers = {"Allow": ",".join(sorted(allowed))}
    return error


def _allowed_here(request: web.Request, allowed: set[str]) -> set[str]:
    """The methods of the path itself: aiohttp's 405 also counts a template that the path
    happens to match (`/api/trash/restore` against `/api/trash/{item_id}`), but a literal path
    is served before a template, so only its own methods are allowed there."""
    own = {
        route.method
        for resource in request.app.router.resources()
        if isinstance(resource, web.PlainResource) and resource.canonical == request.path
        for route in resource
        if route.method != "*"
    }
    return own or allowed


def _first_line(exc: HttpProcessingError) -> str:
    return (str(exc.message).strip().splitlines() or ["bad request"])[0].rstrip(":")


class ServerLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The logger of aiohttp's connection handler (`logger=` of the server).

    Requests aiohttp cannot parse (bad header bytes, bad chunk sizes, duplicate lengths) are the
    client's fault: one WARNING line, no traceback. aiohttp answers them itself with a plain
    400 before any application code runs. Anything else stays an ERROR with its traceback.
    """

    def __init__(self) -> None:
        super().__init__(logging.getLogger("crm.http"), {})

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            remote = args[0] if args else "-"
            self.logger.warning("malformed HTTP request from %s: %s", remote, _first_line(exc_info))
            return
        self.logger.error(msg, *args, exc_info=exc_info, **kwargs)
