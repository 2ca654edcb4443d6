"""The embedded database under load: is the event loop still free while it works?

    .venv/bin/python -m benchmarks.bench_embedded [--rows 1000] [--clients 16]
        [--sizes 1000,5000,10000,20000]

1. `/health` latency (p50, p99) idle, then while `--clients` clients list a `--rows`-row
   table as fast as they can (default listing: manual order, 50 rows), and the ratio of the
   two in one run. The embedded database works on a thread of its own, so `/health`, which
   needs no database, waits only for its turn on the event loop.
2. The embedded mode's limit: the time of one default listing (manual order) and of one
   listing sorted by an indexed column, at each table size of `--sizes`; where it crosses
   200 ms is the size to switch to MongoDB at (docs/operations.md).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from benchmarks.common import TEN_COLUMNS, Client, random_rows, running_service

BATCH = 1000


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


async def health_latencies(api: Client, samples: int) -> list[float]:
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        await api.call("GET", "/health")
        times.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.005)
    return times


async def fill(api: Client, table: str, rows: int, seed: int) -> None:
    data = random_rows(rows, seed)
    for start in range(0, rows, BATCH):
        await api.call("POST", f"/api/data/{table}/bulk", 201, json={"items": data[start:][:BATCH]})


async def responsiveness(api: Client, rows: int, clients: int, samples: int) -> None:
    await api.call("POST", "/api/meta/tables", 201, json={"key": "load", "columns": TEN_COLUMNS})
    await fill(api, "load", rows, 1)
    idle = await health_latencies(api, samples)
    stop = asyncio.Event()
    listings = 0

    async def lister() -> None:
        nonlocal listings
        while not stop.is_set():
            await api.call("GET", "/api/data/load")
            listings += 1

    workers = [asyncio.create_task(lister()) for _ in range(clients)]
    await asyncio.sleep(0.5)  # the listers are all busy
    started = time.perf_counter()
    loaded = await health_latencies(api, samples)
    elapsed = time.perf_counter() - started
    stop.set()
    await asyncio.gather(*workers)
    p50, p99 = statistics.median(idle), percentile(idle, 0.99)
    print(f"/health idle:   p50 {p50:6.1f} ms  p99 {p99:6.1f} ms")
    print(
        f"/health loaded: p50 {statistics.median(loaded):6.1f} ms  "
        f"p99 {percentile(loaded, 0.99):6.1f} ms  ({clients} clients listing {rows} rows, "
        f"{listings / elapsed:.1f} listings/s)"
    )
    print(f"ratio loaded/idle p99: {percentile(loaded, 0.99) / percentile(idle, 0.99):.1f}x")


async def limits(api: Client, sizes: list[int]) -> None:
    await api.call("POST", "/api/meta/tables", 201, json={"key": "size", "columns": TEN_COLUMNS})
    have = 0
    for size in sizes:
        await fill(api, "size", size - have, size)
        have = size
        for label, query in (
            ("manual order", ""),
            ("sorted by an indexed column", "?sort_by=total_sum"),
            (
                "filtered by an indexed column",
                '?filters=[{"field":"total_sum","op":"gt","value":0}]',
            ),
        ):
            times = []
            for _ in range(5):
                started = time.perf_counter()
                await api.call("GET", f"/api/data/size{query}")
                times.append((time.perf_counter() - started) * 1000)
            flag = "  > 200 ms" if statistics.median(times) > 200 else ""
            print(f"{size:>6} rows, {label:<30} {statistics.median(times):7.1f} ms{flag}")


async def main(rows: int, clients: int, samples: int, sizes: list[int]) -> None:
    async with running_service() as api:
        await responsiveness(api, rows, clients, samples)
    async with running_service() as api:
        await limits(api, sizes)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--sizes", default="1000,5000,10000,20000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    asyncio.run(main(args.rows, args.clients, args.samples, sizes))
