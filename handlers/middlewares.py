"""Request middlewares: the access log line and the one error renderer (SPEC §2)."""

from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler

from crm_core.errors import HTTP_STATUS_ERRORS, CrmError
from handlers.routing import CONTEXT_KEY, error_response

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
    try:
        response = await handler(request)
    except CrmError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(_from_http(exc, request))
    except HttpProcessingError as exc:  # a malformed body (bad chunk sizes...): the client's
        log.warning("malformed request body in %s %s: %s", request.method, request.path, exc)
        return error_response(_for_status(400, f"Malformed HTTP request: {_first_line(exc)}"))
    except ConnectionResetError:  # the client went away mid-request (e.g. after a bad chunk)
        log.warning("client closed the connection during %s %s", request.method, request.path)
        return error_response(_for_status(400, "The connection was closed mid-request"))
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(CrmError())
    if response.status >= 400 and not isinstance(response, web.Response | web.FileResponse):
        return response
    if response.status >= 400 and response.content_type != "application/json":
        # aiohttp answers some errors (static files...) with plain responses
        return error_response(_for_status(response.status))
    return response


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
