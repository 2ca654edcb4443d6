"""Delivery isolation (issue #31 §1, docs/integrations.md "Isolation"): one company's slow
receiver slows only itself. Company A's receiver holds every request until the test lets go;
company B's healthy receiver, on another port of the same loopback host, gets its events while
A's are still held, and B's webhook is never disabled by A's traffic."""

from __future__ import annotations

import asyncio

from aiohttp import web

from handlers.app import create_app
from handlers.routing import SERVICES
from tests.support.api import Api, make_settings
from tests.support.webhook_receiver import Receiver, deliveries, make_hook, make_table, wait_for

A_EVENTS = 110  # more than the one shared pool held (100 connections) before isolation


class HeldReceiver(Receiver):
    """Answers nothing until `release` is set (a receiver that hangs)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.arrived = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.arrived += 1
        await self.release.wait()
        return await super().handle(request)


async def test_a_slow_receiver_of_one_company_does_not_delay_another(
    aiohttp_client, aiohttp_server
):
    settings = make_settings(
        webhook_timeout_seconds=60,  # A's requests stay held for the whole test
        webhook_connections_per_destination=3,
        webhook_defer_seconds=0.05,
        webhook_disable_after_failures=1,
    )
    client = await aiohttp_client(create_app(settings))
    api = Api(client)
    slow, healthy = HeldReceiver(), Receiver()
    for fake in (slow, healthy):
        server = await aiohttp_server(fake.app())
        fake.url = str(server.make_url("")).rstrip("/")
    a, b = await api.register(), await api.register()
    for owner in (a, b):
        await make_table(api, owner)
    hook_a = await make_hook(api, a, f"{slow.url}/hook", events=["row.created"])
    hook_b = await make_hook(api, b, f"{healthy.url}/hook", events=["row.created"])

    service = client.app[SERVICES].webhooks
    db_a = service.storage.tenant_db(a.tenant_id)
    for n in range(A_EVENTS):  # A's burst: one event each, as many row writes would make
        await service.publish(db_a, a.tenant_id, a.user_id, "row.created", "deals", [{"n": n}])
    await wait_for(lambda: _at_least(slow, 3), "A's receiver holding its first requests")

    for title in ("b1", "b2", "b3"):
        await api.call("POST", "/api/data/deals", b, expect=201, json={"title": title})
    await wait_for(lambda: _received(healthy, 3), "B's events while A's are held")

    assert not slow.release.is_set() and slow.arrived == 3  # A still held, at its own limit
    log_b = await deliveries(api, b, hook_b["id"])
    assert [d["status"] for d in log_b] == ["succeeded"] * 3
    assert all(d["attempts"] == 1 and d["error"] is None for d in log_b)
    state_b = await api.call("GET", f"/api/webhooks/{hook_b['id']}", b, expect=200)
    assert state_b["is_active"] and state_b["consecutive_failures"] == 0
    # A's waiting deliveries were put back, not failed: no attempt counted against A either
    waiting = await db_a["_webhook_deliveries"].count_documents(
        {"attempts": 0, "deferrals": {"$gte": 1}}
    )
    assert waiting >= 1

    slow.release.set()  # A's receiver recovers: all of A's events arrive, none failed
    await wait_for(lambda: _received(slow, A_EVENTS), "A's events once its receiver answers")
    state_a = await api.call("GET", f"/api/webhooks/{hook_a['id']}", a, expect=200)
    assert state_a["is_active"] and state_a["consecutive_failures"] == 0


async def _at_least(fake: HeldReceiver, count: int) -> bool:
    return fake.arrived >= count


async def _received(fake: Receiver, count: int) -> bool:
    return len(fake.received) >= count
