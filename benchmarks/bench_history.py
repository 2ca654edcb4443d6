"""The cost of row history (issue #21 §7): PATCH one row of a ten-column table many times
through the API, and page through a row with many revisions.

    .venv/bin/python -m benchmarks.bench_history [--updates 2000] [--revisions 10000]

and, for a figure before a change, the same script against another checkout's code (its
path in place of OTHER_CHECKOUT):

    PYTHONPATH=OTHER_CHECKOUT .venv/bin/python benchmarks/bench_history.py --updates 2000

Prints ms per update (embedded database, one process, loopback HTTP), the best of 3 rounds,
and, when the code has history, ms per page of the long history.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from benchmarks.common import TEN_COLUMNS, random_rows, running_service

ROUNDS = 3


async def main(updates: int, revisions: int) -> None:
    async with running_service() as api:
        await api.call(
            "POST", "/api/meta/tables", 201, json={"key": "bench", "columns": TEN_COLUMNS}
        )
        row = await api.call("POST", "/api/data/bench", 201, json=random_rows(1)[0])
        path = f"/api/data/bench/{row['id']}"
        values = random_rows(64, seed=2)
        best = float("inf")
        for _ in range(ROUNDS):
            started = time.perf_counter()
            for index in range(updates):
                await api.call("PATCH", path, 200, json=values[index % len(values)])
            best = min(best, (time.perf_counter() - started) / updates * 1000)
        print(f"update: {best:.3f} ms per PATCH (best of {ROUNDS} rounds of {updates})")
        try:
            await api.call("GET", f"{path}/history?limit=1", 200)
        except RuntimeError:
            print("history: none (code before #21)")
            return
        for index in range(revisions - ROUNDS * updates):
            await api.call("PATCH", path, 200, json=values[index % len(values)])
        first = await api.call("GET", f"{path}/history?limit=100", 200)
        started = time.perf_counter()
        pages = 0
        for offset in range(0, first["total"], 100):
            await api.call("GET", f"{path}/history?limit=100&offset={offset}", 200)
            pages += 1
        elapsed = (time.perf_counter() - started) / pages * 1000
        print(f"history: {first['total']} revisions, {pages} pages of 100 at {elapsed:.2f} ms/page")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--updates", type=int, default=2000)
    parser.add_argument("--revisions", type=int, default=10_000)
    args = parser.parse_args()
    asyncio.run(main(args.updates, args.revisions))
