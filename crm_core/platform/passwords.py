"""The password rule (docs/api.md "Passwords"), in one place: the API's inputs, the domain's check
and the settings' check of `CRM_SUPERUSER_PASSWORD` all read it from here."""

from __future__ import annotations

PASSWORD_MIN_CHARS = 8
PASSWORD_MAX_BYTES = 72  # bcrypt 5 refuses longer secrets; we never truncate silently


def password_problem(password: str) -> str | None:
    """What is wrong with `password` ("must be at least 8 characters"...), or None."""
    if len(password) < PASSWORD_MIN_CHARS:
        return f"must be at least {PASSWORD_MIN_CHARS} characters"
    if len(password.encode()) > PASSWORD_MAX_BYTES:
        return f"must be at most {PASSWORD_MAX_BYTES} bytes in UTF-8"
    return None
