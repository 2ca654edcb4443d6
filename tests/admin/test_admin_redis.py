"""The panel's system page with a real Redis: tasks waiting in the stream, the workers seen."""

from __future__ import annotations

import asyncio

from crm_core.services import build_services
from handlers.app import create_app
from handlers.routing import SERVICES
from tasks.broker import receiving, start_broker, stop_broker
from tests.support.admin_panel import ROOT_EMAIL, ROOT_PASSWORD, Panel
from tests.support.api import Api, make_settings


async def test_system_page_shows_queue_depth_and_workers(aiohttp_client, clean_redis):
    settings = make_settings(
        redis_url=clean_redis,
        api_runs_tasks=False,  # this process only queues, as an API next to real workers
        sms_batch_size=1,
        crm_superuser_email=ROOT_EMAIL,
        crm_superuser_password=ROOT_PASSWORD,
    )
    client = await aiohttp_client(create_app(settings))
    services = client.app[SERVICES]
    api = Api(client)
    owner = await api.register()
    recipients = [{"phone": f"+7916123456{i}"} for i in range(3)]
    await api.call(
        "POST",
        "/api/sms/campaigns",
        owner,
        expect=202,
        json={"name": "queued", "text": "t", "recipients": recipients},
    )
    status = await services.admin.system_status(services.sms_queue)
    assert [c.ok for c in status.checks] == [True, True]
    assert status.broker.startswith("Redis stream")
    assert status.queue_depth == 3 and status.tasks_in_flight == 0 and status.workers == []

    panel = Panel(client)
    await panel.sign_in()
    page = await panel.get("/admin/system")
    assert "Redis stream" in page and "no worker has read the queue yet" in page

    worker = await start_broker(build_services(settings, services.storage), "worker-a")
    try:
        async with receiving(worker, settings):
            for _ in range(500):
                status = await services.admin.system_status(services.sms_queue)
                if status.queue_depth == 0 and status.workers:
                    break
                await asyncio.sleep(0.02)
    finally:
        await stop_broker(worker)
    assert status.queue_depth == 0
    assert [w.name for w in status.workers] == ["worker-a"]
    page = await panel.get("/admin/system")
    assert "worker-a" in page
