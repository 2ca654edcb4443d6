"""Import a CSV of N ten-column rows through the API, then export the table as CSV and XLSX;
or (`--attachment MIB`) upload a file of that size to `POST /api/files` and download it.

    .venv/bin/python -m benchmarks.bench_files [--rows 100000] [--formats csv,xlsx] [--fill bulk]
    .venv/bin/python -m benchmarks.bench_files --attachment 20
    .venv/bin/python -m benchmarks.bench_files --preview-check --rows 5000

Prints, for the import (upload, validation pass, write pass: all-or-nothing mode) and each
export: rows/s of wall time, rows per CPU-second of the process (fair on a shared machine),
and the peak of resident memory above the phase's start together with what the phase leaves
(for the import: the stored rows, which live in memory on the embedded database). Embedded
database, one process, HTTP over loopback. Linux only (/proc/self).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import tempfile
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import ClientTimeout, MultipartWriter
from aiohttp.payload import AsyncIterablePayload

from benchmarks.common import TEN_COLUMNS, Client, random_rows, running_service

MB = 1024 * 1024


def write_csv(path: str, rows: int) -> None:
    """The rows as a person's file holds them: select options by label (a number in a select
    cell is not taken as an option id, docs/integrations.md)."""
    keys = [c["key"] for c in TEN_COLUMNS]
    labels = {
        c["key"]: {o["id"]: o["label"] for o in c["options"]} for c in TEN_COLUMNS if "options" in c
    }
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(keys)
        for start in range(0, rows, 10_000):
            for row in random_rows(min(10_000, rows - start), seed=start + 1):
                cells = {k: labels[k].get(v, v) if k in labels else v for k, v in row.items()}
                writer.writerow(["" if cells.get(k) is None else cells[k] for k in keys])


async def import_file(api: Client, table: str, path: str) -> dict[str, Any]:
    with open(path, "rb") as stream:  # noqa: ASYNC230 - aiohttp streams it
        async with api.session.post(
            f"{api.base}/api/data/{table}/imports",
            data=stream,
            headers={**api.headers, "Content-Type": "text/csv"},
            timeout=ClientTimeout(total=None),
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
    no_limit = ClientTimeout(total=None)  # an XLSX answers once the workbook is complete
    async with api.session.get(url, headers=api.headers, timeout=no_limit) as resp:
        assert resp.status == 200, await resp.text()
        async for chunk in resp.content.iter_chunked(256 * 1024):
            size += len(chunk)
            lines += chunk.count(b"\n")
    return size, lines


def memory() -> tuple[float, float]:
    """(resident, peak resident) of this process in MiB, from /proc/self/status."""
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def reset_peak() -> None:
    """Start a new peak-resident measure (Linux: writing 5 to clear_refs resets VmHWM)."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


class Phase:
    """Wall time, CPU time of this process (the server, its tasks and the client all run in
    it) and the peak of resident memory above the start of the phase."""

    def __enter__(self) -> Phase:
        reset_peak()
        self.rss_before = memory()[0]
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu
        self.rss_after, peak = memory()
        self.peak_above = peak - self.rss_before

    def figures(self, rows: int) -> str:
        return (
            f"{self.wall:.1f} s = {rows / self.wall:,.0f} rows/s wall, "
            f"{rows / self.cpu:,.0f} rows per CPU-second; resident memory peak "
            f"+{self.peak_above:.0f} MiB, +{self.rss_after - self.rss_before:.0f} MiB kept"
        )


async def fill_by_bulk(api: Client, table: str, rows: int) -> None:
    for start in range(0, rows, 1000):
        items = random_rows(min(1000, rows - start), seed=start + 1)
        await api.call("POST", f"/api/data/{table}/bulk", 201, json={"items": items})


