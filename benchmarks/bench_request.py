"""Fixed cost per request (issue #12 §3): requests/s of a bare aiohttp handler against the
service's own list route, both on an empty table of the same embedded database.

    .venv/bin/python -m benchmarks.bench_request [--requests 2000] [--clients 8] [--rounds 5]

The bare handler does the storage calls the list handler does (one `find` of up to 50 rows,
one `count_documents`) and nothing else; the service adds authentication (the user and the
tenant: two round trips on a warm process), access checks from the process cache, parsing and
serialising. A third handler is the bare one plus the two reads authentication makes (the
floor the trust rules set: a revoked or deactivated token dies at its next request). The three
alternate for `--rounds` rounds (so a burst of load elsewhere on the machine hits all) and the
medians of the per-round ratios are the figures, in requests/s and in CPU per request (the
process's CPU time: server, the embedded database's thread and the client, steadier than the
rate on a shared machine). Prints the rates, the ratios and the database operations per
request.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer
from bson import ObjectId

from benchmarks.common import OperationCounter, running_service
from models.accounts import Tenant, User

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
        rows = await api.rows_collection("empty")
        tenant_id = ObjectId(api.tenant_id)
        user_id = ObjectId((await api.call("GET", "/api/auth/me"))["user"]["id"])

        async def bare(request: web.Request) -> web.Response:
            docs = await rows.find({}).sort("_id", 1).limit(50).to_list(50)
            total_rows = await rows.count_documents({})
            return web.json_response({"items": docs, "total": total_rows})

        async def bare_with_reads(request: web.Request) -> web.Response:
            """The bare handler plus the two reads the trust rules need on every request."""
            await User.get_motor_collection().find_one({"_id": user_id})
            await Tenant.get_motor_collection().find_one({"_id": tenant_id})
            return await bare(request)

        app = web.Application()
        app.router.add_get("/bare", bare)
        app.router.add_get("/reads", bare_with_reads)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        urls = {
            "bare": (str(server.make_url("/bare")), {}),
            "reads": (str(server.make_url("/reads")), {}),
            "service": (f"{api.base}/api/data/empty?limit=50", api.headers),
        }
        figures: dict[str, list[tuple[float, float]]] = {name: [] for name in urls}
        async with ClientSession() as session:
            for url, headers in urls.values():
                await hammer(session, url, headers, 50, clients)  # warm
            for _ in range(rounds):
                for name, (url, headers) in urls.items():
                    counter.reset()
                    figures[name].append(await hammer(session, url, headers, total, clients))
                    if name == "service":
                        per_request = counter.operations / total
        await server.close()

    def rate(name: str) -> float:
        return statistics.median(f[0] for f in figures[name])

    def cpu(name: str) -> float:
        return statistics.median(f[1] for f in figures[name])

    def ratios(name: str) -> tuple[float, float, list[float]]:
        """Median ratio to the bare handler (requests/s, CPU), per round so that a burst of
        load elsewhere hits both sides; and the per-round rate ratios, sorted."""
        pairs = list(zip(figures["bare"], figures[name], strict=True))
        by_rate = sorted(b[0] / o[0] for b, o in pairs)
        return statistics.median(by_rate), statistics.median(o[1] / b[1] for b, o in pairs), by_rate

    print(f"median of {rounds} rounds of {total} requests, {clients} clients")
    print(f"bare handler: {rate('bare'):,.0f} requests/s, {cpu('bare'):,.0f} CPU µs per request")
    print(
        f"bare + the user and tenant reads: {rate('reads'):,.0f} requests/s, "
        f"{cpu('reads'):,.0f} CPU µs per request"
    )
    print(
        f"service GET /api/data/empty?limit=50: {rate('service'):,.0f} requests/s, "
        f"{cpu('service'):,.0f} CPU µs per request, "
        f"{per_request:.1f} database operations per request"
    )
    for name, label in (("reads", "bare + reads"), ("service", "service")):
        by_rate, by_cpu, rounds_ = ratios(name)
        print(
            f"bare vs {label}: x{by_rate:.2f} in requests/s "
            f"(rounds: {', '.join(f'x{r:.2f}' for r in rounds_)}), x{by_cpu:.2f} in CPU per request"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    counter.install()
    asyncio.run(run(args.requests, args.clients, args.rounds))
