"""Fixed cost per request (issue #12 §3): requests/s of a bare aiohttp handler against the
service's own list route, both on an empty table of the same embedded database.

    .venv/bin/python -m benchmarks.bench_request [--requests 2000] [--clients 8] [--rounds 5]

The bare handler does the storage calls the list handler does (one `find` of up to 50 rows,
one `count_documents`) and nothing else; the service adds authentication (the user and the
tenant: two round trips on a warm process), access checks from the process cache, parsing and
serialising. The two alternate for `--rounds` rounds (so a burst of load elsewhere on the
machine hits both) and the median of the per-round ratios is the figure. Prints both rates,
their ratio and the database operations per request.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from benchmarks.common import OperationCounter, running_service

counter = OperationCounter()


async def hammer(
    session: ClientSession, url: str, headers: dict[str, str], total: int, clients: int
) -> tuple[float, float]:
    """Requests per second and CPU microseconds per request (the whole process: server, the
    embedded database's thread and the client; steadier than the rate on a shared machine)."""
    remaining = [total]

    async def client() -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            async with session.get(url, headers=headers) as resp:
                assert resp.status == 200, resp.status
                await resp.read()

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client() for _ in range(clients)))
    return total / (time.perf_counter() - started), (time.process_time() - cpu) / total * 1e6


async def run(total: int, clients: int, rounds: int) -> None:
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
            await hammer(session, bare_url, {}, 50, clients)
            bare, service = [], []
            for _ in range(rounds):
                bare.append(await hammer(session, bare_url, {}, total, clients))
                counter.reset()
                service.append(await hammer(session, service_url, api.headers, total, clients))
                per_request = counter.operations / total
        await server.close()
    rates = sorted(b[0] / s[0] for b, s in zip(bare, service, strict=True))
    cpus = sorted(s[1] / b[1] for b, s in zip(bare, service, strict=True))
    print(
        f"bare handler: {statistics.median(b[0] for b in bare):,.0f} requests/s, "
        f"{statistics.median(b[1] for b in bare):,.0f} CPU µs per request (median of {rounds})"
    )
    print(
        f"service GET /api/data/empty?limit=50: {statistics.median(s[0] for s in service):,.0f} "
        f"requests/s, {statistics.median(s[1] for s in service):,.0f} CPU µs per request, "
        f"{per_request:.1f} database operations per request"
    )
    print(
        f"bare vs service: x{statistics.median(rates):.2f} in requests/s "
        f"(rounds: {', '.join(f'x{r:.2f}' for r in rates)}), "
        f"x{statistics.median(cpus):.2f} in CPU per request"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    counter.install()
    asyncio.run(run(args.requests, args.clients, args.rounds))
