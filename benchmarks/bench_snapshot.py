"""Embedded snapshots (issue #26): at N rows, the time to write one, the longest request stall
while it is written, and its size on disk.

    .venv/bin/python -m benchmarks.bench_snapshot [--rows 50000] [--snapshots 3]

A request loop (`GET /api/data/bench?limit=1`, one at a time) runs throughout; its slowest
answer during each snapshot is compared with its slowest before any (the same loop, same
length), so the stall the snapshot adds shows apart from the embedded database's own pauses.
"""

from __future__ import annotations

import argparse
import asyncio
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
            loop_task = asyncio.create_task(request_loop(api, stop, latencies))
            await asyncio.sleep(3.0)
            baseline = max(d for _, d in latencies)
            print(
                f"{rows} rows; request loop alone: {len(latencies)} requests in 3 s, "
                f"slowest {baseline * 1000:.1f} ms"
            )
            for _ in range(snapshots):
                mark = time.perf_counter()
                result = await snap.snapshot(force=True)
                assert result is not None
                during = [d for s, d in latencies if s >= mark] or [0.0]
                print(
                    f"snapshot: {result.seconds:.2f} s, engine held "
                    f"{result.stall_seconds * 1000:.1f} ms, slowest request during it "
                    f"{max(during) * 1000:.1f} ms ({len(during)} requests), "
                    f"{result.bytes / 1e6:.1f} MB on disk"
                )
                await asyncio.sleep(1.0)
            stop.set()
            await loop_task
            snap.data_dir.unlock()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--snapshots", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(run(args.rows, args.snapshots))


if __name__ == "__main__":
    main()
