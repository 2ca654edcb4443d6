"""API tokens in tests: make one through the API, and call as its bearer (docs/integrations.md)."""

from __future__ import annotations

from tests.support.api import Account, Api


def bearer(secret: str) -> Account:
    return Account("token", "", secret, "")


async def make_token(api: Api, account: Account, expect: int = 201, **fields) -> dict:
    return await api.call(
        "POST", "/api/tokens", account, expect=expect, json={"name": "sync", **fields}
    )
