"""Schemathesis hooks for scripts/fuzz.

Auth: one owner account is registered for the run; every generated request carries a token of
it. A fuzzed `POST /api/auth/logout` rightly revokes the token it was called with, so before
each request the token is checked and, when revoked, the same user signs in again: objects
created earlier in the run stay reachable (same tenant) for the stateful phase.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import urllib.error
import urllib.request

import email_validator
import schemathesis
from hypothesis import strategies as st

BASE_URL = os.environ["CRM_FUZZ_BASE_URL"]
EMAIL = f"fuzz-{secrets.token_hex(8)}@example.com"
PASSWORD = "fuzz-password"


def _call(method: str, path: str, body: dict | None = None, token: str | None = None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(  # noqa: S310 - a loopback URL set by scripts/fuzz
        f"{BASE_URL}{path}", data=data, headers=headers, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, None


_LOCK = threading.Lock()  # the run has several workers
_STATE: dict[str, object] = {"token": None, "registered": False}


@schemathesis.auth(refresh_interval=None)
class FuzzOwner:
    def get(self, case, ctx):
        with _LOCK:
            token = _STATE["token"]
            if token is not None:
                status, _ = _call("GET", "/api/auth/me", token=str(token))
                if status == 200:
                    return token
            status, tokens = 0, None
            if not _STATE["registered"]:
                owner = {
                    "company_name": "Fuzz",
                    "full_name": "Fuzz Owner",
                    "email": EMAIL,
                    "password": PASSWORD,
                }
                status, tokens = _call("POST", "/api/auth/register", owner)
                _STATE["registered"] = True
            if tokens is None:  # registered before (by this or another worker): sign in
                credentials = {"email": EMAIL, "password": PASSWORD}
                status, tokens = _call("POST", "/api/auth/login", credentials)
            assert tokens is not None, f"could not sign in the fuzzing owner ({status})"
            _STATE["token"] = tokens["access_token"]
            return _STATE["token"]

    def set(self, case, data, ctx):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


# `format: password` in our schema means 8 characters to 72 bytes of UTF-8 (bcrypt's limit),
# a byte bound that JSON Schema's maxLength (characters) cannot say by itself.
schemathesis.openapi.format(
    "password",
    st.text(min_size=8, max_size=72).filter(lambda s: len(s.encode()) <= 72),
)


def _deliverable_syntax(address: str) -> bool:
    try:
        email_validator.validate_email(address, check_deliverability=False)
    except email_validator.EmailNotValidError:
        return False
    return True


# `format: email` means what email-validator accepts without a DNS lookup: special-use domains
# such as `.test` or `.local` are refused, as the service refuses them.
schemathesis.openapi.format("email", st.emails().filter(_deliverable_syntax))
