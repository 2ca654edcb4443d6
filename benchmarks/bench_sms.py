"""SMS campaigns through a fake SMS.ru gateway on loopback, at two sizes.

    .venv/bin/python -m benchmarks.bench_sms [--recipients 1000 10000] [--redis URL [--only-redis]]

Prints, per campaign size, messages per second and duplicates (must be 0) with the in-memory
broker, and with Redis (taskiq-redis stream broker, two receivers in this process) when --redis
is given; then the cost per message of the largest size against the smallest (linear when it
stays near 1). The rate limit is set far above what the machine reaches, so the figure is the
pipeline's.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from aiohttp.test_utils import TestServer

from benchmarks.common import OperationCounter, running_service
from tasks.broker import receiving, start_broker, stop_broker
from tests.support.sms_gateway import FakeGateway

operations = OperationCounter("_sms_")


async def run(recipients: int, redis_url: str | None) -> float:
    gateway = FakeGateway()
    gateway_server = TestServer(gateway.app(), host="127.0.0.1")
    await gateway_server.start_server()
    url = str(gateway_server.make_url("")).rstrip("/")
    overrides = {
        "sms_provider": "smsru",
        "smsru_api_id": "test-api-id",
        "smsru_base_url": url,
        "sms_rate_per_second": 10_000,
        "sms_batch_size": 500,
        "access_token_ttl_seconds": 24 * 3600,  # the embedded run takes minutes
    }
    if redis_url:
        overrides.update(redis_url=redis_url, api_runs_tasks=False)
    async with running_service(**overrides) as api:
        contexts = []
        if redis_url:
            settings = api.app_services.settings
            for name in ("bench-1", "bench-2"):
                broker = await start_broker(settings, api.app_services.storage, name)
                context = receiving(broker, settings)
                await context.__aenter__()
                contexts.append((broker, context))
        operations.reset()
        started, cpu_started = time.perf_counter(), time.process_time()
        campaign = await api.call(
            "POST",
            "/api/sms/campaigns",
            202,
            json={
                "name": "bench",
                "text": "Здравствуйте, {{n}}!",
                "recipients": [{"phone": f"+7916{i:07d}", "n": i} for i in range(recipients)],
            },
        )
        created = time.perf_counter() - started
        while True:
            state = await api.call("GET", f"/api/sms/campaigns/{campaign['id']}")
            if state["status"] == "completed":
                break
            await asyncio.sleep(0.2)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        for broker, context in contexts:
            await context.__aexit__(None, None, None)
            await stop_broker(broker)
    await gateway_server.close()
    duplicates = sum(n - 1 for n in gateway.accepted_per_phone().values())
    mode = "redis, 2 receivers" if redis_url else "in-memory broker"
    print(
        f"{mode}: {recipients} recipients, created in {created:.1f} s, all sent in "
        f"{elapsed:.1f} s = {recipients / elapsed:,.0f} messages/s; process CPU {cpu:.1f} s = "
        f"{recipients / cpu:,.0f} messages per CPU second (gateway included); "
        f"{operations.operations / recipients:.2f} database operations per message; "
        f"sent {state['counts']['sent']}, duplicates {duplicates}"
    )
    return cpu / recipients


def compare(name: str, sizes: list[int], per_message: list[float]) -> None:
    if len(sizes) > 1:
        ratio = per_message[-1] / per_message[0]
        print(f"{name}: CPU per message at {sizes[-1]} vs {sizes[0]} recipients: x{ratio:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipients", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--redis")
    parser.add_argument("--only-redis", action="store_true")
    args = parser.parse_args()
    sizes = sorted(args.recipients)
    operations.install()
    if not args.only_redis:
        compare("in-memory broker", sizes, [asyncio.run(run(n, None)) for n in sizes])
    if args.redis:
        compare("redis", sizes, [asyncio.run(run(n, args.redis)) for n in sizes])
