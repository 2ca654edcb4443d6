"""Loading a table definition: the stored columns parsed into `Column`s; the autonumber under
parallel inserts (issue #23).

    .venv/bin/python -m benchmarks.bench_columns

Prints, for 10, 50 and 500 columns: the first parse of a definition, a load of a definition
already parsed (the memo by content), and the process cache's deep copy of the stored document
that every load already pays, for scale. Then 50 parallel `POST /api/data/{table}` into a
table with an autonumber column on the embedded engine: whether the 50 numbers are distinct
and consecutive, and the wall time of the batch.
"""

from __future__ import annotations

import asyncio
import copy
import time
import timeit
from typing import Any

from bson import ObjectId

from benchmarks.common import TEN_COLUMNS, running_service
from crm_core.tables.columns import Column, default_column_types
from crm_core.tables.definitions import Table


def definition(count: int) -> dict[str, Any]:
    columns = [
        {**c, "key": f"{c['key']}_{i}"}
        for i in range(count // len(TEN_COLUMNS))
        for c in TEN_COLUMNS
    ]
    return {"_id": ObjectId(), "key": "t", "version": 1, "columns": columns}


def micros(action: Any, number: int) -> float:
    return timeit.timeit(action, number=number) / number * 1e6


def measure(count: int, types: Any) -> str:
    doc = definition(count)
    number = max(20, 20_000 // count)
    parse = micros(lambda: tuple(Column.from_doc(c) for c in doc["columns"]), number)
    Table(doc, types)
    load = micros(lambda: Table(doc, types), number)
    deep = micros(lambda: copy.deepcopy(doc), number)
    return (
        f"{count:>4} columns: first parse {parse:8.0f} us, load again {load:6.0f} us, "
        f"the cache's deep copy {deep:8.0f} us"
    )


async def parallel_autonumber(count: int = 50) -> str:
    async with running_service() as client:
        columns = [{"key": "name", "type": "string"}, {"key": "no", "type": "autonumber"}]
        await client.call("POST", "/api/meta/tables", 201, json={"key": "t", "columns": columns})
        started = time.perf_counter()
        rows = await asyncio.gather(
            *(client.call("POST", "/api/data/t", 201, json={"name": f"r{i}"}) for i in range(count))
        )
        elapsed = time.perf_counter() - started
    numbers = sorted(r["no"] for r in rows)
    consecutive = numbers == list(range(1, count + 1))
    return (
        f"{count} parallel inserts with an autonumber: {len(set(numbers))} distinct numbers, "
        f"{numbers[0]}..{numbers[-1]}, consecutive: {consecutive}, {elapsed * 1000:.0f} ms"
    )


def main() -> None:
    types = default_column_types()
    for count in (10, 50, 500):
        print(measure(count, types))
    print(asyncio.run(parallel_autonumber()))


if __name__ == "__main__":
    main()
