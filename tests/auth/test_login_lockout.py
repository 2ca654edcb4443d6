"""A lockout nobody can aim at someone else (issue #19 §4, crm_core/accounts/ratelimit.py).

Five wrong passwords used to lock an email for 15 minutes from everywhere, so anyone who knew
the owner's (or the superadmin's) email could keep them out. Now the hard lock is per account
and client address, and the account-wide limit only slows addresses the account does not know.
The attacker's requests come from other loopback addresses (127.0.0.2...: the client binds its
end of the connection there), the victim's from 127.0.0.1, all through HTTP."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.support.admin_panel import ROOT_EMAIL, ROOT_PASSWORD, Panel
from tests.support.api import make_settings

PER_PAIR = 5
FREE = 8
MAX_DELAY = 60


@pytest.fixture
def settings():
    return make_settings(
        login_max_failures=PER_PAIR,
        login_max_failures_per_ip=1000,
        login_account_free_failures=FREE,
        login_account_max_delay_seconds=MAX_DELAY,
        crm_superuser_email=ROOT_EMAIL,
        crm_superuser_password=ROOT_PASSWORD,
    )


async def login_from(client, address: str, email: str, password: str) -> aiohttp.ClientResponse:
    """A sign-in whose connection comes from `address` (a loopback address)."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        resp = await session.post(
            client.make_url("/api/auth/login"), json={"email": email, "password": password}
        )
        await resp.read()
        return resp


async def hammer(client, addresses: list[str], email: str, tries: int) -> list[int]:
    statuses = []
    for address in addresses:
        for i in range(tries):
            resp = await login_from(client, address, email, f"wrong-{address}-{i}")
            statuses.append(resp.status)
    return statuses


async def test_a_strangers_failures_lock_only_the_stranger(client, owner):
    statuses = await hammer(client, ["127.0.0.2"], owner.email, PER_PAIR + 3)
    assert statuses == [401] * PER_PAIR + [429] * 3
    # the stranger's address is locked out of this account, even with the right password
    resp = await login_from(client, "127.0.0.2", owner.email, owner.password)
    assert resp.status == 429 and int(resp.headers["Retry-After"]) > MAX_DELAY
    # the owner, from their own address, was never locked, and has never signed in there
    resp = await login_from(client, "127.0.0.1", owner.email, owner.password)
    assert resp.status == 200


async def test_many_stranger_addresses_slow_the_account_but_never_its_known_address(client, owner):
    # the owner signed in from their address before (registration does not count)
    assert (await login_from(client, "127.0.0.1", owner.email, owner.password)).status == 200
    attackers = [f"127.0.0.{n}" for n in range(2, 8)]
    statuses = await hammer(client, attackers, owner.email, PER_PAIR)
    # the first FREE failures pass, then one per doubling delay: the rest are slowed
    assert statuses[:FREE] == [401] * FREE
    assert statuses.count(401) == FREE + 1 and statuses.count(500) == 0
    slowed = await login_from(client, "127.0.0.9", owner.email, "another-guess")
    assert slowed.status == 429
    # a delay, not a lock: the next turn is within LOGIN_ACCOUNT_MAX_DELAY_SECONDS
    assert 1 <= int(slowed.headers["Retry-After"]) <= MAX_DELAY
    # a new address with the right password waits its turn too
    resp = await login_from(client, "127.0.0.10", owner.email, owner.password)
    assert resp.status == 429
    # the owner's known address signs in at once, while the attack goes on
    resp = await login_from(client, "127.0.0.1", owner.email, owner.password)
    assert resp.status == 200
    # and the owner's own typos there count against that address only
    statuses = await hammer(client, ["127.0.0.1"], owner.email, 2)
    assert statuses == [401, 401]
    assert (await login_from(client, "127.0.0.1", owner.email, owner.password)).status == 200


async def test_the_superadmin_is_not_locked_out_of_the_panel_by_strangers(client):
    panel = Panel(client)
    await panel.sign_in()  # the operator's address becomes known to the account
    attackers = [f"127.0.0.{n}" for n in range(2, 8)]
    statuses = await hammer(client, attackers, ROOT_EMAIL, PER_PAIR)
    assert 401 in statuses and 429 in statuses and 500 not in statuses
    # the panel signs in through the same throttle: the operator still gets in
    fresh = Panel(client)
    fresh.client.session.cookie_jar.clear()
    await fresh.sign_in()
    await fresh.get("/admin")


async def test_password_change_guesses_never_lock_the_sign_in(api, client, owner):
    wrong = {"current_password": "wrong-password", "new_password": "a-new-password"}
    for _ in range(PER_PAIR):
        resp = await client.post("/api/auth/password", headers=owner.headers, json=wrong)
        assert resp.status == 400
    resp = await client.post("/api/auth/password", headers=owner.headers, json=wrong)
    assert resp.status == 429
    await api.login(owner.email, owner.password)  # 200: sign-in counts apart


async def test_concurrent_strangers_get_at_most_one_turn_past_the_free_attempts(client, owner):
    calls = [login_from(client, f"127.0.1.{n}", owner.email, f"guess-{n}") for n in range(1, 21)]
    statuses = [resp.status for resp in await asyncio.gather(*calls)]
    assert sorted(statuses) == [401] * (FREE + 1) + [429] * (20 - FREE - 1)