async def main(rows: int, formats: list[str], fill: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "rows.csv")
        write_csv(path, rows)
        size = os.path.getsize(path)  # noqa: ASYNC240
        print(f"file: {rows:,} rows, {size / MB:.1f} MiB", flush=True)
        async with running_service(import_max_rows=max(rows, 200_000)) as api:
            table = "bench"
            await api.call(
                "POST", "/api/meta/tables", 201, json={"key": table, "columns": TEN_COLUMNS}
            )
            if fill == "bulk":  # only the exports are measured
                await fill_by_bulk(api, table, rows)
            else:
                with Phase() as phase:
                    job = await import_file(api, table, path)
                assert job["state"] == "completed" and job["created"] == rows, job
                figures = phase.figures(rows)
                print(f"import (all_or_nothing): {rows:,} rows in {figures}", flush=True)
            for fmt in formats:
                with Phase() as phase:
                    size, _ = await export(api, table, fmt)
                print(
                    f"export {fmt}: {rows:,} rows, {size / MB:.1f} MiB in {phase.figures(rows)}",
                    flush=True,
                )


async def preview_check(rows: int) -> None:
    """Upload `rows` rows for review only: the answer's preview counts the failing rows of the
    whole file (`failing_rows`, files up to 5000 rows), which the upload's time includes."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "rows.csv")
        write_csv(path, rows)
        async with running_service() as api:
            await api.call(
                "POST", "/api/meta/tables", 201, json={"key": "bench", "columns": TEN_COLUMNS}
            )
            for attempt in ("first", "second"):
                with Phase() as phase, open(path, "rb") as stream:  # noqa: ASYNC230
                    async with api.session.post(
                        f"{api.base}/api/data/bench/imports",
                        data=stream,
                        headers={**api.headers, "Content-Type": "text/csv"},
                    ) as resp:
                        job = await resp.json()
                        assert resp.status == 201, job
                print(
                    f"upload for review ({attempt}), {rows:,} rows: failing_rows="
                    f"{job['preview']['failing_rows']} in {phase.figures(rows)}",
                    flush=True,
                )


async def generated(size: int, piece: int = 256 * 1024) -> AsyncIterator[bytes]:
    """`size` bytes made as they are sent (the client holds one piece at a time)."""
    sent = 0
    block = os.urandom(piece)
    while sent < size:
        part = block[: min(piece, size - sent)]
        sent += len(part)
        yield part


async def attachment(mib: int) -> None:
    """Upload then download a `mib` MiB file; memory is the whole process's (server, its
    storage thread and the client), so a body held whole would show as +`mib` MiB or more."""
    size = mib * MB
    with tempfile.TemporaryDirectory() as folder:
        async with running_service(file_max_bytes=size + MB, files_dir=folder) as api:
            form = MultipartWriter("form-data")
            part = form.append_payload(AsyncIterablePayload(generated(size)))
            part.set_content_disposition("form-data", name="file", filename="big.bin")
            no_limit = ClientTimeout(total=None)
            with Phase() as up:
                async with api.session.post(
                    f"{api.base}/api/files", data=form, headers=api.headers, timeout=no_limit
                ) as resp:
                    stored = await resp.json()
                    assert resp.status == 201, stored
            assert stored["size"] == size, stored
            received = 0
            with Phase() as down:
                async with api.session.get(
                    f"{api.base}/api/files/{stored['id']}", headers=api.headers, timeout=no_limit
                ) as resp:
                    assert resp.status == 200, await resp.text()
                    async for chunk in resp.content.iter_chunked(256 * 1024):
                        received += len(chunk)
            assert received == size
            for name, phase in (("upload", up), ("download", down)):
                print(
                    f"{name} of {mib} MiB: {phase.wall:.2f} s = {mib / phase.wall:.0f} MiB/s "
                    f"wall, {mib / phase.cpu:.0f} MiB per CPU-second; resident memory peak "
                    f"+{phase.peak_above:.1f} MiB, +{phase.rss_after - phase.rss_before:.1f} "
                    "MiB kept",
                    flush=True,
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--formats", default="csv,xlsx", help="exports to measure")
    parser.add_argument(
        "--fill", choices=["import", "bulk"], default="import", help="bulk: measure exports only"
    )
    parser.add_argument(
        "--attachment", type=int, default=0, help="MiB: upload and download one file instead"
    )
    parser.add_argument(
        "--preview-check", action="store_true", help="time an upload's failing-row count"
    )
    args = parser.parse_args()
    if args.preview_check:
        asyncio.run(preview_check(args.rows))
    elif args.attachment:
        asyncio.run(attachment(args.attachment))
    else:
        asyncio.run(main(args.rows, args.formats.split(","), args.fill))
