"""Embedded snapshots (issue #26): at N rows, the time to write one, the longest request stall
while it is written, and its size on disk.

    .venv/bin/python -m benchmarks.bench_snapshot [--rows 50000] [--snapshots 3]

A request loop (`GET /api/data/bench?limit=1`, one at a time) runs throughout; its slowest
answer during each snapshot is compared with its slowest before any (the same loop, same
length), so the stall the snapshot adds shows apart from the embedded database's own pauses.
A write loop changes one row every 50 ms (`PATCH /api/data/bench/{id}`), and a third loop
measures the event loop's own lag (how late a 5 ms sleep wakes up): the longest time nothing
at all was answered. "engine held" is how long the engine's thread was taken
(the copy of the stores; no database call runs meanwhile).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time

from benchmarks.common import TEN_COLUMNS, Client, random_rows, running_service
from crm_core.platform.snapshots import Snapshots


async def request_loop(
    api: Client, stop: asyncio.Event, latencies: list[tuple[float, float]]
) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        await api.call("GET", "/api/data/bench?limit=1")
        latencies.append((started, time.perf_counter() - started))


async def write_loop(
    api: Client, row_id: str, stop: asyncio.Event, latencies: list[tuple[float, float]]
) -> None:
    """One row changed again and again (each change also writes its history): the first
    change of a collection a snapshot is reading copies its mapping."""
    number = 0
    while not stop.is_set():
        number += 1
        started = time.perf_counter()
        await api.call("PATCH", f"/api/data/bench/{row_id}", json={"quantity": number})
        latencies.append((started, time.perf_counter() - started))
        await asyncio.sleep(0.05)


async def lag_loop(stop: asyncio.Event, lags: list[tuple[float, float]]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(0.005)
        lags.append((started, time.perf_counter() - started - 0.005))


def figures(samples: list[tuple[float, float]], start: float, end: float) -> str:
    values = [d for s, d in samples if start <= s < end] or [0.0]
    p99 = (
        statistics.quantiles(values, n=100, method="inclusive")[98]
        if len(values) > 1
        else values[0]
    )
    return f"slowest {max(values) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms ({len(values)} samples)"


async def run(rows: int, snapshots: int) -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        async with running_service() as api:  # the snapshots below, written on demand
            await api.call(
                "POST", "/api/meta/tables", 201, json={"key": "bench", "columns": TEN_COLUMNS}
            )
            items = random_rows(rows)
            for start in range(0, rows, 1000):
                await api.call(
                    "POST", "/api/data/bench/bulk", 201, json={"items": items[start : start + 1000]}
                )
            snap = Snapshots(api.app_services.storage, data_dir, 3600)
            snap.data_dir.lock()
            stop = asyncio.Event()
            latencies: list[tuple[float, float]] = []
            lags: list[tuple[float, float]] = []
            writes: list[tuple[float, float]] = []
            row_id = (await api.call("GET", "/api/data/bench?limit=1"))["items"][0]["id"]
            loops = [
                asyncio.create_task(request_loop(api, stop, latencies)),
                asyncio.create_task(write_loop(api, row_id, stop, writes)),
                asyncio.create_task(lag_loop(stop, lags)),
            ]
            mark = time.perf_counter()
            await asyncio.sleep(3.0)
            print(f"{rows} rows, load average {os.getloadavg()[0]:.1f}; before any snapshot (3 s):")
            print(f"  reads: {figures(latencies, mark, time.perf_counter())}")
            print(f"  writes: {figures(writes, mark, time.perf_counter())}")
            print(f"  event loop lag: {figures(lags, mark, time.perf_counter())}")
            for _ in range(snapshots):
                mark = time.perf_counter()
                result = await snap.snapshot(force=True)
                end = time.perf_counter()
                assert result is not None
                print(
                    f"snapshot: {result.seconds:.2f} s, engine held "
                    f"{result.engine_held_seconds * 1000:.1f} ms "
                    f"({result.engine_held_cpu_seconds * 1000:.1f} ms CPU), "
                    f"{result.bytes / 1e6:.1f} MB on disk; during it "
                    f"(load average {os.getloadavg()[0]:.1f}):"
                )
                print(f"  reads: {figures(latencies, mark, end)}")
                print(f"  writes: {figures(writes, mark, end)}")
                print(f"  event loop lag: {figures(lags, mark, end)}")
                await asyncio.sleep(1.0)
            stop.set()
            await asyncio.gather(*loops)
            snap.data_dir.unlock()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--snapshots", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(run(args.rows, args.snapshots))


if __name__ == "__main__":
    main()
