"""Limits an await cannot slip past (issue #10 §2): the slot is reserved before bcrypt, in
process or, with REDIS_URL, in Redis shared by several API processes."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from handlers.app import create_app
from tests.support.api import make_settings

LIMIT = 5


@pytest.fixture
def settings():
    return make_settings(login_max_failures=LIMIT, login_max_failures_per_ip=1000)


async def _logins(clients, email, passwords):
    calls = [
        clients[index % len(clients)].post(
            "/api/auth/login", json={"email": email, "password": password}
        )
        for index, password in enumerate(passwords)
    ]
    responses = await asyncio.gather(*calls)
    for resp in responses:
        if resp.status == 429:
            assert (await resp.json())["error"]["code"] == "rate_limited"
            assert int(resp.headers["Retry-After"]) >= 1
    return responses


async def test_concurrent_wrong_logins_get_at_most_the_limit_of_401(api, client, owner):
    responses = await _logins([client], owner.email, [f"wrong-{i}" for i in range(20)])
    statuses = Counter(r.status for r in responses)
    assert statuses == {401: LIMIT, 429: 20 - LIMIT}


async def test_a_correct_guess_after_the_limit_is_429(api, client, owner):
    passwords = [f"wrong-{i}" for i in range(30)]
    passwords[-1] = owner.password
    # the correct one arrives last: the wrong ones took every slot before it
    responses = await _logins([client], owner.email, passwords)
    assert responses[-1].status == 429
    assert Counter(r.status for r in responses)[401] == LIMIT
    # and now, concurrently or alone, the right password still waits for the window
    responses = await _logins([client], owner.email, [owner.password, "x1", owner.password])
    assert {r.status for r in responses} == {429}


async def test_a_correct_login_among_the_first_ones_releases_the_window(api, client, owner):
    responses = await _logins([client], owner.email, ["wrong-1", "wrong-2", owner.password])
    assert sorted(r.status for r in responses) == [200, 401, 401]
    # the success cleared the email's failures: a full set of attempts is available again
    responses = await _logins([client], owner.email, [f"again-{i}" for i in range(LIMIT)])
    assert {r.status for r in responses} == {401}


async def test_successful_logins_do_not_use_up_the_address_limit(aiohttp_client):
    client = await aiohttp_client(create_app(make_settings(login_max_failures_per_ip=3)))
    resp = await client.post(
        "/api/auth/register",
        json={
            "company_name": "A",
            "email": "a@example.com",
            "password": "correct-horse",
            "full_name": "A",
        },
    )
    assert resp.status == 201
    for _ in range(6):
        resp = await client.post(
            "/api/auth/login", json={"email": "a@example.com", "password": "correct-horse"}
        )
        assert resp.status == 200
    # failures from the address still count: 3 of them, then 429 even for other emails
    statuses = [
        (
            await client.post(
                "/api/auth/login", json={"email": f"x{i}@example.com", "password": "wrong-pass"}
            )
        ).status
        for i in range(4)
    ]
    assert statuses == [401, 401, 401, 429]


async def test_concurrent_wrong_current_passwords_are_limited_too(api, client, owner):
    calls = [
        client.post(
            "/api/auth/password",
            headers=owner.headers,
            json={"current_password": f"wrong-{i}", "new_password": "a-new-password"},
        )
        for i in range(12)
    ]
    statuses = Counter(r.status for r in await asyncio.gather(*calls))
    assert statuses == {400: LIMIT, 429: 12 - LIMIT}


# ---- several API processes sharing Redis -------------------------------------------------


@pytest.fixture
async def redis_clients(redis_url):
    redis = Redis.from_url(redis_url)
    await redis.flushall()
    settings = make_settings(
        redis_url=redis_url,
        login_max_failures=LIMIT,
        login_max_failures_per_ip=1000,
        api_runs_tasks=True,
    )
    clients = []
    for _ in range(2):  # two API processes: two apps, each with its own limiter
        test_client = TestClient(TestServer(create_app(settings)))
        await test_client.start_server()
        clients.append(test_client)
    yield clients, redis
    for test_client in clients:
        await test_client.close()
    await redis.flushall()
    await redis.aclose()


async def test_login_limits_are_shared_through_redis(redis_clients):
    (first, second), redis = redis_clients
    # the embedded database is per app, so the email is unknown to both: the limit is on the
    # email either way, which is what is shared
    email = "victim@example.com"
    responses = await _logins([first, second], email, [f"wrong-{i}" for i in range(20)])
    statuses = Counter(r.status for r in responses)
    assert statuses == {401: LIMIT, 429: 20 - LIMIT}
    keys = [key.decode() for key in await redis.keys("crm:limits*")]
    assert any(email in key for key in keys), keys
    # either process refuses the next attempt
    resp = await second.post("/api/auth/login", json={"email": email, "password": "wrong"})
    assert resp.status == 429
