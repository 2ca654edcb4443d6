"""One root error for the whole domain, rendered by one middleware in the shape of docs/api.md
"Errors"."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class CrmError(Exception):
    """Root of every error a client may see.

    Subclasses fix `code` and `status`; `details` is a list of `{"field": ..., "message": ...}`
    (or other small dicts) that tells the client exactly what was wrong.
    """

    code = "internal_error"
    status = 500
    default_message = "Internal server error"

    def __init__(
        self,
        message: str | None = None,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.details = details or []
        self.headers = headers or {}
        super().__init__(self.message)

    def to_body(self, translate: Callable[[str], str] = str) -> dict[str, Any]:
        """The response's `error` body, its message and each detail's `message` passed through
        `translate` (the request's language: handlers/routing.py `error_response` gives
        crm_core/platform/i18n.py's); the detail's other keys (`field`...) stay as they are."""
        body: dict[str, Any] = {"code": self.code, "message": translate(self.message)}
        if self.details:
            body["details"] = [_translated(detail, translate) for detail in self.details]
        return {"error": body}


def _translated(detail: dict[str, Any], translate: Callable[[str], str]) -> dict[str, Any]:
    message = detail.get("message")
    if not isinstance(message, str):
        return detail
    return {**detail, "message": translate(message)}


class ValidationFailed(CrmError):
    code = "validation_error"
    status = 400
    default_message = "The request is not valid"

    @classmethod
    def field(cls, field: str, message: str) -> ValidationFailed:
        return cls(f"{field}: {message}", [{"field": field, "message": message}])


class InvalidJson(CrmError):
    code = "invalid_json"
    status = 400
    default_message = "The request body is not valid JSON"


class InvalidFilter(CrmError):
    code = "invalid_filter"
    status = 400
    default_message = "The filter is not valid"


class Unauthorized(CrmError):
    code = "unauthorized"
    status = 401
    default_message = "Authentication is required"


class Forbidden(CrmError):
    code = "forbidden"
    status = 403
    default_message = "You do not have permission to do this"


class PasswordChangeRequired(Forbidden):
    code = "password_change_required"
    default_message = (
        "Your password is a temporary one: change it with POST /api/auth/password first"
    )


class NotFound(CrmError):
    code = "not_found"
    status = 404
    default_message = "Not found"


class MethodNotAllowed(CrmError):
    code = "method_not_allowed"
    status = 405
    default_message = "Method not allowed"


class Conflict(CrmError):
    code = "conflict"
    status = 409
    default_message = "The request conflicts with the current state"


class StaleTableVersion(Conflict):
    default_message = "The table was changed by someone else; reload it and try again"


class PayloadTooLarge(CrmError):
    code = "payload_too_large"
    status = 413
    default_message = "The request body is too large"


class UnsupportedMediaType(CrmError):
    code = "unsupported_media_type"
    status = 415
    default_message = "The request body must be JSON: send 'Content-Type: application/json'"


class RateLimited(CrmError):
    code = "rate_limited"
    status = 429
    default_message = "Too many requests; try again later"


class ServiceUnavailable(CrmError):
    code = "service_unavailable"
    status = 503
    default_message = "A backing service is not reachable"

    @classmethod
    def unreachable(cls, service: str, retry_after_seconds: int) -> ServiceUnavailable:
        """`service` ("database", "broker") cannot be reached: the request may succeed when
        sent again after `Retry-After` seconds; `details` names the service."""
        what = UNREACHABLE_SERVICES.get(service, service)
        return cls(
            f"{what} is not reachable; try again in {retry_after_seconds} s",
            [{"service": service, "message": "not reachable"}],
            {"Retry-After": str(retry_after_seconds)},
        )


UNREACHABLE_SERVICES = {"database": "The database", "broker": "The task broker (Redis)"}


# Status codes aiohttp raises by itself, mapped to our error classes.
HTTP_STATUS_ERRORS: dict[int, type[CrmError]] = {
    400: ValidationFailed,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    429: RateLimited,
}
