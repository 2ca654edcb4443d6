"""Request middlewares: the access log line and the one error renderer (SPEC §2)."""

from __future__ import annotations

import logging
import time
from functools import partial

from aiohttp import web
from aiohttp.typedefs import Handler

from crm_core.errors import HTTP_STATUS_ERRORS, CrmError
from handlers.routing import CONTEXT_KEY, ERROR_PAGES, ErrorPage, error_response

access_log = logging.getLogger("crm.access")
log = logging.getLogger(__name__)


@web.middleware
async def access_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One line per request: method, path, status, duration, tenant and user."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:  # redirects are raised too
        status = exc.status
        raise
    finally:
        context = request.get(CONTEXT_KEY)
        access_log.info(
            "%s %s %s %.1fms tenant=%s user=%s",
            request.method,
            request.path,
            status,
            (time.perf_counter() - started) * 1000,
            context.tenant_id if context else "-",
            context.user_id if context else "-",
        )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every error, aiohttp's own included, as `{"error": {code, message, details}}`."""
    page = _error_page(request)
    render = error_response if page is None else partial(page, request)
    try:
        response = await handler(request)
    except CrmError as exc:
        return render(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return render(_from_http(exc, request))
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return render(CrmError())
    if response.status >= 400 and not isinstance(response, web.Response | web.FileResponse):
        return response
    if page is not None and response.status >= 400 and response.content_type == "text/html":
        return response  # a page that drew its own error
    if response.status >= 400 and response.content_type != "application/json":
        # aiohttp answers some errors (static files...) with plain responses
        return render(_for_status(response.status))
    return response


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
        allowed = getattr(exc, "allowed_methods", None)
        if allowed:
            error.headers = {"Allow": ",".join(sorted(allowed))}
    return error
