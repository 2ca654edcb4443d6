"""What a deep page costs by `offset` and by `cursor` (issue 28 §3, docs/api.md "Pages and
cursors"): a table of ten columns and `--rows` rows on the embedded database; for each depth,
the median time of `GET /api/data/{table}?limit=50` at that depth by `offset=<depth>` and by the
`cursor` a walk to that depth answered, sorted by id and by an indexed float column.

    .venv/bin/python -m benchmarks.bench_pages [--rows 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from datetime import UTC, datetime

from bson import ObjectId

from benchmarks.common import TEN_COLUMNS, Client, random_rows, running_service
from crm_core.platform.values import ValueContext
from crm_core.tables.columns import Column, default_column_types

DEPTHS = (0, 1000, 5000, 10000)
LIMIT = 50


async def _fill(client: Client, rows: int) -> None:
    await client.call(
        "POST", "/api/meta/tables", 201, json={"key": "deals", "columns": TEN_COLUMNS}
    )
    collection = await client.rows_collection("deals")
    types = default_column_types()
    columns = [Column.from_doc(c) for c in TEN_COLUMNS]
    now = datetime.now(UTC)
    values_context = ValueContext.default()
    for start in range(0, rows, 5000):
        docs = []
        for values in random_rows(min(5000, rows - start), seed=start + 1):
            doc = {"_id": ObjectId(), "_created_at": now, "_updated_at": now, "_rev": 1}
            for column in columns:
                value = values.get(column.key)
                if value is not None:
                    doc[column.key] = types.get(column.type).coerce(
                        column, value, values_context, lenient=True
                    )
            docs.append(doc)
        await collection.insert_many(docs)


async def _timed(client: Client, path: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await client.call("GET", path)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


async def _cursor_at(client: Client, base: str, depth: int) -> str | None:
    """The cursor of the page that starts at `depth`, walked to in pages of 1000."""
    cursor = None
    walked = 0
    while walked < depth:
        step = min(1000, depth - walked)
        page = await client.call(
            "GET", f"{base}&limit={step}" + (f"&cursor={cursor}" if cursor else "")
        )
        cursor = page["next_cursor"]
        walked += step
    return cursor


async def main(rows: int, repeat: int) -> None:
    async with running_service() as client:
        await _fill(client, rows)
        print(f"{rows} rows, pages of {LIMIT}, median of {repeat} (ms per request)")
        for sort in ("sort=id", "sort=total_sum"):
            base = f"/api/data/deals?{sort}"
            for depth in DEPTHS:
                by_offset = await _timed(client, f"{base}&limit={LIMIT}&offset={depth}", repeat)
                cursor = await _cursor_at(client, base, depth)
                after = f"&cursor={cursor}" if cursor else ""
                by_cursor = await _timed(client, f"{base}&limit={LIMIT}{after}", repeat)
                print(
                    f"{sort:15} depth {depth:6}: offset {by_offset:8.1f} ms, "
                    f"cursor {by_cursor:8.1f} ms"
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.rows, args.repeat))
