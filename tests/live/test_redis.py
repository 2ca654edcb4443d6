"""Live events across processes (issue #25 §3): two `crm serve` processes on one database (a
mongoeco server: the real driver) and one Redis. A row written through one process reaches
the subscribers of both; a share revoked through one stops the events on the other."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from aiohttp import ClientSession, ClientTimeout

from tests.support.live import LiveSocket, ready
from tests.support.remote import crm_env, remote_api
from tests.support.servers import CrmServe, ManagedProcess, MongoecoServer, RedisServer
from tests.support.waits import DEADLINE

pytestmark = pytest.mark.asyncio(loop_scope="function")


@dataclass
class Pair:
    a: CrmServe
    b: CrmServe
    processes: list[ManagedProcess]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    logs = tmp_path_factory.mktemp("live-redis")
    mongoeco = MongoecoServer(logs / "mongoeco.log")
    redis = RedisServer(logs / "redis.log")
    started: list[ManagedProcess] = []
    try:
        for server in (mongoeco, redis):
            server.start()
            started.append(server)
        env = crm_env(mongodb_url=mongoeco.uri, redis_url=redis.url)
        a = CrmServe(logs / "serve-a.log", env)
        b = CrmServe(logs / "serve-b.log", env)
        for process in (a, b):
            process.start()
            started.append(process)
        yield Pair(a, b, started)
    finally:
        for process in reversed(started):
            process.terminate()


@pytest.fixture
async def http() -> AsyncIterator[ClientSession]:
    async with ClientSession(timeout=ClientTimeout(total=DEADLINE)) as session:
        yield session


async def connect(http: ClientSession, server: CrmServe, token: str) -> LiveSocket:
    ws = await http.ws_connect(
        server.url + "/api/events", protocols=["crm.events", f"bearer.{token}"]
    )
    return await ready(LiveSocket(ws))


async def test_a_row_written_on_one_process_reaches_both(pair: Pair, http: ClientSession):
    a, b = remote_api(http, pair.a), remote_api(http, pair.b)
    owner = await a.register()
    await a.call(
        "POST",
        "/api/meta/tables",
        owner,
        expect=201,
        json={"key": "deals", "columns": [{"key": "title", "type": "string"}]},
    )
    on_a = await connect(http, pair.a, owner.access_token)
    on_b = await connect(http, pair.b, owner.access_token)
    for live in (on_a, on_b):
        assert (await live.subscribe("deals"))["type"] == "subscribed"
    row = await a.call("POST", "/api/data/deals", owner, expect=201, json={"title": "x"})
    for live in (on_a, on_b):
        created = await live.expect("row.created")
        assert created["row_id"] == row["id"] and created["row"]["title"] == "x"
    # and the other way round
    await b.call("PATCH", f"/api/data/deals/{row['id']}", owner, expect=200, json={"title": "y"})
    for live in (on_a, on_b):
        assert (await live.expect("row.updated"))["row"]["title"] == "y"
    for live in (on_a, on_b):
        await live.ws.close()


async def test_a_share_revoked_on_one_process_stops_events_on_the_other(
    pair: Pair, http: ClientSession
):
    a, b = remote_api(http, pair.a), remote_api(http, pair.b)
    owner = await a.register()
    await a.call(
        "POST",
        "/api/meta/tables",
        owner,
        expect=201,
        json={"key": "deals", "columns": [{"key": "title", "type": "string"}]},
    )
    roles = await a.call("GET", "/api/roles", owner, expect=200)
    viewer_role = next(r["id"] for r in roles["items"] if r["key"] == "viewer")
    await a.call(
        "POST",
        "/api/users",
        owner,
        expect=201,
        json={
            "email": f"v-{owner.email}",
            "full_name": "V",
            "password": "user-password",
            "role_ids": [viewer_role],
        },
    )
    viewer = await b.login(f"v-{owner.email}", "user-password")
    share = await a.call(
        "POST",
        "/api/shares",
        owner,
        expect=201,
        json={"table": "deals", "user_id": viewer.user_id, "access": "read"},
    )
    on_b = await connect(http, pair.b, viewer.access_token)
    assert (await on_b.subscribe("deals"))["type"] == "subscribed"
    await a.call("DELETE", f"/api/shares/{share['id']}", owner, expect=204)
    gone = await on_b.expect("unsubscribed")
    assert gone["reason"] == "access_revoked"
    # the owner's connection on b gets the event through Redis in the same dispatch that
    # would have queued it for the viewer's: once it has it, the viewer's barrier is proof
    owners = await connect(http, pair.b, owner.access_token)
    await owners.subscribe("deals")
    await a.call("POST", "/api/data/deals", owner, expect=201, json={"title": "hidden"})
    await owners.expect("row.created")
    assert await on_b.barrier() == []
    for live in (owners, on_b):
        await live.ws.close()
