"""Fixed cost per request (issue #12 §3): requests/s of a bare aiohttp handler against the
service's own list route, both on an empty table of the same embedded database.

    .venv/bin/python -m benchmarks.bench_request [--requests 2000] [--clients 8]

The bare handler does the storage calls the list handler does (one `find` of up to 50 rows,
one `count_documents`) and nothing else; the service adds authentication (the user and the
tenant: two round trips on a warm process), access checks from the process cache, parsing and
serialising. Prints both rates, their ratio and the database operations per request.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from benchmarks.common import OperationCounter, running_service

counter = OperationCounter()


async def hammer(
    session: ClientSession, url: str, headers: dict[str, str], total: int, clients: int
) -> float:
    remaining = [total]

    async def client() -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            async with session.get(url, headers=headers) as resp:
                assert resp.status == 200, resp.status
                await resp.read()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return total / (time.perf_counter() - started)


async def run(total: int, clients: int) -> None:
    async with running_service() as api:
        await api.call(
            "POST",
            "/api/meta/tables",
            201,
            json={"key": "empty", "columns": [{"key": "n", "type": "integer"}]},
        )
        db = api.app_services.storage.tenant_db(api.tenant_id)

        async def bare(request: web.Request) -> web.Response:
            docs = await db["empty"].find({}).sort("_id", 1).limit(50).to_list(50)
            total_rows = await db["empty"].count_documents({})
            return web.json_response({"items": docs, "total": total_rows})

        app = web.Application()
        app.router.add_get("/bare", bare)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        bare_url = str(server.make_url("/bare"))
        service_url = f"{api.base}/api/data/empty?limit=50"
        async with ClientSession() as session:
            await hammer(session, service_url, api.headers, 50, clients)  # warm
            bare_rate = await hammer(session, bare_url, {}, total, clients)
            counter.reset()
            service_rate = await hammer(session, service_url, api.headers, total, clients)
            per_request = counter.operations / total
        await server.close()
    print(f"bare handler: {bare_rate:,.0f} requests/s")
    print(
        f"service GET /api/data/empty?limit=50: {service_rate:,.0f} requests/s, "
        f"{per_request:.1f} database operations per request"
    )
    print(f"bare vs service: x{bare_rate / service_rate:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    counter.install()
    asyncio.run(run(args.requests, args.clients))
