"""SMS campaigns through a real Redis: taskiq-redis stream brokers and real taskiq receivers,
started in the test process so that they share its (embedded) database, against a fake SMS.ru
gateway. Without `redis-server` on the PATH these tests say plainly that they did not run,
except under CI=true, where that is a failure."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis
from taskiq.receiver import Receiver

from crm_core.services import build_services
from handlers.app import create_app
from handlers.routing import SERVICES
from tasks.broker import receiving, start_broker, stop_broker
from tests.support.api import Api, wait_done
from tests.support.sms_gateway import SlotRecorder, max_in_window, phone, redis_settings
from tests.support.waits import DEADLINE, until


class FreezingLimiter:
    """Wraps a receiver's rate limiter; once `freeze` is set, the next wait never returns:
    the worker stops dead between two messages, its task unacknowledged."""

    def __init__(self, inner):
        self.inner = inner
        self.freeze = asyncio.Event()

    async def wait(self, tenant_id, count=1):
        if self.freeze.is_set():
            await asyncio.Event().wait()
        return await self.inner.wait(tenant_id, count)


async def start_receiver(app, settings, name):
    broker = await start_broker(build_services(settings, app[SERVICES].storage), name)
    receiver = Receiver(broker, run_startup=False, max_async_tasks=50)
    listener = asyncio.create_task(receiver.listen(asyncio.Event()))
    return broker, broker.state.sms, listener


async def test_campaign_completes_through_redis_with_two_workers(
    aiohttp_client, clean_redis, gateway
):
    # redelivery well above a batch's sending time: this test is about sharing the work and
    # the rate; a redelivered task is the next test's subject
    settings = redis_settings(
        clean_redis, gateway, sms_rate_per_second=10, sms_redelivery_seconds=10
    )
    app = create_app(settings)
    api = Api(await aiohttp_client(app))
    owner = await api.register()
    workers = []
    slots: list[float] = []
    for name in ("worker-a", "worker-b"):
        broker = await start_broker(build_services(settings, app[SERVICES].storage), name)
        broker.state.sms.limiter = SlotRecorder(broker.state.sms.limiter, slots)
        context = receiving(broker, settings)
        await context.__aenter__()
        workers.append((broker, context))
    try:
        created = await api.call(
            "POST",
            "/api/sms/campaigns",
            owner,
            expect=202,
            json={
                "name": "redis",
                "text": "Привет, {{n}}",
                "recipients": [{"phone": phone(i), "n": i} for i in range(25)],
            },
        )
        done = await wait_done(api, owner, created["id"])
    finally:
        for broker, context in workers:
            await context.__aexit__(None, None, None)
            await stop_broker(broker)
    assert done["counts"]["sent"] == 25, (done["counts"], len(gateway.accepted))
    assert sorted(r.text for r in gateway.accepted) == sorted(f"Привет, {i}" for i in range(25))
    assert set(gateway.accepted_per_phone().values()) == {1}
    # three batches on two workers, one rate for the tenant, shared through Redis: the slots
    # both workers were granted are 1/10 s apart, whichever worker took them
    assert len(slots) >= 25
    assert max_in_window(slots) <= 10


async def test_a_dead_workers_task_is_redelivered_and_nobody_gets_two(
    aiohttp_client, clean_redis, gateway
):
    settings = redis_settings(clean_redis, gateway)
    app = create_app(settings)
    api = Api(await aiohttp_client(app))
    owner = await api.register()
    before = asyncio.all_tasks()
    broker_a, runtime_a, listener_a = await start_receiver(app, settings, "doomed")
    freezer = FreezingLimiter(runtime_a.limiter)
    runtime_a.limiter = freezer
    created = await api.call(
        "POST",
        "/api/sms/campaigns",
        owner,
        expect=202,
        json={"name": "crash", "text": "t", "recipients": [{"phone": phone(i)} for i in range(30)]},
    )
    while len(gateway.accepted) < 8:
        await asyncio.sleep(0.01)
    # tear the worker down abruptly: it stops between two messages and never acknowledges
    freezer.freeze.set()
    listener_a.cancel()
    sent_by_a = len(gateway.accepted)
    assert sent_by_a < 30
    redis = Redis.from_url(clean_redis)
    pending = await redis.xpending("crm:tasks", "crm-workers")
    assert pending["pending"] >= 1  # A's tasks are still unacknowledged
    # a second worker takes them over once they have been idle for the redelivery timeout
    broker_b = await start_broker(build_services(settings, app[SERVICES].storage), "survivor")
    async with receiving(broker_b, settings):
        done = await wait_done(api, owner, created["id"])

        async def acknowledged() -> bool:
            # A's own tasks too: the campaign may complete (the outbox queues its work again)
            # before they have been idle for the redelivery timeout and B takes them
            return (await redis.xpending("crm:tasks", "crm-workers"))["pending"] == 0

        await until(acknowledged, "every task to be acknowledged")
    assert done["counts"]["sent"] == 30 and done["counts"]["unknown"] == 0
    per_phone = gateway.accepted_per_phone()
    assert len(per_phone) == 30 and set(per_phone.values()) == {1}
    await redis.aclose()
    await stop_broker(broker_b)
    # the dead worker's frozen tasks are cleared away with the test
    leftovers = asyncio.all_tasks() - before - {asyncio.current_task()}
    for task in leftovers:
        task.cancel()
    await asyncio.gather(*leftovers, return_exceptions=True)
    await stop_broker(broker_a)


async def test_api_runs_redis_tasks_itself_with_the_embedded_database(
    aiohttp_client, clean_redis, gateway
):
    settings = redis_settings(clean_redis, gateway, api_runs_tasks=None)
    assert settings.api_receives_tasks
    api = Api(await aiohttp_client(create_app(settings)))
    owner = await api.register()
    created = await api.call(
        "POST",
        "/api/sms/campaigns",
        owner,
        expect=202,
        json={"name": "in-process", "text": "t", "recipients": [{"phone": phone(1)}]},
    )
    done = await wait_done(api, owner, created["id"])
    assert done["counts"]["sent"] == 1


async def test_ready_reports_an_unreachable_broker(aiohttp_client, clean_redis, gateway):
    settings = redis_settings(clean_redis, gateway)
    client = await aiohttp_client(create_app(settings))
    assert (await client.get("/ready")).status == 200
    runtime = client.app[SERVICES].sms_queue.broker.state.sms
    runtime.limiter.redis = Redis.from_url("redis://127.0.0.1:1/0")  # nothing listens there
    resp = await client.get("/ready")
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == "service_unavailable"


async def test_worker_loop_starts_receives_and_stops(clean_redis, gateway):
    """`crm worker`'s loop (run here directly: the command itself refuses the embedded
    database, which is what this test process has)."""
    from crm_app.cli import run_worker

    settings = redis_settings(clean_redis, gateway)
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, stop))
    redis = Redis.from_url(clean_redis)

    async def joined() -> list:  # the worker's consumer joins the group when it listens
        groups = await redis.xinfo_groups("crm:tasks") if await redis.exists("crm:tasks") else []
        return groups if groups and groups[0]["consumers"] >= 1 else []

    groups = await until(joined, "the worker's consumer to join the group")
    assert groups[0]["name"] == b"crm-workers"
    stop.set()
    await asyncio.wait_for(worker, timeout=DEADLINE)
    await redis.aclose()
