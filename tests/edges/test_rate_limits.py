"""API limits per API token, per user and per company (issue 28 §2, docs/api.md "Rate
limits"): 429 `rate_limited` with `Retry-After` and the IETF RateLimit headers, the slot taken
before the work, sign-in and the probes untouched, one budget shared through Redis."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from crm_core.platform.apilimits import ApiLimiter, Budget, limit_storage
from crm_core.platform.settings import SettingsError, load_settings
from handlers.app import create_app
from handlers.ratelimits import API_LIMITER
from tests.support.api import TEST_SECRET, Api, add_user, make_settings

NOW = 1_700_000_050.0  # 10 s into a minute window: 50 s left


def frozen(client: Any, now: float = NOW) -> ApiLimiter:
    limiter: ApiLimiter = client.app[API_LIMITER]
    limiter.clock = lambda: now
    return limiter


def state(header: str) -> dict[str, dict[str, int]]:
    """`"user";r=2;t=50, "company";r=9;t=50` -> {"user": {"r": 2, "t": 50}, ...}"""
    out: dict[str, dict[str, int]] = {}
    for item in header.split(","):
        name, *params = item.strip().split(";")
        out[name.strip('"')] = {k: int(v) for k, v in (p.split("=") for p in params)}
    return out


@pytest.fixture
def settings():
    return make_settings(
        api_rate_limit_per_token="2/minute",
        api_rate_limit_per_user="3/minute",
        api_rate_limit_per_company="5/minute",
    )


async def test_a_user_past_their_budget_is_refused_with_the_headers(client, owner):
    frozen(client)
    for remaining in (2, 1, 0):
        resp = await client.get("/api/auth/me", headers=owner.headers)
        assert resp.status == 200
        assert resp.headers["RateLimit-Policy"] == '"user";q=3;w=60, "company";q=5;w=60'
        assert state(resp.headers["RateLimit"])["user"] == {"r": remaining, "t": 50}
    resp = await client.get("/api/meta/tables", headers=owner.headers)
    assert resp.status == 429
    body = await resp.json()
    assert body["error"]["code"] == "rate_limited"
    assert "user" in body["error"]["message"] and "50 s" in body["error"]["message"]
    assert body["error"]["details"] == [{"limit": "user", "quota": 3, "window": 60}]
    assert resp.headers["Retry-After"] == "50"
    assert state(resp.headers["RateLimit"])["user"] == {"r": 0, "t": 50}
    assert resp.headers["RateLimit-Policy"] == '"user";q=3;w=60, "company";q=5;w=60'


async def test_the_next_window_lets_the_user_in_again(client, owner):
    limiter = frozen(client)
    for _ in range(3):
        assert (await client.get("/api/auth/me", headers=owner.headers)).status == 200
    assert (await client.get("/api/auth/me", headers=owner.headers)).status == 429
    limiter.clock = lambda: NOW + 50  # the next minute
    resp = await client.get("/api/auth/me", headers=owner.headers)
    assert resp.status == 200
    assert state(resp.headers["RateLimit"])["user"] == {"r": 2, "t": 60}


async def test_errors_of_a_limited_route_carry_the_headers_too(client, owner):
    frozen(client)
    resp = await client.get("/api/data/no_such_table", headers=owner.headers)
    assert resp.status == 404
    assert state(resp.headers["RateLimit"])["user"]["r"] == 2
    resp = await client.post("/api/tokens", headers=owner.headers, json={"name": ""})
    assert resp.status == 400
    assert state(resp.headers["RateLimit"])["user"]["r"] == 1


async def test_a_token_has_its_own_budget_inside_its_users(client, api, owner):
    frozen(client).budgets["user"] = Budget("user", 5, 60)
    created = await api.call("POST", "/api/tokens", owner, 201, json={"name": "sync"})
    token = {"Authorization": f"Bearer {created['token']}"}
    for remaining in (1, 0):
        resp = await client.get("/api/auth/me", headers=token)
        assert resp.status == 200
        assert resp.headers["RateLimit-Policy"] == (
            '"token";q=2;w=60, "user";q=5;w=60, "company";q=5;w=60'
        )
        assert state(resp.headers["RateLimit"])["token"]["r"] == remaining
    resp = await client.get("/api/auth/me", headers=token)
    assert resp.status == 429
    assert "API token" in (await resp.json())["error"]["message"]
    # the refused call took nothing from the user: 1 (the token's creation) + 2 + this one
    resp = await client.get("/api/auth/me", headers=owner.headers)
    assert resp.status == 200
    assert state(resp.headers["RateLimit"])["user"]["r"] == 1


async def test_a_company_budget_is_shared_and_a_refusal_gives_slots_back(client, api, owner):
    colleague = await add_user(api, client, owner, "viewer")
    limiter = frozen(client)
    for _ in range(3):
        assert (await client.get("/api/auth/me", headers=owner.headers)).status == 200
    for _ in range(2):
        assert (await client.get("/api/auth/me", headers=colleague.headers)).status == 200
    resp = await client.get("/api/auth/me", headers=colleague.headers)
    assert resp.status == 429
    assert (await resp.json())["error"]["details"][0]["limit"] == "company"
    # with room in the company again, the colleague has used 2 of 3: the refusal counted nothing
    limiter.budgets["company"] = Budget("company", 100, 60)
    resp = await client.get("/api/auth/me", headers=colleague.headers)
    assert resp.status == 200
    assert state(resp.headers["RateLimit"])["user"]["r"] == 0


async def test_concurrent_requests_get_exactly_the_budget(client, owner):
    """The slot is taken before the work: of 8 requests at once, 3 pass."""
    frozen(client)
    answers = await asyncio.gather(
        *(client.get("/api/meta/tables", headers=owner.headers) for _ in range(8))
    )
    assert sorted(r.status for r in answers) == [200] * 3 + [429] * 5


async def test_sign_in_and_the_probes_are_not_limited(aiohttp_client):
    settings = make_settings(
        api_rate_limit_per_user="1/minute",
        api_rate_limit_per_company="1/minute",
        metrics_token="m" * 20,
    )
    client = await aiohttp_client(create_app(settings))
    frozen(client)
    api = Api(client)
    owner = await api.register()  # registration and the first /me
    for _ in range(5):
        resp = await client.post(
            "/api/auth/login", json={"email": owner.email, "password": owner.password}
        )
        assert resp.status == 200 and "RateLimit" not in resp.headers
        for path, headers in (
            ("/health", {}),
            ("/ready", {}),
            ("/metrics", {"Authorization": "Bearer " + "m" * 20}),
        ):
            resp = await client.get(path, headers=headers)
            assert resp.status == 200, path
            assert "RateLimit" not in resp.headers and "RateLimit-Policy" not in resp.headers
    assert (await client.get("/api/auth/me", headers=owner.headers)).status == 429


async def test_limits_can_be_turned_off(aiohttp_client):
    client = await aiohttp_client(
        create_app(make_settings(api_rate_limits=False, api_rate_limit_per_user="1/minute"))
    )
    owner = await Api(client).register()
    for _ in range(3):
        resp = await client.get("/api/auth/me", headers=owner.headers)
        assert resp.status == 200 and "RateLimit" not in resp.headers


async def test_unauthenticated_calls_count_nothing(client, owner):
    frozen(client)
    for _ in range(5):
        assert (await client.get("/api/auth/me")).status == 401
        resp = await client.get("/api/auth/me", headers={"Authorization": "Bearer forged"})
        assert resp.status == 401
    resp = await client.get("/api/auth/me", headers=owner.headers)
    assert state(resp.headers["RateLimit"])["user"]["r"] == 2


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("api_rate_limit_per_user", "lots"),
        ("api_rate_limit_per_token", "0/minute"),
        ("api_rate_limit_per_company", "10/fortnight"),
    ],
)
def test_a_bad_limit_setting_names_the_variable(name, value):
    with pytest.raises(SettingsError, match=name.upper()):
        load_settings(_env_file=None, secret_key=TEST_SECRET, **{name: value})


# ---- one budget for every process: Redis ------------------------------------------------------


async def test_two_processes_share_one_budget_in_redis(clean_redis):
    """Two limiters, each with its own Redis client (what two API processes have), count
    into one budget."""
    first = ApiLimiter(limit_storage(clean_redis), "2/minute", "3/minute", "100/minute")
    second = ApiLimiter(limit_storage(clean_redis), "2/minute", "3/minute", "100/minute")
    first.clock = second.clock = lambda: NOW
    try:
        await first.reserve("company-1", "user-1")
        await second.reserve("company-1", "user-1")
        headers = await first.reserve("company-1", "user-1")
        assert state(headers["RateLimit"])["user"] == {"r": 0, "t": 50}
        from crm_core.platform.errors import RateLimited

        with pytest.raises(RateLimited) as refused:
            await second.reserve("company-1", "user-1")
        assert refused.value.headers["Retry-After"] == "50"
        # another user of the company still passes, and the company counted 3, not 4
        headers = await second.reserve("company-1", "user-2")
        assert state(headers["RateLimit"])["company"]["r"] == 96
    finally:
        await first.close()
        await second.close()


async def test_an_app_on_redis_answers_429_past_the_budget(aiohttp_client, clean_redis):
    settings = make_settings(redis_url=clean_redis, api_rate_limit_per_user="2/minute")
    client = await aiohttp_client(create_app(settings))
    owner = await Api(client).register()  # its /me took one slot
    frozen(client)
    resp = await client.get("/api/auth/me", headers=owner.headers)
    assert resp.status == 200
    resp = await client.get("/api/auth/me", headers=owner.headers)
    if resp.status == 200:  # registration's /me fell in an earlier (real) window
        resp = await client.get("/api/auth/me", headers=owner.headers)
    assert resp.status == 429 and re.fullmatch(r"[0-9]+", resp.headers["Retry-After"])


async def test_with_redis_down_each_process_counts_in_memory(caplog):
    limiter = ApiLimiter(limit_storage("redis://127.0.0.1:1/0"), "2/minute", "2/minute", "9/minute")
    limiter.clock = lambda: NOW
    from crm_core.platform.errors import RateLimited

    await limiter.reserve("c", "u")
    await limiter.reserve("c", "u")
    with pytest.raises(RateLimited):
        await limiter.reserve("c", "u")
    assert [r.message for r in caplog.records].count(
        next(m for m in (r.message for r in caplog.records) if "does not answer" in m)
    ) == 1
    await limiter.close()
