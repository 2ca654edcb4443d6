"""A CSV import run by a `crm worker`-style receiver through a real Redis stream (the API
process only queues). Skipped without `redis-server`, failed under CI=true (as the SMS ones)."""

from __future__ import annotations

from crm_core.services import build_services
from handlers.app import create_app
from handlers.routing import SERVICES
from tasks.broker import receiving, start_broker, stop_broker
from tests.support.api import Api, make_settings
from tests.support.files import finished, make_table, stored, upload


async def test_import_runs_in_a_redis_worker(aiohttp_client, clean_redis):
    settings = make_settings(redis_url=clean_redis, api_runs_tasks=False)
    app = create_app(settings)
    client = await aiohttp_client(app)
    api = Api(client)
    owner = await api.register()
    await make_table(api, owner)
    data = "name,email\n" + "".join(f"P{i},p{i}@example.com\n" for i in range(50))
    status, job = await upload(client, owner, data.encode())
    assert status == 201, job
    await api.call(
        "POST", f"/api/data/people/imports/{job['id']}/confirm", owner, expect=202, json={}
    )
    broker = await start_broker(build_services(settings, app[SERVICES].storage), "files-worker")
    try:
        async with receiving(broker, settings):
            done = await finished(api, owner, job)
    finally:
        await stop_broker(broker)
    assert (done["state"], done["created"]) == ("completed", 50)
    assert len(await stored(api, owner)) == 50
