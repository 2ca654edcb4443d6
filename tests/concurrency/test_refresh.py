"""Refresh is idempotent for a moment (issue #29 §6): the same refresh token presented again
within `refresh_reuse_grace_seconds` answers the same successor; later reuse is theft."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from models.accounts import RefreshToken
from tests.support.api import make_settings


async def _refresh(client, token: str):
    return await client.post("/api/auth/refresh", json={"refresh_token": token})


async def _me(client, pair) -> int:
    headers = {"Authorization": f"Bearer {pair['access_token']}"}
    return (await client.get("/api/auth/me", headers=headers)).status


async def test_a_retried_refresh_answers_the_same_successor_and_keeps_the_session(client, owner):
    first = await _refresh(client, owner.refresh_token)
    second = await _refresh(client, owner.refresh_token)  # a retry after a timeout
    assert first.status == second.status == 200
    one, two = await first.json(), await second.json()
    assert one["refresh_token"] == two["refresh_token"]
    # nobody was signed out: both access tokens work, the successor refreshes once more
    assert await _me(client, one) == await _me(client, two) == 200
    third = await _refresh(client, one["refresh_token"])
    assert third.status == 200 and await _me(client, await third.json()) == 200
    family = await RefreshToken.find(RefreshToken.family_id != "").to_list()
    assert all(t.revoked_at is None for t in family)
    assert len(family) == 3  # the original, its successor (stored once), the third


async def test_twenty_concurrent_refreshes_get_one_successor(client, owner):
    answers = await asyncio.gather(*(_refresh(client, owner.refresh_token) for _ in range(20)))
    assert [a.status for a in answers] == [200] * 20
    tokens = {(await a.json())["refresh_token"] for a in answers}
    assert len(tokens) == 1
    pair = await answers[-1].json()
    assert await _me(client, pair) == 200
    assert await RefreshToken.get_motor_collection().count_documents({}) == 2
    assert (await _refresh(client, tokens.pop())).status == 200


async def test_reuse_after_the_grace_window_revokes_the_family(client, owner):
    rotated = await (await _refresh(client, owner.refresh_token)).json()
    await RefreshToken.get_motor_collection().update_many(
        {"used_at": {"$ne": None}}, {"$set": {"used_at": datetime.now(UTC) - timedelta(seconds=11)}}
    )
    reuse = await _refresh(client, owner.refresh_token)
    assert reuse.status == 401
    assert (await reuse.json())["error"]["code"] == "unauthorized"
    assert await _me(client, rotated) == 401
    assert (await _refresh(client, rotated["refresh_token"])).status == 401


async def test_a_zero_grace_window_treats_every_reuse_as_theft(aiohttp_client):
    from handlers.app import create_app
    from tests.support.api import Api

    client = await aiohttp_client(create_app(make_settings(refresh_reuse_grace_seconds=0)))
    account = await Api(client).register()
    rotated = await (await _refresh(client, account.refresh_token)).json()
    assert (await _refresh(client, account.refresh_token)).status == 401
    assert (await _refresh(client, rotated["refresh_token"])).status == 401


async def test_a_logged_out_token_gets_nothing_inside_the_window(api, client, owner):
    await _refresh(client, owner.refresh_token)
    await api.call(
        "POST", "/api/auth/logout", owner, expect=204, json={"refresh_token": owner.refresh_token}
    )
    assert (await _refresh(client, owner.refresh_token)).status == 401
