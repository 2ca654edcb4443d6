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
import gc
import multiprocessing
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import ClientSession

from benchmarks.common import TEN_COLUMNS, Client, random_rows, running_service
from crm_core.platform.storage import embedded as storage

MongomockCollection = storage.MongomockCollection

BATCH = 1000


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


class GcPauses:
    """The garbage collector's passes (every thread stops while one runs), longest first."""

    def __init__(self) -> None:
        self.pauses: list[tuple[float, int]] = []
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append(((time.perf_counter() - self._started) * 1000, info["generation"]))

    def take(self) -> str:
        worst = sorted(self.pauses, reverse=True)[:3]
        self.pauses = []
        return ", ".join(f"{ms:.1f} ms (gen {gen})" for ms, gen in worst) or "none"


GC = GcPauses()


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


def _external_listers(
    url: str, headers: dict[str, str], clients: int, stop: Any, done: Any
) -> None:
    """The listing clients in a process of their own (as a deployment's clients are)."""

    async def run() -> int:
        listings = 0
        async with ClientSession(headers=headers) as session:

            async def lister() -> None:
                nonlocal listings
                while not stop.is_set():
                    async with session.get(url) as resp:
                        await resp.read()
                    listings += 1

            await asyncio.gather(*(lister() for _ in range(clients)))
        return listings

    done.put(asyncio.run(run()))


async def loaded_latencies(
    api: Client, clients: int, samples: int, external: bool
) -> tuple[list[float], float]:
    """`/health` latencies while `clients` list the `load` table; and listings per second."""
    stop_event = asyncio.Event()
    listings = 0

    async def lister() -> None:
        nonlocal listings
        while not stop_event.is_set():
            await api.call("GET", "/api/data/load")
            listings += 1

    if external:
        context = multiprocessing.get_context("spawn")
        stop, done = context.Event(), context.Queue()
        process = context.Process(
            target=_external_listers,
            args=(f"{api.base}/api/data/load", api.headers, clients, stop, done),
        )
        process.start()
        await asyncio.sleep(2.0)  # the process has started and its listers are all busy
    else:
        workers = [asyncio.create_task(lister()) for _ in range(clients)]
        await asyncio.sleep(0.5)
    started = time.perf_counter()
    GC.take()
    loaded = await health_latencies(api, samples)
    print(f"  longest GC passes meanwhile: {GC.take()}")
    elapsed = time.perf_counter() - started
    if external:
        stop.set()
        listings = await asyncio.get_running_loop().run_in_executor(None, done.get)
        process.join()
        elapsed += 2.0  # counted from the process's start
    else:
        stop_event.set()
        await asyncio.gather(*workers)
    return loaded, listings / elapsed


async def responsiveness(api: Client, rows: int, clients: int, samples: int) -> None:
    await api.call("POST", "/api/meta/tables", 201, json={"key": "load", "columns": TEN_COLUMNS})
    await fill(api, "load", rows, 1)
    idle = await health_latencies(api, samples)
    p50, p99 = statistics.median(idle), percentile(idle, 0.99)
    print(f"/health idle:   p50 {p50:6.1f} ms  p99 {p99:6.1f} ms")
    for external in (False, True):
        loaded, rate = await loaded_latencies(api, clients, samples, external)
        where = "another process" if external else "this process (the loop shared)"
        print(
            f"/health loaded: p50 {statistics.median(loaded):6.1f} ms  "
            f"p99 {percentile(loaded, 0.99):6.1f} ms  ({clients} clients in {where} listing "
            f"{rows} rows, {rate:.1f} listings/s)"
        )
        print(f"  ratio loaded/idle p99: {percentile(loaded, 0.99) / p99:.1f}x")


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


@contextmanager
def as_before() -> Iterator[None]:
    """The embedded database as it was before branch `audit`: mongomock's own reads (every
    filter over every document, every match copied before skip and limit) and no `gc.freeze`
    of what start-up built."""
    saved = (
        MongomockCollection._iter_documents,
        MongomockCollection._get_dataset,
        storage._read_cursor,
    )
    setattr(MongomockCollection, "_iter_documents", storage._ORIGINAL_ITER_DOCUMENTS)  # noqa: B010
    setattr(MongomockCollection, "_get_dataset", storage._ORIGINAL_GET_DATASET)  # noqa: B010
    storage._read_cursor = list  # type: ignore[assignment]
    gc.unfreeze()
    try:
        yield
    finally:
        setattr(MongomockCollection, "_iter_documents", saved[0])  # noqa: B010
        setattr(MongomockCollection, "_get_dataset", saved[1])  # noqa: B010
        storage._read_cursor = saved[2]
        gc.collect()
        gc.freeze()  # as the service's start-up leaves it


async def main(rows: int, clients: int, samples: int, sizes: list[int]) -> None:
    # before: the test double's own reads, every request at work at once; then the fast reads
    # with every request at work at once; then the default, authenticated requests taking
    # turns (EMBEDDED_MAX_ACTIVE_REQUESTS, 4)
    runs = (
        ("before", {"embedded_max_active_requests": 0}),
        ("fast reads, no turn-taking", {"embedded_max_active_requests": 0}),
        ("after: fast reads, 4 requests at work at once", {}),
    )
    for label, overrides in runs:
        print(f"-- {label} (one run)")
        async with running_service(**overrides) as api:
            if label == "before":
                with as_before():
                    await responsiveness(api, rows, clients, samples)
            else:
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
