"""Import a CSV of N ten-column rows through the API, then export the table as CSV and XLSX.

    .venv/bin/python -m benchmarks.bench_files [--rows 100000] [--no-memory]

Prints rows/s for the import (upload, validation pass, write pass: all-or-nothing mode) and
for each export, timed without tracing; then, unless --no-memory, repeats them under
tracemalloc and prints the memory they needed on top of what stays (the stored rows): the
peak above the memory held after the import, and the peak above the memory held before the
export. Embedded database, one process, HTTP over loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import tempfile
import time
import tracemalloc
from typing import Any

from benchmarks.common import TEN_COLUMNS, Client, random_rows, running_service

MB = 1024 * 1024


def write_csv(path: str, rows: int) -> None:
    keys = [c["key"] for c in TEN_COLUMNS]
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(keys)
        for start in range(0, rows, 10_000):
            for row in random_rows(min(10_000, rows - start), seed=start + 1):
                writer.writerow(["" if row.get(k) is None else row[k] for k in keys])


async def import_file(api: Client, table: str, path: str) -> dict[str, Any]:
    with open(path, "rb") as stream:  # noqa: ASYNC230 - aiohttp streams it
        async with api.session.post(
            f"{api.base}/api/data/{table}/imports",
            data=stream,
            headers={**api.headers, "Content-Type": "text/csv"},
        ) as resp:
            job = await resp.json()
            assert resp.status == 201, job
    await api.call("POST", f"/api/data/{table}/imports/{job['id']}/confirm", 202, json={})
    while True:
        await asyncio.sleep(0.2)
        job = await api.call("GET", f"/api/data/{table}/imports/{job['id']}")
        if job["state"] in ("completed", "failed"):
            return job


async def export(api: Client, table: str, fmt: str) -> tuple[int, int]:
    size = lines = 0
    url = f"{api.base}/api/data/{table}/export?format={fmt}&sort_by=total_sum"
    async with api.session.get(url, headers=api.headers) as resp:
        assert resp.status == 200, await resp.text()
        async for chunk in resp.content.iter_chunked(256 * 1024):
            size += len(chunk)
            lines += chunk.count(b"\n")
    return size, lines


async def run(api: Client, table: str, path: str, rows: int, traced: bool) -> None:
    await api.call("POST", "/api/meta/tables", 201, json={"key": table, "columns": TEN_COLUMNS})
    label = "traced" if traced else "timed"
    if traced:
        tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0] if traced else 0
    started = time.perf_counter()
    job = await import_file(api, table, path)
    elapsed = time.perf_counter() - started
    assert job["state"] == "completed" and job["created"] == rows, job
    line = f"[{label}] import: {rows:,} rows in {elapsed:.1f} s = {rows / elapsed:,.0f} rows/s"
    if traced:
        current, peak = tracemalloc.get_traced_memory()
        line += (
            f"; stored rows and job hold {(current - before) / MB:.0f} MiB, "
            f"peak {(peak - current) / MB:.1f} MiB above that"
        )
    print(line, flush=True)
    for fmt in ("csv", "xlsx"):
        if traced:
            tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0] if traced else 0
        started = time.perf_counter()
        size, _ = await export(api, table, fmt)
        elapsed = time.perf_counter() - started
        line = (
            f"[{label}] export {fmt}: {rows:,} rows, {size / MB:.1f} MiB in {elapsed:.1f} s = "
            f"{rows / elapsed:,.0f} rows/s"
        )
        if traced:
            line += f"; peak {(tracemalloc.get_traced_memory()[1] - before) / MB:.1f} MiB"
        print(line, flush=True)
    if traced:
        tracemalloc.stop()


async def main(rows: int, memory: bool) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "rows.csv")
        write_csv(path, rows)
        size = os.path.getsize(path)  # noqa: ASYNC240
        print(f"file: {rows:,} rows, {size / MB:.1f} MiB", flush=True)
        async with running_service(import_max_rows=max(rows, 200_000)) as api:
            await run(api, "timed", path, rows, traced=False)
            if memory:
                await run(api, "traced", path, rows, traced=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--no-memory", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.rows, not args.no_memory))
