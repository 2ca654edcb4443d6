"""Loading a table definition: the stored columns parsed into `Column`s.

    .venv/bin/python -m benchmarks.bench_columns

Prints, for 10, 50 and 500 columns: the first parse of a definition, a load of a definition
already parsed (the memo by content), and the process cache's deep copy of the stored document
that every load already pays, for scale.
"""

from __future__ import annotations

import copy
import timeit
from typing import Any

from bson import ObjectId

from benchmarks.common import TEN_COLUMNS
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


def main() -> None:
    types = default_column_types()
    for count in (10, 50, 500):
        print(measure(count, types))


if __name__ == "__main__":
    main()
