"""Schemathesis hooks for scripts/fuzz: every generated request gets a bearer token of its own
fresh tenant owner, so a fuzzed `POST /api/auth/logout` (which rightly revokes the token it was
called with) cannot blind the rest of the run."""

from __future__ import annotations

import json
import os
import secrets
import urllib.request

import schemathesis
from hypothesis import strategies as st

BASE_URL = os.environ["CRM_FUZZ_BASE_URL"]


@schemathesis.auth(refresh_interval=None)
class FreshOwner:
    def get(self, case, ctx):
        body = json.dumps(
            {
                "company_name": "Fuzz",
                "full_name": "Fuzz Owner",
                "password": "fuzz-password",
                "email": f"fuzz-{secrets.token_hex(8)}@example.com",
            }
        ).encode()
        request = urllib.request.Request(  # noqa: S310 - a loopback URL set by scripts/fuzz
            f"{BASE_URL}/api/auth/register",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return json.load(response)["access_token"]

    def set(self, case, data, ctx):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


# `format: password` in our schema means 8 characters to 72 bytes of UTF-8 (bcrypt's limit),
# a byte bound that JSON Schema's maxLength (characters) cannot say by itself.
schemathesis.openapi.format(
    "password",
    st.text(min_size=8, max_size=72).filter(lambda s: len(s.encode()) <= 72),
)
