"""Bulk-create 10,000 rows of a ten-column table through the API, then page through them.

    .venv/bin/python -m benchmarks.bench_rows [--rows 10000] [--page 100]

Prints rows/s for the import and ms per page (embedded database, one process, loopback HTTP).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from benchmarks.common import TEN_COLUMNS, random_rows, running_service

BATCH = 1000


async def main(rows: int, page_size: int) -> None:
    async with running_service() as api:
        await api.call(
            "POST", "/api/meta/tables", 201, json={"key": "bench", "columns": TEN_COLUMNS}
        )
        data = random_rows(rows)
        started = time.perf_counter()
        for start in range(0, rows, BATCH):
            await api.call(
                "POST", "/api/data/bench/bulk", 201, json={"items": data[start : start + BATCH]}
            )
        elapsed = time.perf_counter() - started
        print(
            f"import: {rows} rows in {elapsed:.2f} s = {rows / elapsed:,.0f} rows/s "
            f"(batches of {BATCH})"
        )

        for label, query in (
            ("by id", ""),
            ("by total_sum desc", "&sort_by=total_sum&sort_order=desc"),
        ):
            pages, seen = 0, 0
            started = time.perf_counter()
            offset = 0
            while True:
                page = await api.call(
                    "GET", f"/api/data/bench?limit={page_size}&offset={offset}{query}"
                )
                pages += 1
                seen += len(page["items"])
                if len(page["items"]) < page_size:
                    break
                offset += page_size
            elapsed = time.perf_counter() - started
            assert seen == rows, seen
            print(
                f"paging {label}: {pages} pages of {page_size} in {elapsed:.2f} s = "
                f"{elapsed / pages * 1000:.1f} ms/page"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--page", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(main(args.rows, args.page))
