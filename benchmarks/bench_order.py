"""Per-user manual order at two table sizes (docs/filters.md).

    .venv/bin/python -m benchmarks.bench_order [--rows 1000 20000] [--moves 50] [--before]

For each size: a table of integer rows written straight to the database, then `--moves`
random moves through the API (half before a random row, a quarter to the end, a quarter before
a moved row), then one more move and a `sort_by=manual` page of 50 (first page and one at offset
500). Prints per figure the database operations and documents returned (what a real server's
cost follows; see benchmarks.common) and the milliseconds on the embedded database, whose own
full scans grow with the table. The last lines give the ratios of the largest size to the
smallest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import time

from bson import ObjectId

from benchmarks.bench_embedded import as_before
from benchmarks.common import OperationCounter, running_service

counter = OperationCounter()


async def measure(api: object, call: object) -> tuple[int, int, float]:
    counter.reset()
    started = time.perf_counter()
    await call  # type: ignore[misc]
    elapsed = time.perf_counter() - started
    return counter.operations, counter.returned, elapsed * 1000


async def run(size: int, moves: int) -> dict[str, tuple[int, int, float]]:
    async with running_service() as api:
        key = "ordered"
        await api.call(
            "POST",
            "/api/meta/tables",
            201,
            json={"key": key, "columns": [{"key": "n", "type": "integer"}]},
        )
        rows = await api.rows_collection(key)
        ids = [ObjectId() for _ in range(size)]
        for start in range(0, size, 5000):
            await rows.insert_many(
                [{"_id": i, "n": n} for n, i in enumerate(ids)][start : start + 5000]
            )
        rng = random.Random(size)
        moved: list[ObjectId] = []
        for step in range(moves):
            row = rng.choice(ids)
            kind = step % 4
            before = (
                None if kind == 1 else rng.choice(moved or ids) if kind == 3 else rng.choice(ids)
            )
            if before == row:
                continue
            await api.call(
                "POST",
                f"/api/data/{key}/{row}/move",
                json={"before_id": None if before is None else str(before)},
            )
            moved.append(row)
        figures = {}
        row, before = ids[size // 3], ids[size // 2]
        figures["move"] = await measure(
            api,
            api.call("POST", f"/api/data/{key}/{row}/move", json={"before_id": str(before)}),
        )
        figures["first page"] = await measure(
            api, api.call("GET", f"/api/data/{key}?sort_by=manual&limit=50")
        )
        figures["page at offset 500"] = await measure(
            api, api.call("GET", f"/api/data/{key}?sort_by=manual&limit=50&offset=500")
        )
    for name, (operations, returned, ms) in figures.items():
        print(
            f"{size:>6} rows, {name}: {operations} operations, {returned} documents returned, "
            f"{ms:.0f} ms on the embedded database"
        )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000, 20_000])
    parser.add_argument("--moves", type=int, default=50)
    parser.add_argument(
        "--before",
        action="store_true",
        help="the embedded database's reads as before branch `audit` (mongomock's own scans)",
    )
    args = parser.parse_args()
    counter.install()
    sizes = sorted(args.rows)
    with as_before() if args.before else contextlib.nullcontext():
        results = [asyncio.run(run(size, args.moves)) for size in sizes]
    if len(results) > 1:
        small, large = results[0], results[-1]
        for name in small:
            docs = large[name][1] / max(1, small[name][1])
            ops = large[name][0] / max(1, small[name][0])
            ms = large[name][2] / small[name][2]
            print(
                f"{name}, {sizes[-1]} vs {sizes[0]} rows: operations x{ops:.2f}, documents "
                f"returned x{docs:.2f}, embedded milliseconds x{ms:.1f} (its own scans)"
            )


if __name__ == "__main__":
    main()
