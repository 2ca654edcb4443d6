"""What webhooks and API tokens cost, in one run on the embedded defaults:

    .venv/bin/python -m benchmarks.bench_integrations [--rows 500]

1. single row creates per second: no webhook at all, a webhook on another table (who listens
   comes from the process cache: the database queries for it per warm create are printed), a
   webhook on this table delivering to a local receiver;
2. how fast those deliveries reach the receiver (deliveries/s, latency p50/p99 from the log);
3. `GET /api/auth/me` per second with a session access token and with an API token.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from aiohttp import web
from aiohttp.test_utils import TestServer

from benchmarks.common import running_service
from crm_core.platform.storage import recording

ROUNDS = 5
COLUMNS = [{"key": "title", "type": "string"}, {"key": "n", "type": "integer"}]


async def creates_per_second(api, table: str, rows: int) -> float:
    started = time.perf_counter()
    for index in range(rows):
        await api.call("POST", f"/api/data/{table}", 201, json={"title": f"r{index}", "n": index})
    return rows / (time.perf_counter() - started)


async def main(rows: int) -> None:
    received = 0
    all_received = asyncio.Event()

    async def receive(request: web.Request) -> web.Response:
        nonlocal received
        await request.read()
        received += 1
        if received >= rows:
            all_received.set()
        return web.Response(text="ok")

    receiver_app = web.Application()
    receiver_app.router.add_post("/hook", receive)
    receiver = TestServer(receiver_app, host="127.0.0.1")
    await receiver.start_server()
    url = str(receiver.make_url("/hook"))
    try:
        async with running_service(webhook_allow_private_addresses=True) as api:
            for key in ("plain", "other", "watched"):
                await api.call(
                    "POST", "/api/meta/tables", 201, json={"key": key, "columns": COLUMNS}
                )
            await creates_per_second(api, "plain", max(10, rows // 5))  # warm-up
            body = {"name": "b", "url": url, "events": ["row.created"], "tables": ["other"]}
            # alternating rounds (the machine's load drifts): no webhook, then one on another
            # table; the ratio is the median of the rounds'
            plains, unwatcheds = [], []
            for _ in range(ROUNDS):
                plains.append(await creates_per_second(api, "plain", rows // ROUNDS))
                other = await api.call("POST", "/api/webhooks", 201, json=body)
                unwatcheds.append(await creates_per_second(api, "plain", rows // ROUNDS))
                await api.call("DELETE", f"/api/webhooks/{other['id']}", 204)
            plain, unwatched = statistics.median(plains), statistics.median(unwatcheds)
            ratio = statistics.median(u / p for u, p in zip(unwatcheds, plains, strict=True))
            await api.call("POST", "/api/webhooks", 201, json=body)
            await creates_per_second(api, "plain", 1)  # this process reloads its listeners
            with recording() as log:  # who listens comes from the process cache
                await creates_per_second(api, "plain", 20)
            listener_queries = log.count(collection="_webhooks") / 20
            hook = await api.call(
                "POST", "/api/webhooks", 201, json={**body, "tables": ["watched"]}
            )
            started = time.perf_counter()
            watched = await creates_per_second(api, "watched", rows)
            await all_received.wait()
            delivered = rows / (time.perf_counter() - started)
            page = await api.call("GET", f"/api/webhooks/{hook['id']}/deliveries?limit=1000")
            latencies = sorted(d["latency_ms"] for d in page["items"])
            print(f"row creates/s, no webhook:                 {plain:8.0f}")
            print(
                f"row creates/s, webhook on another table:   {unwatched:8.0f} "
                f"({ratio:.2f} x, median of {ROUNDS} alternating rounds)"
            )
            print(
                f"row creates/s, webhook on this table:      {watched:8.0f} "
                f"({watched / plain:.2f} x)"
            )
            print(f"listener queries per warm row create:      {listener_queries:8.2f}")
            print(f"deliveries/s end to end (writes included): {delivered:8.0f}")
            print(
                f"delivery latency ms p50 / p99:             "
                f"{statistics.median(latencies):.1f} / "
                f"{latencies[int(len(latencies) * 0.99) - 1]:.1f}"
            )

            session_headers = dict(api.headers)
            token = await api.call(
                "POST", "/api/tokens", 201, json={"name": "b", "permissions": ["leads.read"]}
            )
            rates = {}
            for label, headers in (
                ("session", session_headers),
                ("api token", {"Authorization": f"Bearer {token['token']}"}),
            ):
                api.headers = headers
                started = time.perf_counter()
                for _ in range(rows):
                    await api.call("GET", "/api/auth/me")
                rates[label] = rows / (time.perf_counter() - started)
            print(f"GET /api/auth/me/s, session token:         {rates['session']:8.0f}")
            print(
                f"GET /api/auth/me/s, API token:             {rates['api token']:8.0f} "
                f"({rates['api token'] / rates['session']:.2f} x)"
            )
    finally:
        await receiver.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=500)
    asyncio.run(main(parser.parse_args().rows))
