"""Webhook deliveries through a real Redis: the API only queues, a separate receiver (a
`crm worker` in the test process, sharing its embedded database) sends and retries."""

from __future__ import annotations

from crm_core.services import build_services
from handlers.app import create_app
from handlers.routing import SERVICES
from tasks.broker import receiving, start_broker, stop_broker
from tests.support.api import Api
from tests.support.sms_gateway import redis_settings
from tests.support.webhook_receiver import make_hook, make_table, settled, verify


async def test_a_worker_delivers_and_retries(aiohttp_client, clean_redis, gateway, receiver):
    settings = redis_settings(clean_redis, gateway)
    client = await aiohttp_client(create_app(settings))
    api = Api(client)
    owner = await api.register()
    await make_table(api, owner)
    hook = await make_hook(api, owner, f"{receiver.url}/hook", events=["row.created"])
    receiver.answer_next(500)
    broker = await start_broker(build_services(settings, client.app[SERVICES].storage), "w1")
    try:
        async with receiving(broker, settings):
            await api.call("POST", "/api/data/deals", owner, expect=201, json={"title": "A"})
            [delivery] = await settled(api, owner, hook["id"], 1)
    finally:
        await stop_broker(broker)
    assert delivery["status"] == "succeeded" and delivery["attempts"] == 2
    assert [d["error"] for d in delivery["attempt_log"]] == ["HTTP 500", None]
    assert len(receiver.received) == 2
    assert all(verify(hook["secret"], r.headers, r.body) for r in receiver.received)
